/* daemon.h - `jinn run`: wires config, node, HTTP API and signals onto one
 * event loop and runs it until SIGTERM/SIGINT. */
#ifndef JINN_DAEMON_H
#define JINN_DAEMON_H

/* config_path may be NULL (single-node defaults). Returns the process exit
 * code: 0 after a clean shutdown, 2 for a bad config, 1 otherwise. */
/* bootstrap: --bootstrap was given (found a new cluster). */
#include <stdbool.h>

int jinn_daemon_run(const char *config_path, bool bootstrap);

/* `jinn replica -c FILE`: an edge replica (docs/replica.md) - a replica
 * node (node.h), its HTTP API, and the stream client following the
 * cluster (replica/stream.h). Exit codes as jinn_daemon_run. */
int jinn_daemon_run_replica(const char *config_path);

#endif
