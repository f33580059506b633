/* hostfns.c - exercises every host function as the request body says.
 *
 * The body is one command per line; a command is words separated by one
 * space, each word percent-encoded (%XX) so keys and values may hold any
 * byte. The answer (status 200) has one line per command:
 *   "<command> <result as unsigned decimal>[ <bytes, percent-encoded>]"
 * Commands:
 *   get KEY [OUTMAX]          host_kv_get (OUTMAX default 4096)
 *   set KEY VALUE             host_kv_set
 *   setn KEY N                host_kv_set of N bytes 'x'
 *   lock KEY TTL              host_mutex_lock
 *   unlock KEY                host_mutex_unlock
 *   sql SQL [OUTMAX]          host_db_query (OUTMAX default 65536)
 *   enqueue FN PAYLOAD        host_enqueue
 *   log LEVEL MSG             host_log
 *   stderr MSG                a line on stderr
 *   sleep MS                  nanosleep (WASI poll_oneoff on a clock)
 *   raw CALL A B C D          a host call with raw i32 arguments (hostile
 *                             pointers and lengths): CALL is get, set,
 *                             lock, unlock, sql or enqueue
 *   status CODE               the HTTP status of the answer */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gojinn.h"
#include "guest.h"

#define WORDS_MAX 8

static char out[1 << 20];
static size_t out_len;

static void emit(const char *s, size_t n)
{
    if (out_len + n < sizeof out) {
        memcpy(out + out_len, s, n);
        out_len += n;
    }
}

static void emit_str(const char *s) { emit(s, strlen(s)); }

static void emit_encoded(const void *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == ':' || c == '/') {
            emit((const char *)&c, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            emit(e, 3);
        }
    }
}

static void emit_result(const char *cmd, uint32_t r)
{
    char num[16];
    snprintf(num, sizeof num, " %u", (unsigned)r);
    emit_str(cmd);
    emit_str(num);
}

/* Decodes %XX in place; returns the new length. */
static size_t decode(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            s[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}

static uint32_t num(const char *s) { return (uint32_t)strtoul(s, NULL, 0); }

static int run_line(char *line, size_t n)
{
    char *w[WORDS_MAX];
    size_t wl[WORDS_MAX];
    unsigned nw = 0;
    size_t start = 0;
    static char buf[1 << 20];

    for (size_t i = 0; i <= n && nw < WORDS_MAX; i++) {
        if (i == n || line[i] == ' ') {
            w[nw] = line + start;
            wl[nw] = decode(line + start, i - start);
            w[nw][wl[nw]] = '\0';
            nw++;
            start = i + 1;
        }
    }
    if (nw == 0 || wl[0] == 0) {
        return 0;
    }
    if (strcmp(w[0], "get") == 0 && nw >= 2) {
        uint32_t max = nw >= 3 ? num(w[2]) : 4096;
        uint32_t r = host_kv_get(w[1], (uint32_t)wl[1], buf, max < sizeof buf ? max : sizeof buf);
        emit_result("get", r);
        if (r != GOJINN_FAIL && r <= sizeof buf) {
            emit_str(" ");
            emit_encoded(buf, r);
        }
    } else if (strcmp(w[0], "set") == 0 && nw >= 3) {
        emit_result("set", host_kv_set(w[1], (uint32_t)wl[1], w[2], (uint32_t)wl[2]));
    } else if (strcmp(w[0], "setn") == 0 && nw >= 3) {
        uint32_t len = num(w[2]);
        char *v = malloc(len ? len : 1);
        if (v == NULL) {
            emit_str("setn nomem");
        } else {
            memset(v, 'x', len);
            emit_result("setn", host_kv_set(w[1], (uint32_t)wl[1], v, len));
            free(v);
        }
    } else if (strcmp(w[0], "lock") == 0 && nw >= 3) {
        emit_result("lock", host_mutex_lock(w[1], (uint32_t)wl[1], num(w[2])));
    } else if (strcmp(w[0], "unlock") == 0 && nw >= 2) {
        emit_result("unlock", host_mutex_unlock(w[1], (uint32_t)wl[1]));
    } else if (strcmp(w[0], "sql") == 0 && nw >= 2) {
        uint32_t max = nw >= 3 ? num(w[2]) : 65536;
        uint32_t r = host_db_query(w[1], (uint32_t)wl[1], buf, max < sizeof buf ? max : sizeof buf);
        emit_result("sql", r);
        if (r != GOJINN_FAIL && r <= sizeof buf) {
            emit_str(" ");
            emit_encoded(buf, r);
        }
    } else if (strcmp(w[0], "enqueue") == 0 && nw >= 3) {
        emit_result("enqueue", host_enqueue(w[1], (uint32_t)wl[1], w[2], (uint32_t)wl[2]));
    } else if (strcmp(w[0], "log") == 0 && nw >= 3) {
        host_log(num(w[1]), w[2], (uint32_t)wl[2]);
        emit_str("log 0");
    } else if (strcmp(w[0], "stderr") == 0 && nw >= 2) {
        fprintf(stderr, "%s\n", w[1]);
        emit_str("stderr 0");
    } else if (strcmp(w[0], "sleep") == 0 && nw >= 2) {
        uint32_t ms = num(w[1]);
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        emit_result("sleep", nanosleep(&ts, NULL) == 0 ? 0 : (uint32_t)errno);
    } else if (strcmp(w[0], "raw") == 0 && nw >= 6) {
        uintptr_t a = num(w[2]), b = num(w[3]), c = num(w[4]);
        uint32_t d = num(w[5]);
        uint32_t r = GOJINN_FAIL;
        if (strcmp(w[1], "get") == 0) {
            r = host_kv_get((const char *)a, (uint32_t)b, (void *)c, d);
        } else if (strcmp(w[1], "set") == 0) {
            r = host_kv_set((const char *)a, (uint32_t)b, (const void *)c, d);
        } else if (strcmp(w[1], "lock") == 0) {
            r = host_mutex_lock((const char *)a, (uint32_t)b, (uint32_t)c);
        } else if (strcmp(w[1], "unlock") == 0) {
            r = host_mutex_unlock((const char *)a, (uint32_t)b);
        } else if (strcmp(w[1], "sql") == 0) {
            r = host_db_query((const char *)a, (uint32_t)b, (void *)c, d);
        } else if (strcmp(w[1], "enqueue") == 0) {
            r = host_enqueue((const char *)a, (uint32_t)b, (const void *)c, d);
        }
        emit_result("raw", r);
    } else if (strcmp(w[0], "status") == 0 && nw >= 2) {
        return (int)num(w[1]);
    } else {
        emit_str("unknown ");
        emit_encoded(w[0], wl[0]);
    }
    emit_str("\n");
    return 0;
}

int main(void)
{
    size_t len, blen;
    char *req = read_request(&len);
    char *body = req ? request_body(req, &blen) : NULL;
    int status = 200;
    size_t start = 0;
    if (body == NULL) {
        respond(500, "no request", 10);
        return 0;
    }
    for (size_t i = 0; i <= blen; i++) {
        if (i == blen || body[i] == '\n') {
            int s = run_line(body + start, i - start);
            if (s != 0) {
                status = s;
            }
            start = i + 1;
        }
    }
    respond(status, out, out_len);
    return 0;
}
