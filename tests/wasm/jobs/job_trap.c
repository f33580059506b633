/* job_trap.c - writes one line to stderr, then traps: every delivery
 * fails, so the job ends in the dead letters with both in its reason. */
#include "jobguest.h"

int main(void)
{
    size_t n;
    char *req = read_request(&n), line[96];
    char *o = put_str(line, "job_trap: giving up on job ");
    o = put_num(o, req ? header_num(req, "X-Jinn-Job") : 0);
    o = put_str(o, "\n");
    write_all(2, line, (size_t)(o - line));
    __builtin_trap();
}
