/* fsm.c - apply, snapshot and restore for the replicated state machine.
 *
 * Snapshot format, version 3 (all integers little-endian):
 *
 *   "JINNSNAP"  u32 version  u64 cluster_time_ms
 *   nodes section (nodes.c)
 *   kv section (kv.c)
 *   locks section (lock.c)
 *   queues section (queue.c; messages carry leased_ms from v3 on)
 *   functions section (fn.c): versions, settings, module hashes (v2 on),
 *     then the signing policy (v3 on)
 *   jobs section (jobs.c): kept results, cron schedules (v3 on)
 *   auth section (auth.c): the internal key, tokens, function scopes (v3 on)
 *   sql section (sql.c): every database image
 *   module bytes (fn.c), in the functions section's order (v2 only)
 *   u32 crc32 of every byte before it
 *
 * Version 2 is version 3 without leased_ms, the signing policy, the jobs
 * section and the auth section (auth.c: the internal key and the tokens);
 * version 1 is version 2 without the functions section. Both are still
 * read (as never leased, no policy, no jobs, no tokens, no functions).
 *
 * A restore decodes into a fresh state and swaps it in only when the whole
 * snapshot, checksum included, is valid. */
#include "fsm/fsm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fatal.h"
#include "log.h"

/* ---- the fatal-apply path (fatal.h) -------------------------------------- */

static uint64_t fatal_index;
static int fatal_type;

void jinn_fsm_fatal_context(uint64_t index, int type)
{
    fatal_index = index;
    fatal_type = type;
}

void jinn_fsm_fatal(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (fatal_type != 0) {
        jinn_error("fatal apply: entry %llu (%s, type %d): %s; stopping this node without "
                   "applying it (a restart replays the log)",
                   (unsigned long long)fatal_index, jinn_cmd_type_name(fatal_type), fatal_type,
                   msg);
    } else {
        jinn_error("fatal apply: %s; stopping this node", msg);
    }
#ifdef JINN_FUZZ
    abort(); /* a fuzzer keeps the input that got here (it ignores _exit) */
#endif
    _exit(JINN_EXIT_FATAL_APPLY);
}

void jinn_fsm_link(struct jinn_tree *t, struct jinn_tree_node *n, const char *what)
{
    if (jinn_tree_insert(t, n) != NULL) {
        jinn_fsm_fatal("%s: an equal entry is already indexed (the order is not total)", what);
    }
}

void jinn_fsm_unlink(struct jinn_tree *t, struct jinn_tree_node *n, const char *what)
{
    if (jinn_tree_remove(t, n) != n) {
        jinn_fsm_fatal("%s: the entry to remove is not indexed", what);
    }
}

/* ---- apply ----------------------------------------------------------------- */

/* A function scope (TOKEN_PUT, FNSCOPE) is proposed right after its
 * deploy; it applies only when that deploy did: the deploy dropped the
 * function's scope, so the function has an active version and no scope.
 * A refused deploy leaves the old scope (or no function), and its scope is
 * refused. A pure function of the state: every replica decides alike. */
static bool scope_wanted(const struct jinn_fsm *fsm, const struct jinn_cmd *c)
{
    char name[JINN_CMD_FN_NAME_MAX + 1];
    const struct jinn_fn *fn;
    if (c->token.name.len == 0 || c->token.name.len > JINN_CMD_FN_NAME_MAX) {
        return false;
    }
    memcpy(name, c->token.name.p, c->token.name.len);
    name[c->token.name.len] = '\0';
    fn = jinn_fns_get(&fsm->fns, name);
    if (c->token.deployer.len > 0 &&
        jinn_auth_find(&fsm->auth, (const char *)c->token.deployer.p, c->token.deployer.len) ==
            NULL) {
        return false; /* revoked meanwhile: a later token of that name gets nothing */
    }
    return fn != NULL && fn->active != NULL &&
           jinn_auth_fn_scope(&fsm->auth, name, c->token.name.len) == NULL;
}

