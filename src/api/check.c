/* check.c - replicas check each other.
 *
 * The leader proposes a CHECK command every check_interval and on demand
 * (POST /v1/cluster/check). Every replica, when it applies CHECK at index i,
 * digests its state as of i (fsm/digest.h): on the loop it only copies the
 * in-memory sections (their snapshot encoding) and opens, per SQL database,
 * a reader whose read transaction starts at i (WAL keeps that snapshot
 * while apply goes on); the hashing runs on the thread pool. It keeps the
 * last few digests and serves them on GET /v1/internal/digest?index=i.
 *
 * The leader collects every member's digest for i and compares them: the
 * digest most replicas share wins, each other replica has diverged. That
 * is logged as an error naming the node and the differing sections, counted
 * in jinn_replica_divergence_total and published as the round's result
 * (GET /v1/cluster/check). Each replica fetches that result for the check
 * it digested and, when it is the diverged one, marks itself: "diverged"
 * in /v1/status, and it refuses to serve reads from its own state (503
 * diverged) until restarted, which rebuilds its state from the others.
 *
 * Only the leader named in the replicated node directory can declare a
 * replica diverged, and only through a GET the replica sends: there is no
 * endpoint through which a client could mark a node diverged. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api/api.h"
#include "error.h"
#include "fetch.h"
#include "fsm/auth.h"
#include "fsm/digest.h"
#include "log.h"

#define CHECK_REPORTS 4      /* digests a node keeps */
#define CHECK_TICK_MS 250    /* drives rounds, verdicts and the schedule */
#define CHECK_ROUND_MS 30000 /* members silent this long count as unreachable */
#define CHECK_FETCH_MS 2000  /* one digest or verdict request */
#define CHECK_ASK_EVERY_MS 500
#define CHECK_MIN_GAP_MS 1000 /* between two checks started over HTTP */
#define CHECK_DIFF_MAX 512    /* the list of differing sections, as text */
#define CHECK_RESPONSE_MAX (JINN_DIGEST_SECTIONS_MAX * (JINN_DIGEST_NAME_MAX + 24) + 4096)

enum report_state { REPORT_PENDING, REPORT_READY, REPORT_FAILED };

/* This node's digest at one CHECK. */
struct report {
    struct jinn_digest d;
    struct jinn_digest_capture cap; /* in-memory state at the index, hashed on the pool */
    /* The redacted digest (digest.h): what an edge replica's state at the
     * index digests as. Equal to d.total when the state holds no key. */
    uint64_t redacted;
    uint64_t auth_redacted; /* the auth section's redacted hash */
    bool auth_present;
    bool has_key; /* the state holds a key (R on an edge replica) */
    enum report_state state;
    char error[256];
    uint64_t loop_us, pool_us; /* time spent on the loop, on the pool */
    bool busy;                 /* SQL digest running on the pool */
    bool evicted;              /* dropped from the list while busy: the work frees it */
    /* The leader's verdict about this node, fetched after the digest. */
    bool verdict_known, asking;
    uint64_t ask_after, ask_until;
    /* SQL work: one reader per database, pinned at the CHECK's index. */
    unsigned n_sql;
    sqlite3 **conns;
    char (*names)[JINN_SQL_DB_MAX + 1];
    uint64_t *hashes;
    uv_work_t work;
    struct jinn_check *check;
};

enum member_state {
    M_PENDING,
    M_OK,
    M_DIVERGED,
    M_DISAGREE, /* no digest has a majority */
    M_MISSING,  /* it never digested this index (e.g. restored a later snapshot) */
    M_FAILED,   /* it could not compute its digest */
    M_UNREACHABLE
};

static const char *const member_state_names[] = {"pending", "ok",     "diverged",   "disagree",
                                                 "missing", "failed", "unreachable"};

struct member {
    uint64_t id;
    char name[JINN_NODE_NAME_MAX + 1];
    char api[JINN_NODE_API_MAX + 1];
    enum member_state state;
    bool asking;
    uint64_t ask_after;
    struct jinn_digest *d; /* owned, once reported */
    bool has_redacted;     /* it published its redacted digest (newer builds) */
    uint64_t redacted;
    char diff[CHECK_DIFF_MAX];
};

/* The leader's comparison of one CHECK. */
struct round {
    uint64_t index;
    uint64_t started, deadline; /* loop time */
    bool done;
    const char *outcome; /* "running", "agreed", "diverged", "incomplete" */
    uint64_t majority;
    bool has_majority;
    /* The majority's redacted digest, what edge replicas compare with. */
    uint64_t majority_redacted;
    bool has_majority_redacted;
    unsigned n;
    struct member m[JINN_CONFIG_MAX_PEERS];
};

struct jinn_check {
    struct jinn_api *api;
    uv_timer_t tick;
    bool stopping, timer_closed;
    unsigned inflight;                     /* fetches and pool work that point at us */
    struct report *reports[CHECK_REPORTS]; /* oldest first */
    struct round *round;                   /* latest, on the leader */
    bool was_leader;
    unsigned proposing; /* periodic CHECKs in flight */
    uint64_t last_proposed, last_manual;
    /* This node's standing. */
    bool diverged;
    uint64_t diverged_index;
    char diverged_sections[CHECK_DIFF_MAX];
    uint64_t divergences_total, rounds_total;
};

