/* hello.c - the smallest useful function: reads the request (JSON on
 * stdin) and answers "hello". Used by the README and the benchmark, so it
 * stays on plain read/write (no stdio buffering to measure). */
#include <unistd.h>

static const char reply[] =
    "{\"status\":200,\"headers\":{\"Content-Type\":[\"text/plain\"]},\"body\":\"hello\"}";

int main(void)
{
    char buf[4096];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return write(1, reply, sizeof reply - 1) == (ssize_t)(sizeof reply - 1) ? 0 : 1;
}