static const struct jinn_result *apply_at(struct jinn_fsm *fsm, uint64_t index,
                                          const void *buf, size_t len)
{
    struct jinn_cmd c;
    int rv;

    fsm->result.code = JINN_OK;
    fsm->result.index = index;
    fsm->result.value = 0;
    rv = jinn_cmd_decode(buf, len, &c);
    if (rv == JINN_EVERSION) {
        /* Written by a newer build: applying it is impossible and skipping
         * it would fork the state from the replicas that can. */
        const uint8_t *b = buf;
        jinn_fsm_fatal_context(0, 0);
        jinn_fsm_fatal("entry %llu has command version %u / type %u / flags %u this build "
                       "does not know (it knows versions %u-%u, types 1-%u, flags 0); upgrade "
                       "this node",
                       (unsigned long long)index, b[1], b[2], b[3], JINN_CMD_VERSION_MIN,
                       JINN_CMD_VERSION,
                       JINN_CMD_TYPE_MAX - 1);
    }
    if (rv != 0) {
        /* A known version and type with a malformed body: the same bytes
         * are refused identically on every replica, so changing nothing is
         * deterministic (not even cluster time moves). */
        jinn_warn("entry %llu: undecodable command (%s), no change",
                  (unsigned long long)index, jinn_error_name(rv));
        fsm->result.code = rv;
        return &fsm->result;
    }
    jinn_fsm_fatal_context(index, c.type);
    if (c.time_ms > fsm->time_ms) {
        fsm->time_ms = c.time_ms;
    }
    /* A new leader's orphans leave before the sweep, which could otherwise
     * grant one of them a lock that expired meanwhile. */
    if (c.type == JINN_CMD_LOCK_ORPHANS) {
        fsm->result.value = jinn_locks_drop_waiters_before(&fsm->locks, index);
    }
    /* Expiry first: a key whose TTL passed is gone before this command
     * looks at it, on every replica alike. */
    jinn_kv_expire(&fsm->kv, index, fsm->time_ms);
    jinn_locks_expire(&fsm->locks, index, fsm->time_ms);
    jinn_queues_expire(&fsm->queues, fsm->time_ms);
    jinn_jobs_expire(&fsm->jobs, fsm->time_ms);
    switch (c.type) {
    case JINN_CMD_NOOP:
    case JINN_CMD_LOCK_ORPHANS:
        break;
    case JINN_CMD_CHECK:
        /* Changes nothing: the apply hook digests the state as of this
         * index on every replica (api/check.c). */
        fsm->check_index = index;
        break;
    case JINN_CMD_NODE_SET:
    case JINN_CMD_NODE_DEL:
        rv = jinn_nodes_apply(&fsm->nodes, &c);
        break;
    case JINN_CMD_KV_PUT:
    case JINN_CMD_KV_DEL:
        /* A fenced write applies only while its lock is held with that
         * token: checked here, atomically with the write. */
        if ((c.kv.flags & JINN_KV_FENCED) &&
            !jinn_locks_fence_ok(&fsm->locks, c.kv.fence.p, c.kv.fence.len, c.kv.fence_token)) {
            rv = JINN_ECONFLICT;
        } else if (c.type == JINN_CMD_KV_PUT) {
            rv = jinn_kv_put(&fsm->kv, index, fsm->time_ms, &c, &fsm->result.value);
        } else {
            rv = jinn_kv_del(&fsm->kv, index, &c, &fsm->result.value);
        }
        break;
    case JINN_CMD_LOCK_ACQUIRE:
        rv = jinn_locks_acquire(&fsm->locks, index, fsm->time_ms, &c, &fsm->result.value);
        break;
    case JINN_CMD_LOCK_REFRESH:
        rv = jinn_locks_refresh(&fsm->locks, fsm->time_ms, &c);
        break;
    case JINN_CMD_LOCK_RELEASE:
        rv = jinn_locks_release(&fsm->locks, index, fsm->time_ms, &c);
        break;
    case JINN_CMD_LOCK_WITHDRAW:
        rv = jinn_locks_withdraw(&fsm->locks, &c, &fsm->result.value);
        break;
    case JINN_CMD_FN_DEPLOY:
    case JINN_CMD_FN_DEPLOY2:
    case JINN_CMD_FN_DELETE:
    case JINN_CMD_FN_ROLLBACK:
        rv = jinn_fns_apply(&fsm->fns, index, fsm->time_ms, &c, &fsm->result.value);
        if (rv == JINN_OK) {
            /* The cron schedule follows the active version. */
            jinn_jobs_fn_changed(&fsm->jobs, &fsm->fns, (const char *)c.fn.name.p,
                                 c.fn.name.len, fsm->time_ms);
            if ((c.type == JINN_CMD_FN_DELETE && (c.fn.flags & JINN_CMD_FN_PURGE)) ||
                c.type == JINN_CMD_FN_DEPLOY || c.type == JINN_CMD_FN_DEPLOY2) {
                /* A purged function's scope goes with it; a new version's
                 * scope is the TOKEN_PUT its deploy proposed right after
                 * (api/auth.c): until it applies, host calls get 401. */
                jinn_auth_scope_drop(&fsm->auth, (const char *)c.fn.name.p, c.fn.name.len);
            }
        }
        break;
    case JINN_CMD_FN_POLICY:
        rv = jinn_fns_apply(&fsm->fns, index, fsm->time_ms, &c, &fsm->result.value);
        break;
    case JINN_CMD_JOB_ACK:
        rv = jinn_jobs_ack(&fsm->jobs, &fsm->queues, index, fsm->time_ms, &c,
                           &fsm->result.value);
        break;
    case JINN_CMD_JOB_CRON:
        rv = jinn_jobs_cron(&fsm->jobs, &fsm->queues, index, fsm->time_ms, &c,
                            &fsm->result.value);
        break;
    case JINN_CMD_TOKEN_PUT:
    case JINN_CMD_TOKEN_PUT2:
    case JINN_CMD_TOKEN_REVOKE:
        if (jinn_cmd_is_token_put(c.type) && (c.token.flags & JINN_CMD_TOKEN_FNSCOPE) &&
            !scope_wanted(fsm, &c)) {
            rv = JINN_ECONFLICT; /* its deploy was refused: the old scope stays */
            break;
        }
        rv = jinn_auth_apply(&fsm->auth, &c);
        break;
    case JINN_CMD_SQL_EXEC:
        if (c.sql.fence.len > 0 &&
            !jinn_locks_fence_ok(&fsm->locks, c.sql.fence.p, c.sql.fence.len,
                                 c.sql.fence_token)) {
            rv = JINN_ECONFLICT; /* fenced out: nothing runs */
            break;
        }
        rv = jinn_sql_exec(&fsm->sql, index, fsm->time_ms, &c);
        if (rv == JINN_EIO) {
            /* The database could not be written after retries (sql.c
             * logged why): this replica cannot follow the others. */
            jinn_fsm_fatal("sql database unavailable");
        }
        break;
    default:
        if (!jinn_cmd_is_queue(c.type)) {
            /* decode accepted a type this switch does not handle */
            jinn_fsm_fatal("command type %d decodes but has no apply", c.type);
        }
        rv = jinn_queues_apply(&fsm->queues, index, fsm->time_ms, &c, &fsm->result.value);
        break;
    }
    if (rv == JINN_ENOMEM) {
        /* Failing here while other replicas succeed would fork the state:
         * stop instead, and let the log replay after restart. */
        jinn_fsm_fatal("out of memory");
    }
    jinn_fsm_fatal_context(0, 0);
    fsm->applied++;
    fsm->result.code = rv;
    return &fsm->result;
}