/* A fetch's context: the round or report may be gone when it answers. */
struct ask {
    struct jinn_check *check;
    uint64_t index;
    unsigned member; /* digest requests */
};

static void maybe_free(struct jinn_check *ck);

static uint64_t now_ms(const struct jinn_check *ck)
{
    return uv_now(ck->api->loop);
}

static void hex64(char out[17], uint64_t v)
{
    snprintf(out, 17, "%016" PRIx64, v);
}

static bool parse_hex64(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    if (s == NULL || strlen(s) != 16) {
        return false;
    }
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                            : 16;
        if (d == 16) {
            return false;
        }
        x = x << 4 | d;
    }
    *v = x;
    return true;
}

/* ---- this node's digests --------------------------------------------------- */

static void report_free(struct report *r)
{
    if (r == NULL) {
        return;
    }
    for (unsigned i = 0; i < r->n_sql; i++) {
        sqlite3_close_v2(r->conns[i]);
    }
    jinn_digest_capture_free(&r->cap);
    jinn_free(r->conns);
    jinn_free(r->names);
    jinn_free(r->hashes);
    jinn_free(r);
}

static struct report *report_find(struct jinn_check *ck, uint64_t index)
{
    for (int i = 0; i < CHECK_REPORTS; i++) {
        if (ck->reports[i] != NULL && ck->reports[i]->d.index == index) {
            return ck->reports[i];
        }
    }
    return NULL;
}

static void report_keep(struct jinn_check *ck, struct report *r)
{
    struct report *old = ck->reports[0];
    if (old != NULL) {
        if (old->busy) {
            old->evicted = true;
        } else {
            report_free(old);
        }
    }
    memmove(&ck->reports[0], &ck->reports[1], (CHECK_REPORTS - 1) * sizeof ck->reports[0]);
    ck->reports[CHECK_REPORTS - 1] = r;
}

static void sql_work(uv_work_t *work)
{
    struct report *r = work->data;
    uint64_t start = uv_hrtime();
    jinn_digest_from_capture(&r->cap, r->d.index, &r->d);
    if (jinn_digest_capture_auth_redacted(&r->cap, &r->auth_present, &r->auth_redacted) != 0) {
        snprintf(r->error, sizeof r->error, "auth: cannot compute the redacted digest");
    }
    r->has_key = r->cap.sections[6].len > JINN_AUTH_SECTION_KEY_OFFSET &&
                 r->cap.sections[6].data[0] == 1;
    for (unsigned i = 0; r->error[0] == '\0' && i < r->n_sql; i++) {
        char err[200];
        if (jinn_digest_sql(r->conns[i], &r->hashes[i], err, sizeof err) != 0) {
            snprintf(r->error, sizeof r->error, "sql:%s: %s", r->names[i], err);
            break;
        }
    }
    r->pool_us = (uv_hrtime() - start) / 1000;
}

static void report_ready(struct jinn_check *ck, struct report *r)
{
    char hex[17];
    r->state = REPORT_READY;
    jinn_digest_finish(&r->d);
    /* An edge replica's state is redacted already: its digest is its
     * redacted digest (redacting R again would mean nothing). */
    r->redacted = r->auth_present && !jinn_node_is_replica(ck->api->node)
                      ? jinn_digest_total_with_auth(&r->d, r->auth_redacted)
                      : r->d.total;
    hex64(hex, r->d.total);
    jinn_debug("check %" PRIu64 ": digest %s (%u sections)", r->d.index, hex, r->d.n);
    r->ask_after = now_ms(ck);
    r->ask_until = now_ms(ck) + CHECK_ROUND_MS + 10000;
}

static void sql_work_done(uv_work_t *work, int status)
{
    struct report *r = work->data;
    struct jinn_check *ck = r->check;
    r->busy = false;
    ck->inflight--;
    if (status != 0 && r->error[0] == '\0') {
        snprintf(r->error, sizeof r->error, "digest cancelled");
    }
    for (unsigned i = 0; i < r->n_sql; i++) {
        sqlite3_close_v2(r->conns[i]);
        r->conns[i] = NULL;
    }
    jinn_digest_capture_free(&r->cap);
    if (r->evicted || ck->stopping) {
        bool listed = report_find(ck, r->d.index) == r;
        if (!listed) {
            report_free(r);
        }
    } else if (r->error[0] != '\0') {
        r->state = REPORT_FAILED;
        jinn_error("check %" PRIu64 ": cannot digest: %s", r->d.index, r->error);
    } else {
        int rv = 0;
        for (unsigned i = 0; i < r->n_sql && rv == 0; i++) {
            char name[JINN_DIGEST_NAME_MAX];
            snprintf(name, sizeof name, "sql:%s", r->names[i]);
            rv = jinn_digest_add(&r->d, name, r->hashes[i]);
        }
        if (rv != 0) {
            r->state = REPORT_FAILED;
            snprintf(r->error, sizeof r->error, "too many sections");
        } else {
            report_ready(ck, r);
        }
    }
    maybe_free(ck);
}

