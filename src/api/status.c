/* status.c - node status, health, readiness, metrics, and the internal
 * endpoint through which nodes announce their API URL. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "api/api.h"
#include "net/stream.h"
#include "codec.h"
#include "error.h"
#include "loopmon.h"
#include "fsm/snapfile.h"
#include "version.h"
#include "wasm/jobs.h"
#include "wasm/runner.h"

#define METRICS_QUEUES_MAX 256u /* queues with per-queue series in /metrics */

static json_t *members_json(const struct jinn_node_status *st, int want_voter)
{
    json_t *list = json_array();
    for (unsigned i = 0; list != NULL && i < st->n_members; i++) {
        const struct jinn_member *m = &st->members[i];
        if (want_voter >= 0 && (int)m->voter != want_voter) {
            continue;
        }
        if (want_voter >= 0) {
            json_array_append_new(list, json_string(m->name));
        } else {
            json_array_append_new(
                list, json_pack("{s:s, s:I, s:s, s:s?, s:s}", "name", m->name, "id",
                                (json_int_t)m->id, "address", m->address, "api",
                                m->api[0] ? m->api : NULL, "role",
                                m->voter ? "voter" : m->spare ? "spare" : "standby"));
            if (st->role == JINN_ROLE_LEADER) {
                /* Only the leader hears from every member. */
                json_t *o = json_array_get(list, json_array_size(list) - 1);
                json_object_set_new(o, "reachable", json_boolean(m->reachable));
                json_object_set_new(o, "last_contact_ms", m->last_contact_ms >= 0
                                                              ? json_integer(m->last_contact_ms)
                                                              : json_null());
                json_object_set_new(o, "match_index", json_integer((json_int_t)m->match_index));
            }
        }
    }
    return list;
}

/* A term as a JSON number: JSON integers are signed, and a term persisted
 * before peerguard refused terms >= 2^63 would print as negative. */
static json_t *u64_json(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
}

/* The "replica" object of an edge replica's /v1/status. */
static json_t *replica_json(struct jinn_api *api)
{
    struct jinn_replica_status rs;
    jinn_node_replica_status(api->node, &rs);
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:o, s:s?, s:b, s:I}", "state",
                     jinn_replica_state_name(rs.state), "source", rs.source, "position",
                     (json_int_t)rs.position, "leader_commit", (json_int_t)rs.leader_commit,
                     "lag_entries", (json_int_t)rs.lag_entries, "lag_ms",
                     rs.lag_ms >= 0 ? json_integer(rs.lag_ms) : json_null(),
                     "last_heartbeat_ms",
                     rs.last_heartbeat_ms >= 0 ? json_integer(rs.last_heartbeat_ms)
                                               : json_null(),
                     "leader_api", rs.leader_api, "read_only", rs.read_only, "sql_generation",
                     (json_int_t)rs.sql_generation);
}

static bool is_ready(const struct jinn_node_status *st)
{
    if (st->role == JINN_ROLE_REPLICA) {
        return false; /* jinn_api_readyz asks the replica's own state */
    }
    if (st->role == JINN_ROLE_LEADER) {
        return st->leader_ready && st->applied_index >= st->commit_index;
    }
    return st->quorum && st->role != JINN_ROLE_UNAVAILABLE && st->role != JINN_ROLE_CANDIDATE &&
           st->commit_current && st->applied_index >= st->commit_index;
}

