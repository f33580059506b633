/* cli/queue.c - `jinn queue ...` and `jinn worker`.
 *
 *   jinn queue pub   QUEUE [PAYLOAD|-] [--key IDEMPOTENCY-KEY]
 *   jinn queue fetch QUEUE --worker W [--max N] [--wait D] [--ack-wait D]
 *   jinn queue ack|nak|progress|term QUEUE SEQ --worker W [--delay D] [--reason R]
 *   jinn queue stats [QUEUE]
 *   jinn queue dead  QUEUE [--requeue SEQ | --drop SEQ]
 *   jinn worker --queue QUEUE --exec CMD [--worker W] [--ack-wait D]
 *
 * `jinn worker` is the model for every worker: it long-polls for one job at
 * a time, runs CMD with the payload on stdin (JINN_SEQ and JINN_DELIVERY in
 * its environment), acks on exit 0 and naks otherwise (the queue's backoff
 * decides the delay), extending the lease while CMD runs. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"
#include "fsm/cmd.h"

static const char usage[] =
    "usage: jinn queue pub QUEUE [PAYLOAD|-] [--key IDEMPOTENCY-KEY]\n"
    "       jinn queue fetch QUEUE --worker W [--max N] [--wait D] [--ack-wait D]\n"
    "       jinn queue ack|nak|progress|term QUEUE SEQ --worker W [--delay D] [--reason R]\n"
    "       jinn queue stats [QUEUE]\n"
    "       jinn queue dead QUEUE [--requeue SEQ | --drop SEQ]\n"
    "       jinn worker --queue QUEUE --exec CMD [--worker W] [--ack-wait D]\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json\n";

struct qargs {
    const char *addr, *pos[3], *worker, *max, *wait, *ack_wait, *delay, *reason, *key;
    const char *requeue, *drop, *queue, *exec;
    int n_pos, json;
};

static int parse(int argc, char **argv, struct qargs *a)
{
    static const struct {
        const char *flag;
        size_t offset;
    } opts[] = {
        {"--addr", offsetof(struct qargs, addr)},       {"--worker", offsetof(struct qargs, worker)},
        {"--max", offsetof(struct qargs, max)},         {"--wait", offsetof(struct qargs, wait)},
        {"--ack-wait", offsetof(struct qargs, ack_wait)}, {"--delay", offsetof(struct qargs, delay)},
        {"--reason", offsetof(struct qargs, reason)},   {"--key", offsetof(struct qargs, key)},
        {"--requeue", offsetof(struct qargs, requeue)}, {"--drop", offsetof(struct qargs, drop)},
        {"--queue", offsetof(struct qargs, queue)},     {"--exec", offsetof(struct qargs, exec)},
    };
    const char *env = getenv("JINN_ADDR");
    memset(a, 0, sizeof *a);
    a->addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    for (int i = 0; i < argc; i++) {
        size_t k;
        if (strcmp(argv[i], "--json") == 0) {
            a->json = 1;
            continue;
        }
        for (k = 0; k < sizeof opts / sizeof opts[0]; k++) {
            if (strcmp(argv[i], opts[k].flag) == 0) {
                break;
            }
        }
        if (k < sizeof opts / sizeof opts[0] && i + 1 < argc) {
            *(const char **)(void *)((char *)a + opts[k].offset) = argv[++i];
        } else if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) {
            if (a->n_pos == 3) {
                fprintf(stderr, "jinn: too many arguments\n%s", usage);
                return 2;
            }
            a->pos[a->n_pos++] = argv[i];
        } else {
            fprintf(stderr, "jinn: bad option '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    return 0;
}

static void queue_path(struct jinn_wbuf *t, const char *queue)
{
    jinn_wbuf_printf(t, "/v1/queues");
    if (queue != NULL) {
        jinn_wbuf_put_u8(t, '/');
        jinn_cli_escape(t, queue, strlen(queue));
    }
}

/* One call; prints the body (or `human` when given and not --json). */
static int simple(const struct qargs *a, const char *method, struct jinn_wbuf *t,
                  const char *headers, const char *body, size_t len, json_t **out)
{
    char *resp = NULL;
    size_t resp_len;
    int status, rv = jinn_cli_call(a->addr, method, t, headers, body, len, &resp, &resp_len,
                                   &status);
    jinn_wbuf_free(t);
    if (rv != 0) {
        return rv;
    }
    if (out != NULL) {
        *out = json_loadb(resp, resp_len, 0, NULL);
    } else {
        printf("%.*s\n", (int)resp_len, resp);
    }
    jinn_free(resp);
    return 0;
}