/* Opens a reader on every database and starts its read transaction now,
 * while the state is exactly the CHECK's index. */
static int pin_sql(struct report *r, const struct jinn_sql *sql)
{
    unsigned n = 0;
    for (const struct jinn_sql_db *db = jinn_sql_next(sql, NULL); db;
         db = jinn_sql_next(sql, db)) {
        n++;
    }
    if (n == 0) {
        return 0;
    }
    r->conns = jinn_calloc(n, sizeof *r->conns);
    r->names = jinn_calloc(n, sizeof *r->names);
    r->hashes = jinn_calloc(n, sizeof *r->hashes);
    if (r->conns == NULL || r->names == NULL || r->hashes == NULL) {
        snprintf(r->error, sizeof r->error, "out of memory");
        return JINN_ENOMEM;
    }
    for (const struct jinn_sql_db *db = jinn_sql_next(sql, NULL); db;
         db = jinn_sql_next(sql, db)) {
        sqlite3 *conn = jinn_sql_open_internal_reader(sql, db->name);
        snprintf(r->names[r->n_sql], sizeof r->names[0], "%s", db->name);
        if (conn == NULL) {
            snprintf(r->error, sizeof r->error, "sql:%s: cannot open a reader", db->name);
            return JINN_EIO;
        }
        r->conns[r->n_sql++] = conn;
        /* A WAL read transaction begins at its first read. */
        if (sqlite3_exec(conn, "BEGIN; SELECT count(*) FROM sqlite_schema;", NULL, NULL,
                         NULL) != SQLITE_OK) {
            snprintf(r->error, sizeof r->error, "sql:%s: %s", db->name, sqlite3_errmsg(conn));
            return JINN_EIO;
        }
    }
    return 0;
}

static void start_round(struct jinn_check *ck, uint64_t index);

void jinn_api_check_applied(struct jinn_api *api, uint64_t index)
{
    struct jinn_check *ck = api->check;
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    struct report *r;
    uint64_t start = uv_hrtime();

    if (ck == NULL || ck->stopping || fsm->check_index != index || index == 0) {
        return;
    }
    r = jinn_calloc(1, sizeof *r);
    if (r == NULL) {
        jinn_error("check %" PRIu64 ": out of memory; no digest here", index);
        return;
    }
    r->check = ck;
    r->state = REPORT_PENDING;
    r->d.index = index;
    /* Copy what the digest covers as of this index; hash it off the loop. */
    if (jinn_digest_capture(fsm, &r->cap) != 0) {
        snprintf(r->error, sizeof r->error, "out of memory");
    } else {
        pin_sql(r, &fsm->sql);
    }
    r->loop_us = (uv_hrtime() - start) / 1000;
    if (r->loop_us > 20000) {
        jinn_warn("check %" PRIu64 ": digesting the in-memory state held the loop %" PRIu64
                  " ms",
                  index, r->loop_us / 1000);
    }
    report_keep(ck, r);
    if (r->error[0] != '\0') {
        r->state = REPORT_FAILED;
        jinn_error("check %" PRIu64 ": cannot digest: %s", index, r->error);
    } else {
        r->work.data = r;
        if (uv_queue_work(api->loop, &r->work, sql_work, sql_work_done) != 0) {
            r->state = REPORT_FAILED;
            snprintf(r->error, sizeof r->error, "cannot queue the digest");
        } else {
            r->busy = true;
            ck->inflight++;
        }
    }
    if (jinn_node_is_leader(api->node)) {
        start_round(ck, index);
    }
}

/* ---- the leader's rounds --------------------------------------------------- */

static void round_free(struct round *rd)
{
    if (rd == NULL) {
        return;
    }
    for (unsigned i = 0; i < rd->n; i++) {
        jinn_free(rd->m[i].d);
    }
    jinn_free(rd);
}

static void start_round(struct jinn_check *ck, uint64_t index)
{
    struct jinn_node_status st;
    struct round *rd = jinn_calloc(1, sizeof *rd);
    if (rd == NULL) {
        jinn_error("check %" PRIu64 ": out of memory; not compared", index);
        return;
    }
    jinn_node_status(ck->api->node, &st);
    rd->index = index;
    rd->started = now_ms(ck);
    rd->deadline = rd->started + CHECK_ROUND_MS;
    rd->outcome = "running";
    for (unsigned i = 0; i < st.n_members && rd->n < JINN_CONFIG_MAX_PEERS; i++) {
        struct member *m = &rd->m[rd->n++];
        m->id = st.members[i].id;
        snprintf(m->name, sizeof m->name, "%s", st.members[i].name);
        snprintf(m->api, sizeof m->api, "%s", st.members[i].api ? st.members[i].api : "");
        m->state = M_PENDING;
    }
    round_free(ck->round);
    ck->round = rd;
}

