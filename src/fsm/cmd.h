/* cmd.h - the replicated command format: what goes into a raft log entry.
 *
 * Every change to jinn's state is one command. Its encoding is versioned and
 * length-checked:
 *
 *   u8  magic 'J'    u8 format version (2)    u8 type    u8 flags (0)
 *   u64 time_ms      cluster time stamped by the proposing leader
 *   ... type-specific body (see cmd.c) ...
 *   zero padding to a multiple of 8 bytes (libraft's entry alignment)
 *
 * Decoding never trusts a length: a truncated, oversized or trailing-garbage
 * command is rejected with JINN_ECORRUPT, identically on every replica.
 *
 * Types FN_DEPLOY, FN_DELETE, FN_ROLLBACK (23-25), and later JOB_ACK,
 * JOB_CRON, FN_DEPLOY2 (26-28), TOKEN_PUT, TOKEN_REVOKE, FN_POLICY (29-31)
 * and TOKEN_PUT2 (32) came within format 2: a build that does not know them
 * stops at them (JINN_EVERSION), as for any unknown type.
 *
 * Format 2 (this build writes it) added CHECK, NODE_DEL, LOCK_WITHDRAW and
 * LOCK_ORPHANS,
 * SQL_EXEC's sqlite_version, and refuses what format 1 let through (a NUL
 * in a queue name or worker, an invalid node URL). Entries of format 1 in a
 * log keep format 1's meaning on every replica, so a log written before the
 * upgrade replays as it applied. */
#ifndef JINN_CMD_H
#define JINN_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define JINN_CMD_MAGIC 'J'
#define JINN_CMD_VERSION 2     /* written */
#define JINN_CMD_VERSION_MIN 1 /* still read */
#define JINN_CMD_HEADER_SIZE 12
#define JINN_CMD_MAX_SIZE (64u << 20) /* no entry is larger than 64 MiB */
#define JINN_NODE_NAME_MAX 64
#define JINN_NODE_API_MAX 256
#define JINN_KV_NS_MAX 64
#define JINN_KV_KEY_MAX 1024
#define JINN_KV_VALUE_MAX (32u << 20) /* format cap; the configured limit is lower */

#define JINN_LOCK_NAME_MAX 256
#define JINN_LOCK_OWNER_MAX 256
#define JINN_QUEUE_NAME_MAX 64
#define JINN_QUEUE_WORKER_MAX 128
#define JINN_QUEUE_IDEM_MAX 256
#define JINN_QUEUE_REASON_MAX 1024
#define JINN_QUEUE_PAYLOAD_MAX (32u << 20)
#define JINN_QUEUE_FETCH_MAX 256 /* messages one fetch may lease */
#define JINN_SQL_DB_MAX 64
#define JINN_SQL_TEXT_MAX (16u << 20) /* the statements of one exec, as JSON */
#define JINN_CMD_FN_NAME_MAX 64         /* = JINN_FN_NAME_MAX */
#define JINN_CMD_FN_SETTINGS_MAX (64u << 10) /* = JINN_FN_SETTINGS_MAX */
#define JINN_CMD_FN_MODULE_MAX (16u << 20)   /* = JINN_FN_MODULE_MAX */
#define JINN_CMD_FN_PURGE 0x1                /* = JINN_FN_PURGE */
#define JINN_CMD_FN_SIG_SIZE 64   /* FN_DEPLOY2: an ed25519 signature, or none */
#define JINN_CMD_FN_KEY_ID_MAX 64 /* FN_DEPLOY2: the signing key's id */
#define JINN_CMD_FN_TRUSTED_MAX 16 /* FN_POLICY: trusted keys (= JINN_FNSIG_TRUSTED_MAX) */
#define JINN_JOB_QUEUE_PREFIX "WORKERS_" /* a function's job queue: WORKERS_<fn> */
#define JINN_JOB_RESULT_MAX (1u << 20)   /* response bytes kept per job */
#define JINN_JOB_ACK_MAX 64              /* jobs one JOB_ACK settles */
#define JINN_JOB_ACK_BYTES_MAX (8u << 20) /* their responses together */

