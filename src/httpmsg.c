/* httpmsg.c - see httpmsg.h. The grammar is RFC 9112's, minus what a JSON
 * API never needs (obs-fold, CR-less line endings; trailers are checked,
 * then dropped). The smuggling-relevant cases are errors: both Content-Length and
 * Transfer-Encoding, conflicting lengths, unknown transfer codings. */
#include "httpmsg.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static const char *find_crlf(const char *p, const char *end)
{
    for (; p + 1 < end; p++) {
        if (p[0] == '\r' && p[1] == '\n') {
            return p;
        }
    }
    return NULL;
}

static bool token_eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Parses a decimal Content-Length value; false on garbage or overflow. */
static bool parse_length(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i])) {
            return false;
        }
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

static int parse_start_line(const char *p, const char *eol, bool is_response,
                            const struct jinn_http_limits *limits, struct jinn_http_msg *msg)
{
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2;
    const char *version;

    if (sp1 == NULL) {
        return JINN_EINVAL;
    }
    if (is_response) {
        /* HTTP/1.x SSS reason */
        if (sp1 - p != 8 || strncmp(p, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)p[7]) ||
            eol - sp1 < 4 || !isdigit((unsigned char)sp1[1]) ||
            !isdigit((unsigned char)sp1[2]) || !isdigit((unsigned char)sp1[3]) ||
            (eol - sp1 > 4 && sp1[4] != ' ')) {
            return JINN_EINVAL;
        }
        msg->minor_version = p[7] - '0';
        msg->status = (sp1[1] - '0') * 100 + (sp1[2] - '0') * 10 + (sp1[3] - '0');
        return msg->status >= 100 ? 0 : JINN_EINVAL;
    }
    if (sp1 == p || (size_t)(sp1 - p) >= sizeof msg->method) {
        return JINN_EINVAL;
    }
    for (const char *m = p; m < sp1; m++) {
        if (!is_tchar((unsigned char)*m)) {
            return JINN_EINVAL;
        }
    }
    memcpy(msg->method, p, (size_t)(sp1 - p));
    msg->method[sp1 - p] = '\0';
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1) {
        return JINN_EINVAL;
    }
    msg->target = sp1 + 1;
    msg->target_len = (size_t)(sp2 - sp1 - 1);
    if (msg->target[0] != '/') {
        return JINN_EINVAL;
    }
    if (msg->target_len > limits->max_target) {
        return JINN_EURI;
    }
    for (size_t i = 0; i < msg->target_len; i++) {
        unsigned char c = (unsigned char)msg->target[i];
        if (c <= ' ' || c == 0x7f) {
            return JINN_EINVAL;
        }
    }
    version = sp2 + 1;
    if (eol - version != 8 || strncmp(version, "HTTP/1.", 7) != 0 ||
        (version[7] != '0' && version[7] != '1')) {
        return JINN_EINVAL;
    }
    msg->minor_version = version[7] - '0';
    return 0;
}

/* Checks one "name: value" line (without its CRLF) and returns its parts.
 * Shared by headers and chunked trailers, which have the same grammar. */
static int split_header_line(const char *p, const char *eol, struct jinn_http_header *out)
{
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    const char *v, *ve;

    if (colon == NULL || colon == p) {
        return JINN_EINVAL;
    }
    for (const char *c = p; c < colon; c++) {
        if (!is_tchar((unsigned char)*c)) {
            return JINN_EINVAL; /* also rejects obs-fold and "Name :" */
        }
    }
    v = colon + 1;
    ve = eol;
    while (v < ve && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
        ve--;
    }
    for (const char *c = v; c < ve; c++) {
        unsigned char ch = (unsigned char)*c;
        if ((ch < ' ' && ch != '\t') || ch == 0x7f) {
            return JINN_EINVAL;
        }
    }
    out->name = p;
    out->name_len = (size_t)(colon - p);
    out->value = v;
    out->value_len = (size_t)(ve - v);
    return 0;
}

static int parse_header_line(const char *p, const char *eol, struct jinn_http_msg *msg)
{
    struct jinn_http_header line;
    struct jinn_http_header *h;
    int rv = split_header_line(p, eol, &line);

    if (rv != 0) {
        return rv;
    }
    if (msg->n_headers == JINN_HTTP_MAX_HEADERS) {
        return JINN_EHEADERS;
    }
    h = &msg->headers[msg->n_headers++];
    *h = line;
    return 0;
}