static int cmd_pub(const struct qargs *a)
{
    struct jinn_wbuf t, body, headers;
    const char *v = a->n_pos > 1 ? a->pos[1] : "-";
    int rv;
    if (a->n_pos < 1 || a->n_pos > 2) {
        fputs(usage, stderr);
        return 2;
    }
    jinn_wbuf_init(&t);
    jinn_wbuf_init(&body);
    jinn_wbuf_init(&headers);
    queue_path(&t, a->pos[0]);
    if (a->key) {
        jinn_wbuf_printf(&headers, "Idempotency-Key: %s\r\n", a->key);
    }
    jinn_wbuf_put_u8(&headers, 0);
    if (strcmp(v, "-") == 0) {
        if (jinn_cli_read_stdin(&body, JINN_QUEUE_PAYLOAD_MAX) != 0) {
            jinn_wbuf_free(&t);
            jinn_wbuf_free(&body);
            jinn_wbuf_free(&headers);
            return 1;
        }
    } else {
        jinn_wbuf_put_raw(&body, v, strlen(v));
    }
    rv = simple(a, "POST", &t, (const char *)headers.data,
                body.data ? (const char *)body.data : "", body.len, NULL);
    jinn_wbuf_free(&body);
    jinn_wbuf_free(&headers);
    return rv;
}

static int cmd_fetch(const struct qargs *a)
{
    struct jinn_wbuf t;
    bool first = true;
    if (a->n_pos != 1 || a->worker == NULL) {
        fputs(usage, stderr);
        return 2;
    }
    jinn_wbuf_init(&t);
    queue_path(&t, a->pos[0]);
    jinn_wbuf_printf(&t, "/fetch");
    jinn_cli_query(&t, &first, "worker", a->worker);
    jinn_cli_query(&t, &first, "max", a->max);
    jinn_cli_query(&t, &first, "wait", a->wait);
    jinn_cli_query(&t, &first, "ack_wait", a->ack_wait);
    jinn_cli_timeout_ms = 310000;
    return simple(a, "POST", &t, NULL, "", 0, NULL);
}

static int cmd_settle(const struct qargs *a, const char *verb)
{
    struct jinn_wbuf t;
    bool first = true;
    if (a->n_pos != 2 || a->worker == NULL) {
        fputs(usage, stderr);
        return 2;
    }
    jinn_wbuf_init(&t);
    queue_path(&t, a->pos[0]);
    jinn_wbuf_printf(&t, "/%s/%s", a->pos[1], verb);
    jinn_cli_query(&t, &first, "worker", a->worker);
    jinn_cli_query(&t, &first, "delay", a->delay);
    jinn_cli_query(&t, &first, "reason", a->reason);
    jinn_cli_query(&t, &first, "ack_wait", a->ack_wait);
    return simple(a, "POST", &t, NULL, "", 0, NULL);
}

static int cmd_stats(const struct qargs *a)
{
    struct jinn_wbuf t;
    jinn_wbuf_init(&t);
    queue_path(&t, a->n_pos > 0 ? a->pos[0] : NULL);
    return simple(a, "GET", &t, NULL, "", 0, NULL);
}

