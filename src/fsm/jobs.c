/* jobs.c - see jobs.h. (interface stub; bodies follow) */
#include "fsm/jobs.h"

#include <string.h>

#include "error.h"

void jinn_jobs_init(struct jinn_jobs *jobs) { memset(jobs, 0, sizeof *jobs); }
void jinn_jobs_clear(struct jinn_jobs *jobs) { jinn_jobs_init(jobs); }
void jinn_jobs_expire(struct jinn_jobs *jobs, uint64_t now) { (void)jobs, (void)now; }
uint64_t jinn_jobs_next_due(const struct jinn_jobs *jobs) { (void)jobs; return 0; }
int jinn_jobs_ack(struct jinn_jobs *jobs, struct jinn_queues *qs, uint64_t index, uint64_t now,
                  const struct jinn_cmd *c, uint64_t *value)
{
    (void)jobs, (void)qs, (void)index, (void)now, (void)c, (void)value;
    return JINN_EINVAL;
}
int jinn_jobs_cron(struct jinn_jobs *jobs, struct jinn_queues *qs, uint64_t index, uint64_t now,
                   const struct jinn_cmd *c, uint64_t *value)
{
    (void)jobs, (void)qs, (void)index, (void)now, (void)c, (void)value;
    return JINN_ECONFLICT;
}
void jinn_jobs_fn_changed(struct jinn_jobs *jobs, const struct jinn_fns *fns, const char *name,
                          size_t name_len, uint64_t now)
{
    (void)jobs, (void)fns, (void)name, (void)name_len, (void)now;
}
uint64_t jinn_jobs_cron_next(const struct jinn_jobs *jobs, char name[65])
{
    (void)jobs;
    name[0] = '\0';
    return 0;
}
uint64_t jinn_jobs_cron_of(const struct jinn_jobs *jobs, const char *fn) { (void)jobs, (void)fn; return 0; }
const struct jinn_job_result *jinn_jobs_result(const struct jinn_jobs *jobs, const char *fn,
                                               uint64_t seq)
{
    (void)jobs, (void)fn, (void)seq;
    return NULL;
}
const struct jinn_job_result *jinn_jobs_results_next(const struct jinn_jobs *jobs,
                                                     const char *fn,
                                                     const struct jinn_job_result *after)
{
    (void)jobs, (void)fn, (void)after;
    return NULL;
}
void jinn_jobs_encode(const struct jinn_jobs *jobs, struct jinn_wbuf *w) { (void)jobs, (void)w; }
int jinn_jobs_decode(struct jinn_jobs *jobs, struct jinn_rbuf *r) { (void)jobs, (void)r; return 0; }