const struct jinn_result *jinn_fsm_apply_buf(struct jinn_fsm *fsm, uint64_t index,
                                             const void *buf, size_t len)
{
    return apply_at(fsm, index, buf, len);
}

static int fsm_apply(struct raft_fsm *iface, const struct raft_buffer *buf, void **result)
{
    struct jinn_fsm *fsm = iface->data;
    /* libraft 0.15 advances last_applied only after apply returns. */
    uint64_t index = fsm->raft->last_applied + 1;
    *result = (void *)apply_at(fsm, index, buf->base, buf->len);
    if (fsm->on_record != NULL) {
        fsm->on_record(fsm->on_record_data, index, buf->base, buf->len);
    }
    if (fsm->on_apply != NULL) {
        fsm->on_apply(fsm->on_apply_data, index);
    }
    return 0;
}

/* Everything in memory, in snapshot order; the SQL section and the CRC
 * follow. */
static int encode_memory_as(const struct jinn_fsm *fsm, struct jinn_wbuf *w, bool redact)
{
    jinn_wbuf_put_raw(w, JINN_SNAPSHOT_MAGIC, 8);
    jinn_wbuf_put_u32(w, JINN_SNAPSHOT_VERSION);
    jinn_wbuf_put_u64(w, fsm->time_ms);
    jinn_nodes_encode(&fsm->nodes, w);
    jinn_kv_encode(&fsm->kv, w);
    jinn_locks_encode(&fsm->locks, w);
    jinn_queues_encode(&fsm->queues, w);
    jinn_fns_encode(&fsm->fns, w);
    jinn_jobs_encode(&fsm->jobs, w);
    if (redact) {
        return jinn_auth_encode_redacted(&fsm->auth, w);
    }
    jinn_auth_encode(&fsm->auth, w);
    return 0;
}