/* TOKEN_PUT flags */
#define JINN_CMD_TOKEN_BOOTSTRAP 0x1 /* only into an empty table (else conflict) */
#define JINN_CMD_TOKEN_FNSCOPE 0x2   /* name is a function: the scope its deployer gave */

/* KV_PUT / KV_DEL flags */
#define JINN_KV_CREATE_ONLY 0x1 /* If-None-Match: * (PUT only) */
#define JINN_KV_FENCED 0x2      /* apply only if fence lock is held with fence token */
#define JINN_KV_FLAGS (JINN_KV_CREATE_ONLY | JINN_KV_FENCED)

enum jinn_cmd_type {
    JINN_CMD_NOOP = 1,     /* advances cluster time; nothing else */
    JINN_CMD_NODE_SET = 2, /* a node announces its name and API URL */
    JINN_CMD_KV_PUT = 3,   /* set a key, optionally conditional and with a TTL */
    JINN_CMD_KV_DEL = 4,   /* delete a key, optionally conditional */
    JINN_CMD_LOCK_ACQUIRE = 5,
    JINN_CMD_LOCK_REFRESH = 6,
    JINN_CMD_LOCK_RELEASE = 7,
    JINN_CMD_Q_PUBLISH = 8,
    JINN_CMD_Q_FETCH = 9,    /* lease ready messages to a worker */
    JINN_CMD_Q_ACK = 10,
    JINN_CMD_Q_NAK = 11,     /* retry after delay_ms, or dead letter */
    JINN_CMD_Q_PROGRESS = 12, /* extend the lease */
    JINN_CMD_Q_TERM = 13,    /* straight to dead letters */
    JINN_CMD_Q_REQUEUE = 14, /* dead letter back to ready */
    JINN_CMD_Q_DROP = 15,    /* forget a dead letter */
    JINN_CMD_SQL_EXEC = 16,  /* statements run in one transaction */
    JINN_CMD_CHECK = 17,     /* replicas digest their state here; changes nothing */
    JINN_CMD_NODE_DEL = 18,  /* the leader drops a node that left the configuration */
    /* a waiting acquire (lock.token = its raft index) leaves the line */
    JINN_CMD_LOCK_WITHDRAW = 21,
    JINN_CMD_LOCK_ORPHANS = 22, /* a new leader's first command: waiters queued
                                   under earlier leaders leave every line */
    /* Functions (fsm/fn.h): types a build without them stops at (format 2
     * is kept: an unknown type already stops a replica, see cmd.c). */
    JINN_CMD_FN_DEPLOY = 23,   /* a new version: module bytes + settings */
    JINN_CMD_FN_DELETE = 24,   /* no active version (kept for rollback), or purge */
    JINN_CMD_FN_ROLLBACK = 25, /* a kept version becomes active again */
    /* Jobs (fsm/jobs.h) */
    JINN_CMD_JOB_ACK = 26,    /* ack a WORKERS_<fn> message + keep the job's result */
    JINN_CMD_JOB_CRON = 27,   /* fire a function's cron tick (one publish) */
    JINN_CMD_FN_DEPLOY2 = 28, /* FN_DEPLOY + signature; settings may hold workers, cron */
    JINN_CMD_TOKEN_PUT = 29,    /* a scoped token (fsm/auth.h): salted hash + rules */
    JINN_CMD_TOKEN_REVOKE = 30, /* forget a token by name */
    JINN_CMD_FN_POLICY = 31,  /* the signing policy: require_signature + trusted keys */
    /* TOKEN_PUT whose rules use what the release before it refuses
     * (cluster:replica): a build without it stops here instead of storing
     * no token while newer replicas store it (same body as TOKEN_PUT). */
    JINN_CMD_TOKEN_PUT2 = 32,
    JINN_CMD_TYPE_MAX
};