/* Interprets the framing and connection headers. */
static int apply_headers(struct jinn_http_msg *msg, bool is_response,
                         const struct jinn_http_limits *limits)
{
    bool close = false, keep = false, has_te = false;

    for (unsigned i = 0; i < msg->n_headers; i++) {
        const struct jinn_http_header *h = &msg->headers[i];
        if (token_eq(h->name, h->name_len, "content-length")) {
            uint64_t n;
            if (!parse_length(h->value, h->value_len, &n) ||
                (msg->has_length && n != msg->content_length)) {
                return JINN_EINVAL;
            }
            msg->has_length = true;
            msg->content_length = n;
        } else if (token_eq(h->name, h->name_len, "transfer-encoding")) {
            if (has_te || !token_eq(h->value, h->value_len, "chunked")) {
                return JINN_EINVAL;
            }
            has_te = true;
            msg->chunked = true;
        } else if (token_eq(h->name, h->name_len, "connection")) {
            if (token_eq(h->value, h->value_len, "close")) {
                close = true;
            } else if (token_eq(h->value, h->value_len, "keep-alive")) {
                keep = true;
            }
        }
    }
    if (msg->chunked && msg->has_length) {
        return JINN_EINVAL;
    }
    if (msg->has_length && msg->content_length > limits->max_body) {
        return JINN_ETOOBIG;
    }
    msg->keep_alive = msg->minor_version >= 1 ? !close : keep;
    if (is_response && !msg->chunked && !msg->has_length) {
        bool bodiless = msg->status == 204 || msg->status == 304 || msg->status < 200;
        msg->body_until_close = !bodiless;
        if (msg->body_until_close) {
            msg->keep_alive = false;
        }
    }
    return 0;
}

int jinn_http_parse_head(const char *buf, size_t len, bool is_response,
                         const struct jinn_http_limits *limits, struct jinn_http_msg *msg)
{
    const char *end, *p = buf, *eol;
    int rv;

    memset(msg, 0, sizeof *msg);
    if (len == 0) {
        return JINN_HTTP_NEED_MORE; /* buf may be NULL: no arithmetic on it */
    }
    end = buf + (len < limits->max_head ? len : limits->max_head);
    /* Tolerate the empty lines some clients send between requests. */
    while (p + 1 < end && p[0] == '\r' && p[1] == '\n') {
        p += 2;
    }
    eol = find_crlf(p, end);
    if (eol == NULL) {
        return len >= limits->max_head ? (is_response ? JINN_EINVAL : JINN_EURI)
                                       : JINN_HTTP_NEED_MORE;
    }
    rv = parse_start_line(p, eol, is_response, limits, msg);
    if (rv != 0) {
        return rv;
    }
    p = eol + 2;
    for (;;) {
        eol = find_crlf(p, end);
        if (eol == NULL) {
            return len >= limits->max_head ? JINN_EHEADERS : JINN_HTTP_NEED_MORE;
        }
        if (eol == p) {
            break;
        }
        rv = parse_header_line(p, eol, msg);
        if (rv != 0) {
            return rv;
        }
        p = eol + 2;
    }
    msg->head_len = (size_t)(eol + 2 - buf);
    return apply_headers(msg, is_response, limits);
}

/* Walks the chunked body; with out == NULL it only measures. Returns 0 with
 * *data_len and *total set, JINN_HTTP_NEED_MORE, JINN_EINVAL or
 * JINN_ETOOBIG. */
static int walk_chunks(const char *p, const char *end, uint64_t max_body, char *out,
                       size_t *data_len, size_t *total)
{
    const char *start = p;
    size_t n = 0;

    for (;;) {
        const char *eol = find_crlf(p, end);
        uint64_t size = 0;
        const char *c = p;
        if (eol == NULL) {
            return end - p > 64 ? JINN_EINVAL : JINN_HTTP_NEED_MORE;
        }
        for (; c < eol && isxdigit((unsigned char)*c); c++) {
            if (size > (max_body + 1) * 16) {
                return JINN_ETOOBIG;
            }
            size = size * 16 + (uint64_t)(isdigit((unsigned char)*c)
                                               ? *c - '0'
                                               : (tolower((unsigned char)*c) - 'a' + 10));
        }
        if (c == p || (c < eol && *c != ';')) {
            return JINN_EINVAL; /* a chunk extension after ';' is allowed */
        }
        p = eol + 2;
        if (size == 0) {
            /* Trailer section: well-formed header lines until an empty
             * one, JINN_HTTP_MAX_TRAILERS bytes and JINN_HTTP_MAX_HEADERS
             * lines at most. Their content is ignored. */
            const char *trailers = p;
            unsigned lines = 0;
            for (;;) {
                struct jinn_http_header line;
                const char *limit = end - trailers > JINN_HTTP_MAX_TRAILERS
                                        ? trailers + JINN_HTTP_MAX_TRAILERS
                                        : end;
                eol = find_crlf(p, limit);
                if (eol == NULL) {
                    return limit < end || end - trailers >= JINN_HTTP_MAX_TRAILERS
                               ? JINN_EHEADERS
                               : JINN_HTTP_NEED_MORE;
                }
                if (eol == p) {
                    p = eol + 2;
                    break;
                }
                if (++lines > JINN_HTTP_MAX_HEADERS) {
                    return JINN_EHEADERS;
                }
                if (split_header_line(p, eol, &line) != 0) {
                    return JINN_EINVAL;
                }
                p = eol + 2;
            }
            *data_len = n;
            *total = (size_t)(p - start);
            return 0;
        }
        if (n + size > max_body) {
            return JINN_ETOOBIG;
        }
        if ((uint64_t)(end - p) < size + 2) {
            return JINN_HTTP_NEED_MORE;
        }
        if (p[size] != '\r' || p[size + 1] != '\n') {
            return JINN_EINVAL;
        }
        if (out != NULL) {
            memcpy(out + n, p, size);
        }
        n += size;
        p += size + 2;
    }
}

