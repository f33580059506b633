/* job_fanout.c - enqueues its payload as a job of job_echo
 * (host_enqueue: durable before it returns 0), then answers 200. */
#include "jobguest.h"

int main(void)
{
    size_t n, blen;
    char *req = read_request(&n), *body = req ? request_body(req, &blen) : NULL;
    if (body == NULL) {
        return 1;
    }
    if (host_enqueue("job_echo", 8, body, (uint32_t)blen) != 0) {
        reply_str(503, "enqueue failed");
        return 0;
    }
    reply_str(200, "enqueued");
    return 0;
}
