/* log.h - leveled logging to stderr, prefixed with the node's name. */
#ifndef JINN_LOG_H
#define JINN_LOG_H

enum jinn_log_level { JINN_LOG_DEBUG, JINN_LOG_INFO, JINN_LOG_WARN, JINN_LOG_ERROR, JINN_LOG_SILENT };

/* name is copied (truncated to 63 bytes). */
void jinn_log_set_name(const char *name);
void jinn_log_set_level(enum jinn_log_level level);
void jinn_log(enum jinn_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define jinn_debug(...) jinn_log(JINN_LOG_DEBUG, __VA_ARGS__)
#define jinn_info(...) jinn_log(JINN_LOG_INFO, __VA_ARGS__)
#define jinn_warn(...) jinn_log(JINN_LOG_WARN, __VA_ARGS__)
#define jinn_error(...) jinn_log(JINN_LOG_ERROR, __VA_ARGS__)

#endif
