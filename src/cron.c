/* cron.c - see cron.h. Dates are days since the Unix epoch, converted with
 * Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian,
 * integer arithmetic only), so the result never depends on the host's
 * time zone or C library. */
#include "cron.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

#define MS_PER_MIN UINT64_C(60000)
#define MS_PER_DAY UINT64_C(86400000)
/* 9999-12-31: no tick is searched for beyond it. */
#define LAST_DAY INT64_C(2932896)

int64_t jinn_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (int64_t)(m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t)d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void jinn_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era, doe, yoe, doy, mp;
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

void jinn_cron_iso8601(uint64_t t_ms, char out[21])
{
    uint64_t s = t_ms / 1000, sod = s % 86400;
    int64_t y;
    unsigned m, d;
    char buf[64];
    jinn_civil_from_days((int64_t)(s / 86400), &y, &m, &d);
    /* Within 20 bytes for every value (year < 10000); the compiler cannot
     * see that, hence the larger buffer. */
    snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02u:%02u:%02uZ", (long long)(y % 10000), m, d,
             (unsigned)(sod / 3600), (unsigned)(sod / 60 % 60), (unsigned)(sod % 60));
    memcpy(out, buf, 20);
    out[20] = '\0';
}

/* ---- parsing --------------------------------------------------------------- */

struct field {
    const char *name;
    unsigned lo, hi;
};

static const struct field FIELDS[5] = {
    {"minute", 0, 59}, {"hour", 0, 23},       {"day of month", 1, 31},
    {"month", 1, 12},  {"day of week", 0, 7},
};

/* A decimal number of 1-2 digits at *p; false if none. */
static bool number(const char **p, const char *end, unsigned *out)
{
    unsigned v = 0, n = 0;
    while (*p < end && **p >= '0' && **p <= '9' && n < 3) {
        v = v * 10 + (unsigned)(**p - '0');
        (*p)++;
        n++;
    }
    *out = v;
    return n > 0 && n <= 2;
}

/* One field [p, end) into the bit set *bits. */
static int parse_field(const char *p, const char *end, const struct field *f, uint64_t *bits,
                       bool *star, char *err, size_t errlen)
{
    *bits = 0;
    *star = p < end && *p == '*';
    if (p == end) {
        goto bad;
    }
    while (p < end) {
        unsigned a, b, step = 1;
        if (*p == '*') {
            a = f->lo;
            b = f->hi;
            p++;
        } else {
            if (!number(&p, end, &a)) {
                goto bad;
            }
            b = a;
            if (p < end && *p == '-') {
                p++;
                if (!number(&p, end, &b)) {
                    goto bad;
                }
            } else if (p < end && *p == '/') {
                b = f->hi; /* "a/n": from a to the end */
            }
        }
        if (p < end && *p == '/') {
            p++;
            if (!number(&p, end, &step) || step == 0) {
                goto bad;
            }
        }
        if (a < f->lo || b > f->hi || a > b) {
            snprintf(err, errlen, "cron: %s values are %u-%u (a range low to high)", f->name,
                     f->lo, f->hi);
            return JINN_EINVAL;
        }
        for (unsigned v = a; v <= b; v += step) {
            *bits |= UINT64_C(1) << v;
        }
        if (p < end) {
            if (*p != ',' || p + 1 == end) {
                goto bad;
            }
            p++;
        }
    }
    return 0;
bad:
    snprintf(err, errlen,
             "cron: %s field: use *, N, N-M, */S, N-M/S or a comma list of them (numbers only)",
             f->name);
    return JINN_EINVAL;
}

static unsigned month_days_max(unsigned m)
{
    static const unsigned days[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return days[m];
}

static int parse_every(const char *p, size_t len, struct jinn_cron *out, char *err,
                       size_t errlen)
{
    uint64_t v = 0, unit;
    size_t i = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9' && i < 6) {
        v = v * 10 + (uint64_t)(p[i] - '0');
        i++;
    }
    if (i == 0 || i + 1 != len || (p[i] != 's' && p[i] != 'm' && p[i] != 'h')) {
        snprintf(err, errlen, "cron: @every takes N followed by s, m or h (e.g. @every 30s)");
        return JINN_EINVAL;
    }
    unit = p[i] == 's' ? 1000 : p[i] == 'm' ? MS_PER_MIN : 3600000;
    if (v == 0 || v * unit > MS_PER_DAY) {
        snprintf(err, errlen, "cron: @every must be between 1s and 24h");
        return JINN_EINVAL;
    }
    out->every_ms = v * unit;
    return 0;
}