static int cmd_dead(const struct qargs *a)
{
    struct jinn_wbuf t;
    if (a->n_pos != 1) {
        fputs(usage, stderr);
        return 2;
    }
    jinn_wbuf_init(&t);
    queue_path(&t, a->pos[0]);
    if (a->requeue) {
        jinn_wbuf_printf(&t, "/dead/%s/requeue", a->requeue);
        return simple(a, "POST", &t, NULL, "", 0, NULL);
    }
    if (a->drop) {
        jinn_wbuf_printf(&t, "/dead/%s", a->drop);
        return simple(a, "DELETE", &t, NULL, "", 0, NULL);
    }
    jinn_wbuf_printf(&t, "/dead");
    return simple(a, "GET", &t, NULL, "", 0, NULL);
}

int jinn_cli_queue(int argc, char **argv)
{
    struct qargs a;
    int rv;
    if (jinn_cli_help(argc, argv, usage)) {
        return 0;
    }
    if (argc < 1) {
        fputs(usage, stderr);
        return 2;
    }
    rv = parse(argc - 1, argv + 1, &a);
    if (rv != 0) {
        return rv;
    }
    if (strcmp(argv[0], "pub") == 0) {
        return cmd_pub(&a);
    }
    if (strcmp(argv[0], "fetch") == 0) {
        return cmd_fetch(&a);
    }
    if (strcmp(argv[0], "ack") == 0 || strcmp(argv[0], "nak") == 0 ||
        strcmp(argv[0], "progress") == 0 || strcmp(argv[0], "term") == 0) {
        return cmd_settle(&a, argv[0]);
    }
    if (strcmp(argv[0], "stats") == 0) {
        return cmd_stats(&a);
    }
    if (strcmp(argv[0], "dead") == 0) {
        return cmd_dead(&a);
    }
    fprintf(stderr, "jinn: unknown queue command '%s'\n%s", argv[0], usage);
    return 2;
}

/* ---- jinn worker ------------------------------------------------------------ */

static volatile sig_atomic_t worker_stop;

static void on_term(int sig)
{
    (void)sig;
    worker_stop = 1;
}

/* Decodes the job's payload into out. */
static int job_payload(json_t *job, struct jinn_wbuf *out)
{
    json_t *p = json_object_get(job, "payload");
    if (json_is_string(p)) {
        jinn_wbuf_put_raw(out, json_string_value(p), json_string_length(p));
        return 0;
    }
    fprintf(stderr, "jinn worker: binary payloads are passed as base64 text\n");
    p = json_object_get(job, "payload_base64");
    jinn_wbuf_put_raw(out, json_string_value(p), json_string_length(p));
    return 0;
}

/* Runs cmd with the payload on stdin; extends the lease every ack_wait/3
 * while it runs. Returns the exit status (or -1). */
