/* cmd.c - encoding and decoding of replicated commands (see cmd.h). */
#include "fsm/cmd.h"

#include <string.h>

#include "error.h"
#include "fsm/auth.h"
#include "fsm/fnsig.h"

const char *jinn_cmd_type_name(int type)
{
    switch (type) {
    case JINN_CMD_NOOP:
        return "noop";
    case JINN_CMD_NODE_SET:
        return "node_set";
    case JINN_CMD_KV_PUT:
        return "kv_put";
    case JINN_CMD_KV_DEL:
        return "kv_del";
    case JINN_CMD_LOCK_ACQUIRE:
        return "lock_acquire";
    case JINN_CMD_LOCK_REFRESH:
        return "lock_refresh";
    case JINN_CMD_LOCK_RELEASE:
        return "lock_release";
    case JINN_CMD_Q_PUBLISH:
        return "queue_publish";
    case JINN_CMD_Q_FETCH:
        return "queue_fetch";
    case JINN_CMD_Q_ACK:
        return "queue_ack";
    case JINN_CMD_Q_NAK:
        return "queue_nak";
    case JINN_CMD_Q_PROGRESS:
        return "queue_progress";
    case JINN_CMD_Q_TERM:
        return "queue_term";
    case JINN_CMD_Q_REQUEUE:
        return "queue_requeue";
    case JINN_CMD_Q_DROP:
        return "queue_drop";
    case JINN_CMD_SQL_EXEC:
        return "sql_exec";
    case JINN_CMD_LOCK_WITHDRAW:
        return "lock_withdraw";
    case JINN_CMD_LOCK_ORPHANS:
        return "lock_orphans";
    case JINN_CMD_CHECK:
        return "check";
    case JINN_CMD_NODE_DEL:
        return "node_del";
    case JINN_CMD_FN_DEPLOY:
        return "fn_deploy";
    case JINN_CMD_FN_DELETE:
        return "fn_delete";
    case JINN_CMD_FN_ROLLBACK:
        return "fn_rollback";
    case JINN_CMD_JOB_ACK:
        return "job_ack";
    case JINN_CMD_JOB_CRON:
        return "job_cron";
    case JINN_CMD_FN_DEPLOY2:
        return "fn_deploy2";
    case JINN_CMD_FN_POLICY:
        return "fn_policy";
    case JINN_CMD_TOKEN_PUT:
        return "token_put";
    case JINN_CMD_TOKEN_PUT2:
        return "token_put2";
    case JINN_CMD_TOKEN_REVOKE:
        return "token_revoke";
    default:
        return "unknown";
    }
}

static void put_slice(struct jinn_wbuf *w, struct jinn_slice s)
{
    jinn_wbuf_put_bytes(w, s.p, s.len);
}

static bool has_nul(struct jinn_slice s)
{
    return s.len > 0 && memchr(s.p, '\0', s.len) != NULL;
}

/* [a-z0-9][a-z0-9_-]*, 1-64 bytes (fn.h's names, checked here too so a
 * malformed entry never reaches the registry). */
static bool fn_name_ok(struct jinn_slice s)
{
    if (s.len == 0 || s.len > JINN_CMD_FN_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '_' || c == '-'));
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* WORKERS_<function name>: the only queues JOB_ACK acts on. */
static bool job_queue_ok(struct jinn_slice q)
{
    size_t n = sizeof JINN_JOB_QUEUE_PREFIX - 1;
    struct jinn_slice fn = {q.p + n, q.len - n};
    return q.len > n && q.len <= JINN_QUEUE_NAME_MAX &&
           memcmp(q.p, JINN_JOB_QUEUE_PREFIX, n) == 0 && fn_name_ok(fn);
}

static bool job_ack_ok(const struct jinn_cmd *c)
{
    uint64_t bytes = 0;
    if (!job_queue_ok(c->job.queue) || c->job.n == 0 || c->job.n > JINN_JOB_ACK_MAX) {
        return false;
    }
    for (uint32_t i = 0; i < c->job.n; i++) {
        const struct jinn_job_ack_item *it = &c->job.item[i];
        if (it->worker.len == 0 || it->worker.len > JINN_QUEUE_WORKER_MAX ||
            has_nul(it->worker) || it->response.len > JINN_JOB_RESULT_MAX) {
            return false;
        }
        bytes += it->response.len;
    }
    return bytes <= JINN_JOB_ACK_BYTES_MAX;
}