static void encode_memory(const struct jinn_fsm *fsm, struct jinn_wbuf *w)
{
    (void)encode_memory_as(fsm, w, false);
}

static int encode_crc(struct jinn_wbuf *w, size_t start)
{
    if (w->failed) {
        return JINN_ENOMEM;
    }
    jinn_wbuf_put_u32(w, jinn_crc32(0, w->data + start, w->len - start));
    return w->failed ? JINN_ENOMEM : 0;
}

int jinn_fsm_encode(const struct jinn_fsm *fsm, struct jinn_wbuf *w)
{
    size_t start = w->len;
    encode_memory(fsm, w);
    jinn_sql_encode(&fsm->sql, w);
    jinn_fns_encode_modules(&fsm->fns, w);
    return encode_crc(w, start);
}

/* Whether the SQL section's framing (count, then name and image per
 * database) ends exactly where the snapshot does. Checked before
 * jinn_sql_decode, which rewrites files: a snapshot refused after that
 * would leave new databases under the old in-memory state. */
static bool sql_section_ends(const struct jinn_rbuf *r)
{
    struct jinn_rbuf c = *r;
    uint32_t count = jinn_rbuf_get_u32(&c);
    if (c.failed || count > JINN_SQL_DBS_MAX) {
        return false;
    }
    for (uint32_t i = 0; i < count && !c.failed; i++) {
        const uint8_t *p;
        (void)jinn_rbuf_get_bytes(&c, &p, JINN_SQL_DB_MAX);
        (void)jinn_rbuf_get_bytes(&c, &p, UINT32_MAX);
    }
    return !c.failed && c.left == 0;
}

/* A decoded snapshot waiting to be swapped in (jinn_fsm_restore_prepare),
 * and after the swap the state it replaced, freed with it. */
struct jinn_fsm_restore {
    uint64_t time_ms;
    bool swapped;
    struct jinn_nodes nodes;
    struct jinn_kv kv;
    struct jinn_locks locks;
    struct jinn_queues queues;
    struct jinn_fns fns;
    struct jinn_jobs jobs;
    struct jinn_auth auth;
    struct jinn_sql_restore *sql;
};

void jinn_fsm_restore_free(struct jinn_fsm_restore *rs)
{
    if (rs == NULL) {
        return;
    }
    /* Before the swap: the decoded state; after it: the replaced one,
     * except its functions (cleared on the loop, see commit). */
    jinn_nodes_clear(&rs->nodes);
    jinn_kv_clear(&rs->kv);
    jinn_locks_clear(&rs->locks);
    jinn_queues_clear(&rs->queues);
    if (!rs->swapped) {
        jinn_fns_clear(&rs->fns);
    }
    jinn_jobs_clear(&rs->jobs);
    jinn_auth_clear(&rs->auth);
    jinn_sql_restore_free(rs->sql);
    jinn_free(rs);
}

int jinn_fsm_restore_prepare(const struct jinn_fsm *fsm, const void *buf, size_t len,
                             struct jinn_fsm_restore **out)
{
    struct jinn_rbuf r;
    struct jinn_fsm_restore *rs;
    uint32_t version, crc;
    int rv;

