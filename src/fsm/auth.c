/* auth.c - the token table and the rule grammar (see auth.h). */
#include "fsm/auth.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "sha256.h"

#define SECRET_MAX 512 /* a presented secret longer than this never matches */

/* ---- rules ----------------------------------------------------------------- */

static const struct {
    const char *name;
    int kind;
    unsigned actions; /* the actions this kind knows, in canonical order below */
} kinds[] = {
    {"kv", JINN_AUTH_KV, JINN_AUTH_READ | JINN_AUTH_WRITE},
    {"lock", JINN_AUTH_LOCK, JINN_AUTH_HOLD},
    {"queue", JINN_AUTH_QUEUE, JINN_AUTH_PUBLISH | JINN_AUTH_CONSUME | JINN_AUTH_ADMIN},
    {"sql", JINN_AUTH_SQL, JINN_AUTH_READ | JINN_AUTH_WRITE},
    {"fn", JINN_AUTH_FN, JINN_AUTH_INVOKE | JINN_AUTH_DEPLOY},
    {"cluster", JINN_AUTH_CLUSTER, JINN_AUTH_ADMIN | JINN_AUTH_METRICS | JINN_AUTH_REPLICA},
};

static const struct {
    const char *name;
    unsigned bit;
} actions[] = {
    {"read", JINN_AUTH_READ},       {"write", JINN_AUTH_WRITE}, {"publish", JINN_AUTH_PUBLISH},
    {"consume", JINN_AUTH_CONSUME}, {"admin", JINN_AUTH_ADMIN}, {"invoke", JINN_AUTH_INVOKE},
    {"deploy", JINN_AUTH_DEPLOY},   {"metrics", JINN_AUTH_METRICS},
    {"replica", JINN_AUTH_REPLICA},
};

static const char *kind_name(int kind)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (kinds[i].kind == kind) {
            return kinds[i].name;
        }
    }
    return "?";
}

static bool literal_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != ':' && c != '*' && c != '%';
}

static bool span_is(const char *p, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(p, word, len) == 0;
}

void jinn_auth_rules_free(struct jinn_auth_rules *rules)
{
    jinn_free(rules->rule);
    rules->rule = NULL;
    rules->n = 0;
}