static bool deploy2_ok(const struct jinn_cmd *c)
{
    return (c->fn.signature.len == 0 || c->fn.signature.len == JINN_CMD_FN_SIG_SIZE) &&
           c->fn.key_id.len <= JINN_CMD_FN_KEY_ID_MAX;
}

/* FN_POLICY's body is canonical: a flag, at most 16 keys, valid names in
 * strictly ascending order (so one policy has one encoding). */
static bool fn_policy_ok(const struct jinn_cmd *c)
{
    if (c->fn_policy.require_signature > 1 || c->fn_policy.n_keys > JINN_CMD_FN_TRUSTED_MAX) {
        return false;
    }
    for (uint32_t i = 0; i < c->fn_policy.n_keys; i++) {
        struct jinn_slice n = c->fn_policy.key_name[i];
        if (!jinn_fnsig_key_name_valid((const char *)n.p, n.len) ||
            c->fn_policy.key_pub[i] == NULL) {
            return false;
        }
        if (i > 0) {
            struct jinn_slice p = c->fn_policy.key_name[i - 1];
            size_t m = p.len < n.len ? p.len : n.len;
            int cmp = memcmp(p.p, n.p, m);
            if (cmp > 0 || (cmp == 0 && p.len >= n.len)) {
                return false;
            }
        }
    }
    return true;
}

static struct jinn_slice get_slice(struct jinn_rbuf *r, size_t max)
{
    struct jinn_slice s;
    s.len = jinn_rbuf_get_bytes(r, &s.p, max);
    return s;
}

/* TOKEN_PUT's (and TOKEN_PUT2's) fields: exact sizes and a valid name.
 * Whether the rules are canonical, and whether TOKEN_PUT may carry them, is
 * apply's check (fsm/auth.c), as deterministic. */
static bool token_ok(const struct jinn_cmd *c)
{
    if (!jinn_auth_name_ok((const char *)c->token.name.p, c->token.name.len)) {
        return false;
    }
    if (c->type == JINN_CMD_TOKEN_REVOKE) {
        return true;
    }
    if (c->token.salt.len != JINN_AUTH_SALT_LEN || c->token.hash.len != JINN_AUTH_HASH_LEN ||
        (c->token.key.len != 0 && c->token.key.len != JINN_AUTH_KEY_LEN) ||
        (c->token.flags & ~(uint64_t)(JINN_CMD_TOKEN_BOOTSTRAP | JINN_CMD_TOKEN_FNSCOPE)) !=
            0 ||
        c->token.flags == (JINN_CMD_TOKEN_BOOTSTRAP | JINN_CMD_TOKEN_FNSCOPE) ||
        (!(c->token.flags & JINN_CMD_TOKEN_FNSCOPE) && c->token.deployer.len != 0) ||
        (c->token.deployer.len != 0 &&
         !jinn_auth_name_ok((const char *)c->token.deployer.p, c->token.deployer.len)) ||
        c->token.rules.len == 0 || c->token.rules.len > JINN_AUTH_RULES_MAX) {
        return false;
    }
    return true;
}