    *out = NULL;
    if (len < 8 + 4 + 8 + 4 || memcmp(buf, JINN_SNAPSHOT_MAGIC, 8) != 0) {
        return JINN_ECORRUPT;
    }
    /* The version before the checksum: a newer format may checksum
     * differently, and must be refused as "newer", not as "corrupt". */
    jinn_rbuf_init(&r, (const uint8_t *)buf + 8, 4);
    version = jinn_rbuf_get_u32(&r);
    if (version < JINN_SNAPSHOT_VERSION_MIN || version > JINN_SNAPSHOT_VERSION) {
        jinn_error("snapshot has format version %u; this build reads versions %u-%u only; "
                   "upgrade this node",
                   version, JINN_SNAPSHOT_VERSION_MIN, JINN_SNAPSHOT_VERSION);
        return JINN_EVERSION;
    }
    jinn_rbuf_init(&r, (const uint8_t *)buf + len - 4, 4);
    crc = jinn_rbuf_get_u32(&r);
    if (crc != jinn_crc32(0, buf, len - 4)) {
        return JINN_ECORRUPT;
    }
    jinn_rbuf_init(&r, (const uint8_t *)buf + 12, len - 8 - 4 - 4);
    rs = jinn_calloc(1, sizeof *rs);
    if (rs == NULL) {
        return JINN_ENOMEM;
    }
    rs->time_ms = jinn_rbuf_get_u64(&r);
    jinn_jobs_init(&rs->jobs);
    jinn_fns_init(&rs->fns);
    jinn_queues_init(&rs->queues);
    jinn_nodes_init(&rs->nodes);
    jinn_kv_init(&rs->kv);
    jinn_locks_init(&rs->locks);
    jinn_auth_init(&rs->auth);
    rv = jinn_nodes_decode(&rs->nodes, &r);
    if (rv == 0) {
        rv = jinn_kv_decode(&rs->kv, &r);
    }
    if (rv == 0) {
        rv = jinn_locks_decode(&rs->locks, &r);
    }
    if (rv == 0) {
        rv = jinn_queues_decode(&rs->queues, &r, version);
    }
    if (rv == 0 && version >= 2) {
        rv = jinn_fns_decode(&rs->fns, &r, version);
        /* The module bytes end the snapshot (after the SQL images): their
         * length is known now, so they are read before SQL writes files. */
        if (rv == 0 && jinn_fns_module_bytes(&rs->fns) > r.left) {
            rv = JINN_ECORRUPT;
        }
        if (rv == 0) {
            size_t n = (size_t)jinn_fns_module_bytes(&rs->fns);
            r.left -= n;
            rv = jinn_fns_decode_modules(&rs->fns, r.p + r.left, n);
        }
    }
    if (rv == 0 && version >= 3) {
        rv = jinn_jobs_decode(&rs->jobs, &rs->fns, &r);
        if (rv == 0) {
            rv = jinn_auth_decode(&rs->auth, &r);
        }
    }
    if (rv == 0 && (r.failed || !sql_section_ends(&r))) {
        rv = JINN_ECORRUPT; /* nothing written yet */
    }
    if (rv == 0) {
        /* Last, after every other section validated: it writes files
         * (beside the live ones; swapped in by commit). */
        rv = jinn_sql_restore_write(&fsm->sql, &r, &rs->sql);
    }
    if (rv == 0 && (r.failed || r.left != 0)) {
        rv = JINN_ECORRUPT;
    }
    if (rv != 0) {
        jinn_fsm_restore_free(rs);
        return rv;
    }
    *out = rs;
    return 0;
}

/* Swaps by moving structs: every tree points into its own entries only,
 * so moving the struct is safe, and each move is O(1). The replaced
 * sections go into rs, to be freed where the caller likes (a replica
 * frees them off the loop). */
#define SWAP_SECTION(a, b)                                                                     \
    do {                                                                                       \
        __typeof__(a) tmp_ = (a);                                                              \
        (a) = (b);                                                                             \
        (b) = tmp_;                                                                            \
    } while (0)

void jinn_fsm_restore_commit(struct jinn_fsm *fsm, struct jinn_fsm_restore *rs)
{
    uint64_t generation = fsm->fns.generation;
    /* Functions: the old ones are cleared here, on the loop (pins and
     * runners count on the loop; their number is bounded by
     * JINN_FN_MAX). The generation goes on from the old state's (the
     * runner compares). */
    jinn_fns_clear(&fsm->fns);
    fsm->fns = rs->fns;
    fsm->fns.generation = generation + 1;
    SWAP_SECTION(fsm->jobs, rs->jobs);
    SWAP_SECTION(fsm->auth, rs->auth);
    SWAP_SECTION(fsm->locks, rs->locks);
    SWAP_SECTION(fsm->queues, rs->queues);
    SWAP_SECTION(fsm->nodes, rs->nodes);
    SWAP_SECTION(fsm->kv, rs->kv);
    fsm->time_ms = rs->time_ms;
    rs->swapped = true;
    jinn_sql_restore_swap(&fsm->sql, rs->sql);
}

