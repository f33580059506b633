/* auth.h - scoped tokens in the replicated state (issue 15 item 3).
 *
 * A token is a name, a salted SHA-256 of its secret, an allow-list of rules
 * and an expiry in cluster time. The secret itself is never stored: the
 * leader's handler draws it (and the salt) at random and the command carries
 * only the salt and the hash, so apply stays deterministic.
 *
 * Rules (canonical form, what the command and the snapshot carry):
 *
 *   kv:PATTERN:ACTIONS      PATTERN over "NAMESPACE/KEY"; actions read,write
 *   lock:PATTERN            any lock operation on a matching lock name
 *   queue:PATTERN:ACTIONS   publish,consume,admin
 *   sql:PATTERN:ACTIONS     read,write
 *   fn:PATTERN:ACTIONS      invoke,deploy
 *   cluster:admin           everything, token management included
 *   cluster:metrics         GET /metrics, nothing else
 *   cluster:replica         GET /v1/stream (an edge replica's feed) and
 *                           GET /v1/cluster/check (its check verdict), nothing else
 *
 * PATTERN is a literal, or a literal followed by one trailing '*' (prefix
 * match); "*" alone matches every name. Literals are printable ASCII
 * without ':', '*', ' ' or '%'. Actions are written in the order above,
 * each once. A rule set is rules joined by one space, each once, in the
 * order given.
 *
 * The table also keeps the cluster's internal key: 32 bytes the leader drew
 * when the first token was created, with which nodes authenticate their own
 * calls to each other (forwards, announcements, replica checks) when there
 * is no mutual TLS. */
#ifndef JINN_FSM_AUTH_H
#define JINN_FSM_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct jinn_cmd;

#define JINN_AUTH_NAME_MAX 64    /* [a-z0-9][a-z0-9_-]{0,63} */
#define JINN_AUTH_RULES_MAX 8192 /* canonical rule text, bytes */
#define JINN_AUTH_RULE_COUNT_MAX 64
#define JINN_AUTH_PATTERN_MAX 1100 /* a KV "ns/key" fits */
#define JINN_AUTH_TOKENS_MAX 4096
#define JINN_AUTH_SCOPES_MAX 65536 /* function scopes */
/* Memory all function scopes may take on each replica (structures, rules,
 * text); a scope beyond it is refused (JINN_EFULL), deterministically. */
#define JINN_AUTH_SCOPE_BYTES_MAX (32u * 1024 * 1024)
#define JINN_AUTH_SALT_LEN 16
#define JINN_AUTH_HASH_LEN 32
#define JINN_AUTH_KEY_LEN 32

enum jinn_auth_kind {
    JINN_AUTH_NONE = 0, /* route table: not stated, so cluster:admin is needed */
    JINN_AUTH_KV,
    JINN_AUTH_LOCK,
    JINN_AUTH_QUEUE,
    JINN_AUTH_SQL,
    JINN_AUTH_FN,
    JINN_AUTH_CLUSTER,
    JINN_AUTH_ANY,    /* any valid token (e.g. /v1/status) */
    JINN_AUTH_PUBLIC, /* no token at all (/healthz, /readyz) */
};

/* Actions: one bit each; a route needs any one of the bits it names. */
enum {
    JINN_AUTH_READ = 1 << 0,    /* kv, sql */
    JINN_AUTH_WRITE = 1 << 1,   /* kv, sql */
    JINN_AUTH_PUBLISH = 1 << 2, /* queue */
    JINN_AUTH_CONSUME = 1 << 3, /* queue */
    JINN_AUTH_ADMIN = 1 << 4,   /* queue, cluster */
    JINN_AUTH_INVOKE = 1 << 5,  /* fn */
    JINN_AUTH_DEPLOY = 1 << 6,  /* fn */
    JINN_AUTH_HOLD = 1 << 7,    /* lock (implied: lock rules name no action) */
    JINN_AUTH_METRICS = 1 << 8, /* cluster: GET /metrics only (a Prometheus scraper) */
    JINN_AUTH_REPLICA = 1 << 9, /* cluster: GET /v1/stream only (an edge replica) */
};

struct jinn_auth_rule {
    uint8_t kind;
    uint8_t prefix;   /* pattern ends in '*' (not stored in pattern) */
    uint16_t actions; /* JINN_AUTH_* bits */
    uint16_t pattern_len;
    char pattern[JINN_AUTH_PATTERN_MAX + 1];
};

struct jinn_auth_rules {
    unsigned n;
    struct jinn_auth_rule *rule; /* n of them */
};

/* Parses text (rules separated by spaces, commas inside rules only) into
 * out (caller frees with jinn_auth_rules_free) and writes the canonical
 * form into canon (NUL-terminated, at most JINN_AUTH_RULES_MAX bytes).
 * Returns 0, JINN_EINVAL with a reason in err, or JINN_ENOMEM. Strict: an
 * unknown kind or action, an empty or misplaced '*', a duplicate rule,
 * control or non-ASCII bytes are refused. */
int jinn_auth_rules_parse(const char *text, size_t len, struct jinn_auth_rules *out,
                          char *canon, size_t canon_cap, char *err, size_t err_cap);
void jinn_auth_rules_free(struct jinn_auth_rules *rules);

/* True when some rule allows one of the actions in `actions` on resource
 * name of this kind (cluster:admin allows everything). */
bool jinn_auth_rules_allow(const struct jinn_auth_rules *rules, int kind, const char *name,
                           size_t name_len, unsigned actions);
