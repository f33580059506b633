/* log.c - see log.h. Log lines carry wall-clock time for operators; nothing
 * in the state machine ever reads it. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static char node_name[64] = "jinn";
static enum jinn_log_level min_level = JINN_LOG_INFO;

void jinn_log_set_name(const char *name)
{
    snprintf(node_name, sizeof node_name, "%s", name);
}

void jinn_log_set_level(enum jinn_log_level level) { min_level = level; }

void jinn_log(enum jinn_log_level level, const char *fmt, ...)
{
    static const char *const labels[] = {"debug", "info", "warn", "error"};
    char stamp[32];
    struct timespec now;
    struct tm tm;
    va_list ap;

    if (level < min_level) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s %-5s ", stamp, now.tv_nsec / 1000000L, node_name,
            labels[level]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