static void diff_sections(const struct jinn_digest *a, const struct jinn_digest *b, char *out,
                          size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        const struct jinn_digest *x = pass == 0 ? a : b, *y = pass == 0 ? b : a;
        for (unsigned i = 0; i < x->n; i++) {
            const struct jinn_digest_section *s = jinn_digest_find(y, x->sections[i].name);
            if (pass == 1 && s != NULL) {
                continue; /* compared in the first pass */
            }
            if (s == NULL || s->hash != x->sections[i].hash) {
                int n =
                    snprintf(out + len, cap - len, "%s%s", len ? "," : "", x->sections[i].name);
                if (n < 0 || (size_t)n >= cap - len) {
                    return;
                }
                len += (size_t)n;
            }
        }
    }
}

static void finish_round(struct jinn_check *ck, struct round *rd)
{
    struct jinn_node_status st;
    unsigned ready = 0, best = 0, best_count = 0, diverged = 0, missing = 0;
    char hex[17];

    jinn_node_status(ck->api->node, &st);
    rd->done = true;
    for (unsigned i = 0; i < rd->n; i++) {
        unsigned same = 0;
        if (rd->m[i].state != M_OK) {
            missing++;
            continue;
        }
        ready++;
        for (unsigned j = 0; j < rd->n; j++) {
            same += rd->m[j].state == M_OK && rd->m[j].d->total == rd->m[i].d->total;
        }
        if (same > best_count) {
            best_count = same;
            best = i;
        }
    }
    /* A majority of the members asked, not of those that answered: two
     * agreeing replicas of five must not outvote a third. */
    rd->has_majority = ready > 0 && best_count * 2 > rd->n;
    if (rd->has_majority) {
        rd->majority = rd->m[best].d->total;
        /* The same state digests the same redacted: any one of the majority
         * that published it speaks for all. */
        for (unsigned i = 0; i < rd->n && !rd->has_majority_redacted; i++) {
            if (rd->m[i].state == M_OK && rd->m[i].d->total == rd->majority &&
                rd->m[i].has_redacted) {
                rd->majority_redacted = rd->m[i].redacted;
                rd->has_majority_redacted = true;
            }
        }
    }
    for (unsigned i = 0; i < rd->n; i++) {
        struct member *m = &rd->m[i];
        if (m->state != M_OK || (rd->has_majority && m->d->total == rd->majority)) {
            continue;
        }
        if (!rd->has_majority) {
            if (best_count == ready) {
                continue; /* all that answered agree; too few to judge the rest */
            }
            m->state = M_DISAGREE;
            diverged++;
            continue;
        }
        m->state = M_DIVERGED;
        diff_sections(m->d, rd->m[best].d, m->diff, sizeof m->diff);
        diverged++;
        ck->divergences_total++;
        if (m->id == st.id) {
            jinn_error("REPLICA DIVERGENCE at index %" PRIu64 ": THIS NODE, the leader (%s), "
                       "differs from the majority in: %s. Its reads are refused; restart it so "
                       "that another node leads and this one rebuilds its state.",
                       rd->index, m->name, m->diff);
            ck->diverged = true;
            ck->diverged_index = rd->index;
            snprintf(ck->diverged_sections, sizeof ck->diverged_sections, "%s", m->diff);
        } else {
            jinn_error("replica divergence at index %" PRIu64
                       ": node %s differs from the majority in: %s",
                       rd->index, m->name, m->diff);
        }
    }
    if (ready > 0 && !rd->has_majority && best_count != ready) {
        jinn_error("replica divergence at index %" PRIu64
                   ": no digest is shared by a majority of the %u replicas that reported",
                   rd->index, ready);
        ck->divergences_total++;
    }
    rd->outcome = diverged > 0 ? "diverged" : missing > 0 ? "incomplete" : "agreed";
    ck->rounds_total++;
    if (diverged == 0 && missing == 0) {
        hex64(hex, rd->majority);
        jinn_info("check %" PRIu64 ": all %u replicas agree (digest %s)", rd->index, rd->n,
                  hex);
    } else if (diverged == 0) {
        jinn_warn("check %" PRIu64 ": %u of %u replicas agree, %u did not report", rd->index,
                  ready, rd->n, missing);
    }
}

static int digest_from_json(json_t *obj, struct jinn_digest *d)
{
    json_t *sections = json_object_get(obj, "sections");
    json_t *v;
    size_t i;
    d->n = 0;
    if (!json_is_array(sections) || json_array_size(sections) > JINN_DIGEST_SECTIONS_MAX ||
        !parse_hex64(json_string_value(json_object_get(obj, "digest")), &d->total)) {
        return -1;
    }
    json_array_foreach(sections, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        uint64_t h;
        if (name == NULL || strlen(name) >= JINN_DIGEST_NAME_MAX ||
            !parse_hex64(json_string_value(json_object_get(v, "digest")), &h) ||
            jinn_digest_add(d, name, h) != 0) {
            return -1;
        }
    }
    return 0;
}