/* One rule p[0..len) (no spaces) into r. */
static int parse_rule(const char *p, size_t len, struct jinn_auth_rule *r, char *err,
                      size_t err_cap)
{
    const char *c1 = memchr(p, ':', len), *c2, *pat, *acts;
    size_t klen, plen, alen;
    unsigned known = 0;
    size_t k;

    memset(r, 0, sizeof *r);
    if (c1 == NULL) {
        snprintf(err, err_cap,
                 "a rule is KIND:PATTERN[:ACTIONS], cluster:admin, cluster:metrics or "
                 "cluster:replica");
        return JINN_EINVAL;
    }
    klen = (size_t)(c1 - p);
    for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (span_is(p, klen, kinds[k].name)) {
            break;
        }
    }
    if (k == sizeof kinds / sizeof kinds[0]) {
        snprintf(err, err_cap, "unknown kind (kv, lock, queue, sql, fn, cluster)");
        return JINN_EINVAL;
    }
    r->kind = (uint8_t)kinds[k].kind;
    known = kinds[k].actions;
    if (r->kind == JINN_AUTH_CLUSTER) {
        if (span_is(c1 + 1, len - klen - 1, "admin")) {
            r->actions = JINN_AUTH_ADMIN;
        } else if (span_is(c1 + 1, len - klen - 1, "metrics")) {
            r->actions = JINN_AUTH_METRICS;
        } else if (span_is(c1 + 1, len - klen - 1, "replica")) {
            r->actions = JINN_AUTH_REPLICA;
        } else {
            snprintf(err, err_cap,
                     "the cluster rules are cluster:admin, cluster:metrics and cluster:replica");
            return JINN_EINVAL;
        }
        return 0;
    }
    pat = c1 + 1;
    c2 = memchr(pat, ':', len - klen - 1);
    plen = c2 ? (size_t)(c2 - pat) : len - klen - 1;
    acts = c2 ? c2 + 1 : NULL;
    alen = c2 ? len - klen - 1 - plen - 1 : 0;
    if (plen == 0) {
        snprintf(err, err_cap, "empty pattern (use * for every name)");
        return JINN_EINVAL;
    }
    if (pat[plen - 1] == '*') {
        r->prefix = 1;
        plen--;
    }
    if (plen > JINN_AUTH_PATTERN_MAX) {
        snprintf(err, err_cap, "pattern longer than %d bytes", JINN_AUTH_PATTERN_MAX);
        return JINN_EINVAL;
    }
    for (size_t i = 0; i < plen; i++) {
        if (!literal_char((unsigned char)pat[i])) {
            snprintf(err, err_cap,
                     "a pattern is printable ASCII without ':' '%%' or spaces, with at most "
                     "one '*', at its end");
            return JINN_EINVAL;
        }
    }
    memcpy(r->pattern, pat, plen);
    r->pattern[plen] = '\0';
    r->pattern_len = (uint16_t)plen;
    if (r->kind == JINN_AUTH_LOCK) {
        if (acts != NULL) {
            snprintf(err, err_cap, "a lock rule names no actions (lock:PATTERN)");
            return JINN_EINVAL;
        }
        r->actions = JINN_AUTH_HOLD;
        return 0;
    }
    if (acts == NULL || alen == 0) {
        snprintf(err, err_cap, "a %s rule needs actions (%s:PATTERN:ACTION[,ACTION])",
                 kinds[k].name, kinds[k].name);
        return JINN_EINVAL;
    }
    for (const char *a = acts, *end = acts + alen; a <= end;) {
        const char *comma = memchr(a, ',', (size_t)(end - a));
        size_t n = comma ? (size_t)(comma - a) : (size_t)(end - a);
        size_t j;
        for (j = 0; j < sizeof actions / sizeof actions[0]; j++) {
            if (span_is(a, n, actions[j].name)) {
                break;
            }
        }
        if (j == sizeof actions / sizeof actions[0] || !(known & actions[j].bit)) {
            snprintf(err, err_cap, "unknown action for %s", kinds[k].name);
            return JINN_EINVAL;
        }
        if (r->actions & actions[j].bit) {
            snprintf(err, err_cap, "an action is named twice");
            return JINN_EINVAL;
        }
        r->actions |= (uint16_t)actions[j].bit;
        a += n + 1;
    }
    return 0;
}

static void put_canon(const struct jinn_auth_rule *r, struct jinn_wbuf *w)
{
    jinn_wbuf_printf(w, "%s", kind_name(r->kind));
    if (r->kind == JINN_AUTH_CLUSTER) {
        jinn_wbuf_printf(w, (r->actions & JINN_AUTH_ADMIN)     ? ":admin"
                            : (r->actions & JINN_AUTH_REPLICA) ? ":replica"
                                                               : ":metrics");
        return;
    }
    jinn_wbuf_printf(w, ":%.*s%s", (int)r->pattern_len, r->pattern, r->prefix ? "*" : "");
    if (r->kind == JINN_AUTH_LOCK) {
        return;
    }
    {
        const char *sep = ":";
        for (size_t j = 0; j < sizeof actions / sizeof actions[0]; j++) {
            if (r->actions & actions[j].bit) {
                jinn_wbuf_printf(w, "%s%s", sep, actions[j].name);
                sep = ",";
            }
        }
    }
}

