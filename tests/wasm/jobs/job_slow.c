/* job_slow.c - runs for PAYLOAD milliseconds (a decimal number), then
 * creates the KV key jobs/<job id> once (create_once: the exactly-once
 * effect of an at-least-once job), with "delivery N" as its value. */
#include <time.h>

#include "jobguest.h"

int main(void)
{
    size_t n, blen;
    char *req = read_request(&n), *body = req ? request_body(req, &blen) : NULL;
    char key[64], value[64];
    unsigned long long ms = 0;
    struct timespec ts;
    int rv;
    if (body == NULL) {
        return 1;
    }
    for (const char *p = body; *p >= '0' && *p <= '9'; p++) {
        ms = ms * 10 + (unsigned long long)(*p - '0');
    }
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
    put_num(put_str(key, "jobs/"), header_num(req, "X-Jinn-Job"));
    put_num(put_str(value, "delivery "), header_num(req, "X-Jinn-Delivery"));
    rv = create_once(key, value);
    if (rv < 0) {
        reply_str(503, "effect failed");
        return 0;
    }
    reply_str(200, rv ? "created" : "exists");
    return 0;
}
