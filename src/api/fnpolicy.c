/* fnpolicy.c - the cluster's module signing policy over HTTP.
 *
 *   GET /v1/functions-policy  -> {"require_signature": B,
 *                                 "keys": [{"name": N, "public_key": BASE64}]}
 *   PUT /v1/functions-policy  {"require_signature": B,
 *                              "keys": {"NAME": "BASE64 of 32 bytes", ...}}
 *
 * PUT replaces the whole policy with one FN_POLICY command (fsm/fnsig.h);
 * `jinn fn policy` reads, edits and writes it back. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "codec.h"
#include "error.h"
#include "fsm/fn.h"
#include "fsm/fnsig.h"

static json_t *policy_json(const struct jinn_fn_policy *p)
{
    json_t *keys = json_array(), *obj;
    for (unsigned i = 0; i < p->n_keys && keys != NULL; i++) {
        struct jinn_wbuf w;
        jinn_wbuf_init(&w);
        jinn_wbuf_put_base64(&w, p->keys[i].pub, JINN_FNSIG_PUB_SIZE);
        if (w.failed ||
            json_array_append_new(keys, json_pack("{s:s, s:s%}", "name", p->keys[i].name,
                                                  "public_key", (const char *)w.data,
                                                  w.len)) != 0) {
            json_decref(keys);
            keys = NULL;
        }
        jinn_wbuf_free(&w);
    }
    if (keys == NULL) {
        return NULL;
    }
    obj = json_pack("{s:b, s:o}", "require_signature", p->require_signature, "keys", keys);
    return obj;
}

void jinn_api_fn_policy_get(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args)
{
    (void)args;
    jinn_http_reply_json(req, 200, policy_json(&jinn_node_fsm(api->node)->fns.policy));
}

static void policy_set(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_result *res)
{
    json_t *obj;
    if (res->code != JINN_OK) {
        jinn_http_reply_error(req, res->code, NULL);
        return;
    }
    obj = policy_json(&jinn_node_fsm(api->node)->fns.policy);
    if (obj != NULL) {
        json_object_set_new(obj, "index", json_integer((json_int_t)res->index));
    }
    jinn_http_reply_json(req, 200, obj);
}

struct sorted_key {
    const char *name;
    size_t len;
    uint8_t pub[JINN_FNSIG_PUB_SIZE];
};

void jinn_api_fn_policy_put(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args)
{
    json_t *body = jinn_api_body_json_or_reply(req), *require, *keys, *value;
    struct sorted_key sk[JINN_FNSIG_TRUSTED_MAX];
    unsigned n = 0;
    const char *key;
    char msg[160];
    struct jinn_cmd c;

    (void)args;
    if (body == NULL) {
        return;
    }
    require = json_object_get(body, "require_signature");
    keys = json_object_get(body, "keys");
    json_object_foreach(body, key, value)
    {
        if (strcmp(key, "require_signature") != 0 && strcmp(key, "keys") != 0) {
            snprintf(msg, sizeof msg, "unknown field '%.64s' (require_signature, keys)", key);
            goto bad;
        }
    }
    if (!json_is_boolean(require)) {
        snprintf(msg, sizeof msg, "require_signature (true or false) is required");
        goto bad;
    }
    if (keys != NULL && !json_is_object(keys)) {
        snprintf(msg, sizeof msg, "keys must be an object {\"NAME\": \"BASE64 public key\"}");
        goto bad;
    }
    if (keys != NULL && json_object_size(keys) > JINN_FNSIG_TRUSTED_MAX) {
        snprintf(msg, sizeof msg, "at most %d trusted keys", JINN_FNSIG_TRUSTED_MAX);
        goto bad;
    }
    if (keys != NULL) {
        json_object_foreach(keys, key, value)
        {
            size_t len = strlen(key);
            const char *text = json_string_value(value);
            unsigned at;
            if (!jinn_fnsig_key_name_valid(key, len)) {
                snprintf(msg, sizeof msg, "key name '%.64s' is not [a-z0-9][a-z0-9_.-]{0,63}",
                         key);
                goto bad;
            }
            if (text == NULL || !jinn_fnsig_base64_decode(text, json_string_length(value),
                                                          sk[n].pub, JINN_FNSIG_PUB_SIZE)) {
                snprintf(msg, sizeof msg,
                         "key %s: the public key must be the standard base64 of 32 bytes "
                         "(44 characters; jinn fn keygen writes it to NAME.pub)",
                         key);
                goto bad;
            }
            /* Insertion into name order: the command's canonical form. */
            for (at = n; at > 0; at--) {
                size_t pl = sk[at - 1].len;
                int cmp = memcmp(sk[at - 1].name, key, pl < len ? pl : len);
                if (cmp < 0 || (cmp == 0 && pl < len)) {
                    break;
                }
            }
            uint8_t pub[JINN_FNSIG_PUB_SIZE];
            memcpy(pub, sk[n].pub, sizeof pub);
            memmove(&sk[at + 1], &sk[at], (n - at) * sizeof sk[0]);
            sk[at].name = key;
            sk[at].len = len;
            memcpy(sk[at].pub, pub, sizeof pub);
            n++;
        }
    }
    if (json_is_true(require) && n == 0) {
        snprintf(msg, sizeof msg,
                 "require_signature without a trusted key would refuse every deploy: add "
                 "one (jinn fn policy --trust NAME=PUBKEY)");
        goto bad;
    }
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_POLICY;
    c.fn_policy.require_signature = json_is_true(require) ? 1 : 0;
    c.fn_policy.n_keys = n;
    for (unsigned i = 0; i < n; i++) {
        c.fn_policy.key_name[i].p = (const uint8_t *)sk[i].name;
        c.fn_policy.key_name[i].len = sk[i].len;
        c.fn_policy.key_pub[i] = sk[i].pub;
    }
    jinn_api_propose_or_reply(api, req, &c, policy_set);
    json_decref(body);
    return;

bad:
    json_decref(body);
    jinn_http_reply_error(req, JINN_EINVAL, msg);
}