int jinn_auth_rules_parse(const char *text, size_t len, struct jinn_auth_rules *out,
                          char *canon, size_t canon_cap, char *err, size_t err_cap)
{
    struct jinn_wbuf w;
    int rv = 0;

    memset(out, 0, sizeof *out);
    err[0] = '\0';
    if (len == 0 || len > JINN_AUTH_RULES_MAX) {
        snprintf(err, err_cap, "1 to %d rules of at most %d bytes in all",
                 JINN_AUTH_RULE_COUNT_MAX, JINN_AUTH_RULES_MAX);
        return JINN_EINVAL;
    }
    out->rule = jinn_calloc(JINN_AUTH_RULE_COUNT_MAX, sizeof *out->rule);
    if (out->rule == NULL) {
        return JINN_ENOMEM;
    }
    jinn_wbuf_init(&w);
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        if (text[i] == ' ') {
            /* exactly one space between rules, none around */
            snprintf(err, err_cap, "rules are separated by one space");
            rv = JINN_EINVAL;
            goto cleanup;
        }
        while (i + n < len && text[i + n] != ' ') {
            n++;
        }
        if (i + n + 1 == len) {
            snprintf(err, err_cap, "rules are separated by one space");
            rv = JINN_EINVAL;
            goto cleanup;
        }
        if (out->n == JINN_AUTH_RULE_COUNT_MAX) {
            snprintf(err, err_cap, "more than %d rules", JINN_AUTH_RULE_COUNT_MAX);
            rv = JINN_EINVAL;
            goto cleanup;
        }
        rv = parse_rule(text + i, n, &out->rule[out->n], err, err_cap);
        if (rv != 0) {
            goto cleanup;
        }
        for (unsigned j = 0; j < out->n; j++) {
            const struct jinn_auth_rule *a = &out->rule[j], *b = &out->rule[out->n];
            if (a->kind == b->kind && a->prefix == b->prefix &&
                a->pattern_len == b->pattern_len &&
                memcmp(a->pattern, b->pattern, a->pattern_len) == 0) {
                snprintf(err, err_cap, "two rules for the same %s pattern", kind_name(a->kind));
                rv = JINN_EINVAL;
                goto cleanup;
            }
        }
        if (out->n > 0) {
            jinn_wbuf_put_u8(&w, ' ');
        }
        put_canon(&out->rule[out->n], &w);
        out->n++;
        i += n + 1;
    }
    if (w.failed) {
        rv = JINN_ENOMEM;
        goto cleanup;
    }
    if (w.len >= canon_cap || w.len > JINN_AUTH_RULES_MAX) {
        snprintf(err, err_cap, "rules longer than %d bytes", JINN_AUTH_RULES_MAX);
        rv = JINN_EINVAL;
        goto cleanup;
    }
    memcpy(canon, w.data, w.len);
    canon[w.len] = '\0';
    {
        /* Sized by content, not by the 64-rule maximum: every replica
         * keeps one rule set per token and per function scope. */
        struct jinn_auth_rule *fit = jinn_realloc(out->rule, out->n * sizeof *out->rule);
        if (fit != NULL) {
            out->rule = fit;
        }
    }

cleanup:
    jinn_wbuf_free(&w);
    if (rv != 0) {
        jinn_auth_rules_free(out);
    }
    return rv;
}

static bool pattern_match(const struct jinn_auth_rule *r, const char *name, size_t len)
{
    if (r->prefix) {
        return len >= r->pattern_len && memcmp(name, r->pattern, r->pattern_len) == 0;
    }
    return len == r->pattern_len && memcmp(name, r->pattern, len) == 0;
}

bool jinn_auth_rules_allow(const struct jinn_auth_rules *rules, int kind, const char *name,
                           size_t name_len, unsigned acts)
{
    for (unsigned i = 0; i < rules->n; i++) {
        const struct jinn_auth_rule *r = &rules->rule[i];
        if (r->kind == JINN_AUTH_CLUSTER && (r->actions & JINN_AUTH_ADMIN) != 0) {
            return true;
        }
        if (r->kind == JINN_AUTH_CLUSTER) {
            /* cluster:metrics, cluster:replica: the routes that name it,
             * and nothing else
             * (a token with only it is still a valid token for ANY). */
            if (kind == JINN_AUTH_ANY || kind == JINN_AUTH_PUBLIC ||
                (kind == JINN_AUTH_CLUSTER && (r->actions & acts) != 0)) {
                return true;
            }
            continue;
        }
        if (kind == JINN_AUTH_ANY || kind == JINN_AUTH_PUBLIC) {
            return true; /* needs only a valid token: the caller checked it */
        }
        if (r->kind == kind && (r->actions & acts) != 0 && pattern_match(r, name, name_len)) {
            return true;
        }
    }
    return false;
}

