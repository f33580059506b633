/* main.c - command-line entry: dispatches `jinn <command>`. */
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "cli/cli.h"
#include "daemon.h"
#include "version.h"
#include "wasm/sandbox.h"

static void usage(FILE *out)
{
    fprintf(out,
            "jinn %s - one binary for consistent keys, locks, queues and SQL\n"
            "\n"
            "usage:\n"
            "  jinn run [-c FILE] [--bootstrap]    start a node (no file: one-node cluster;\n"
            "                                      --bootstrap: first start of a new cluster)\n"
            "  jinn replica -c FILE                an edge replica: follows a cluster over\n"
            "                                      WebSocket, serves reads locally\n"
            "  jinn members [list|add|remove|promote|demote] ...  cluster membership\n"
            "  jinn leader transfer [NAME]         hand leadership to another voter\n"
            "  jinn certs init DIR | add DIR NODE  a CA and node certificates (cluster_tls)\n"
            "  jinn status [--addr URL] [--json]   show a node's view of the cluster\n"
            "  jinn version [--addr URL] [--json]  show the build (and a node's)\n"
            "  jinn kv put|create|cas|get|del|ls|watch ...   the key-value store\n"
            "  jinn lock acquire|refresh|release|show|ls ... distributed locks\n"
            "  jinn queue pub|fetch|ack|nak|progress|term|stats|dead ...  work queues\n"
            "  jinn worker --queue Q --exec CMD    run CMD for every job of queue Q\n"
            "  jinn snapshot save|inspect|restore ...  online backup and restore\n"
            "  jinn sql exec|query DB SQL [P...] | jinn sql DB   replicated SQLite\n"
            "  jinn check [--addr URL] [--json]    do all replicas hold the same state?\n"
            "  jinn fn deploy|ls|show|rm|rollback|call|logs ...  WebAssembly functions\n"
            "  jinn token create|ls|revoke ...     scoped access tokens\n"
            "\n"
            "--addr defaults to $JINN_ADDR, else %s\n",
            JINN_VERSION, JINN_CLI_DEFAULT_ADDR);
}

static int cmd_run(int argc, char **argv)
{
    const char *config = NULL;
    bool bootstrap = false;
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--bootstrap") == 0) {
            bootstrap = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: jinn run [-c FILE] [--bootstrap]\n"
                   "  starts a node; without -c a one-node cluster in ./jinn-data\n"
                   "  --bootstrap: the first start of a brand-new cluster (every node of\n"
                   "  cluster_peers); later starts and new members go without it\n"
                   "  configuration: docs/config.md\n");
            return 0;
        } else {
            fprintf(stderr,
                    "jinn: run: unexpected argument '%s'\nusage: jinn run [-c FILE] "
                    "[--bootstrap]\n",
                    argv[i]);
            return 2;
        }
    }
    return jinn_daemon_run(config, bootstrap);
}

static int cmd_replica(int argc, char **argv)
{
    const char *config = NULL;
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: jinn replica -c FILE\n"
                   "  starts an edge replica: a non-voting copy of a cluster's state with\n"
                   "  its own data_dir and HTTP port, streamed from the nodes listed in\n"
                   "  replica_of (ws:// or wss://); reads are local, writes are relayed\n"
                   "  to the leader; read-only without a primary heartbeat for\n"
                   "  replica_stale_after. See docs/replica.md\n");
            return 0;
        } else {
            fprintf(stderr,
                    "jinn: replica: unexpected argument '%s'\nusage: jinn replica -c FILE\n",
                    argv[i]);
            return 2;
        }
    }
    if (config == NULL) {
        fprintf(stderr, "jinn: replica: a config file is required (replica_of at least)\n"
                        "usage: jinn replica -c FILE\n");
        return 2;
    }
    return jinn_daemon_run_replica(config);
}

int main(int argc, char **argv)
{
    json_set_alloc_funcs(jinn_malloc, jinn_free);
    /* SQL queries run on libuv's pool next to raft's disk work: more room. */
    setenv("UV_THREADPOOL_SIZE", "12", 0);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "sandbox") != 0 && strcmp(argv[1], "run") != 0 &&
        strcmp(argv[1], "replica") != 0 && jinn_cli_global_opts(&argc, argv) != 0) {
        return 2;
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "sandbox") == 0) { /* internal: started by a node (wasm/pool.c) */
        return jinn_sandbox_main(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "run") == 0) {
        return cmd_run(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "replica") == 0) {
        return cmd_replica(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "status") == 0) {
        return jinn_cli_status(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "sql") == 0) {
        return jinn_cli_sql(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "queue") == 0) {
        return jinn_cli_queue(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "worker") == 0) {
        return jinn_cli_worker(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "snapshot") == 0) {
        return jinn_cli_snapshot(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "lock") == 0) {
        return jinn_cli_lock(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "token") == 0) {
        return jinn_cli_token(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "leader") == 0) {
        return jinn_cli_leader(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "members") == 0) {
        return jinn_cli_members(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "kv") == 0) {
        return jinn_cli_kv(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "fn") == 0) {
        return jinn_cli_fn(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "check") == 0) {
        return jinn_cli_check(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "certs") == 0) {
        return jinn_cli_certs(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        return jinn_cli_version(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "jinn: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