/* A byte string pointing into a buffer it borrows from. */
struct jinn_slice {
    const uint8_t *p;
    size_t len;
};

struct jinn_cmd {
    uint8_t type;
    uint8_t version; /* decode: the entry's format; encode: 0 = JINN_CMD_VERSION */
    uint64_t time_ms;
    union {
        struct {
            uint64_t id;
            struct jinn_slice name;
            struct jinn_slice api;
        } node;
        struct {
            struct jinn_slice ns;
            struct jinn_slice key;
            struct jinn_slice value;  /* PUT only */
            uint32_t flags;           /* JINN_KV_* */
            uint64_t expect_revision; /* 0: unconditional */
            uint64_t ttl_ms;          /* PUT only; 0: never expires */
            struct jinn_slice fence;  /* with JINN_KV_FENCED: lock name */
            uint64_t fence_token;
        } kv;
        struct {
            struct jinn_slice name;
            struct jinn_slice owner; /* ACQUIRE only */
            uint64_t token;          /* REFRESH, RELEASE; WITHDRAW: the acquire's index */
            uint64_t ttl_ms;         /* ACQUIRE, REFRESH */
            uint64_t wait_ms;        /* ACQUIRE: queue this long if held; 0 = no */
        } lock;
        /* Queue commands carry the leader's policy values (limits, ack_wait,
         * max_deliver), so replicas with different configs still agree. */
        struct {
            struct jinn_slice queue;
            struct jinn_slice worker;  /* FETCH, ACK, NAK, PROGRESS, TERM */
            struct jinn_slice payload; /* PUBLISH */
            struct jinn_slice idem;    /* PUBLISH: Idempotency-Key, may be empty */
            struct jinn_slice reason;  /* NAK, TERM */
            uint64_t seq;              /* ACK ... DROP */
            uint64_t delivery;         /* ACK, NAK, PROGRESS, TERM: 0 = any */
            uint64_t count;            /* PUBLISH: max_length; FETCH: batch size */
            uint64_t bytes;            /* PUBLISH: max_bytes */
            uint64_t ms;               /* PUBLISH: idempotency window; FETCH, PROGRESS:
                                          ack_wait; NAK: delay */
            uint64_t max_deliver;      /* PUBLISH */
        } q;
        struct {
            struct jinn_slice db;
            struct jinn_slice statements; /* {"statements":[{"sql","params"}]} */
            uint64_t step_budget;         /* SQLite VM steps allowed (deterministic) */
            struct jinn_slice fence;      /* lock name, empty when not fenced */
            uint64_t fence_token;
            /* The leader's sqlite3_libversion_number(); 0 in entries from
             * before this field (decoded from their absence). */
            uint32_t sqlite_version;
        } sql;
        struct {
            struct jinn_slice name;     /* [a-z0-9][a-z0-9_-]{0,63} */
            struct jinn_slice settings; /* DEPLOY: canonical settings JSON */
            struct jinn_slice module;   /* DEPLOY: the WebAssembly binary */
            uint64_t version;           /* ROLLBACK: 0 = the one before the active */
            uint64_t flags;             /* DELETE: JINN_FN_PURGE */
            struct jinn_slice signature; /* DEPLOY2: 0 or JINN_CMD_FN_SIG_SIZE bytes */
            struct jinn_slice key_id;    /* DEPLOY2: 0..JINN_CMD_FN_KEY_ID_MAX bytes */
        } fn;
        /* FN_POLICY (fsm/fnsig.h): replaces the policy. Keys in strictly
         * ascending name order, names [a-z0-9][a-z0-9_.-]{0,63}. */
        struct {
            uint8_t require_signature; /* 0 or 1 */
            uint32_t n_keys;
            struct jinn_slice key_name[JINN_CMD_FN_TRUSTED_MAX];
            const uint8_t *key_pub[JINN_CMD_FN_TRUSTED_MAX]; /* 32 bytes each */
        } fn_policy;
        /* JOB_ACK: 1..JINN_JOB_ACK_MAX acks of one WORKERS_<fn> queue, each
         * Q_ACK's fields + the result to keep, with the leader's retention
         * policy (keep_ms after finishing, keep_bytes in total). Each is
         * applied on its own (fsm/jobs.h). */
        struct {
            struct jinn_slice queue; /* WORKERS_<fn> */
            uint32_t n;
            struct jinn_job_ack_item {
                struct jinn_slice worker;
                uint64_t seq;
                uint64_t delivery;          /* 0 = any */
                uint32_t status;            /* the function's HTTP status */
                struct jinn_slice response; /* <= JINN_JOB_RESULT_MAX bytes */
            } item[JINN_JOB_ACK_MAX];       /* responses <= JINN_JOB_ACK_BYTES_MAX */
            uint64_t keep_ms;
            uint64_t keep_bytes;
        } job;
        /* JOB_CRON: the tick to fire, with Q_PUBLISH's policy values for the
         * message it publishes to WORKERS_<name>. */
        struct {
            struct jinn_slice name; /* the function */
            uint64_t tick_ms;
            uint64_t max_length;  /* = Q_PUBLISH's count */
            uint64_t max_bytes;   /* = Q_PUBLISH's bytes */
            uint64_t max_deliver; /* = Q_PUBLISH's max_deliver */
            /* The proposer's wall clock (UTC ms): cron is UTC, and cluster
             * time lags UTC after a full-cluster outage (clock.h); apply
             * takes max(entry time, now_ms) as "now" (fsm/jobs.c). */
            uint64_t now_ms;
        } cron;
        struct {
            struct jinn_slice name;  /* [a-z0-9][a-z0-9_-]{0,63} */
            struct jinn_slice salt;  /* PUT: 16 bytes */
            struct jinn_slice hash;  /* PUT: 32 bytes, SHA-256(salt || secret) */
            struct jinn_slice rules; /* PUT: canonical rule text (fsm/auth.h) */
            struct jinn_slice key;   /* PUT: 0 or 32 bytes, the internal key */
            uint64_t expires_ms;     /* PUT: cluster time; 0 = never */
            uint64_t flags;          /* PUT: JINN_CMD_TOKEN_BOOTSTRAP | _FNSCOPE */
            struct jinn_slice deployer; /* FNSCOPE: the deploying token ("" = admin) */
        } token;
    };
};