bool jinn_auth_rules_may_list(const struct jinn_auth_rules *rules, int kind, const char *prefix,
                              size_t prefix_len, unsigned acts)
{
    for (unsigned i = 0; i < rules->n; i++) {
        const struct jinn_auth_rule *r = &rules->rule[i];
        size_t n;
        if (r->kind == JINN_AUTH_CLUSTER) {
            if ((r->actions & JINN_AUTH_ADMIN) != 0) {
                return true;
            }
            continue; /* cluster:metrics lists nothing */
        }
        if (r->kind != kind || (r->actions & acts) == 0) {
            continue;
        }
        /* Some name starting with prefix can match: one is a prefix of the
         * other (within the pattern's literal part). */
        n = prefix_len < r->pattern_len ? prefix_len : r->pattern_len;
        if (memcmp(prefix, r->pattern, n) == 0 && (r->prefix || prefix_len <= r->pattern_len)) {
            return true;
        }
    }
    return false;
}

bool jinn_auth_rules_need_put2(const char *rules, size_t len)
{
    /* Canonical text is rules separated by one space and cluster rules are
     * written whole, so looking for the word is exact; text that is not
     * canonical is refused by apply anyway. */
    static const char word[] = "cluster:replica";
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        while (i + n < len && rules[i + n] != ' ') {
            n++;
        }
        if (n == sizeof word - 1 && memcmp(rules + i, word, n) == 0) {
            return true;
        }
        i += n + 1;
    }
    return false;
}

bool jinn_auth_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > JINN_AUTH_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '_' || c == '-'));
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* ---- the table --------------------------------------------------------------- */

void jinn_auth_init(struct jinn_auth *a)
{
    memset(a, 0, sizeof *a);
}

static void token_free(struct jinn_token *t)
{
    jinn_free(t->rules_text);
    jinn_auth_rules_free(&t->rules);
}

static void scope_free(struct jinn_fn_scope *sc)
{
    jinn_free(sc->rules_text);
    jinn_auth_rules_free(&sc->rules);
}

/* What a scope costs in memory, counted against JINN_AUTH_SCOPE_BYTES_MAX
 * (a pure function of its content: every replica counts the same). */
static size_t scope_cost(const struct jinn_fn_scope *sc)
{
    return sizeof *sc + sc->rules.n * sizeof *sc->rules.rule + strlen(sc->rules_text) + 1;
}

/* A parse buffer (JINN_AUTH_RULES_MAX + 1 bytes) cut to its text. */
static char *shrink(char *canon)
{
    char *fit = jinn_realloc(canon, strlen(canon) + 1);
    return fit != NULL ? fit : canon;
}

void jinn_auth_clear(struct jinn_auth *a)
{
    for (unsigned i = 0; i < a->n; i++) {
        token_free(&a->tokens[i]);
    }
    for (unsigned i = 0; i < a->n_scopes; i++) {
        scope_free(&a->scopes[i]);
    }
    jinn_free(a->scopes);
    jinn_free(a->tokens);
    memset(a, 0, sizeof *a);
}

