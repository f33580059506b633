/* cluster.c - membership handlers: /v1/cluster/members...
 *
 * Every route runs on the leader (followers forward): only the leader knows
 * each member's match index and last contact, and only it can change the
 * configuration. One change runs at a time (409 busy otherwise). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api/api.h"
#include "error.h"

#define MEMBER_ADDRESS_MAX 255

static json_t *member_json(const struct jinn_member *m, bool leader)
{
    json_t *o =
        json_pack("{s:s, s:I, s:s, s:s?, s:s}", "name", m->name, "id", (json_int_t)m->id,
                  "address", m->address, "api", m->api[0] ? m->api : NULL, "role",
                  m->voter   ? "voter"
                  : m->spare ? "spare"
                             : "standby");
    if (o != NULL && leader) {
        json_object_set_new(o, "reachable", json_boolean(m->reachable));
        json_object_set_new(o, "last_contact_ms",
                            m->last_contact_ms >= 0 ? json_integer(m->last_contact_ms)
                                                    : json_null());
        json_object_set_new(o, "match_index", json_integer((json_int_t)m->match_index));
    }
    return o;
}

void jinn_api_members_list(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args)
{
    struct jinn_node_status st;
    json_t *list = json_array(), *obj;
    char cid[20];
    (void)args;

    jinn_node_status(api->node, &st);
    for (unsigned i = 0; list != NULL && i < st.n_members; i++) {
        json_array_append_new(list, member_json(&st.members[i], st.role == JINN_ROLE_LEADER));
    }
    snprintf(cid, sizeof cid, "%016" PRIx64, st.cluster_id);
    obj = json_pack("{s:o?, s:s, s:s?, s:I}", "members", list, "cluster_id", cid, "leader",
                    st.leader_name, "last_index", (json_int_t)st.last_index);
    if (obj == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    jinn_http_reply_json(req, 200, obj);
}

static void change_answered(void *data, int code, const char *msg)
{
    struct jinn_http_request *req = data;
    if (code != 0) {
        jinn_http_reply_error(req, code, msg);
        return;
    }
    jinn_http_reply_json(req, 200, json_pack("{s:b, s:s}", "ok", 1, "message", msg));
}

static void reply_start_error(struct jinn_http_request *req, int rv)
{
    const char *msg = NULL;
    if (rv == JINN_EBUSY) {
        rv = JINN_ECONFLICT;
        msg = "another membership change is in progress; retry when it is done";
    } else if (rv == JINN_ENOTFOUND) {
        msg = "no such member";
    }
    jinn_http_reply_error(req, rv, msg);
}

/* Resolves a member by name (node directory or cluster_peers) or by id.
 * Returns 0 and sets *id, or has replied. */
static int find_member(struct jinn_api *api, struct jinn_http_request *req, const char *arg,
                       size_t arg_len, uint64_t *id)
{
    struct jinn_node_status st;
    char *end;
    unsigned long long n = strtoull(arg, &end, 10);
    unsigned found = 0;
    char msg[200];

    if (strlen(arg) != arg_len) {
        /* A decoded %00 would cut the name short: "n3%00x" must not be n3. */
        jinn_http_reply_error(req, JINN_EINVAL, "a member name or id must not contain NUL");
        return -1;
    }
    jinn_node_status(api->node, &st);
    for (unsigned i = 0; i < st.n_members; i++) {
        if ((*end == '\0' && end != arg && st.members[i].id == n) ||
            strcmp(st.members[i].name, arg) == 0) {
            *id = st.members[i].id;
            found++;
        }
    }
    if (found == 1) {
        return 0;
    }
    if (found == 0) {
        snprintf(msg, sizeof msg, "no member named or numbered '%.64s' (see jinn members)",
                 arg);
        jinn_http_reply_error(req, JINN_ENOTFOUND, msg);
    } else {
        snprintf(msg, sizeof msg,
                 "several members are named '%.64s'; give the id instead (see jinn members)",
                 arg);
        jinn_http_reply_error(req, JINN_ECONFLICT, msg);
    }
    return -1;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JINN_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.')) {
            return false;
        }
    }
    return true;
}

