/* jobfx.c - a job function for the failover tests (tests/cluster/
 * test_jobs_failover.py). It reads the job id and delivery from the async
 * request's X-Jinn-Job / X-Jinn-Delivery headers; a body "sleep N" makes
 * it sleep N ms first. Then it records its effect in KV, keyed so that a
 * second effect of the same job (or cron tick) shows: "fx/JOB/DELIVERY",
 * or for a cron tick (a body with "tick_ms":T) "cron/T/JOB". It answers
 * 200 "done JOB" only after that write committed (503 otherwise). A body
 * "fail" writes three stderr lines and answers 500 (no effect). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gojinn.h"
#include "guest.h"

/* The first value of header name in the request JSON, as a number. */
static unsigned long long header_num(const char *req, const char *name)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\":[\"", name);
    p = strstr(req, pat);
    return p != NULL ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

int main(void)
{
    size_t len, blen;
    char *req = read_request(&len);
    char *body = req ? request_body(req, &blen) : NULL;
    char key[128], msg[64];
    const char *tick;
    unsigned long long job, delivery;

    if (body == NULL) {
        respond(500, "no request", 10);
        return 0;
    }
    job = header_num(req, "X-Jinn-Job");
    delivery = header_num(req, "X-Jinn-Delivery");
    if (strncmp(body, "sleep ", 6) == 0) {
        long ms = atol(body + 6);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (strcmp(body, "fail") == 0) {
        fprintf(stderr, "first line\nsecond line\nboom: job %llu delivery %llu\n", job,
                delivery);
        respond(500, "FAILED", 6);
        return 0;
    }
    tick = strstr(body, "\"tick_ms\":");
    if (tick != NULL) {
        snprintf(key, sizeof key, "cron/%llu/%llu", strtoull(tick + 10, NULL, 10), job);
    } else {
        snprintf(key, sizeof key, "fx/%llu/%llu", job, delivery);
    }
    if (host_kv_set(key, (uint32_t)strlen(key), "1", 1) != 0) {
        fprintf(stderr, "kv write of %s failed\n", key);
        respond(503, "KV_FAILED", 9);
        return 0;
    }
    snprintf(msg, sizeof msg, "done %llu", job);
    respond(200, msg, strlen(msg));
    return 0;
}