static void digest_answered(void *data, int code, const struct jinn_http_msg *head,
                            const char *body, size_t body_len)
{
    struct ask *a = data;
    struct jinn_check *ck = a->check;
    struct round *rd = ck->round;
    struct member *m;
    json_t *obj = NULL;
    const char *state;

    ck->inflight--;
    if (ck->stopping || rd == NULL || rd->index != a->index || rd->done) {
        goto out;
    }
    m = &rd->m[a->member];
    m->asking = false;
    m->ask_after = now_ms(ck) + CHECK_ASK_EVERY_MS;
    if (code != JINN_OK || head->status != 200 || body_len > CHECK_RESPONSE_MAX) {
        goto out; /* asked again until the round's deadline */
    }
    obj = json_loadb(body, body_len, 0, NULL);
    state = json_string_value(json_object_get(obj, "state"));
    if (state == NULL ||
        json_integer_value(json_object_get(obj, "index")) != (json_int_t)a->index) {
        goto out;
    }
    if (strcmp(state, "missing") == 0) {
        m->state = M_MISSING;
    } else if (strcmp(state, "failed") == 0) {
        m->state = M_FAILED;
    } else if (strcmp(state, "ready") == 0) {
        m->d = jinn_malloc(sizeof *m->d);
        if (m->d != NULL && digest_from_json(obj, m->d) == 0) {
            m->d->index = a->index;
            m->state = M_OK;
            m->has_redacted = parse_hex64(
                json_string_value(json_object_get(obj, "redacted_digest")), &m->redacted);
        } else {
            jinn_free(m->d);
            m->d = NULL;
            m->state = M_FAILED;
        }
    }
out:
    json_decref(obj);
    jinn_free(a);
    maybe_free(ck);
}

static void ask_digest(struct jinn_check *ck, struct round *rd, unsigned i)
{
    struct member *m = &rd->m[i];
    struct ask *a;
    char target[64], auth[160];
    int n;

    if (m->api[0] == '\0') {
        return; /* not announced yet: asked once it is, until the deadline */
    }
    a = jinn_malloc(sizeof *a);
    if (a == NULL) {
        return;
    }
    a->check = ck;
    a->index = rd->index;
    a->member = i;
    n = snprintf(target, sizeof target, "/v1/internal/digest?index=%" PRIu64, rd->index);
    /* With tokens on, a node's own calls carry the cluster's internal key. */
    jinn_api_auth_internal_header(ck->api, auth, sizeof auth);
    if (jinn_fetch(ck->api->loop, m->api, "GET", target, (size_t)n, auth, NULL, 0,
                   CHECK_FETCH_MS, digest_answered, a) != 0) {
        jinn_free(a);
        m->ask_after = now_ms(ck) + CHECK_ASK_EVERY_MS;
        return;
    }
    m->asking = true;
    ck->inflight++;
}

static void round_tick(struct jinn_check *ck, struct round *rd)
{
    struct jinn_node_status st;
    bool all = true;
    uint64_t now = now_ms(ck);

    jinn_node_status(ck->api->node, &st);
    for (unsigned i = 0; i < rd->n; i++) {
        struct member *m = &rd->m[i];
        if (m->state != M_PENDING) {
            continue;
        }
        if (m->id == st.id) {
            const struct report *r = report_find(ck, rd->index);
            if (r == NULL) {
                m->state = M_MISSING;
            } else if (r->state == REPORT_FAILED) {
                m->state = M_FAILED;
            } else if (r->state == REPORT_READY) {
                m->d = jinn_malloc(sizeof *m->d);
                if (m->d == NULL) {
                    m->state = M_FAILED;
                } else {
                    *m->d = r->d;
                    m->state = M_OK;
                }
            }
        } else if (!m->asking && now >= m->ask_after) {
            /* The directory may have learnt the member's URL since. */
            for (unsigned j = 0; j < st.n_members; j++) {
                if (st.members[j].id == m->id && st.members[j].api != NULL) {
                    snprintf(m->api, sizeof m->api, "%s", st.members[j].api);
                }
            }
            ask_digest(ck, rd, i);
        }
        if (m->state == M_PENDING) {
            all = false;
        }
    }
    if (!all && now >= rd->deadline) {
        for (unsigned i = 0; i < rd->n; i++) {
            if (rd->m[i].state == M_PENDING) {
                rd->m[i].state = M_UNREACHABLE;
            }
        }
        all = true;
    }
    if (all) {
        finish_round(ck, rd);
    }
}

/* ---- this node learns the verdict ------------------------------------------ */

static void mark_diverged(struct jinn_check *ck, uint64_t index, const char *sections)
{
    if (!ck->diverged) {
        jinn_error("REPLICA DIVERGENCE at index %" PRIu64
                   ": the leader found this node's state "
                   "differs from the majority in: %s. Reads are refused here until this node "
                   "is restarted (it then rebuilds its state from the snapshot and log).",
                   index, sections);
    }
    ck->diverged = true;
    ck->diverged_index = index;
    snprintf(ck->diverged_sections, sizeof ck->diverged_sections, "%s", sections);
}

