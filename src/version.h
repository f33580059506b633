/* version.h - the build's identity, shown by `jinn version` and /v1/status. */
#ifndef JINN_VERSION_H
#define JINN_VERSION_H

#define JINN_VERSION "0.1.0"

/* The git revision the binary was built from ("unknown" outside git). */
const char *jinn_revision(void);

#endif
