/* guest.h - request parsing for the test guests (static helpers, no libc
 * JSON): read the whole request from stdin, pull out its "body" string, and
 * write a response with an escaped body. */
#ifndef GUEST_H
#define GUEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The whole of stdin, NUL-terminated (caller frees); *len its length. */
static char *read_request(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf != NULL && (r = read(0, buf + n, cap - n - 1)) > 0) {
        n += (size_t)r;
        if (cap - n < 2) {
            char *g = realloc(buf, cap * 2);
            if (g == NULL) {
                free(buf);
                return NULL;
            }
            buf = g;
            cap *= 2;
        }
    }
    if (buf != NULL) {
        buf[n] = '\0';
    }
    *len = n;
    return buf;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                            : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Skips one JSON string starting at s (on the opening quote); returns the
 * byte after it. When out is non-NULL the unescaped bytes go there (\uXXXX
 * below 0x80 only, which is all the tests send; others become '?'). */
static const char *json_string(const char *s, char *out, size_t *out_len)
{
    size_t o = 0;
    for (s++; *s != '\0' && *s != '"'; s++) {
        char c = *s;
        if (c == '\\') {
            s++;
            switch (*s) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                int v = 0;
                for (int i = 1; i <= 4; i++) {
                    int h = hexval(s[i]);
                    if (h < 0) {
                        return s;
                    }
                    v = v * 16 + h;
                }
                c = v < 0x80 ? (char)v : '?';
                s += 4;
                break;
            }
            case '\0': return s;
            default: c = *s; break;
            }
        }
        if (out != NULL) {
            out[o++] = c;
        }
    }
    if (out_len != NULL) {
        *out_len = o;
    }
    return *s == '"' ? s + 1 : s;
}

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
        s++;
    }
    return s;
}

/* Skips one JSON value (string, number, literal, object or array). */
static const char *skip_value(const char *s)
{
    int depth = 0;
    s = skip_ws(s);
    for (;;) {
        if (*s == '\0') {
            return s;
        }
        if (*s == '"') {
            s = json_string(s, NULL, NULL);
        } else if (*s == '{' || *s == '[') {
            depth++;
            s++;
        } else if (*s == '}' || *s == ']') {
            if (depth == 0) {
                return s;
            }
            depth--;
            s++;
        } else if (*s == ',' && depth == 0) {
            return s;
        } else {
            s++;
            continue;
        }
        if (depth == 0) {
            return s; /* a whole string, object or array */
        }
    }
}

/* The request's top-level "body" (unescaped, NUL-terminated, malloc'd). */
static char *request_body(const char *req, size_t *len)
{
    const char *p = skip_ws(req);
    char *out = malloc(strlen(req) + 1);
    *len = 0;
    if (out == NULL) {
        return NULL;
    }
    out[0] = '\0';
    if (*p != '{') {
        return out;
    }
    p++;
    for (;;) {
        const char *key;
        p = skip_ws(p);
        if (*p != '"') {
            return out;
        }
        key = p;
        p = skip_ws(json_string(p, NULL, NULL));
        if (*p != ':') {
            return out;
        }
        p = skip_ws(p + 1);
        if (strncmp(key, "\"body\"", 6) == 0 && *p == '"') {
            json_string(p, out, len);
            out[*len] = '\0';
            return out;
        }
        p = skip_ws(skip_value(p));
        if (*p != ',') {
            return out;
        }
        p++;
    }
}

/* Writes {"status":S,"body":"..."} with body JSON-escaped. */
static void respond(int status, const char *body, size_t len)
{
    printf("{\"status\":%d,\"headers\":{\"Content-Type\":[\"text/plain\"]},\"body\":\"", status);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    printf("\"}");
    fflush(stdout);
}

#endif