int jinn_fsm_decode(struct jinn_fsm *fsm, const void *buf, size_t len)
{
    struct jinn_fsm_restore *rs;
    int rv = jinn_fsm_restore_prepare(fsm, buf, len, &rs);
    if (rv != 0) {
        return rv;
    }
    jinn_fsm_restore_commit(fsm, rs);
    jinn_fsm_restore_free(rs);
    return 0;
}

/* A snapshot is taken in two steps so that SQL images, the bulk of it, are
 * never copied on the event loop. On the loop (fsm_snapshot, between two
 * applies) the in-memory sections are encoded and every database is pinned
 * by a WAL read transaction; on libraft's worker (fsm_snapshot_async) the
 * pinned images are appended and the CRC closes it. The bytes are exactly
 * those jinn_fsm_encode would have produced at that index. libraft takes
 * one snapshot at a time, so one pending job suffices. */
struct jinn_snap_job {
    struct jinn_wbuf w;
    struct jinn_sql_pin *pin;
    struct jinn_fns_pin *fns_pin; /* released on the loop (finalize) */
};

static void snap_job_free(struct jinn_fsm *fsm)
{
    if (fsm->snap != NULL) {
        jinn_sql_pin_free(fsm->snap->pin);
        jinn_fns_pin_free(fsm->snap->fns_pin);
        jinn_wbuf_free(&fsm->snap->w);
        jinn_free(fsm->snap);
        fsm->snap = NULL;
    }
}

static int fsm_snapshot(struct raft_fsm *iface, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct jinn_fsm *fsm = iface->data;
    struct jinn_snap_job *job;

    if (fsm->snap != NULL) {
        return RAFT_BUSY; /* libraft retries later */
    }
    job = jinn_calloc(1, sizeof *job);
    *bufs = raft_malloc(sizeof **bufs);
    if (job == NULL || *bufs == NULL) {
        goto nomem;
    }
    jinn_wbuf_init(&job->w);
    *n_bufs = 1;
    if (iface->snapshot_async == NULL) {
        /* Synchronous (an io without async_work): all of it, here. */
        if (jinn_fsm_encode(fsm, &job->w) != 0) {
            goto nomem;
        }
        (*bufs)[0].base = job->w.data; /* transferred; freed in fsm_snapshot_finalize */
        (*bufs)[0].len = job->w.len;
        jinn_free(job);
        return 0;
    }
    encode_memory(fsm, &job->w);
    if (job->w.failed || jinn_sql_pin(&fsm->sql, &job->pin) != 0) {
        goto nomem;
    }
    if (jinn_fns_pin(&fsm->fns, &job->fns_pin) != 0) {
        jinn_sql_pin_free(job->pin);
        goto nomem;
    }
    (*bufs)[0].base = NULL; /* filled by fsm_snapshot_async */
    (*bufs)[0].len = 0;
    fsm->snap = job;
    return 0;

nomem:
    if (job != NULL) {
        jinn_wbuf_free(&job->w);
    }
    jinn_free(job);
    raft_free(*bufs);
    *bufs = NULL;
    return RAFT_NOMEM;
}