void jinn_api_members_add(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args)
{
    json_t *obj = jinn_api_body_json_or_reply(req);
    const char *name = NULL, *address = NULL;
    int standby = 0;
    json_error_t jerr;
    int rv;
    (void)args;

    if (obj == NULL) {
        return;
    }
    if (json_unpack_ex(obj, &jerr, JSON_STRICT, "{s:s, s:s, s?b}", "name", &name, "address",
                       &address, "standby", &standby) != 0 ||
        !valid_name(name) || strlen(address) > MEMBER_ADDRESS_MAX ||
        jinn_parse_hostport(address) != 0) {
        json_decref(obj);
        jinn_http_reply_error(req, JINN_EINVAL,
                              "expected {\"name\": NAME, \"address\": \"IP:PORT\" (its raft "
                              "address), \"standby\": false}");
        return;
    }
    rv = jinn_node_member_add(api->node, name, address, standby != 0, change_answered, req);
    json_decref(obj);
    if (rv == JINN_ECONFLICT) {
        jinn_http_reply_error(req, rv,
                              "a member already has that address; remove it first "
                              "(jinn members remove NAME)");
    } else if (rv == JINN_EINVAL) {
        jinn_http_reply_error(req, rv, "the address must be IPv4:PORT");
    } else if (rv != 0) {
        reply_start_error(req, rv);
    }
}

void jinn_api_members_remove(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_route_args *args)
{
    uint64_t id;
    int rv;
    if (find_member(api, req, args->arg[0], args->len[0], &id) != 0) {
        return;
    }
    rv = jinn_node_member_remove(api->node, id, change_answered, req);
    if (rv == JINN_EINVAL) {
        jinn_http_reply_error(req, rv,
                              "cannot remove the leader (jinn leader transfer first) or the "
                              "last voter");
    } else if (rv != 0) {
        reply_start_error(req, rv);
    }
}

static void assign(struct jinn_api *api, struct jinn_http_request *req,
                   const struct jinn_route_args *args, bool voter)
{
    uint64_t id;
    int rv;
    if (find_member(api, req, args->arg[0], args->len[0], &id) != 0) {
        return;
    }
    rv = jinn_node_member_assign(api->node, id, voter, change_answered, req);
    if (rv == JINN_ECONFLICT) {
        jinn_http_reply_error(req, rv, voter ? "already a voter" : "not a voter");
    } else if (rv == JINN_EINVAL) {
        jinn_http_reply_error(req, rv, "cannot demote the leader (hand leadership over first)");
    } else if (rv != 0) {
        reply_start_error(req, rv);
    }
}

void jinn_api_leader_transfer(struct jinn_api *api, struct jinn_http_request *req,
                              const struct jinn_route_args *args)
{
    char to[JINN_NAME_MAX + 32] = "";
    bool present = false;
    uint64_t id = 0;
    int rv;
    (void)args;

    if (!jinn_api_param_or_reply(req, NULL, "to", to, sizeof to, &present)) {
        return;
    }
    if (present && to[0] != '\0' && find_member(api, req, to, strlen(to), &id) != 0) {
        return;
    }
    rv = jinn_node_leader_transfer(api->node, id, change_answered, req);
    if (rv == JINN_ECONFLICT) {
        jinn_http_reply_error(req, rv, "that node is already the leader");
    } else if (rv == JINN_ENOTFOUND) {
        jinn_http_reply_error(req, rv, "no voter by that name or id");
    } else if (rv != 0) {
        reply_start_error(req, rv);
    }
}

void jinn_api_members_promote(struct jinn_api *api, struct jinn_http_request *req,
                              const struct jinn_route_args *args)
{
    assign(api, req, args, true);
}

void jinn_api_members_demote(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_route_args *args)
{
    assign(api, req, args, false);
}