int jinn_http_parse_body(const char *buf, size_t len, const struct jinn_http_msg *msg,
                         uint64_t max_body, const char **body, size_t *body_len,
                         bool *owned, size_t *total)
{
    const char *start = buf + msg->head_len;
    const char *end = buf + len;
    size_t data_len, chunked_total;
    char *copy;
    int rv;

    *owned = false;
    *body = start;
    if (msg->chunked) {
        rv = walk_chunks(start, end, max_body, NULL, &data_len, &chunked_total);
        if (rv != 0) {
            return rv;
        }
        copy = jinn_malloc(data_len + 1);
        if (copy == NULL) {
            return JINN_ENOMEM;
        }
        rv = walk_chunks(start, end, max_body, copy, &data_len, &chunked_total);
        if (rv != 0) {
            jinn_free(copy);
            return rv;
        }
        copy[data_len] = '\0';
        *body = copy;
        *body_len = data_len;
        *owned = true;
        *total = msg->head_len + chunked_total;
        return 0;
    }
    if (msg->body_until_close) {
        /* The caller decides when the peer has closed. */
        if (len - msg->head_len > max_body) {
            return JINN_ETOOBIG;
        }
        *body_len = len - msg->head_len;
        *total = len;
        return JINN_HTTP_NEED_MORE;
    }
    if (!msg->has_length) {
        *body_len = 0;
        *total = msg->head_len;
        return 0;
    }
    if ((uint64_t)(len - msg->head_len) < msg->content_length) {
        return JINN_HTTP_NEED_MORE;
    }
    *body_len = (size_t)msg->content_length;
    *total = msg->head_len + (size_t)msg->content_length;
    return 0;
}

const struct jinn_http_header *jinn_http_header_find(const struct jinn_http_msg *msg,
                                                     const char *name)
{
    for (unsigned i = 0; i < msg->n_headers; i++) {
        if (token_eq(msg->headers[i].name, msg->headers[i].name_len, name)) {
            return &msg->headers[i];
        }
    }
    return NULL;
}

void jinn_http_split_target(const char *target, size_t len, const char **path,
                            size_t *path_len, const char **query, size_t *query_len)
{
    const char *q = memchr(target, '?', len);
    *path = target;
    *path_len = q ? (size_t)(q - target) : len;
    *query = q ? q + 1 : target + len;
    *query_len = q ? len - *path_len - 1 : 0;
}

static int hexval(int c)
{
    if (isdigit(c)) {
        return c - '0';
    }
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

long jinn_http_unescape(const char *src, size_t len, char *dst, size_t cap, bool plus_is_space)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)src[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= len) {
                return -1;
            }
            hi = hexval((unsigned char)src[i + 1]);
            lo = hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (n + 1 >= cap) {
            return -2;
        }
        dst[n++] = (char)c;
    }
    if (cap == 0) {
        return -2;
    }
    dst[n] = '\0';
    return (long)n;
}

long jinn_http_query_get(const char *query, size_t query_len, const char *name, char *dst,
                         size_t cap)
{
    size_t name_len = strlen(name);
    const char *p = query, *end = query + query_len;

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == name_len && strncmp(p, name, name_len) == 0) {
            const char *v = eq ? eq + 1 : pe;
            long n = jinn_http_unescape(v, (size_t)(pe - v), dst, cap, true);
            return n < 0 ? -2 : n;
        }
        p = pe + 1;
    }
    return -1;
}

const char *jinn_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Status";
    }
}
