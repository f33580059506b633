/* job_raw.c - writes the job's payload to stdout as its whole response:
 * the payload chooses the output (R4: a response nested 2048 deep). */
#include "jobguest.h"

int main(void)
{
    size_t n, blen;
    char *req = read_request(&n), *body = req ? request_body(req, &blen) : NULL;
    if (body == NULL) {
        return 1;
    }
    write_all(1, body, blen);
    return 0;
}