/* The queue commands form one contiguous range of types. */
static inline bool jinn_cmd_is_queue(int type)
{
    return type >= JINN_CMD_Q_PUBLISH && type <= JINN_CMD_Q_DROP;
}

static inline bool jinn_cmd_is_fn(int type)
{
    return (type >= JINN_CMD_FN_DEPLOY && type <= JINN_CMD_FN_ROLLBACK) ||
           type == JINN_CMD_FN_DEPLOY2;
}

static inline bool jinn_cmd_is_token(int type)
{
    return type == JINN_CMD_TOKEN_PUT || type == JINN_CMD_TOKEN_REVOKE ||
           type == JINN_CMD_TOKEN_PUT2;
}

static inline bool jinn_cmd_is_token_put(int type)
{
    return type == JINN_CMD_TOKEN_PUT || type == JINN_CMD_TOKEN_PUT2;
}

/* Encodes c into out (appended; caller owns out). Returns 0, JINN_ENOMEM or
 * JINN_EINVAL for a field over its limit. */
int jinn_cmd_encode(const struct jinn_cmd *c, struct jinn_wbuf *out);

/* Decodes buf into c; slices in c borrow from buf. Returns 0, JINN_ECORRUPT
 * (not a command, or a known version and type with a malformed body) or
 * JINN_EVERSION (a format version or command type this build does not
 * know: the FSM stops rather than skip it). */
int jinn_cmd_decode(const void *buf, size_t len, struct jinn_cmd *c);

const char *jinn_cmd_type_name(int type);

#endif
