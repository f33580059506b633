/* error.c - lookups into the error table declared in error.h. */
#include "error.h"

struct error_info {
    const char *name;
    int http_status;
    const char *message;
};

#define JINN_ERROR_ROW(code, name, http, msg) [code] = {name, http, msg},
static const struct error_info error_table[] = {JINN_ERRORS(JINN_ERROR_ROW)};
#undef JINN_ERROR_ROW

static const struct error_info *lookup(int code)
{
    if (code < 0 || code >= JINN_ERROR_COUNT) {
        code = JINN_EINTERNAL;
    }
    return &error_table[code];
}

const char *jinn_error_name(int code) { return lookup(code)->name; }
const char *jinn_error_message(int code) { return lookup(code)->message; }
int jinn_error_http_status(int code) { return lookup(code)->http_status; }