/* True when some rule of this kind (or cluster:admin) could allow something
 * whose name starts with prefix (listings: which filter item by item). */
bool jinn_auth_rules_may_list(const struct jinn_auth_rules *rules, int kind, const char *prefix,
                              size_t prefix_len, unsigned actions);

bool jinn_auth_name_ok(const char *name, size_t len);

/* Whether canonical rules text uses a rule the release before it refuses
 * (today: cluster:replica). The leader then writes TOKEN_PUT2 (32), which
 * such a build cannot decode and stops at, and apply refuses the rule in a
 * TOKEN_PUT (29): an old replica would store no token where a new one
 * stores it, and the replicas would diverge during a rolling upgrade. */
bool jinn_auth_rules_need_put2(const char *rules, size_t len);

struct jinn_token {
    char name[JINN_AUTH_NAME_MAX + 1];
    uint8_t salt[JINN_AUTH_SALT_LEN];
    uint8_t hash[JINN_AUTH_HASH_LEN];
    char *rules_text; /* canonical */
    struct jinn_auth_rules rules;
    uint64_t created_ms, expires_ms; /* cluster time; expires 0 = never */
};

/* Functions act with the scope their deployer gave them: the rules of the
 * token that deployed it (cluster:admin when an admin credential did), and
 * only while that token exists. */
struct jinn_fn_scope {
    char fn[JINN_AUTH_NAME_MAX + 1];
    char deployer[JINN_AUTH_NAME_MAX + 1]; /* "": not a token (node key, config bootstrap) */
    char *rules_text;                      /* canonical */
    struct jinn_auth_rules rules;
};

struct jinn_auth {
    struct jinn_token *tokens; /* sorted by name */
    unsigned n, cap;
    struct jinn_fn_scope *scopes; /* sorted by fn */
    unsigned n_scopes, cap_scopes;
    size_t scope_bytes; /* sum of the scopes' costs, <= JINN_AUTH_SCOPE_BYTES_MAX */
    bool has_key;
    uint8_t key[JINN_AUTH_KEY_LEN];
};

void jinn_auth_init(struct jinn_auth *a);
void jinn_auth_clear(struct jinn_auth *a);

/* TOKEN_PUT / TOKEN_PUT2 / TOKEN_REVOKE. PUT: JINN_ECONFLICT when the name
 * exists, or (bootstrap flag) when the table is not empty; JINN_EFULL over
 * JINN_AUTH_TOKENS_MAX. REVOKE: JINN_ENOTFOUND when absent. Rules that are
 * not canonical, or that need TOKEN_PUT2 in a TOKEN_PUT, give JINN_EINVAL. */
int jinn_auth_apply(struct jinn_auth *a, const struct jinn_cmd *c);
/* Forgets function fn's scope (the function was deleted or purged, or a
 * new version was deployed: its deployer's scope follows in a TOKEN_PUT). */
void jinn_auth_scope_drop(struct jinn_auth *a, const char *fn, size_t len);

const struct jinn_token *jinn_auth_find(const struct jinn_auth *a, const char *name,
                                        size_t len);
const struct jinn_fn_scope *jinn_auth_fn_scope(const struct jinn_auth *a, const char *fn,
                                               size_t len);

/* Checks a presented secret: the token it names (see token format in
 * api/auth.c), not expired at now_ms, hash equal (constant time). */
const struct jinn_token *jinn_auth_check(const struct jinn_auth *a, const char *name,
                                         size_t name_len, const char *secret, size_t secret_len,
                                         uint64_t now_ms);

/* SHA-256(salt || secret). */
void jinn_auth_hash(const uint8_t salt[JINN_AUTH_SALT_LEN], const void *secret, size_t len,
                    uint8_t out[JINN_AUTH_HASH_LEN]);

bool jinn_auth_ct_equal(const void *a, const void *b, size_t n);

/* Snapshot section (format 3). */
void jinn_auth_encode(const struct jinn_auth *a, struct jinn_wbuf *w);
int jinn_auth_decode(struct jinn_auth *a, struct jinn_rbuf *r);

/* Edge replicas (docs/replica.md, security): what a replica receives holds,
 * in place of the internal key K, R = SHA-256("jinn-replica-key\0" || K),
 * 32 bytes like K, so the formats stay as they are. R opens nothing: a
 * replica refuses node and function credentials, and voters compare their
 * node credentials with K. 0, or JINN_EINTERNAL (then out is zeroed and
 * must not be sent). */
int jinn_auth_replica_key(const uint8_t key[JINN_AUTH_KEY_LEN], uint8_t out[JINN_AUTH_KEY_LEN]);
/* jinn_auth_encode with R in place of the key (the stream to replicas only;
 * raft snapshots and backups keep the key). JINN_EINTERNAL as above (w
 * then holds nothing of the section's key). */
int jinn_auth_encode_redacted(const struct jinn_auth *a, struct jinn_wbuf *w);
/* Where the 32 key bytes sit in an encoded auth section whose first byte
 * (has_key) is 1. */
#define JINN_AUTH_SECTION_KEY_OFFSET 1
/* When the command entry buf (a raft entry, cmd.c format) carries a key
 * (every TOKEN_PUT a client's create proposed does: the first applied one's
 * becomes the cluster's key, the others' are ignored), true and *off =
 * where its 32 bytes are, so the stream sends the entry with R there. */
bool jinn_auth_entry_key_offset(const void *buf, size_t len, size_t *off);

#endif