/* Index of name, or of where it would go (*found false). */
static unsigned search(const struct jinn_auth *a, const char *name, size_t len, bool *found)
{
    unsigned lo = 0, hi = a->n;
    *found = false;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        size_t ml = strlen(a->tokens[mid].name);
        int c = memcmp(a->tokens[mid].name, name, ml < len ? ml : len);
        if (c == 0) {
            c = ml < len ? -1 : ml > len ? 1 : 0;
        }
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static int name_cmp(const char *a, const char *b, size_t len)
{
    size_t al = strlen(a);
    int c = memcmp(a, b, al < len ? al : len);
    if (c == 0) {
        c = al < len ? -1 : al > len ? 1 : 0;
    }
    return c;
}

static unsigned scope_search(const struct jinn_auth *a, const char *fn, size_t len, bool *found)
{
    unsigned lo = 0, hi = a->n_scopes;
    *found = false;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        int c = name_cmp(a->scopes[mid].fn, fn, len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

const struct jinn_fn_scope *jinn_auth_fn_scope(const struct jinn_auth *a, const char *fn,
                                               size_t len)
{
    bool found;
    unsigned i = scope_search(a, fn, len, &found);
    return found ? &a->scopes[i] : NULL;
}

/* Sets (or replaces) function fn's scope; rules must be canonical, and
 * within what TOKEN_PUT may carry unless put2 (TOKEN_PUT2, a snapshot). */
static int scope_put(struct jinn_auth *a, struct jinn_slice fn, struct jinn_slice deployer,
                     struct jinn_slice rules, bool put2)
{
    struct jinn_fn_scope sc;
    char *canon, err[160];
    bool found;
    unsigned at;
    int rv;

    if (!jinn_auth_name_ok((const char *)fn.p, fn.len) || deployer.len > JINN_AUTH_NAME_MAX) {
        return JINN_EINVAL;
    }
    memset(&sc, 0, sizeof sc);
    canon = jinn_malloc(JINN_AUTH_RULES_MAX + 1);
    if (canon == NULL) {
        return JINN_ENOMEM;
    }
    rv = jinn_auth_rules_parse((const char *)rules.p, rules.len, &sc.rules, canon,
                               JINN_AUTH_RULES_MAX + 1, err, sizeof err);
    if (rv == 0 && ((strlen(canon) != rules.len || memcmp(canon, rules.p, rules.len) != 0) ||
                    (!put2 && jinn_auth_rules_need_put2(canon, rules.len)))) {
        jinn_auth_rules_free(&sc.rules);
        rv = JINN_EINVAL;
    }
    if (rv != 0) {
        jinn_free(canon);
        return rv;
    }
    sc.rules_text = shrink(canon);
    memcpy(sc.fn, fn.p, fn.len);
    if (deployer.len > 0) { /* an empty slice may have no pointer */
        memcpy(sc.deployer, deployer.p, deployer.len);
    }
    at = scope_search(a, (const char *)fn.p, fn.len, &found);
    if (a->scope_bytes - (found ? scope_cost(&a->scopes[at]) : 0) + scope_cost(&sc) >
        JINN_AUTH_SCOPE_BYTES_MAX) {
        scope_free(&sc);
        return JINN_EFULL;
    }
    if (found) {
        a->scope_bytes -= scope_cost(&a->scopes[at]);
        scope_free(&a->scopes[at]);
        a->scopes[at] = sc;
        a->scope_bytes += scope_cost(&sc);
        return 0;
    }
    if (a->n_scopes >= JINN_AUTH_SCOPES_MAX) {
        scope_free(&sc);
        return JINN_EFULL;
    }
    if (a->n_scopes == a->cap_scopes) {
        unsigned cap = a->cap_scopes ? a->cap_scopes * 2 : 8;
        struct jinn_fn_scope *v = jinn_realloc(a->scopes, cap * sizeof *v);
        if (v == NULL) {
            scope_free(&sc);
            return JINN_ENOMEM;
        }
        a->scopes = v;
        a->cap_scopes = cap;
    }
    memmove(&a->scopes[at + 1], &a->scopes[at], (a->n_scopes - at) * sizeof *a->scopes);
    a->scopes[at] = sc;
    a->n_scopes++;
    a->scope_bytes += scope_cost(&sc);
    return 0;
}

void jinn_auth_scope_drop(struct jinn_auth *a, const char *fn, size_t len)
{
    bool found;
    unsigned at = scope_search(a, fn, len, &found);
    if (!found) {
        return;
    }
    a->scope_bytes -= scope_cost(&a->scopes[at]);
    scope_free(&a->scopes[at]);
    memmove(&a->scopes[at], &a->scopes[at + 1], (a->n_scopes - at - 1) * sizeof *a->scopes);
    a->n_scopes--;
}

const struct jinn_token *jinn_auth_find(const struct jinn_auth *a, const char *name, size_t len)
{
    bool found;
    unsigned i = search(a, name, len, &found);
    return found ? &a->tokens[i] : NULL;
}

/* Inserts a token built from the fields; rules must be canonical, and
 * within what TOKEN_PUT may carry unless put2 (TOKEN_PUT2, a snapshot). */
static int insert(struct jinn_auth *a, struct jinn_slice name, const uint8_t *salt,
                  const uint8_t *hash, struct jinn_slice rules, uint64_t created_ms,
                  uint64_t expires_ms, bool put2)
{
    struct jinn_token t;
    char *canon = NULL, err[160];
    bool found;
    unsigned at;
    int rv;

    if (!jinn_auth_name_ok((const char *)name.p, name.len)) {
        return JINN_EINVAL;
    }
    at = search(a, (const char *)name.p, name.len, &found);
    if (found) {
        return JINN_ECONFLICT;
    }
    if (a->n >= JINN_AUTH_TOKENS_MAX) {
        return JINN_EFULL;
    }
    memset(&t, 0, sizeof t);
    canon = jinn_malloc(JINN_AUTH_RULES_MAX + 1);
    if (canon == NULL) {
        return JINN_ENOMEM;
    }
    rv = jinn_auth_rules_parse((const char *)rules.p, rules.len, &t.rules, canon,
                               JINN_AUTH_RULES_MAX + 1, err, sizeof err);
    if (rv == 0 && ((strlen(canon) != rules.len || memcmp(canon, rules.p, rules.len) != 0) ||
                    (!put2 && jinn_auth_rules_need_put2(canon, rules.len)))) {
        jinn_auth_rules_free(&t.rules);
        rv = JINN_EINVAL; /* the leader writes the canonical form only */
    }
    if (rv != 0) {
        jinn_free(canon);
        return rv;
    }
    t.rules_text = shrink(canon);
    memcpy(t.name, name.p, name.len);
    t.name[name.len] = '\0';
    memcpy(t.salt, salt, JINN_AUTH_SALT_LEN);
    memcpy(t.hash, hash, JINN_AUTH_HASH_LEN);
    t.created_ms = created_ms;
    t.expires_ms = expires_ms;
    if (a->n == a->cap) {
        unsigned cap = a->cap ? a->cap * 2 : 8;
        struct jinn_token *v = jinn_realloc(a->tokens, cap * sizeof *v);
        if (v == NULL) {
            token_free(&t);
            return JINN_ENOMEM;
        }
        a->tokens = v;
        a->cap = cap;
    }
    memmove(&a->tokens[at + 1], &a->tokens[at], (a->n - at) * sizeof *a->tokens);
    a->tokens[at] = t;
    a->n++;
    return 0;
}

int jinn_auth_apply(struct jinn_auth *a, const struct jinn_cmd *c)
{
    /* TOKEN_PUT refuses what only TOKEN_PUT2 may carry, where and as the
     * release before refuses it (invalid rules, once parsed): every
     * replica, old or new, stores nothing and answers alike. */
    bool put2 = c->type == JINN_CMD_TOKEN_PUT2;
    if (jinn_cmd_is_token_put(c->type) && (c->token.flags & JINN_CMD_TOKEN_FNSCOPE)) {
        return scope_put(a, c->token.name, c->token.deployer, c->token.rules, put2);
    }
    if (jinn_cmd_is_token_put(c->type)) {
        int rv;
        if ((c->token.flags & JINN_CMD_TOKEN_BOOTSTRAP) && (a->n > 0 || a->has_key)) {
            /* bootstrap only into a table that never held a token: once
             * the key exists, revoking every token never brings the
             * configured bootstrap secret back */
            return JINN_ECONFLICT;
        }
        rv = insert(a, c->token.name, c->token.salt.p, c->token.hash.p, c->token.rules,
                    c->time_ms, c->token.expires_ms, put2);
        if (rv == 0 && !a->has_key && c->token.key.len == JINN_AUTH_KEY_LEN) {
            memcpy(a->key, c->token.key.p, JINN_AUTH_KEY_LEN);
            a->has_key = true;
        }
        return rv;
    }
    {
        bool found;
        unsigned at = search(a, (const char *)c->token.name.p, c->token.name.len, &found);
        if (!found) {
            return JINN_ENOTFOUND;
        }
        /* The scopes it gave functions go with it: a token created later
         * under the same name must not bring them back. */
        for (unsigned i = a->n_scopes; i-- > 0;) {
            if (strcmp(a->scopes[i].deployer, a->tokens[at].name) == 0) {
                jinn_auth_scope_drop(a, a->scopes[i].fn, strlen(a->scopes[i].fn));
            }
        }
        token_free(&a->tokens[at]);
        memmove(&a->tokens[at], &a->tokens[at + 1], (a->n - at - 1) * sizeof *a->tokens);
        a->n--;
        return 0;
    }
}

bool jinn_auth_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) {
        d |= (uint8_t)(x[i] ^ y[i]);
    }
    return d == 0;
}

void jinn_auth_hash(const uint8_t salt[JINN_AUTH_SALT_LEN], const void *secret, size_t len,
                    uint8_t out[JINN_AUTH_HASH_LEN])
{
    uint8_t buf[JINN_AUTH_SALT_LEN + SECRET_MAX];
    if (len > SECRET_MAX) {
        len = SECRET_MAX; /* callers refuse longer secrets before this */
    }
    memcpy(buf, salt, JINN_AUTH_SALT_LEN);
    memcpy(buf + JINN_AUTH_SALT_LEN, secret, len);
    if (jinn_sha256(buf, JINN_AUTH_SALT_LEN + len, out) != 0) {
        /* zeroed output never equals a stored hash of a real secret... but
         * make sure: flip it so no stored value can be matched. */
        memset(out, 0xff, JINN_AUTH_HASH_LEN);
        out[0] = 0;
    }
}

const struct jinn_token *jinn_auth_check(const struct jinn_auth *a, const char *name,
                                         size_t name_len, const char *secret, size_t secret_len,
                                         uint64_t now_ms)
{
    const struct jinn_token *t = jinn_auth_find(a, name, name_len);
    uint8_t h[JINN_AUTH_HASH_LEN];
    if (t == NULL || secret_len == 0 || secret_len > SECRET_MAX) {
        return NULL;
    }
    jinn_auth_hash(t->salt, secret, secret_len, h);
    if (!jinn_auth_ct_equal(h, t->hash, sizeof h)) {
        return NULL;
    }
    if (t->expires_ms != 0 && now_ms >= t->expires_ms) {
        return NULL;
    }
    return t;
}

/* ---- snapshot ---------------------------------------------------------------- */

int jinn_auth_replica_key(const uint8_t key[JINN_AUTH_KEY_LEN], uint8_t out[JINN_AUTH_KEY_LEN])
{
    static const char label[] = "jinn-replica-key"; /* its NUL is part of the input */
    uint8_t buf[sizeof label + JINN_AUTH_KEY_LEN];
    int rv;
    memcpy(buf, label, sizeof label);
    memcpy(buf + sizeof label, key, JINN_AUTH_KEY_LEN);
    rv = jinn_sha256(buf, sizeof buf, out);
    memset(buf, 0, sizeof buf);
    if (rv != 0) {
        memset(out, 0, JINN_AUTH_KEY_LEN);
        return JINN_EINTERNAL;
    }
    return 0;
}

bool jinn_auth_entry_key_offset(const void *buf, size_t len, size_t *off)
{
    struct jinn_cmd c;
    const uint8_t *b = buf;
    /* the type byte first: most entries are not tokens, skip decoding them */
    if (len < 3 || b[2] != JINN_CMD_TOKEN_PUT || jinn_cmd_decode(buf, len, &c) != 0 ||
        c.type != JINN_CMD_TOKEN_PUT || c.token.key.len != JINN_AUTH_KEY_LEN) {
        return false;
    }
    *off = (size_t)(c.token.key.p - b);
    return true;
}

static void encode_rest(const struct jinn_auth *a, struct jinn_wbuf *w);

void jinn_auth_encode(const struct jinn_auth *a, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u8(w, a->has_key ? 1 : 0);
    if (a->has_key) {
        jinn_wbuf_put_raw(w, a->key, JINN_AUTH_KEY_LEN);
    }
    encode_rest(a, w);
}

int jinn_auth_encode_redacted(const struct jinn_auth *a, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u8(w, a->has_key ? 1 : 0);
    if (a->has_key) {
        uint8_t r[JINN_AUTH_KEY_LEN];
        if (jinn_auth_replica_key(a->key, r) != 0) {
            return JINN_EINTERNAL;
        }
        jinn_wbuf_put_raw(w, r, JINN_AUTH_KEY_LEN);
    }
    encode_rest(a, w);
    return 0;
}

/* Tokens and scopes: the same with or without the key redacted. */
static void encode_rest(const struct jinn_auth *a, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u32(w, a->n);
    for (unsigned i = 0; i < a->n; i++) {
        const struct jinn_token *t = &a->tokens[i];
        jinn_wbuf_put_str(w, t->name);
        jinn_wbuf_put_raw(w, t->salt, JINN_AUTH_SALT_LEN);
        jinn_wbuf_put_raw(w, t->hash, JINN_AUTH_HASH_LEN);
        jinn_wbuf_put_str(w, t->rules_text);
        jinn_wbuf_put_u64(w, t->created_ms);
        jinn_wbuf_put_u64(w, t->expires_ms);
    }
    jinn_wbuf_put_u32(w, a->n_scopes);
    for (unsigned i = 0; i < a->n_scopes; i++) {
        jinn_wbuf_put_str(w, a->scopes[i].fn);
        jinn_wbuf_put_str(w, a->scopes[i].deployer);
        jinn_wbuf_put_str(w, a->scopes[i].rules_text);
    }
}

int jinn_auth_decode(struct jinn_auth *a, struct jinn_rbuf *r)
{
    uint8_t has_key = jinn_rbuf_get_u8(r);
    uint32_t n;
    int rv = 0;

    if (has_key > 1) {
        return JINN_ECORRUPT;
    }
    if (has_key) {
        const uint8_t *k = jinn_rbuf_get_raw(r, JINN_AUTH_KEY_LEN);
        if (k == NULL) {
            return JINN_ECORRUPT;
        }
        memcpy(a->key, k, JINN_AUTH_KEY_LEN);
        a->has_key = true;
    }
    n = jinn_rbuf_get_u32(r);
    if (r->failed || n > JINN_AUTH_TOKENS_MAX) {
        return JINN_ECORRUPT;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct jinn_slice name, rules;
        const uint8_t *salt, *hash;
        uint64_t created, expires;
        name.len = jinn_rbuf_get_bytes(r, &name.p, JINN_AUTH_NAME_MAX);
        salt = jinn_rbuf_get_raw(r, JINN_AUTH_SALT_LEN);
        hash = jinn_rbuf_get_raw(r, JINN_AUTH_HASH_LEN);
        rules.len = jinn_rbuf_get_bytes(r, &rules.p, JINN_AUTH_RULES_MAX);
        created = jinn_rbuf_get_u64(r);
        expires = jinn_rbuf_get_u64(r);
        if (r->failed || salt == NULL || hash == NULL) {
            rv = JINN_ECORRUPT;
            break;
        }
        /* in name order, each once: insert refuses a repeat */
        if (a->n > 0 && search(a, (const char *)name.p, name.len, &(bool){false}) != a->n) {
            rv = JINN_ECORRUPT;
            break;
        }
        rv = insert(a, name, salt, hash, rules, created, expires, true);
        if (rv != 0) {
            rv = rv == JINN_ENOMEM ? rv : JINN_ECORRUPT;
            break;
        }
    }
    n = rv == 0 ? jinn_rbuf_get_u32(r) : 0;
    if (rv == 0 && (r->failed || n > JINN_AUTH_SCOPES_MAX)) {
        rv = JINN_ECORRUPT;
    }
    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        struct jinn_slice fn, deployer, rules;
        bool found;
        fn.len = jinn_rbuf_get_bytes(r, &fn.p, JINN_AUTH_NAME_MAX);
        deployer.len = jinn_rbuf_get_bytes(r, &deployer.p, JINN_AUTH_NAME_MAX);
        rules.len = jinn_rbuf_get_bytes(r, &rules.p, JINN_AUTH_RULES_MAX);
        /* in order, each once (a repeat would replace silently) */
        if (r->failed ||
            (deployer.len > 0 && !jinn_auth_name_ok((const char *)deployer.p, deployer.len)) ||
            scope_search(a, (const char *)fn.p, fn.len, &found) != a->n_scopes || found) {
            rv = JINN_ECORRUPT;
            break;
        }
        rv = scope_put(a, fn, deployer, rules, true);
        if (rv != 0) {
            rv = rv == JINN_ENOMEM ? rv : JINN_ECORRUPT;
        }
    }
    if (rv != 0) {
        jinn_auth_clear(a);
    }
    return rv;
}
