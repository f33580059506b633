/* counter.c - the seed's scenario. A worker asks for the lock Key_A:
 * granted (LEADER), it increments the KV counter under the lock and
 * unlocks, answering 200 "LEADER <new value>"; held by someone else
 * (FOLLOWER), it aborts with 409 "FOLLOWER". Anything that goes wrong
 * under the lock answers 503 and says what, so a LEADER answer is only
 * given for an increment that was committed. The request body, when not
 * empty, replaces "counter" as the counter's key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gojinn.h"
#include "guest.h"

int main(void)
{
    static const char lock[] = "Key_A";
    size_t len, klen;
    char *req = read_request(&len);
    char *key = req ? request_body(req, &klen) : NULL;
    char value[32], msg[64];
    uint32_t n;
    unsigned long count = 0;

    if (key == NULL) {
        respond(500, "no request", 10);
        return 0;
    }
    if (klen == 0) {
        strcpy(key, "counter");
        klen = 7;
    }
    if (host_mutex_lock(lock, sizeof lock - 1, 5) != 1) {
        respond(409, "FOLLOWER", 8);
        return 0;
    }
    n = host_kv_get(key, (uint32_t)klen, value, sizeof value - 1);
    if (n == GOJINN_FAIL) {
        /* The test creates the counter first: missing means the read failed. */
        host_mutex_unlock(lock, sizeof lock - 1);
        respond(503, "GET_FAILED", 10);
        return 0;
    }
    value[n] = '\0';
    count = strtoul(value, NULL, 10) + 1;
    snprintf(value, sizeof value, "%lu", count);
    if (host_kv_set(key, (uint32_t)klen, value, (uint32_t)strlen(value)) != 0) {
        host_mutex_unlock(lock, sizeof lock - 1);
        respond(503, "SET_FAILED", 10);
        return 0;
    }
    host_mutex_unlock(lock, sizeof lock - 1);
    snprintf(msg, sizeof msg, "LEADER %lu", count);
    respond(200, msg, strlen(msg));
    return 0;
}
