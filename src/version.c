/* version.c - kept in its own file so only it rebuilds when HEAD moves. */
#include "version.h"

#ifndef JINN_REVISION
#define JINN_REVISION "unknown"
#endif

const char *jinn_revision(void) { return JINN_REVISION; }
