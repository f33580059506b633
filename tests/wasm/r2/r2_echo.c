/* r2_echo.c - answers 200 with the whole request JSON it was given
 * (method, uri, headers, body) as its body: shows what a guest sees. */
#include "jobguest.h"

int main(void)
{
    size_t n;
    char *req = read_request(&n);
    if (req == NULL) {
        return 1;
    }
    reply(200, req, n);
    return 0;
}