static void verdict_answered(void *data, int code, const struct jinn_http_msg *head,
                             const char *body, size_t body_len)
{
    struct ask *a = data;
    struct jinn_check *ck = a->check;
    struct report *r = report_find(ck, a->index);
    struct jinn_node_status st;
    json_t *obj = NULL, *nodes, *n;
    json_int_t index;
    size_t i;

    ck->inflight--;
    if (ck->stopping || r == NULL) {
        goto out;
    }
    r->asking = false;
    r->ask_after = now_ms(ck) + CHECK_ASK_EVERY_MS;
    if (code != JINN_OK || head->status != 200 || body_len > CHECK_RESPONSE_MAX * 8) {
        goto out;
    }
    obj = json_loadb(body, body_len, 0, NULL);
    index = json_integer_value(json_object_get(obj, "index"));
    if (index > (json_int_t)a->index) {
        r->verdict_known = true; /* a newer check replaced it */
        goto out;
    }
    if (index != (json_int_t)a->index || !json_is_true(json_object_get(obj, "done"))) {
        goto out;
    }
    r->verdict_known = true;
    if (jinn_node_is_replica(ck->api->node)) {
        /* An edge replica is no member of the round: it holds its digest
         * against the majority's. A mismatch stops it applying, as a
         * voter's divergence stops its reads. */
        const char *plain = json_string_value(json_object_get(obj, "majority"));
        const char *redacted = json_string_value(json_object_get(obj, "majority_redacted"));
        char mine[17];
        bool match, judged;
        /* Its auth section holds R where the voters hold the key: it is
         * compared with the majority's redacted digest. Its state equal to
         * the plain one is no divergence either (fed by a node of an older
         * build, it holds the key itself). A leader of an older build
         * publishes only the plain digest, which equals the redacted one
         * while no key exists; with a key there is nothing to judge by. */
        hex64(mine, r->d.total);
        match = (plain != NULL && strcmp(plain, mine) == 0) ||
                (redacted != NULL && strcmp(redacted, mine) == 0);
        judged = redacted != NULL || (plain != NULL && !r->has_key);
        if (!match && judged) {
            char why[160];
            mark_diverged(ck, a->index, "the replica's digest differs from the majority's");
            snprintf(why, sizeof why,
                     "its digest at check %" PRIu64 " is %s, the cluster's majority has %s",
                     a->index, mine, redacted != NULL ? redacted : plain);
            jinn_node_replica_halt(ck->api->node, why);
        } else if (match) {
            jinn_info("check %" PRIu64 ": this replica agrees with the cluster (digest %s)",
                      a->index, mine);
        } else if (plain != NULL) {
            jinn_warn("check %" PRIu64 ": the leader publishes no redacted digest (an older "
                      "build?); this replica cannot compare its state",
                      a->index);
        }
        goto out;
    }
    jinn_node_status(ck->api->node, &st);
    nodes = json_object_get(obj, "nodes");
    json_array_foreach(nodes, i, n)
    {
        const char *name = json_string_value(json_object_get(n, "name"));
        const char *state = json_string_value(json_object_get(n, "state"));
        const char *judged = json_string_value(json_object_get(n, "digest"));
        char mine[17];
        hex64(mine, r->d.total);
        /* Only a verdict on the digest this node holds now counts: after a
         * restart rebuilt the state, replaying the same CHECK gives another
         * digest, and the old verdict no longer applies. */
        if (name != NULL && state != NULL && judged != NULL && strcmp(name, st.name) == 0 &&
            strcmp(state, "diverged") == 0 && strcmp(judged, mine) == 0) {
            const char *sections = json_string_value(json_object_get(n, "sections_differing"));
            mark_diverged(ck, a->index, sections ? sections : "?");
        }
    }
out:
    json_decref(obj);
    jinn_free(a);
    maybe_free(ck);
}

static void verdict_tick(struct jinn_check *ck)
{
    struct jinn_node_status st;
    struct report *r = ck->reports[CHECK_REPORTS - 1];
    uint64_t now = now_ms(ck);
    struct ask *a;
    char auth[1200]; /* a replica_token is at most 1024 bytes (config.c) */

    if (r == NULL || r->state != REPORT_READY || r->verdict_known || r->asking ||
        now < r->ask_after) {
        return;
    }
    if (now >= r->ask_until) {
        r->verdict_known = true; /* the leader never decided: nothing to learn */
        return;
    }
    jinn_node_status(ck->api->node, &st);
    if (st.leader_api == NULL || st.role == JINN_ROLE_LEADER) {
        return; /* the leader marks itself in finish_round */
    }
    a = jinn_malloc(sizeof *a);
    if (a == NULL) {
        return;
    }
    a->check = ck;
    a->index = r->d.index;
    a->member = 0;
    if (jinn_node_is_replica(ck->api->node)) {
        /* An edge replica has no internal key: its own token (the
         * cluster:replica rule allows this GET) */
        const char *t = ck->api->cfg->replica_token;
        int n = 0;
        auth[0] = '\0';
        if (t != NULL) {
            n = snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", t);
        }
        if (n < 0 || (size_t)n >= sizeof auth) {
            auth[0] = '\0';
        }
    } else {
        jinn_api_auth_internal_header(ck->api, auth, sizeof auth);
    }
    if (jinn_fetch(ck->api->loop, st.leader_api, "GET", "/v1/cluster/check", 17, auth, NULL, 0,
                   CHECK_FETCH_MS, verdict_answered, a) != 0) {
        jinn_free(a);
        r->ask_after = now + CHECK_ASK_EVERY_MS;
        return;
    }
    r->asking = true;
    ck->inflight++;
}