static int run_job(const struct qargs *a, const char *worker, json_t *job)
{
    struct jinn_wbuf payload;
    int pipefd[2], status = -1;
    pid_t pid;
    long long seq = (long long)json_integer_value(json_object_get(job, "seq"));
    long long delivery = (long long)json_integer_value(json_object_get(job, "delivery"));
    long long deadline = (long long)json_integer_value(json_object_get(job, "deadline_ms"));
    char env_seq[64], env_delivery[64];
    struct timespec start, now;

    jinn_wbuf_init(&payload);
    job_payload(job, &payload);
    if (pipe(pipefd) != 0) {
        jinn_wbuf_free(&payload);
        return -1;
    }
    snprintf(env_seq, sizeof env_seq, "%lld", seq);
    snprintf(env_delivery, sizeof env_delivery, "%lld", delivery);
    pid = fork();
    if (pid == 0) {
        dup2(pipefd[0], 0);
        close(pipefd[0]);
        close(pipefd[1]);
        setenv("JINN_SEQ", env_seq, 1);
        setenv("JINN_DELIVERY", env_delivery, 1);
        execl("/bin/sh", "sh", "-c", a->exec, (char *)NULL);
        _exit(127);
    }
    close(pipefd[0]);
    if (pid > 0 && payload.len > 0) {
        ssize_t n = write(pipefd[1], payload.data, payload.len);
        (void)n; /* a command that does not read its input is its business */
    }
    close(pipefd[1]);
    jinn_wbuf_free(&payload);
    if (pid < 0) {
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        long long elapsed;
        if (r == pid) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (deadline > 0 && elapsed > deadline / 3) {
            /* Still working: extend the lease (JetStream's InProgress). */
            struct jinn_wbuf t;
            char seqs[32];
            bool first = true;
            jinn_wbuf_init(&t);
            queue_path(&t, a->queue);
            snprintf(seqs, sizeof seqs, "%lld", seq);
            jinn_wbuf_printf(&t, "/%s/progress", seqs);
            jinn_cli_query(&t, &first, "worker", worker);
            jinn_cli_query(&t, &first, "ack_wait", a->ack_wait);
            if (simple(a, "POST", &t, NULL, "", 0, NULL) != 0) {
                fprintf(stderr, "jinn worker: could not extend the lease of %lld\n", seq);
            }
            clock_gettime(CLOCK_MONOTONIC, &start);
        }
        usleep(20000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int jinn_cli_worker(int argc, char **argv)
{
    struct qargs a;
    char worker[128];
    bool announced = false;
    int rv;
    if (jinn_cli_help(argc, argv, usage)) {
        return 0;
    }
    rv = parse(argc, argv, &a);
    if (rv != 0) {
        return rv;
    }
    if (a.queue == NULL || a.exec == NULL) {
        fputs(usage, stderr);
        return 2;
    }
    if (a.worker) {
        snprintf(worker, sizeof worker, "%s", a.worker);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        snprintf(worker, sizeof worker, "%s-%d", host, (int)getpid());
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    jinn_cli_timeout_ms = 40000;
    /* Say what it does: a silent worker looks hung. */
    fprintf(stderr,
            "jinn worker: %s takes jobs from queue '%s' at %s and runs: /bin/sh -c '%s'\n"
            "jinn worker: the payload goes to its stdin (JINN_SEQ, JINN_DELIVERY in its "
            "environment); exit 0 acks, anything else naks; lease %s, extended while it runs; "
            "Ctrl-C or SIGTERM stops after the current job\n",
            worker, a.queue, a.addr, a.exec, a.ack_wait ? a.ack_wait : "the queue's ack_wait");
    while (!worker_stop) {
        struct jinn_wbuf t;
        bool first = true;
        json_t *jobs = NULL, *job;
        size_t i;
        jinn_wbuf_init(&t);
        queue_path(&t, a.queue);
        jinn_wbuf_printf(&t, "/fetch");
        jinn_cli_query(&t, &first, "worker", worker);
        jinn_cli_query(&t, &first, "wait", "5s"); /* a SIGTERM waits at most this long */
        jinn_cli_query(&t, &first, "ack_wait", a.ack_wait);
        if (simple(&a, "POST", &t, NULL, "", 0, &jobs) != 0) {
            sleep(1); /* the cluster may be electing; try again */
            continue;
        }
        if (json_array_size(jobs) > 0 && !announced) {
            fprintf(stderr, "jinn worker: working (a line per job follows)\n");
            announced = true;
        }
        json_array_foreach(jobs, i, job)
        {
            long long seq = (long long)json_integer_value(json_object_get(job, "seq"));
            int code = run_job(&a, worker, job);
            struct jinn_wbuf s;
            char path[64];
            bool f2 = true;
            jinn_wbuf_init(&s);
            queue_path(&s, a.queue);
            snprintf(path, sizeof path, "/%lld/%s", seq, code == 0 ? "ack" : "nak");
            jinn_wbuf_printf(&s, "%s", path);
            jinn_cli_query(&s, &f2, "worker", worker);
            if (code != 0) {
                char reason[64];
                snprintf(reason, sizeof reason, "exit status %d", code);
                jinn_cli_query(&s, &f2, "reason", reason);
            }
            json_t *answer = NULL;
            if (simple(&a, "POST", &s, NULL, "", 0, &answer) == 0) {
                fprintf(stderr, "jinn worker: job %lld %s\n", seq, code == 0 ? "done" : "failed");
            }
            json_decref(answer);
        }
        json_decref(jobs);
    }
    return 0;
}