/* On libraft's worker thread: touches only the job, never the FSM. */
static int fsm_snapshot_async(struct raft_fsm *iface, struct raft_buffer *bufs[],
                              unsigned *n_bufs)
{
    struct jinn_snap_job *job = ((struct jinn_fsm *)iface->data)->snap;
    int rv;

    (void)n_bufs;
    jinn_sql_pin_encode(job->pin, &job->w);
    jinn_sql_pin_free(job->pin);
    job->pin = NULL;
    jinn_fns_pin_encode(job->fns_pin, &job->w);
    rv = encode_crc(&job->w, 0);
    if (rv != 0) {
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = job->w.data; /* transferred; freed in fsm_snapshot_finalize */
    (*bufs)[0].len = job->w.len;
    job->w.data = NULL;
    job->w.len = 0;
    return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *iface, struct raft_buffer *bufs[],
                                 unsigned *n_bufs)
{
    snap_job_free(iface->data);
    if (*bufs != NULL) {
        for (unsigned i = 0; i < *n_bufs; i++) {
            jinn_free((*bufs)[i].base);
        }
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *iface, struct raft_buffer *buf)
{
    struct jinn_fsm *fsm = iface->data;
    int rv = jinn_fsm_decode(fsm, buf->base, buf->len);
    if (rv != 0) {
        jinn_error("snapshot restore failed: %s", jinn_error_message(rv));
        return rv == JINN_ENOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    jinn_info("snapshot restored (%zu bytes, cluster time %llu)", buf->len,
              (unsigned long long)fsm->time_ms);
    if (fsm->on_restore != NULL) {
        fsm->on_restore(fsm->on_record_data);
    }
    /* On success the FSM owns the buffer (libraft's contract). */
    raft_free(buf->base);
    return 0;
}

void jinn_fsm_init(struct jinn_fsm *fsm)
{
    memset(fsm, 0, sizeof *fsm);
    fsm->iface.version = 2;
    fsm->iface.data = fsm;
    fsm->iface.apply = fsm_apply;
    fsm->iface.snapshot = fsm_snapshot;
    fsm->iface.snapshot_finalize = fsm_snapshot_finalize;
    fsm->iface.restore = fsm_restore;
    jinn_nodes_init(&fsm->nodes);
    jinn_kv_init(&fsm->kv);
    jinn_locks_init(&fsm->locks);
    jinn_queues_init(&fsm->queues);
    jinn_sql_init(&fsm->sql);
    jinn_fns_init(&fsm->fns);
    jinn_jobs_init(&fsm->jobs);
    jinn_auth_init(&fsm->auth);
}

void jinn_fsm_async_snapshots(struct jinn_fsm *fsm)
{
    fsm->iface.version = 3;
    fsm->iface.snapshot_async = fsm_snapshot_async;
}

void jinn_fsm_close(struct jinn_fsm *fsm)
{
    snap_job_free(fsm); /* a snapshot raft never finished */
    jinn_nodes_clear(&fsm->nodes);
    jinn_kv_clear(&fsm->kv);
    jinn_locks_clear(&fsm->locks);
    jinn_queues_clear(&fsm->queues);
    jinn_sql_clear(&fsm->sql);
    jinn_fns_clear(&fsm->fns);
    jinn_jobs_clear(&fsm->jobs);
    jinn_auth_clear(&fsm->auth);
}

/* ---- backups (api/backup.c): the same two steps, outside libraft ---------- */

static int encode_begin(const struct jinn_fsm *fsm, struct jinn_wbuf *w,
                        struct jinn_sql_pin **pin, struct jinn_fns_pin **fns_pin, bool redact)
{
    int rv;
    *pin = NULL;
    *fns_pin = NULL;
    rv = encode_memory_as(fsm, w, redact);
    if (rv != 0) {
        return rv;
    }
    if (w->failed) {
        return JINN_ENOMEM;
    }
    rv = jinn_sql_pin(&fsm->sql, pin);
    if (rv != 0) {
        return rv;
    }
    /* The pin counts are bookkeeping on the loop, not replicated state:
     * the state itself is unchanged, hence the cast. */
    rv = jinn_fns_pin((struct jinn_fns *)&fsm->fns, fns_pin);
    if (rv != 0) {
        jinn_sql_pin_free(*pin);
        *pin = NULL;
    }
    return rv;
}

int jinn_fsm_encode_begin(const struct jinn_fsm *fsm, struct jinn_wbuf *w,
                          struct jinn_sql_pin **pin, struct jinn_fns_pin **fns_pin)
{
    return encode_begin(fsm, w, pin, fns_pin, false);
}

int jinn_fsm_encode_begin_redacted(const struct jinn_fsm *fsm, struct jinn_wbuf *w,
                                   struct jinn_sql_pin **pin, struct jinn_fns_pin **fns_pin)
{
    return encode_begin(fsm, w, pin, fns_pin, true);
}

int jinn_fsm_encode_finish(struct jinn_sql_pin *pin, const struct jinn_fns_pin *fns_pin,
                           struct jinn_wbuf *w)
{
    /* The same order as jinn_fsm_encode and fsm_snapshot_async: images,
     * then module bytes, then the CRC. */
    jinn_sql_pin_encode(pin, w);
    jinn_fns_pin_encode(fns_pin, w);
    return encode_crc(w, 0);
}
