/* error.h - the one table of jinn error codes.
 *
 * Every failure inside jinn is an int from this enum. The table gives each
 * code its stable machine name (the "error" field of JSON replies), a human
 * message and the HTTP status a client sees, so handlers never invent their
 * own mapping. */
#ifndef JINN_ERROR_H
#define JINN_ERROR_H

/*      code                name                 http  message */
#define JINN_ERRORS(X)                                                              \
    X(JINN_OK, "ok", 200, "success")                                                \
    X(JINN_ENOMEM, "out_of_memory", 503, "out of memory")                           \
    X(JINN_EINVAL, "bad_request", 400, "malformed request")                         \
    X(JINN_ENOTFOUND, "not_found", 404, "no such resource")                         \
    X(JINN_EMETHOD, "method_not_allowed", 405, "method not allowed here")           \
    X(JINN_ECONFLICT, "conflict", 409, "conflicts with the current state")          \
    X(JINN_EQUEUED, "queued", 202, "waiting in line for the lock")                   \
    X(JINN_ECOMPACTED, "compacted", 410,                                            \
      "that revision is older than the history this node keeps; list again")        \
    X(JINN_EPRECONDITION, "precondition_failed", 412, "the condition does not hold") \
    X(JINN_EFULL, "store_full", 507, "the store is full")                           \
    X(JINN_ESQL, "sql_error", 400, "the statement failed; nothing was changed")      \
    X(JINN_EREADONLY, "read_only", 503,                                             \
      "no live leader: SQL is read-only until one is back")                        \
    X(JINN_ESTALE, "too_stale", 503,                                                \
      "this node has not heard from a leader within max_staleness")                 \
    X(JINN_ETIMEOUT_IDLE, "request_timeout", 408, "request not received in time")   \
    X(JINN_ELENGTH, "length_required", 411, "a body needs a Content-Length")        \
    X(JINN_ETOOBIG, "body_too_large", 413, "request body too large")                \
    X(JINN_EURI, "uri_too_long", 414, "request target too long")                    \
    X(JINN_EHEADERS, "headers_too_large", 431, "request headers too large")         \
    X(JINN_ENOLEADER, "no_leader", 503, "no leader with a quorum is known")         \
    X(JINN_ENOTLEADER, "not_leader", 503, "this node is not the leader")            \
    X(JINN_ETIMEOUT, "timeout", 503, "not committed within the request timeout")   \
    X(JINN_EUNKNOWN, "outcome_unknown", 503,                                        \
      "proposed, but the outcome is unknown: it may still be applied")              \
    X(JINN_ESHUTDOWN, "shutting_down", 503, "the node is shutting down")            \
    X(JINN_EBUSY, "busy", 503, "too many requests in flight")                       \
    X(JINN_EFORWARD, "forward_failed", 503, "could not reach the leader; not applied")           \
    X(JINN_ECORRUPT, "corrupt", 500, "malformed or corrupt data")                   \
    X(JINN_EVERSION, "unsupported_version", 500, "unsupported format version")      \
    X(JINN_EIO, "io_error", 500, "input/output error")                              \
    X(JINN_ERAFT, "raft_error", 500, "consensus error")                             \
    X(JINN_ECONFIG, "bad_config", 400, "invalid configuration")                     \
    X(JINN_EINTERNAL, "internal", 500, "internal error")                            \
    X(JINN_EDIVERGED, "diverged", 503,                                              \
      "this replica's state differs from the majority's; it serves no reads until restarted") \
    X(JINN_ESQLVERSION, "sql_version_mismatch", 503,                                \
      "this database was written by another SQLite version than this node's") \
    X(JINN_ENOSPACE, "no_space", 507,                                               \
      "free space on the leader's data_dir is below min_free_space; nothing was applied") \
    X(JINN_ETOOMANY, "too_many_requests", 429,                                      \
      "over this client's request or connection limit; retry after Retry-After seconds") \
    X(JINN_EUNSIGNED, "signature_required", 403,                                    \
      "the cluster requires modules signed by a trusted key (jinn fn sign)")     \
    X(JINN_EUNAUTHORIZED, "unauthorized", 401,                                      \
      "a valid token is required (Authorization: Bearer TOKEN)")                    \
    X(JINN_EFORBIDDEN, "forbidden", 403, "this token does not allow that")

#define JINN_ERROR_ENUM(code, name, http, msg) code,
enum jinn_error { JINN_ERRORS(JINN_ERROR_ENUM) JINN_ERROR_COUNT };
#undef JINN_ERROR_ENUM

/* Stable machine name, e.g. "no_leader". Never NULL. */
const char *jinn_error_name(int code);
/* Human message. Never NULL. */
const char *jinn_error_message(int code);
/* HTTP status for the code (500 for out-of-range codes). */
int jinn_error_http_status(int code);

#endif
