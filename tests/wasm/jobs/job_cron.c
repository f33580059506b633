/* job_cron.c - a cron function: each tick's job creates the KV key
 * cron/<tick_ms>/<job id>, so a doubled tick shows as two keys under one
 * tick, and a redelivered job writes its own key again (no new one). */
#include "jobguest.h"

int main(void)
{
    size_t n, blen;
    char *req = read_request(&n), *body = req ? request_body(req, &blen) : NULL;
    char key[96], *o;
    unsigned long long tick;
    if (body == NULL) {
        return 1;
    }
    tick = json_num(body, "tick_ms");
    if (tick == 0 || strstr(body, "\"event_type\":\"cron\"") == NULL) {
        reply(400, body, blen); /* not a cron payload */
        return 0;
    }
    o = put_num(put_str(key, "cron/"), tick);
    put_num(put_str(o, "/"), header_num(req, "X-Jinn-Job"));
    if (host_kv_set(key, (uint32_t)strlen(key), "1", 1) != 0) {
        reply_str(503, "kv failed");
        return 0;
    }
    reply_str(200, key);
    return 0;
}