int jinn_cmd_encode(const struct jinn_cmd *c, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u8(w, JINN_CMD_MAGIC);
    jinn_wbuf_put_u8(w, c->version != 0 ? c->version : JINN_CMD_VERSION);
    jinn_wbuf_put_u8(w, c->type);
    jinn_wbuf_put_u8(w, 0);
    jinn_wbuf_put_u64(w, c->time_ms);
    switch (c->type) {
    case JINN_CMD_NOOP:
    case JINN_CMD_CHECK:
    case JINN_CMD_LOCK_ORPHANS:
        break;
    case JINN_CMD_NODE_DEL:
        jinn_wbuf_put_u64(w, c->node.id);
        break;
    case JINN_CMD_NODE_SET:
        if (c->node.name.len == 0 || c->node.name.len > JINN_NODE_NAME_MAX ||
            c->node.api.len > JINN_NODE_API_MAX) {
            return JINN_EINVAL;
        }
        jinn_wbuf_put_u64(w, c->node.id);
        put_slice(w, c->node.name);
        put_slice(w, c->node.api);
        break;
    case JINN_CMD_KV_PUT:
    case JINN_CMD_KV_DEL:
        if (c->kv.ns.len == 0 || c->kv.ns.len > JINN_KV_NS_MAX || c->kv.key.len == 0 ||
            c->kv.key.len > JINN_KV_KEY_MAX || c->kv.value.len > JINN_KV_VALUE_MAX ||
            (c->kv.flags & ~(uint32_t)JINN_KV_FLAGS) != 0 ||
            (c->type == JINN_CMD_KV_DEL && (c->kv.flags & JINN_KV_CREATE_ONLY)) ||
            ((c->kv.flags & JINN_KV_FENCED) &&
             (c->kv.fence.len == 0 || c->kv.fence.len > JINN_LOCK_NAME_MAX))) {
            return JINN_EINVAL;
        }
        put_slice(w, c->kv.ns);
        put_slice(w, c->kv.key);
        jinn_wbuf_put_u64(w, c->kv.expect_revision);
        jinn_wbuf_put_u32(w, c->kv.flags);
        if (c->type == JINN_CMD_KV_PUT) {
            jinn_wbuf_put_u64(w, c->kv.ttl_ms);
            put_slice(w, c->kv.value);
        }
        if (c->kv.flags & JINN_KV_FENCED) {
            put_slice(w, c->kv.fence);
            jinn_wbuf_put_u64(w, c->kv.fence_token);
        }
        break;
    case JINN_CMD_LOCK_ACQUIRE:
    case JINN_CMD_LOCK_REFRESH:
    case JINN_CMD_LOCK_RELEASE:
    case JINN_CMD_LOCK_WITHDRAW:
        if (c->lock.name.len == 0 || c->lock.name.len > JINN_LOCK_NAME_MAX ||
            c->lock.owner.len > JINN_LOCK_OWNER_MAX ||
            (c->type == JINN_CMD_LOCK_ACQUIRE && c->lock.owner.len == 0)) {
            return JINN_EINVAL;
        }
        put_slice(w, c->lock.name);
        if (c->type == JINN_CMD_LOCK_ACQUIRE) {
            put_slice(w, c->lock.owner);
        } else {
            jinn_wbuf_put_u64(w, c->lock.token);
        }
        if (c->type != JINN_CMD_LOCK_RELEASE && c->type != JINN_CMD_LOCK_WITHDRAW) {
            jinn_wbuf_put_u64(w, c->lock.ttl_ms);
        }
        if (c->type == JINN_CMD_LOCK_ACQUIRE) {
            jinn_wbuf_put_u64(w, c->lock.wait_ms);
        }
        break;
    case JINN_CMD_SQL_EXEC:
        if (c->sql.db.len == 0 || c->sql.db.len > JINN_SQL_DB_MAX ||
            c->sql.statements.len == 0 || c->sql.statements.len > JINN_SQL_TEXT_MAX) {
            return JINN_EINVAL;
        }
        if (c->sql.fence.len > JINN_LOCK_NAME_MAX) {
            return JINN_EINVAL;
        }
        put_slice(w, c->sql.db);
        put_slice(w, c->sql.statements);
        jinn_wbuf_put_u64(w, c->sql.step_budget);
        put_slice(w, c->sql.fence);
        jinn_wbuf_put_u64(w, c->sql.fence_token);
        if (c->sql.sqlite_version != 0) {
            jinn_wbuf_put_u64(w, c->sql.sqlite_version);
        }
        break;
    case JINN_CMD_JOB_ACK:
        if (!job_ack_ok(c)) {
            return JINN_EINVAL;
        }
        put_slice(w, c->job.queue);
        jinn_wbuf_put_u32(w, c->job.n);
        for (uint32_t i = 0; i < c->job.n; i++) {
            put_slice(w, c->job.item[i].worker);
            jinn_wbuf_put_u64(w, c->job.item[i].seq);
            jinn_wbuf_put_u64(w, c->job.item[i].delivery);
            jinn_wbuf_put_u32(w, c->job.item[i].status);
            put_slice(w, c->job.item[i].response);
        }
        jinn_wbuf_put_u64(w, c->job.keep_ms);
        jinn_wbuf_put_u64(w, c->job.keep_bytes);
        break;
    case JINN_CMD_JOB_CRON:
        if (!fn_name_ok(c->cron.name)) {
            return JINN_EINVAL;
        }
        put_slice(w, c->cron.name);
        jinn_wbuf_put_u64(w, c->cron.tick_ms);
        jinn_wbuf_put_u64(w, c->cron.max_length);
        jinn_wbuf_put_u64(w, c->cron.max_bytes);
        jinn_wbuf_put_u64(w, c->cron.max_deliver);
        jinn_wbuf_put_u64(w, c->cron.now_ms);
        break;
    case JINN_CMD_FN_DEPLOY:
    case JINN_CMD_FN_DEPLOY2:
    case JINN_CMD_FN_DELETE:
    case JINN_CMD_FN_ROLLBACK:
        if (!fn_name_ok(c->fn.name) ||
            (c->type == JINN_CMD_FN_DEPLOY2 && !deploy2_ok(c)) ||
            ((c->type == JINN_CMD_FN_DEPLOY || c->type == JINN_CMD_FN_DEPLOY2) &&
             (c->fn.settings.len == 0 || c->fn.settings.len > JINN_CMD_FN_SETTINGS_MAX ||
              c->fn.module.len == 0 || c->fn.module.len > JINN_CMD_FN_MODULE_MAX)) ||
            (c->type == JINN_CMD_FN_DELETE && (c->fn.flags & ~(uint64_t)JINN_CMD_FN_PURGE))) {
            return JINN_EINVAL;
        }
        put_slice(w, c->fn.name);
        if (c->type == JINN_CMD_FN_DEPLOY || c->type == JINN_CMD_FN_DEPLOY2) {
            put_slice(w, c->fn.settings);
            put_slice(w, c->fn.module);
            if (c->type == JINN_CMD_FN_DEPLOY2) {
                put_slice(w, c->fn.signature);
                put_slice(w, c->fn.key_id);
            }
        } else if (c->type == JINN_CMD_FN_DELETE) {
            jinn_wbuf_put_u64(w, c->fn.flags);
        } else {
            jinn_wbuf_put_u64(w, c->fn.version);
        }
        break;
    case JINN_CMD_FN_POLICY:
        if (!fn_policy_ok(c)) {
            return JINN_EINVAL;
        }
        jinn_wbuf_put_u8(w, c->fn_policy.require_signature);
        jinn_wbuf_put_u32(w, c->fn_policy.n_keys);
        for (uint32_t i = 0; i < c->fn_policy.n_keys; i++) {
            put_slice(w, c->fn_policy.key_name[i]);
            jinn_wbuf_put_raw(w, c->fn_policy.key_pub[i], JINN_FNSIG_PUB_SIZE);
        }
        break;
    case JINN_CMD_TOKEN_PUT:
    case JINN_CMD_TOKEN_PUT2:
    case JINN_CMD_TOKEN_REVOKE:
        if (!token_ok(c)) {
            return JINN_EINVAL;
        }
        put_slice(w, c->token.name);
        if (jinn_cmd_is_token_put(c->type)) {
            put_slice(w, c->token.salt);
            put_slice(w, c->token.hash);
            put_slice(w, c->token.rules);
            put_slice(w, c->token.key);
            jinn_wbuf_put_u64(w, c->token.expires_ms);
            jinn_wbuf_put_u64(w, c->token.flags);
            if (c->token.flags & JINN_CMD_TOKEN_FNSCOPE) {
                put_slice(w, c->token.deployer);
            }
        }
        break;
    default:
        if (!jinn_cmd_is_queue(c->type)) {
            return JINN_EINVAL;
        }
        /* Format 1 let a NUL through; re-encoding such an entry (tools,
         * the fuzzer's round trip) keeps it as it was. */
        if (c->q.queue.len == 0 || c->q.queue.len > JINN_QUEUE_NAME_MAX ||
            (c->version != 1 && (has_nul(c->q.queue) || has_nul(c->q.worker))) ||
            c->q.worker.len > JINN_QUEUE_WORKER_MAX || c->q.idem.len > JINN_QUEUE_IDEM_MAX ||
            c->q.reason.len > JINN_QUEUE_REASON_MAX ||
            c->q.payload.len > JINN_QUEUE_PAYLOAD_MAX) {
            return JINN_EINVAL;
        }
        put_slice(w, c->q.queue);
        put_slice(w, c->q.worker);
        put_slice(w, c->q.payload);
        put_slice(w, c->q.idem);
        put_slice(w, c->q.reason);
        jinn_wbuf_put_u64(w, c->q.seq);
        jinn_wbuf_put_u64(w, c->q.delivery);
        jinn_wbuf_put_u64(w, c->q.count);
        jinn_wbuf_put_u64(w, c->q.bytes);
        jinn_wbuf_put_u64(w, c->q.ms);
        jinn_wbuf_put_u64(w, c->q.max_deliver);
        break;
    }
    /* libraft's disk and wire formats lay entries out in 8-byte words and
     * misread a buffer whose length is not a multiple of 8. */
    while (w->len % 8 != 0) {
        jinn_wbuf_put_u8(w, 0);
    }
    if (w->len > JINN_CMD_MAX_SIZE) {
        return JINN_ETOOBIG;
    }
    return w->failed ? JINN_ENOMEM : 0;
}