/* ---- the schedule ---------------------------------------------------------- */

static void proposed(void *data, int code, const struct jinn_result *res)
{
    struct jinn_check *ck = data;
    (void)res;
    ck->proposing--;
    if (code != JINN_OK) {
        jinn_warn("check: the periodic CHECK did not commit (%s)", jinn_error_name(code));
    }
    maybe_free(ck);
}

static void on_tick(uv_timer_t *t)
{
    struct jinn_check *ck = t->data;
    struct jinn_api *api = ck->api;
    bool leader = jinn_node_is_leader(api->node);
    uint64_t now = now_ms(ck);

    if (ck->stopping) {
        return;
    }
    if (leader && !ck->was_leader) {
        ck->last_proposed = now; /* a new leader waits a full interval */
    }
    ck->was_leader = leader;
    if (leader && api->cfg->check_interval_ms > 0 && ck->proposing == 0 &&
        now - ck->last_proposed >= api->cfg->check_interval_ms) {
        struct jinn_cmd c;
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_CHECK;
        ck->last_proposed = now;
        if (jinn_node_propose(api->node, &c, api->cfg->request_timeout_ms, proposed, ck) ==
            JINN_OK) {
            ck->proposing++;
        }
    }
    if (ck->round != NULL && !ck->round->done) {
        if (leader) {
            round_tick(ck, ck->round);
        } else {
            ck->round->done = true; /* lost leadership: the next leader checks again */
            ck->round->outcome = "incomplete";
        }
    }
    verdict_tick(ck);
}

void jinn_api_check_init(struct jinn_api *api)
{
    struct jinn_check *ck = jinn_calloc(1, sizeof *ck);
    if (ck == NULL) {
        jinn_error("check: out of memory; replica checks are off");
        return;
    }
    ck->api = api;
    uv_timer_init(api->loop, &ck->tick);
    ck->tick.data = ck;
    uv_timer_start(&ck->tick, on_tick, CHECK_TICK_MS, CHECK_TICK_MS);
    uv_unref((uv_handle_t *)&ck->tick); /* never keeps the loop alive */
    api->check = ck;
}

static void maybe_free(struct jinn_check *ck)
{
    if (!ck->stopping || !ck->timer_closed || ck->inflight > 0 || ck->proposing > 0) {
        return;
    }
    for (int i = 0; i < CHECK_REPORTS; i++) {
        report_free(ck->reports[i]);
    }
    round_free(ck->round);
    jinn_free(ck);
}

static void tick_closed(uv_handle_t *h)
{
    struct jinn_check *ck = h->data;
    ck->timer_closed = true;
    maybe_free(ck);
}

void jinn_api_check_stop(struct jinn_api *api)
{
    struct jinn_check *ck = api->check;
    if (ck == NULL || ck->stopping) {
        return;
    }
    ck->stopping = true;
    api->check = NULL;
    uv_close((uv_handle_t *)&ck->tick, tick_closed);
}

/* ---- what others see ------------------------------------------------------- */

bool jinn_api_check_diverged(const struct jinn_api *api)
{
    return api->check != NULL && api->check->diverged;
}

void jinn_api_check_status(const struct jinn_api *api, json_t *status)
{
    const struct jinn_check *ck = api->check;
    bool diverged = ck != NULL && ck->diverged;
    json_object_set_new(status, "diverged", json_boolean(diverged));
    if (diverged) {
        json_object_set_new(status, "divergence",
                            json_pack("{s:I, s:s}", "index", (json_int_t)ck->diverged_index,
                                      "sections", ck->diverged_sections));
    }
}

void jinn_api_check_metrics(const struct jinn_api *api, struct jinn_wbuf *w)
{
    const struct jinn_check *ck = api->check;
    jinn_wbuf_printf(
        w,
        "# HELP jinn_replica_divergence_total Replicas this node, as leader, found "
        "diverged from the majority digest.\n"
        "# TYPE jinn_replica_divergence_total counter\n"
        "jinn_replica_divergence_total %" PRIu64 "\n"
        "# HELP jinn_replica_diverged 1 when this node was found diverged (reads "
        "refused until restart).\n"
        "# TYPE jinn_replica_diverged gauge\n"
        "jinn_replica_diverged %d\n"
        "# HELP jinn_replica_checks_total Replica checks this node compared as "
        "leader.\n"
        "# TYPE jinn_replica_checks_total counter\n"
        "jinn_replica_checks_total %" PRIu64 "\n",
        ck ? ck->divergences_total : 0, ck ? (int)ck->diverged : 0, ck ? ck->rounds_total : 0);
}

static json_t *digest_json(const struct jinn_digest *d)
{
    json_t *list = json_array();
    char hex[17];
    for (unsigned i = 0; list != NULL && i < d->n; i++) {
        hex64(hex, d->sections[i].hash);
        json_array_append_new(
            list, json_pack("{s:s, s:s}", "name", d->sections[i].name, "digest", hex));
    }
    return list;
}

