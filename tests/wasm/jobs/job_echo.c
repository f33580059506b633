/* job_echo.c - answers 200 with the job's payload as the body. */
#include "jobguest.h"

int main(void)
{
    size_t n, blen;
    char *req = read_request(&n), *body = req ? request_body(req, &blen) : NULL;
    if (body == NULL) {
        return 1;
    }
    reply(200, body, blen);
    return 0;
}