void jinn_api_status(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args)
{
    struct jinn_node_status st;
    json_t *obj, *leader = NULL;
    (void)args;

    jinn_node_status(api->node, &st);
    if (st.leader_id != 0) {
        leader = json_pack("{s:s, s:I, s:s?}", "name", st.leader_name, "id",
                           (json_int_t)st.leader_id, "api", st.leader_api);
    }
    obj = json_pack("{s:s, s:I, s:s, s:s, s:o, s:o?, s:I, s:I, s:I, s:o, s:o, s:o, s:b, s:o,"
                    " s:I, s:b, s:s, s:s}",
                    "name", st.name, "id", (json_int_t)st.id, "cluster", api->cfg->cluster_name,
                    "role", jinn_role_name(st.role), "term", u64_json(st.term), "leader",
                    leader ? leader : json_null(), "commit_index", (json_int_t)st.commit_index,
                    "applied_index", (json_int_t)st.applied_index, "last_index",
                    (json_int_t)st.last_index, "voters", members_json(&st, 1), "standbys",
                    members_json(&st, 0), "members", members_json(&st, -1), "quorum",
                    st.quorum, "leader_contact_ms",
                    st.leader_contact_ms >= 0 ? json_integer(st.leader_contact_ms) : json_null(),
                    "cluster_time_ms", (json_int_t)st.cluster_time_ms, "ready", is_ready(&st),
                    "version", jinn_revision(), "sql", st.quorum ? "read_write" : "read_only");
    if (obj == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    json_object_set_new(obj, "disk", json_string(st.disk_full ? "full" : "ok"));
    /* The highest formats this node speaks (operations.md, "Upgrades"). */
    json_object_set_new(obj, "formats",
                        json_pack("{s:i, s:i, s:i, s:i}", "command", JINN_CMD_VERSION,
                                  "command_min", JINN_CMD_VERSION_MIN, "snapshot",
                                  JINN_SNAPSHOT_VERSION, "backup", JINN_BACKUP_VERSION));
    json_object_set_new(obj, "disk_free_bytes", json_integer((json_int_t)st.disk_free_bytes));
    jinn_api_check_status(api, obj);
    if (st.role == JINN_ROLE_REPLICA) {
        json_t *rep = replica_json(api);
        json_object_set_new(obj, "replica", rep ? rep : json_null());
        json_object_set_new(obj, "ready", json_boolean(jinn_node_replica_ready(api->node)));
    }
    if (api->stream != NULL) {
        json_object_set_new(obj, "stream", jinn_stream_status_json(api->stream));
    }
    if (api->wasm != NULL) {
        jinn_wasm_runner_status(api->wasm, obj);
        jinn_job_pools_status(api->jobs, obj);
    }
    if (api->loopmon != NULL) {
        json_object_set_new(obj, "loop_stall_max_ms",
                            json_integer((json_int_t)api->loopmon->max_ms));
    }
    {
        char cid[20];
        snprintf(cid, sizeof cid, "%016llx", (unsigned long long)st.cluster_id);
        json_object_set_new(obj, "cluster_id", st.cluster_id ? json_string(cid) : json_null());
        if (st.note != NULL) {
            json_object_set_new(obj, "note", json_string(st.note));
        }
    }
    jinn_http_reply_json(req, 200, obj);
}

void jinn_api_healthz(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args)
{
    (void)api;
    (void)args;
    jinn_http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

void jinn_api_readyz(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args)
{
    struct jinn_node_status st;
    (void)args;
    if (jinn_node_is_replica(api->node)) {
        /* A replica is ready while it streams with a primary heartbeat. */
        struct jinn_replica_status rs;
        jinn_node_replica_status(api->node, &rs);
        if (rs.state != JINN_REPLICA_STREAMING) {
            jinn_http_reply_json(
                req, 503,
                json_pack("{s:s, s:s, s:s, s:s}", "status", "not_ready", "error",
                          rs.state == JINN_REPLICA_READ_ONLY ? jinn_error_name(JINN_EREADONLY)
                                                             : "catching_up",
                          "state", jinn_replica_state_name(rs.state), "message",
                          rs.state == JINN_REPLICA_READ_ONLY
                              ? "no primary heartbeat within replica_stale_after"
                              : "not streaming yet"));
            return;
        }
        jinn_http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
        return;
    }
    jinn_node_status(api->node, &st);
    if (!is_ready(&st)) {
        const char *why = st.leader_id == 0 || !st.quorum ? "no leader with a quorum is known"
                                                          : "catching up with the log";
        jinn_http_reply_json(req, 503,
                             json_pack("{s:s, s:s, s:s}", "status", "not_ready", "error",
                                       jinn_error_name(JINN_ENOLEADER), "message", why));
        return;
    }
    /* Ready means this node can take writes; a full disk cannot. */
    if (st.disk_full) {
        jinn_http_reply_json(req, 503,
                             json_pack("{s:s, s:s, s:s}", "status", "not_ready", "error",
                                       jinn_error_name(JINN_ENOSPACE), "message",
                                       "free space on data_dir is below min_free_space"));
        return;
    }
    jinn_http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
}

/* A Prometheus label value: backslash, quote and newline escaped; cut to
 * fit out. */
static void label_value(char *out, size_t len, const char *s)
{
    size_t n = 0;
    for (; *s && n + 3 < len; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            out[n++] = '\\';
            out[n++] = *s == '\n' ? 'n' : *s;
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
}

void jinn_api_metrics(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args)
{
    static const char *const classes[] = {"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"};
    struct jinn_node_status st;
    struct jinn_http_stats hs;
    struct jinn_wbuf w;
    unsigned voters = 0;
    (void)args;

    jinn_node_status(api->node, &st);
    memset(&hs, 0, sizeof hs);
    if (api->http != NULL) {
        jinn_http_stats(api->http, &hs);
    }
    for (unsigned i = 0; i < st.n_members; i++) {
        voters += st.members[i].voter;
    }
    jinn_wbuf_init(&w);
#define GAUGE(name, help, fmt, value)                                                       \
    jinn_wbuf_printf(&w, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " " fmt "\n", \
                     value)
#define COUNTER(name, help, fmt, value)                                                        \
    jinn_wbuf_printf(&w, "# HELP " name " " help "\n# TYPE " name " counter\n" name " " fmt "\n", \
                     value)
    jinn_wbuf_printf(&w, "# HELP jinn_build_info Build revision.\n# TYPE jinn_build_info gauge\n"
                         "jinn_build_info{revision=\"%s\"} 1\n", jinn_revision());
    GAUGE("jinn_raft_term", "Current raft term.", "%" PRIu64, st.term);
    GAUGE("jinn_raft_is_leader", "1 when this node is the leader.", "%d",
          st.role == JINN_ROLE_LEADER);
    GAUGE("jinn_raft_quorum", "1 when a leader with a quorum is known.", "%d", st.quorum);
    GAUGE("jinn_raft_commit_index", "Highest committed log index known.", "%" PRIu64,
          st.commit_index);
    GAUGE("jinn_raft_applied_index", "Highest log index applied here.", "%" PRIu64,
          st.applied_index);
    GAUGE("jinn_raft_last_index", "Last log index stored here.", "%" PRIu64, st.last_index);
    GAUGE("jinn_raft_leader_contact_ms",
          "Staleness: ms since this node was known to hold all the leader had committed "
          "(-1: never).",
          "%" PRId64, st.leader_contact_ms);
    GAUGE("jinn_cluster_voters", "Voting members.", "%u", voters);
    if (st.role == JINN_ROLE_REPLICA) {
        struct jinn_replica_status rs;
        jinn_node_replica_status(api->node, &rs);
        GAUGE("jinn_replica_position", "Edge replica: index of the last record applied.",
              "%" PRIu64, rs.position);
        GAUGE("jinn_replica_lag_entries",
              "Edge replica: records its source has streamed that it has not applied.",
              "%" PRIu64, rs.lag_entries);
        GAUGE("jinn_replica_lag_ms",
              "Edge replica: staleness in ms, from primary heartbeats (-1: never fresh).",
              "%" PRId64, rs.lag_ms);
        GAUGE("jinn_replica_last_heartbeat_ms",
              "Edge replica: ms since the last primary heartbeat (-1: never).", "%" PRId64,
              rs.last_heartbeat_ms);
        GAUGE("jinn_replica_read_only", "Edge replica: 1 while writes answer 503 read_only.",
              "%d", rs.read_only);
        GAUGE("jinn_replica_streaming", "Edge replica: 1 while streaming (ready).", "%d",
              rs.state == JINN_REPLICA_STREAMING);
    }
    GAUGE("jinn_cluster_standbys", "Standby members.", "%u", st.n_members - voters);
    COUNTER("jinn_raft_connections_refused_total",
            "Raft connections refused: another cluster, a stray, a wiped node.", "%" PRIu64,
            st.raft_refused);
    COUNTER("jinn_proposals_committed_total", "Proposals committed and applied.", "%" PRIu64,
            st.proposals_ok);
    COUNTER("jinn_proposals_failed_total", "Proposals that failed or timed out.", "%" PRIu64,
            st.proposals_failed);
    COUNTER("jinn_raft_appends_total", "Log writes (each ends with a sync).", "%" PRIu64,
            st.appends);
    COUNTER("jinn_raft_entries_appended_total", "Entries those writes carried.", "%" PRIu64,
            st.entries_appended);
    COUNTER("jinn_raft_acks_capped_total",
            "Append answers the ioguard corrected (libraft 0.15 stale-tail hole).", "%" PRIu64,
            st.acks_capped);
    COUNTER("jinn_read_barriers_total", "Raft barriers run for linearizable reads.",
            "%" PRIu64, st.read_barriers);
    COUNTER("jinn_reads_linearized_total", "Linearizable reads served after a barrier.",
            "%" PRIu64, st.reads_linearized);
    COUNTER("jinn_forwards_total", "Requests forwarded to the leader.", "%" PRIu64,
            api->forwards_total);
    COUNTER("jinn_forwards_failed_total", "Forwarded requests that failed.", "%" PRIu64,
            api->forwards_failed);
    GAUGE("jinn_http_connections_open", "Open client connections.", "%" PRIu64,
          hs.connections_open);
    GAUGE("jinn_http_connections_max", "Connection limit (from max_connections and ulimit -n).",
          "%" PRIu64, hs.connections_max);
    GAUGE("jinn_http_output_queued_bytes", "Reply bytes queued to clients, not yet sent.",
          "%" PRIu64, hs.output_queued_bytes);
    COUNTER("jinn_http_replies_refused_total", "Replies over the output limits.", "%" PRIu64,
            hs.replies_refused);
    COUNTER("jinn_http_slow_readers_cut_total", "Clients cut off for not reading a reply.",
            "%" PRIu64, hs.slow_readers_cut);
    COUNTER("jinn_http_accept_errors_total", "Failed accepts (EMFILE...); never fatal.",
            "%" PRIu64, hs.accept_errors);
    COUNTER("jinn_http_tls_handshake_failures_total",
            "TLS clients refused: not TLS, bad certificate, or too slow.", "%" PRIu64,
            hs.tls_handshake_failures);
    GAUGE("jinn_kv_watchers", "Watches waiting for changes.", "%u", api->n_watchers);
    if (api->limit != NULL) {
        struct jinn_limit_stats ls;
        jinn_limit_stats(api->limit, &ls);
        GAUGE("jinn_limit_client_connections", "Open connections from non-member addresses.",
              "%" PRIu64, ls.conns_client);
        GAUGE("jinn_limit_peer_connections", "Open connections from cluster members.",
              "%" PRIu64, ls.conns_peer);
        COUNTER("jinn_limit_connections_refused_total",
                "Connections refused: over limit_conns_per_addr or the clients' share.",
                "%" PRIu64, ls.conns_refused_addr + ls.conns_refused_total);
        COUNTER("jinn_limit_requests_refused_total",
                "Requests refused (429): over a token's limit_rate or limit_concurrent.",
                "%" PRIu64, ls.requests_refused_rate + ls.requests_refused_concurrent);
    }
    if (api->loopmon != NULL) {
        const struct jinn_loopmon *lm = api->loopmon;
        uint64_t cum = 0;
        GAUGE("jinn_loop_stall_max_ms", "Longest event-loop stall since start.", "%" PRIu64,
              lm->max_ms);
        COUNTER("jinn_loop_stalls_over_budget_total", "Loop stalls over the 20 ms budget.",
                "%" PRIu64, lm->over_budget);
        jinn_wbuf_printf(&w, "# HELP jinn_loop_lateness_ms How late the loop monitor's 10 ms "
                             "tick ran (time the loop was busy).\n"
                             "# TYPE jinn_loop_lateness_ms histogram\n");
        for (unsigned b = 0; b < JINN_LOOPMON_BUCKETS; b++) {
            cum += lm->buckets[b];
            if (b < JINN_LOOPMON_BUCKETS - 1) {
                jinn_wbuf_printf(&w, "jinn_loop_lateness_ms_bucket{le=\"%" PRIu64 "\"} %" PRIu64
                                     "\n",
                                 jinn_loopmon_bounds[b], cum);
            } else {
                jinn_wbuf_printf(&w, "jinn_loop_lateness_ms_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                                 cum);
            }
        }
        jinn_wbuf_printf(&w, "jinn_loop_lateness_ms_sum %" PRIu64 "\njinn_loop_lateness_ms_count %"
                             PRIu64 "\n", lm->sum_ms, lm->ticks);
        GAUGE("jinn_loop_busy_max_ms", "Longest loop stall spent computing (CPU), since start.",
              "%" PRIu64, lm->busy_max_ms);
        jinn_wbuf_printf(&w, "# HELP jinn_loop_busy_ms The part of each tick's lateness the "
                             "loop thread spent on the CPU.\n"
                             "# TYPE jinn_loop_busy_ms histogram\n");
        cum = 0;
        for (unsigned b = 0; b < JINN_LOOPMON_BUCKETS; b++) {
            cum += lm->busy_buckets[b];
            if (b < JINN_LOOPMON_BUCKETS - 1) {
                jinn_wbuf_printf(&w, "jinn_loop_busy_ms_bucket{le=\"%" PRIu64 "\"} %" PRIu64 "\n",
                                 jinn_loopmon_bounds[b], cum);
            } else {
                jinn_wbuf_printf(&w, "jinn_loop_busy_ms_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
            }
        }
        jinn_wbuf_printf(&w, "jinn_loop_busy_ms_sum %" PRIu64 "\njinn_loop_busy_ms_count %" PRIu64
                             "\n", lm->busy_sum_ms, lm->ticks);
    }
    COUNTER("jinn_http_requests_total", "HTTP requests received.", "%" PRIu64,
            hs.requests_total);
    GAUGE("jinn_watch_history_bytes",
          "Bytes held by the KV watch history (keys, and values within its budget).",
          "%" PRIu64, jinn_kv_history_bytes(&jinn_node_fsm(api->node)->kv));
    GAUGE("jinn_watch_history_value_budget_bytes",
          "Value bytes the watch history may hold before dropping the oldest values.", "%u",
          JINN_KV_HISTORY_VALUE_BYTES);
    jinn_wbuf_printf(&w, "# HELP jinn_http_responses_total HTTP responses by status class.\n"
                         "# TYPE jinn_http_responses_total counter\n");
    for (int c = 2; c <= 5; c++) {
        jinn_wbuf_printf(&w, "jinn_http_responses_total{class=\"%s\"} %" PRIu64 "\n",
                         classes[c], hs.responses[c]);
    }
    {
        const struct jinn_queues *qs = &jinn_node_fsm(api->node)->queues;
        static const char *const kinds[] = {"ready", "leased", "delayed", "dead"};
        unsigned listed = 0;
        /* Per-queue series for the first METRICS_QUEUES_MAX queues (name
         * order) only: a scrape stays small and cheap on the loop however
         * many queues clients create (10 000 made a 7.5 MB reply). */
        GAUGE("jinn_queues", "Queues that exist.", "%zu", (size_t)qs->by_name.count);
        GAUGE("jinn_queue_metrics_queues_max",
              "Queues given per-queue series here (the first, in name order).", "%u",
              METRICS_QUEUES_MAX);
        jinn_wbuf_printf(&w, "# HELP jinn_queue_messages Messages by queue and state.\n"
                             "# TYPE jinn_queue_messages gauge\n");
        for (const struct jinn_queue *q = jinn_queues_next(qs, NULL);
             q && listed < METRICS_QUEUES_MAX; q = jinn_queues_next(qs, q), listed++) {
            const size_t counts[] = {q->ready.count, q->leased.count, q->delayed.count,
                                     q->dead.count};
            for (int k = 0; k < 4; k++) {
                jinn_wbuf_printf(&w, "jinn_queue_messages{queue=\"%s\",state=\"%s\"} %zu\n",
                                 q->name, kinds[k], counts[k]);
            }
        }
        jinn_wbuf_printf(&w, "# HELP jinn_queue_events_total Publishes, deliveries, acks.\n"
                             "# TYPE jinn_queue_events_total counter\n");
        listed = 0;
        for (const struct jinn_queue *q = jinn_queues_next(qs, NULL);
             q && listed < METRICS_QUEUES_MAX; q = jinn_queues_next(qs, q), listed++) {
            jinn_wbuf_printf(&w,
                             "jinn_queue_events_total{queue=\"%s\",event=\"published\"} %" PRIu64
                             "\njinn_queue_events_total{queue=\"%s\",event=\"delivered\"} %" PRIu64
                             "\njinn_queue_events_total{queue=\"%s\",event=\"acked\"} %" PRIu64
                             "\n",
                             q->name, q->published, q->name, q->delivered, q->name, q->acked);
        }
    }
    GAUGE("jinn_disk_free_bytes", "Bytes free on the data_dir file system.", "%" PRIu64,
          st.disk_free_bytes);
    GAUGE("jinn_disk_min_free_bytes", "min_free_space: the write reserve.", "%" PRIu64,
          st.disk_min_free_bytes);
    GAUGE("jinn_disk_full", "1 while free space is below min_free_space (writes refused).",
          "%d", st.disk_full);
    if (st.role == JINN_ROLE_LEADER) {
        /* Per-peer series: only the leader knows contact and match index.
         * Names are allow-listed where they are set; escaped anyway. */
        char names[JINN_CONFIG_MAX_PEERS][2 * JINN_NODE_NAME_MAX + 1];
        for (unsigned i = 0; i < st.n_members; i++) {
            label_value(names[i], sizeof names[i], st.members[i].name);
        }
        jinn_wbuf_printf(&w, "# HELP jinn_raft_peer_last_contact_ms Leader: ms since each member "
                             "last answered (-1: never).\n"
                             "# TYPE jinn_raft_peer_last_contact_ms gauge\n");
        for (unsigned i = 0; i < st.n_members; i++) {
            jinn_wbuf_printf(&w, "jinn_raft_peer_last_contact_ms{peer=\"%s\",id=\"%" PRIu64
                                 "\"} %" PRId64 "\n",
                             names[i], st.members[i].id, st.members[i].last_contact_ms);
        }
        jinn_wbuf_printf(&w, "# HELP jinn_raft_peer_match_index Leader: highest log index known "
                             "stored on each member.\n"
                             "# TYPE jinn_raft_peer_match_index gauge\n");
        for (unsigned i = 0; i < st.n_members; i++) {
            jinn_wbuf_printf(&w, "jinn_raft_peer_match_index{peer=\"%s\",id=\"%" PRIu64
                                 "\"} %" PRIu64 "\n",
                             names[i], st.members[i].id, st.members[i].match_index);
        }
        jinn_wbuf_printf(&w, "# HELP jinn_raft_peer_reachable Leader: 1 when the member answered "
                             "within two election timeouts.\n"
                             "# TYPE jinn_raft_peer_reachable gauge\n");
        for (unsigned i = 0; i < st.n_members; i++) {
            jinn_wbuf_printf(&w, "jinn_raft_peer_reachable{peer=\"%s\",id=\"%" PRIu64 "\"} %d\n",
                             names[i], st.members[i].id, st.members[i].reachable);
        }
    }
    if (api->stream != NULL) {
        struct jinn_stream_stats ss;
        jinn_stream_stats(api->stream, &ss);
        GAUGE("jinn_stream_replicas", "Edge replicas connected to this node's stream.",
              "%u", ss.replicas);
        COUNTER("jinn_stream_bytes_sent_total", "Message bytes sent to edge replicas.",
                "%" PRIu64, ss.bytes_sent);
        COUNTER("jinn_stream_cut_off_total", "Replicas cut off for falling behind.", "%" PRIu64,
                ss.cut_off);
        GAUGE("jinn_stream_buffer_bytes", "Bytes of recent records kept for replicas.",
              "%" PRIu64, ss.buffer_bytes);
        COUNTER("jinn_stream_snapshots_total", "Snapshots encoded for replicas.", "%" PRIu64,
                ss.snapshots);
        GAUGE("jinn_stream_position", "Index of the last record streamed.", "%" PRIu64,
              ss.position);
        GAUGE("jinn_stream_snapshot_bytes", "Bytes of the snapshot kept for joining replicas.",
              "%" PRIu64, ss.snapshot_bytes);
    }
    jinn_api_check_metrics(api, &w);
    jinn_wasm_runner_metrics(api->wasm, &w);
    jinn_job_pools_metrics(api->jobs, &w);
#undef GAUGE
#undef COUNTER
    if (w.failed) {
        jinn_wbuf_free(&w);
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    jinn_http_reply(req, 200, "text/plain; version=0.0.4", w.data, w.len);
    jinn_wbuf_free(&w);
}

static void node_set_committed(struct jinn_api *api, struct jinn_http_request *req,
                               const struct jinn_result *res)
{
    (void)api;
    if (res->code != JINN_OK) {
        jinn_http_reply_error(req, res->code, NULL);
        return;
    }
    jinn_http_reply_json(req, 200, json_pack("{s:I}", "index", (json_int_t)res->index));
}

/* Why an announcement is refused, or NULL. The leader runs this (the route
 * is leader-only): the id must be a member of the raft configuration under
 * the name the configuration gives it, and not the leader itself (the
 * leader proposes its own entry and never posts it). This is validation,
 * not authentication: until peers authenticate each other, a client that
 * knows a follower's id and name can still announce a (valid) URL for it. */
static const char *announcement_refused(struct jinn_api *api, uint64_t id, const char *name,
                                        const char *url)
{
    struct jinn_node_status st;
    if (!jinn_nodes_url_valid(url, strlen(url))) {
        return "api must be http://HOST:PORT (IPv4, [IPv6] or DNS name; port 1-65535; "
               "an optional trailing /; nothing else)";
    }
    jinn_node_status(api->node, &st);
    if (id == st.id) {
        return "a node announces only itself; the leader's entry is its own to propose";
    }
    for (unsigned i = 0; i < st.n_members; i++) {
        if (st.members[i].id == id) {
            return strcmp(st.members[i].name, name) == 0
                       ? NULL
                       : "name does not match that member's name in the configuration";
        }
    }
    return "id is not a member of the raft configuration";
}

void jinn_api_node_set(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args)
{
    json_t *obj = jinn_api_body_json_or_reply(req);
    json_int_t id;
    const char *name, *url, *why;
    size_t name_len, url_len;
    json_error_t jerr;
    struct jinn_cmd c;
    (void)args;

    if (obj == NULL) {
        return;
    }
    if (json_unpack_ex(obj, &jerr, JSON_STRICT, "{s:I, s:s%, s:s%}", "id", &id, "name", &name,
                       &name_len, "api", &url, &url_len) != 0 ||
        id <= 0 || name_len == 0 || name_len > JINN_NODE_NAME_MAX ||
        strlen(name) != name_len || strlen(url) != url_len) {
        json_decref(obj);
        jinn_http_reply_error(req, JINN_EINVAL, "expected {\"id\": N, \"name\": S, \"api\": URL}");
        return;
    }
    why = announcement_refused(api, (uint64_t)id, name, url);
    if (why != NULL) {
        json_decref(obj);
        jinn_http_reply_error(req, JINN_EINVAL, why);
        return;
    }
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_NODE_SET;
    c.node.id = (uint64_t)id;
    c.node.name.p = (const uint8_t *)name;
    c.node.name.len = name_len;
    c.node.api.p = (const uint8_t *)url;
    c.node.api.len = url_len;
    jinn_api_propose_or_reply(api, req, &c, node_set_committed);
    json_decref(obj); /* the command was encoded (copied) by the proposal */
}