/* GET /v1/internal/digest?index=N: this node's digest at N. */
void jinn_api_check_digest(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args)
{
    struct jinn_node_status st;
    const struct report *r;
    char buf[32], hex[17];
    unsigned long long index;
    char *end;
    json_t *obj;
    (void)args;

    long n = jinn_http_query_get(req->query, req->query_len, "index", buf, sizeof buf);
    /* The index is echoed as a JSON integer: past 2^63-1 it would come back
     * negative; a decoded %00 must not cut the digits short either. */
    if (n <= 0 || strlen(buf) != (size_t)n || buf[0] < '0' || buf[0] > '9' ||
        (index = strtoull(buf, &end, 10), *end != '\0') || index == 0 ||
        index > (unsigned long long)INT64_MAX) {
        jinn_http_reply_error(req, JINN_EINVAL, "index must be a log index");
        return;
    }
    if (api->check == NULL) {
        jinn_http_reply_error(req, JINN_ESHUTDOWN, NULL);
        return;
    }
    jinn_node_status(api->node, &st);
    r = report_find(api->check, index);
    if (r == NULL) {
        obj = json_pack("{s:I, s:s, s:s}", "index", (json_int_t)index, "node", st.name, "state",
                        st.applied_index < index ? "pending" : "missing");
    } else if (r->state == REPORT_PENDING) {
        obj = json_pack("{s:I, s:s, s:s}", "index", (json_int_t)index, "node", st.name, "state",
                        "pending");
    } else if (r->state == REPORT_FAILED) {
        obj = json_pack("{s:I, s:s, s:s, s:s}", "index", (json_int_t)index, "node", st.name,
                        "state", "failed", "error", r->error);
    } else {
        char red[17];
        hex64(hex, r->d.total);
        hex64(red, r->redacted);
        obj = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:b}", "index",
                        (json_int_t)index, "node", st.name, "state", "ready", "digest", hex,
                        "redacted_digest", red, "sections", digest_json(&r->d), "loop_us",
                        (json_int_t)r->loop_us, "pool_us", (json_int_t)r->pool_us,
                        "verdict_checked", r->verdict_known);
    }
    if (obj == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    jinn_http_reply_json(req, 200, obj);
}

/* GET /v1/cluster/check (leader): the latest check's comparison. */
void jinn_api_check_show(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    const struct round *rd = api->check ? api->check->round : NULL;
    json_t *obj, *nodes;
    char hex[17], red[17];
    (void)args;

    if (rd == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no check has run since this node leads");
        return;
    }
    nodes = json_array();
    for (unsigned i = 0; nodes != NULL && i < rd->n; i++) {
        const struct member *m = &rd->m[i];
        json_t *n = json_pack("{s:s, s:I, s:s}", "name", m->name, "id", (json_int_t)m->id,
                              "state", member_state_names[m->state]);
        if (n != NULL && m->d != NULL) {
            hex64(hex, m->d->total);
            json_object_set_new(n, "digest", json_string(hex));
            json_object_set_new(n, "sections", digest_json(m->d));
        }
        if (n != NULL && m->diff[0] != '\0') {
            json_object_set_new(n, "sections_differing", json_string(m->diff));
        }
        json_array_append_new(nodes, n);
    }
    hex64(hex, rd->majority);
    hex64(red, rd->majority_redacted);
    obj = json_pack(
        "{s:I, s:s, s:b, s:s?, s:s?, s:I, s:o}", "index", (json_int_t)rd->index, "state",
        rd->outcome, "done", rd->done, "majority", rd->has_majority ? hex : NULL,
        "majority_redacted", rd->has_majority_redacted ? red : NULL, "age_ms",
        (json_int_t)(uv_now(api->loop) - rd->started), "nodes", nodes ? nodes : json_array());
    if (obj == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    jinn_http_reply_json(req, 200, obj);
}

static void check_committed(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_result *res)
{
    (void)api;
    if (res->code != JINN_OK) {
        jinn_http_reply_error(req, res->code, NULL);
        return;
    }
    jinn_http_reply_json(
        req, 200, json_pack("{s:I, s:b}", "index", (json_int_t)res->index, "started", 1));
}

/* POST /v1/cluster/check (leader): starts a check, answers its index. While
 * one is being proposed or compared, answers that one instead: clients
 * cannot make every replica digest its state back to back. */
void jinn_api_check_start(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args)
{
    struct jinn_check *ck = api->check;
    struct jinn_cmd c;
    (void)args;

    if (ck == NULL) {
        jinn_http_reply_error(req, JINN_ESHUTDOWN, NULL);
        return;
    }
    if (ck->round != NULL && !ck->round->done) {
        jinn_http_reply_json(
            req, 200,
            json_pack("{s:I, s:b}", "index", (json_int_t)ck->round->index, "started", 0));
        return;
    }
    if (ck->last_manual != 0 && now_ms(ck) - ck->last_manual < CHECK_MIN_GAP_MS) {
        jinn_http_reply_error(req, JINN_EBUSY, "a check was started less than a second ago");
        return;
    }
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_CHECK;
    ck->last_manual = now_ms(ck);
    ck->last_proposed = now_ms(ck);
    jinn_api_propose_or_reply(api, req, &c, check_committed);
}
