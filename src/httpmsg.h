/* httpmsg.h - a strict, bounded HTTP/1.1 message parser.
 *
 * Pure functions over a byte buffer, shared by the server (requests), the
 * leader forwarder and the CLI (responses). The parser never allocates for
 * the head: header names and values point into the caller's buffer. Limits
 * are the caller's; exceeding one gives the matching error code (431, 413,
 * 414) rather than unbounded buffering. */
#ifndef JINN_HTTPMSG_H
#define JINN_HTTPMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JINN_HTTP_MAX_HEADERS 64
#define JINN_HTTP_MAX_TRAILERS 4096u /* bytes of a chunked body's trailer section */
#define JINN_HTTP_NEED_MORE (-1)

struct jinn_http_header {
    const char *name; /* borrowed from the parsed buffer; not NUL-terminated */
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct jinn_http_limits {
    size_t max_head;   /* request line + headers */
    size_t max_target; /* request target */
    uint64_t max_body;
};

struct jinn_http_msg {
    /* request line (requests only) */
    char method[16];
    const char *target; /* borrowed */
    size_t target_len;
    /* status line (responses only) */
    int status;
    int minor_version; /* HTTP/1.<minor_version> */
    struct jinn_http_header headers[JINN_HTTP_MAX_HEADERS];
    unsigned n_headers;
    size_t head_len; /* bytes of the head, final CRLF CRLF included */
    bool chunked;
    bool has_length;
    uint64_t content_length;
    bool keep_alive;
    bool body_until_close; /* a response with neither length nor chunking */
};

/* Parses the head of a request (is_response false) or a response at the
 * start of buf. Returns 0 with msg filled, JINN_HTTP_NEED_MORE, or an error
 * code from error.h (JINN_EINVAL, JINN_EHEADERS, JINN_EURI, JINN_ETOOBIG,
 * JINN_ELENGTH). */
int jinn_http_parse_head(const char *buf, size_t len, bool is_response,
                         const struct jinn_http_limits *limits, struct jinn_http_msg *msg);

/* With the head parsed, finds the body that follows it in buf (len bytes
 * from the start of the message). Content-Length bodies are borrowed
 * (*body points into buf, *owned false); chunked bodies are decoded into a
 * new allocation (*owned true, caller frees). *total is the whole message
 * size. Returns 0, JINN_HTTP_NEED_MORE, JINN_EINVAL, JINN_ETOOBIG or
 * JINN_ENOMEM. */
int jinn_http_parse_body(const char *buf, size_t len, const struct jinn_http_msg *msg,
                         uint64_t max_body, const char **body, size_t *body_len,
                         bool *owned, size_t *total);

/* Case-insensitive header lookup; NULL if absent. */
const struct jinn_http_header *jinn_http_header_find(const struct jinn_http_msg *msg,
                                                     const char *name);

/* Splits a target into its path and query (both borrowed, not
 * NUL-terminated). */
void jinn_http_split_target(const char *target, size_t len, const char **path,
                            size_t *path_len, const char **query, size_t *query_len);

/* Percent-decodes src into dst (cap bytes, NUL-terminated). plus_is_space
 * for query strings. Returns the decoded length, -1 on a bad escape, -2
 * when the decoded text does not fit. */
long jinn_http_unescape(const char *src, size_t len, char *dst, size_t cap, bool plus_is_space);

/* Finds name in a query string and decodes its value into dst. Returns the
 * value's length, -1 when absent, -2 when malformed or too long. */
long jinn_http_query_get(const char *query, size_t query_len, const char *name, char *dst,
                         size_t cap);

const char *jinn_http_reason(int status);

#endif
