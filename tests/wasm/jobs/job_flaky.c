/* job_flaky.c - fails (500) until its delivery count (X-Jinn-Delivery)
 * reaches 3, then succeeds: the retry-with-backoff test. */
#include "jobguest.h"

int main(void)
{
    size_t n;
    char *req = read_request(&n), msg[64];
    unsigned long long d;
    if (req == NULL) {
        return 1;
    }
    d = header_num(req, "X-Jinn-Delivery");
    put_num(put_str(msg, d < 3 ? "flaky at delivery " : "ok at delivery "), d);
    reply_str(d < 3 ? 500 : 200, msg);
    return 0;
}