int jinn_cron_parse(const char *expr, size_t len, struct jinn_cron *out, char *err,
                    size_t errlen)
{
    const char *p = expr, *end = expr + len;
    uint64_t bits[5] = {0};
    bool stars[5] = {false};
    bool possible = false;
    int fields = 0;

    memset(out, 0, sizeof *out);
    if (len == 0 || len > JINN_CRON_EXPR_MAX || memchr(expr, '\0', len) != NULL) {
        snprintf(err, errlen, "cron: 1-%u bytes of text", JINN_CRON_EXPR_MAX);
        return JINN_EINVAL;
    }
    if (len > 7 && memcmp(expr, "@every ", 7) == 0) {
        return parse_every(expr + 7, len - 7, out, err, errlen);
    }
    if (len == 7 && memcmp(expr, "@hourly", 7) == 0) {
        return jinn_cron_parse("0 * * * *", 9, out, err, errlen);
    }
    if (len == 6 && memcmp(expr, "@daily", 6) == 0) {
        return jinn_cron_parse("0 0 * * *", 9, out, err, errlen);
    }
    if (*expr == '@') {
        snprintf(err, errlen, "cron: the @ forms are @every Ns|Nm|Nh, @hourly and @daily");
        return JINN_EINVAL;
    }
    for (int i = 0; i < 5; i++) {
        const char *f = p;
        int rv;
        while (p < end && *p != ' ') {
            p++;
        }
        if (f == p) {
            snprintf(err, errlen,
                     "cron: five fields separated by single spaces: minute hour "
                     "day-of-month month day-of-week (UTC), or @every/@hourly/@daily");
            return JINN_EINVAL;
        }
        rv = parse_field(f, p, &FIELDS[i], &bits[i], &stars[i], err, errlen);
        if (rv != 0) {
            return rv;
        }
        fields++;
        if (i < 4) {
            if (p == end) {
                break;
            }
            p++;
        }
    }
    if (p != end || fields != 5) {
        snprintf(err, errlen,
                 "cron: five fields separated by single spaces: minute hour day-of-month "
                 "month day-of-week (UTC), or @every/@hourly/@daily");
        return JINN_EINVAL;
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->dom = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->dow = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f); /* 7 is Sunday too */
    out->dom_star = stars[2];
    out->dow_star = stars[4];
    /* With dom restricted and dow not, some listed day must exist in some
     * listed month (Feb 29 counts: leap years come). */
    if (out->dom_star || !out->dow_star) {
        possible = true;
    }
    for (unsigned m = 1; m <= 12 && !possible; m++) {
        if (out->months & (1u << m)) {
            for (unsigned d = 1; d <= month_days_max(m); d++) {
                if (out->dom & (UINT32_C(1) << d)) {
                    possible = true;
                    break;
                }
            }
        }
    }
    if (!possible) {
        snprintf(err, errlen,
                 "cron: no listed month has the listed day of month: it never runs");
        return JINN_EINVAL;
    }
    return 0;
}

/* ---- the next tick ------------------------------------------------------------ */

static bool day_matches(const struct jinn_cron *c, int64_t days)
{
    int64_t y;
    unsigned m, d, wd = (unsigned)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    bool dom_ok, dow_ok;
    jinn_civil_from_days(days, &y, &m, &d);
    if (!(c->months & (1u << m))) {
        return false;
    }
    dom_ok = (c->dom >> d) & 1;
    dow_ok = (c->dow >> wd) & 1;
    if (!c->dom_star && !c->dow_star) {
        return dom_ok || dow_ok;
    }
    return dom_ok && dow_ok;
}

/* The first matching minute of the day at or after minute-of-day from. */
static int first_minute(const struct jinn_cron *c, unsigned from)
{
    for (unsigned t = from; t < 1440; t++) {
        if (((c->hours >> (t / 60)) & 1) && ((c->minutes >> (t % 60)) & 1)) {
            return (int)t;
        }
    }
    return -1;
}

uint64_t jinn_cron_next_parsed(const struct jinn_cron *c, uint64_t after_ms)
{
    uint64_t start;
    int64_t day;
    unsigned from;

    if (after_ms >= (uint64_t)(LAST_DAY + 1) * MS_PER_DAY) {
        return 0;
    }
    if (c->every_ms != 0) {
        uint64_t t = (after_ms / c->every_ms + 1) * c->every_ms;
        return t < (uint64_t)(LAST_DAY + 1) * MS_PER_DAY ? t : 0;
    }
    if (c->minutes == 0 || c->hours == 0 || c->months == 0) {
        return 0;
    }
    start = after_ms / MS_PER_MIN + 1; /* strictly after: the next whole minute */
    day = (int64_t)(start / 1440);
    from = (unsigned)(start % 1440);
    /* A schedule that parsed matches within 8 years (Feb 29 across a
     * skipped leap year); the day walk is bounded by year 9999. */
    for (; day <= LAST_DAY; day++, from = 0) {
        int t;
        if (!day_matches(c, day)) {
            continue;
        }
        t = first_minute(c, from);
        if (t >= 0) {
            return ((uint64_t)day * 1440 + (uint64_t)t) * MS_PER_MIN;
        }
    }
    return 0;
}

uint64_t jinn_cron_next(const char *expr, uint64_t after_ms)
{
    struct jinn_cron c;
    char err[160];
    if (jinn_cron_parse(expr, strlen(expr), &c, err, sizeof err) != 0) {
        return 0;
    }
    return jinn_cron_next_parsed(&c, after_ms);
}
