/* cron.h - cron schedules in UTC: a parser and "the first tick after t".
 *
 * Pure functions of their arguments (integer arithmetic only: no timegm,
 * localtime or TZ), shared by the state machine (jobs.c decides when a
 * function's tick is due), the deploy handler and the CLI. Accepted:
 *
 *   five fields  "minute hour day-of-month month day-of-week", each `*`,
 *                a number, a range `a-b`, a step `*\/n` or `a-b/n` or
 *                `a/n` (a to the field's end), or a comma list of those;
 *                minute 0-59, hour 0-23, dom 1-31, month 1-12, dow 0-7
 *                (0 and 7 are Sunday). Names (JAN, MON) are refused.
 *                When both dom and dow are restricted (neither starts with
 *                `*`) a day matches if EITHER does (the classic cron rule);
 *                otherwise both must.
 *   @every N     N = 1-86400 followed by s, m or h (1 s .. 24 h); ticks are
 *                the multiples of the period since the Unix epoch.
 *   @hourly      = "0 * * * *"     @daily = "0 0 * * *"
 *
 * A schedule that can never fire (e.g. "0 0 30 2 *") is refused. */
#ifndef JINN_CRON_H
#define JINN_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JINN_CRON_EXPR_MAX 128 /* bytes of one expression */

struct jinn_cron {
    uint64_t every_ms;       /* @every: the period; 0 for a five-field schedule */
    uint64_t minutes;        /* bit m: minute m matches */
    uint32_t hours;          /* bit h */
    uint32_t dom;            /* bit d (1-31) */
    uint16_t months;         /* bit m (1-12) */
    uint8_t dow;             /* bit d (0-6, Sunday 0) */
    bool dom_star, dow_star; /* the field started with `*` */
};

/* Parses expr[0..len). 0, or JINN_EINVAL with one line in err. */
int jinn_cron_parse(const char *expr, size_t len, struct jinn_cron *out, char *err,
                    size_t errlen);

/* The first tick strictly after after_ms (Unix ms, UTC); 0 when there is
 * none before year 10000. */
uint64_t jinn_cron_next_parsed(const struct jinn_cron *c, uint64_t after_ms);
/* The same from the text; 0 also when expr does not parse. */
uint64_t jinn_cron_next(const char *expr, uint64_t after_ms);

/* Writes "YYYY-MM-DDTHH:MM:SSZ" (ms dropped) for t_ms into out[21]. */
void jinn_cron_iso8601(uint64_t t_ms, char out[21]);

/* Days since 1970-01-01 of a proleptic Gregorian date, and back. */
int64_t jinn_days_from_civil(int64_t y, unsigned m, unsigned d);
void jinn_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

#endif