int jinn_cmd_decode(const void *buf, size_t len, struct jinn_cmd *c)
{
    struct jinn_rbuf r;
    uint8_t magic, version, flags;

    memset(c, 0, sizeof *c);
    jinn_rbuf_init(&r, buf, len);
    magic = jinn_rbuf_get_u8(&r);
    version = jinn_rbuf_get_u8(&r);
    c->type = jinn_rbuf_get_u8(&r);
    flags = jinn_rbuf_get_u8(&r);
    c->time_ms = jinn_rbuf_get_u64(&r);
    if (r.failed || magic != JINN_CMD_MAGIC) {
        return JINN_ECORRUPT;
    }
    c->version = version;
    if (version < JINN_CMD_VERSION_MIN || version > JINN_CMD_VERSION || flags != 0) {
        /* A newer format or a flag this build does not know. */
        return JINN_EVERSION;
    }
    switch (c->type) {
    case JINN_CMD_NOOP:
    case JINN_CMD_CHECK:
    case JINN_CMD_LOCK_ORPHANS:
        break;
    case JINN_CMD_NODE_DEL:
        c->node.id = jinn_rbuf_get_u64(&r);
        break;
    case JINN_CMD_NODE_SET:
        c->node.id = jinn_rbuf_get_u64(&r);
        c->node.name = get_slice(&r, JINN_NODE_NAME_MAX);
        c->node.api = get_slice(&r, JINN_NODE_API_MAX);
        if (c->node.name.len == 0) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_KV_PUT:
    case JINN_CMD_KV_DEL:
        c->kv.ns = get_slice(&r, JINN_KV_NS_MAX);
        c->kv.key = get_slice(&r, JINN_KV_KEY_MAX);
        c->kv.expect_revision = jinn_rbuf_get_u64(&r);
        c->kv.flags = jinn_rbuf_get_u32(&r);
        if (c->type == JINN_CMD_KV_PUT) {
            c->kv.ttl_ms = jinn_rbuf_get_u64(&r);
            c->kv.value = get_slice(&r, JINN_KV_VALUE_MAX);
        }
        if (c->kv.flags & JINN_KV_FENCED) {
            c->kv.fence = get_slice(&r, JINN_LOCK_NAME_MAX);
            c->kv.fence_token = jinn_rbuf_get_u64(&r);
            if (c->kv.fence.len == 0) {
                return JINN_ECORRUPT;
            }
        }
        if (c->kv.ns.len == 0 || c->kv.key.len == 0 ||
            (c->kv.flags & ~(uint32_t)JINN_KV_FLAGS) != 0 ||
            (c->type == JINN_CMD_KV_DEL && (c->kv.flags & JINN_KV_CREATE_ONLY))) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_LOCK_ACQUIRE:
    case JINN_CMD_LOCK_REFRESH:
    case JINN_CMD_LOCK_RELEASE:
    case JINN_CMD_LOCK_WITHDRAW:
        c->lock.name = get_slice(&r, JINN_LOCK_NAME_MAX);
        if (c->type == JINN_CMD_LOCK_ACQUIRE) {
            c->lock.owner = get_slice(&r, JINN_LOCK_OWNER_MAX);
            if (c->lock.owner.len == 0) {
                return JINN_ECORRUPT;
            }
        } else {
            c->lock.token = jinn_rbuf_get_u64(&r);
        }
        if (c->type != JINN_CMD_LOCK_RELEASE && c->type != JINN_CMD_LOCK_WITHDRAW) {
            c->lock.ttl_ms = jinn_rbuf_get_u64(&r);
        }
        if (c->type == JINN_CMD_LOCK_ACQUIRE) {
            c->lock.wait_ms = jinn_rbuf_get_u64(&r);
        }
        if (c->lock.name.len == 0) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_SQL_EXEC:
        c->sql.db = get_slice(&r, JINN_SQL_DB_MAX);
        c->sql.statements = get_slice(&r, JINN_SQL_TEXT_MAX);
        c->sql.step_budget = jinn_rbuf_get_u64(&r);
        c->sql.fence = get_slice(&r, JINN_LOCK_NAME_MAX);
        c->sql.fence_token = jinn_rbuf_get_u64(&r);
        /* Optional trailing field: older entries end here (padding is
         * shorter than 8 bytes). */
        if (version >= 2 && r.left >= 8) {
            /* Present means non-zero and 32-bit: one encoding per command. */
            uint64_t v = jinn_rbuf_get_u64(&r);
            if (v == 0 || v > UINT32_MAX) {
                return JINN_ECORRUPT;
            }
            c->sql.sqlite_version = (uint32_t)v;
        }
        if (c->sql.db.len == 0 || c->sql.statements.len == 0) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_JOB_ACK:
        if (version < 2) {
            return JINN_ECORRUPT;
        }
        c->job.queue = get_slice(&r, JINN_QUEUE_NAME_MAX);
        c->job.n = jinn_rbuf_get_u32(&r);
        if (r.failed || c->job.n == 0 || c->job.n > JINN_JOB_ACK_MAX) {
            return JINN_ECORRUPT;
        }
        for (uint32_t i = 0; i < c->job.n; i++) {
            c->job.item[i].worker = get_slice(&r, JINN_QUEUE_WORKER_MAX);
            c->job.item[i].seq = jinn_rbuf_get_u64(&r);
            c->job.item[i].delivery = jinn_rbuf_get_u64(&r);
            c->job.item[i].status = jinn_rbuf_get_u32(&r);
            c->job.item[i].response = get_slice(&r, JINN_JOB_RESULT_MAX);
        }
        c->job.keep_ms = jinn_rbuf_get_u64(&r);
        c->job.keep_bytes = jinn_rbuf_get_u64(&r);
        if (r.failed || !job_ack_ok(c)) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_JOB_CRON:
        if (version < 2) {
            return JINN_ECORRUPT;
        }
        c->cron.name = get_slice(&r, JINN_CMD_FN_NAME_MAX);
        c->cron.tick_ms = jinn_rbuf_get_u64(&r);
        c->cron.max_length = jinn_rbuf_get_u64(&r);
        c->cron.max_bytes = jinn_rbuf_get_u64(&r);
        c->cron.max_deliver = jinn_rbuf_get_u64(&r);
        c->cron.now_ms = jinn_rbuf_get_u64(&r);
        if (r.failed || !fn_name_ok(c->cron.name)) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_FN_DEPLOY:
    case JINN_CMD_FN_DEPLOY2:
    case JINN_CMD_FN_DELETE:
    case JINN_CMD_FN_ROLLBACK:
        if (version < 2) {
            return JINN_ECORRUPT; /* format 1 never had them */
        }
        c->fn.name = get_slice(&r, JINN_CMD_FN_NAME_MAX);
        if (c->type == JINN_CMD_FN_DEPLOY || c->type == JINN_CMD_FN_DEPLOY2) {
            c->fn.settings = get_slice(&r, JINN_CMD_FN_SETTINGS_MAX);
            c->fn.module = get_slice(&r, JINN_CMD_FN_MODULE_MAX);
            if (c->type == JINN_CMD_FN_DEPLOY2) {
                c->fn.signature = get_slice(&r, JINN_CMD_FN_SIG_SIZE);
                c->fn.key_id = get_slice(&r, JINN_CMD_FN_KEY_ID_MAX);
                if (!deploy2_ok(c)) {
                    return JINN_ECORRUPT;
                }
            }
            if (c->fn.settings.len == 0 || c->fn.module.len == 0) {
                return JINN_ECORRUPT;
            }
        } else if (c->type == JINN_CMD_FN_DELETE) {
            c->fn.flags = jinn_rbuf_get_u64(&r);
            if (c->fn.flags & ~(uint64_t)JINN_CMD_FN_PURGE) {
                return JINN_ECORRUPT;
            }
        } else {
            c->fn.version = jinn_rbuf_get_u64(&r);
        }
        if (r.failed || !fn_name_ok(c->fn.name)) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_FN_POLICY:
        if (version < 2) {
            return JINN_ECORRUPT;
        }
        c->fn_policy.require_signature = jinn_rbuf_get_u8(&r);
        c->fn_policy.n_keys = jinn_rbuf_get_u32(&r);
        if (r.failed || c->fn_policy.n_keys > JINN_CMD_FN_TRUSTED_MAX) {
            return JINN_ECORRUPT;
        }
        for (uint32_t i = 0; i < c->fn_policy.n_keys; i++) {
            c->fn_policy.key_name[i] = get_slice(&r, JINN_FNSIG_KEY_NAME_MAX);
            c->fn_policy.key_pub[i] = jinn_rbuf_get_raw(&r, JINN_FNSIG_PUB_SIZE);
        }
        if (r.failed || !fn_policy_ok(c)) {
            return JINN_ECORRUPT;
        }
        break;
    case JINN_CMD_TOKEN_PUT:
    case JINN_CMD_TOKEN_PUT2:
    case JINN_CMD_TOKEN_REVOKE:
        if (version < 2) {
            return JINN_ECORRUPT;
        }
        c->token.name = get_slice(&r, JINN_AUTH_NAME_MAX);
        if (jinn_cmd_is_token_put(c->type)) {
            c->token.salt = get_slice(&r, JINN_AUTH_SALT_LEN);
            c->token.hash = get_slice(&r, JINN_AUTH_HASH_LEN);
            c->token.rules = get_slice(&r, JINN_AUTH_RULES_MAX);
            c->token.key = get_slice(&r, JINN_AUTH_KEY_LEN);
            c->token.expires_ms = jinn_rbuf_get_u64(&r);
            c->token.flags = jinn_rbuf_get_u64(&r);
            if (c->token.flags & JINN_CMD_TOKEN_FNSCOPE) {
                c->token.deployer = get_slice(&r, JINN_AUTH_NAME_MAX);
            }
        }
        if (r.failed || !token_ok(c)) {
            return JINN_ECORRUPT;
        }
        break;
    default:
        if (!jinn_cmd_is_queue(c->type)) {
            /* A type from a newer build: the FSM must stop, not skip it. */
            return JINN_EVERSION;
        }
        c->q.queue = get_slice(&r, JINN_QUEUE_NAME_MAX);
        c->q.worker = get_slice(&r, JINN_QUEUE_WORKER_MAX);
        c->q.payload = get_slice(&r, JINN_QUEUE_PAYLOAD_MAX);
        c->q.idem = get_slice(&r, JINN_QUEUE_IDEM_MAX);
        c->q.reason = get_slice(&r, JINN_QUEUE_REASON_MAX);
        c->q.seq = jinn_rbuf_get_u64(&r);
        c->q.delivery = jinn_rbuf_get_u64(&r);
        c->q.count = jinn_rbuf_get_u64(&r);
        c->q.bytes = jinn_rbuf_get_u64(&r);
        c->q.ms = jinn_rbuf_get_u64(&r);
        c->q.max_deliver = jinn_rbuf_get_u64(&r);
        /* The queue state keeps names and workers as C strings: an
         * embedded NUL would alias two names. */
        if (c->q.queue.len == 0 ||
            (version >= 2 && (has_nul(c->q.queue) || has_nul(c->q.worker)))) {
            return JINN_ECORRUPT;
        }
        break;
    }
    /* Only zero padding to the 8-byte boundary may follow: anything else
     * means a writer and reader disagree on the format. */
    if (r.failed || len % 8 != 0 || r.left >= 8) {
        return JINN_ECORRUPT;
    }
    for (size_t i = 0; i < r.left; i++) {
        if (r.p[i] != 0) {
            return JINN_ECORRUPT;
        }
    }
    return 0;
}
