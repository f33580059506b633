/* jobguest.h - helpers for the job guests (tests/wasm/jobs/): a job runs
 * with the request {"method":"ASYNC","uri":"internal://async/job",
 * "headers":{"X-Source":["internal"],"X-Jinn-Job":["ID"],
 * "X-Jinn-Delivery":["N"]},"body":PAYLOAD}; these read its headers. */
#ifndef JOBGUEST_H
#define JOBGUEST_H

#include "gojinn.h"
#include "guest.h" /* read_request, request_body (its stdio helpers stay unused) */

/* No stdio here: printf pulls in ~130 KB, and every node compiles each
 * module (wasm2c + cc) before it can run it. */

/* Appends the decimal v at out; returns the byte after it. */
static char *put_num(char *out, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) {
        *out++ = tmp[--n];
    }
    *out = '\0';
    return out;
}

static char *put_str(char *out, const char *s)
{
    size_t n = strlen(s);
    memcpy(out, s, n + 1);
    return out + n;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Writes {"status":S,"headers":{...},"body":"..."} with body JSON-escaped. */
static void reply(int status, const char *body, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *out = malloc(len * 6 + 128), *o;
    if (out == NULL) {
        return;
    }
    o = put_str(out, "{\"status\":");
    o = put_num(o, (unsigned long long)status);
    o = put_str(o, ",\"headers\":{\"Content-Type\":[\"text/plain\"]},\"body\":\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            o = put_str(o, "\\u00");
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    o = put_str(o, "\"}");
    write_all(1, out, (size_t)(o - out));
    free(out);
}

static void reply_str(int status, const char *body)
{
    reply(status, body, strlen(body));
}

/* The first value of header name ("X-Jinn-Job", ...) as a number; 0 when
 * absent or not a number. The runner writes the headers as above. */
static unsigned long long header_num(const char *req, const char *name)
{
    char pat[64];
    const char *p;
    unsigned long long v = 0;
    put_str(put_str(put_str(pat, "\""), name), "\":[\"");
    p = strstr(req, pat);
    if (p == NULL) {
        return 0;
    }
    for (p += strlen(pat); *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    return v;
}

/* The number after "key": in text (the cron payload's tick); 0 if none. */
static unsigned long long json_num(const char *text, const char *key)
{
    char pat[64];
    const char *p;
    unsigned long long v = 0;
    put_str(put_str(put_str(pat, "\""), key), "\":");
    p = strstr(text, pat);
    if (p == NULL) {
        return 0;
    }
    for (p += strlen(pat); *p == ' '; p++) {
    }
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    return v;
}

/* The idempotent effect: create key with value once, whatever the number
 * of deliveries. Delivery is at least once and a lease can expire while a
 * slow delivery still runs, so two copies may run at the same time: the
 * lock named after the key serialises them, and the write is fenced by it
 * (host_kv_set applies only while the lock is still held), so the second
 * copy finds the key and writes nothing. The lock's TTL (5 s) bounds how
 * long a copy that died holding it blocks the others; a copy that finds
 * it held fails, and the queue's backoff retries it. Returns 1 created,
 * 0 already there, -1 failed (the job should fail and be retried). */
static int create_once(const char *key, const char *value)
{
    char lock[160], old[256];
    int rv;
    put_str(put_str(lock, "effect:"), key);
    if (host_mutex_lock(lock, (uint32_t)strlen(lock), 5) != 1) {
        return -1;
    }
    if (host_kv_get(key, (uint32_t)strlen(key), old, sizeof old) != GOJINN_FAIL) {
        rv = 0;
    } else {
        rv = host_kv_set(key, (uint32_t)strlen(key), value, (uint32_t)strlen(value)) == 0 ? 1
                                                                                          : -1;
    }
    host_mutex_unlock(lock, (uint32_t)strlen(lock));
    return rv;
}

#endif
