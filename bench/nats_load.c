/* nats_load.c - the NATS JetStream side of bench/compare, over nats.c.
 *
 * Same shape as load.c: --threads concurrent clients (each with its own
 * connection) run one workload for --duration seconds after --warmup, and
 * one JSON line reports ops/s and latency percentiles. Workloads:
 *   setup     create the KV bucket "bench" and the work-queue stream "WQ" (R3, file)
 *   put       kvStore_Put of --value-size bytes on keys k0..k999
 *   cas       kvStore_Update on 8 hot keys with the last seen revision
 *   get       kvStore_Get (served by the stream leader)
 *   lock      kvStore_Create + kvStore_Delete on a per-client key (the original
 *             system's mutex)
 *   publish   js_Publish to the work-queue stream
 *   consumer  create the durable pull consumer for --subject (before any load:
 *             created under a publish storm, JetStream's API calls time out)
 *   consume   pull 8 messages, AckSync each; one op = one acked message
 *
 * A client that cannot connect or subscribe retries for up to SETUP_RETRY_S
 * and then drops out (reported as failed_clients); only when every client
 * failed does the run fail, with the reason in the JSON line's "error". */
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 256
#define MAX_SAMPLES (1u << 22)
#define SETUP_RETRY_S 30.0  /* connecting, subscribing: how long to keep trying */
#define API_WAIT_MS 20000   /* JetStream API requests (default 5 s) */

static const char *urls = "nats://127.0.0.1:4222";
static const char *workload = "put";
static const char *subject = "wq.jobs"; /* publish / consume on this subject */
static int threads = 32, value_size = 64;
static double duration = 5, warmup = 1;
static double t_measure, t_end;

struct worker {
    int id;
    bool failed;
    char why[160];
    double *lat;
    size_t n;
    unsigned long long ok, errors, refused;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void record(struct worker *w, double started, natsStatus s, bool refused)
{
    double t = now_s();
    if (t < t_measure || t >= t_end) {
        return;
    }
    if (refused) {
        w->refused++;
        return;
    }
    if (s != NATS_OK) {
        w->errors++;
        return;
    }
    w->ok++;
    if (w->n < MAX_SAMPLES) {
        w->lat[w->n++] = t - started;
    }
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Connects with a JetStream context whose API calls wait API_WAIT_MS;
 * retries for SETUP_RETRY_S. */
static natsStatus connect_js(natsConnection **nc, jsCtx **js)
{
    double give_up = now_s() + SETUP_RETRY_S;
    natsStatus s;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = API_WAIT_MS;
    for (;;) {
        s = natsConnection_ConnectTo(nc, urls);
        if (s == NATS_OK) {
            s = natsConnection_JetStream(js, *nc, &jo);
            if (s == NATS_OK) {
                return s;
            }
            natsConnection_Destroy(*nc);
            *nc = NULL;
        }
        if (now_s() > give_up) {
            return s;
        }
        pause_ms(250);
    }
}

static void durable_name(char *out, size_t len)
{
    snprintf(out, len, "workers-%s", strncmp(subject, "wq.", 3) == 0 ? subject + 3 : subject);
}

static void *run(void *arg)
{
    struct worker *w = arg;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    kvStore *kv = NULL;
    natsSubscription *sub = NULL;
    char value[65536], key[64];
    uint64_t rev[8] = {0};
    unsigned seq = 0;

    memset(value, 'v', sizeof value);
    if (connect_js(&nc, &js) != NATS_OK) {
        snprintf(w->why, sizeof w->why, "cannot connect to %s", urls);
        goto failed;
    }
    if (strcmp(workload, "consume") == 0) {
        char durable[64];
        double give_up = now_s() + SETUP_RETRY_S;
        jsSubOptions so;
        natsStatus s;
        jsErrCode err = 0;
        durable_name(durable, sizeof durable);
        jsSubOptions_Init(&so);
        so.Stream = "WQ";
        so.Consumer = durable; /* bind to the one `consumer` made: no creation race */
        while ((s = js_PullSubscribe(&sub, js, subject, durable, NULL, &so, &err)) != NATS_OK &&
               now_s() < give_up) {
            pause_ms(250);
        }
        if (s != NATS_OK) {
            snprintf(w->why, sizeof w->why, "pull subscribe to %s (%s) failed: %s (%d)",
                     subject, durable, natsStatus_GetText(s), (int)err);
            goto failed;
        }
    } else if (strcmp(workload, "publish") != 0 && js_KeyValue(&kv, js, "bench") != NATS_OK) {
        snprintf(w->why, sizeof w->why, "no bucket (run setup)");
        goto failed;
    }
    while (now_s() < t_end) {
        double started = now_s();
        natsStatus s = NATS_OK;
        unsigned k = (unsigned)(w->id * 7919 + (int)seq++) % 1000;
        snprintf(key, sizeof key, "k%u", k);
        if (strcmp(workload, "put") == 0) {
            s = kvStore_Put(NULL, kv, key, value, value_size);
            record(w, started, s, false);
        } else if (strcmp(workload, "cas") == 0) {
            uint64_t r = 0;
            k %= 8;
            snprintf(key, sizeof key, "hot%u", k);
            s = rev[k] ? kvStore_Update(&r, kv, key, value, value_size, rev[k])
                       : kvStore_Put(&r, kv, key, value, value_size);
            if (s == NATS_OK) {
                rev[k] = r;
                record(w, started, s, false);
            } else {
                kvEntry *e = NULL;
                record(w, started, NATS_OK, false); /* a refused CAS is an answer */
                if (kvStore_Get(&e, kv, key) == NATS_OK) {
                    rev[k] = kvEntry_Revision(e);
                    kvEntry_Destroy(e);
                }
            }
        } else if (strcmp(workload, "get") == 0) {
            kvEntry *e = NULL;
            s = kvStore_Get(&e, kv, key);
            if (s == NATS_NOT_FOUND) {
                s = NATS_OK;
            }
            kvEntry_Destroy(e);
            record(w, started, s, false);
        } else if (strcmp(workload, "lock") == 0) {
            snprintf(key, sizeof key, "lock%d", w->id);
            s = kvStore_Create(NULL, kv, key, "me", 2);
            if (s == NATS_OK) {
                s = kvStore_Delete(kv, key);
                /* A delete leaves a marker Create accepts again. */
            }
            record(w, started, s, false);
        } else if (strcmp(workload, "publish") == 0) {
            jsPubAck *ack = NULL;
            s = js_Publish(&ack, js, subject, value, value_size, NULL, NULL);
            jsPubAck_Destroy(ack);
            record(w, started, s, false);
        } else if (strcmp(workload, "consume") == 0) {
            natsMsgList list = {0};
            s = natsSubscription_Fetch(&list, sub, 8, 200, NULL);
            for (int i = 0; s == NATS_OK && i < list.Count; i++) {
                double st = now_s();
                natsStatus as = natsMsg_AckSync(list.Msgs[i], NULL, NULL);
                record(w, st, as, false);
            }
            natsMsgList_Destroy(&list);
        }
    }
    natsSubscription_Destroy(sub);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return NULL;
failed:
    w->failed = true;
    fprintf(stderr, "nats_load: client %d: %s; it drops out\n", w->id, w->why);
    natsSubscription_Destroy(sub);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return NULL;
}

/* Creates the durable pull consumer for subject on stream WQ (retrying:
 * JetStream may still be electing the stream's leader). */
static int make_consumer(void)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsConsumerInfo *ci = NULL;
    jsConsumerConfig cc;
    jsErrCode err = 0;
    char durable[64];
    double give_up = now_s() + SETUP_RETRY_S;
    natsStatus s;

    if (connect_js(&nc, &js) != NATS_OK) {
        fprintf(stderr, "nats_load: cannot connect to %s\n", urls);
        return 1;
    }
    durable_name(durable, sizeof durable);
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable;
    cc.AckPolicy = js_AckExplicit;
    cc.FilterSubject = subject;
    while ((s = js_AddConsumer(&ci, js, "WQ", &cc, NULL, &err)) != NATS_OK &&
           now_s() < give_up) {
        pause_ms(500);
    }
    if (s != NATS_OK) {
        fprintf(stderr, "nats_load: create consumer %s: %s (%d)\n", durable,
                natsStatus_GetText(s), (int)err);
    }
    jsConsumerInfo_Destroy(ci);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return s == NATS_OK ? 0 : 1;
}

static int setup(void)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    kvStore *kv = NULL;
    kvConfig kc;
    jsStreamConfig sc;
    jsStreamInfo *si = NULL;
    jsErrCode err = 0;
    const char *subjects[] = {"wq.>"};
    natsStatus s;

    if (natsConnection_ConnectTo(&nc, urls) != NATS_OK ||
        natsConnection_JetStream(&js, nc, NULL) != NATS_OK) {
        fprintf(stderr, "nats_load: cannot connect to %s\n", urls);
        return 1;
    }
    kvConfig_Init(&kc);
    kc.Bucket = "bench";
    kc.Replicas = 3;
    kc.StorageType = js_FileStorage;
    s = js_CreateKeyValue(&kv, js, &kc);
    if (s != NATS_OK) {
        fprintf(stderr, "nats_load: create bucket: %s\n", natsStatus_GetText(s));
        return 1;
    }
    jsStreamConfig_Init(&sc);
    sc.Name = "WQ";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_WorkQueuePolicy;
    sc.Replicas = 3;
    sc.Storage = js_FileStorage;
    s = js_AddStream(&si, js, &sc, NULL, &err);
    if (s != NATS_OK) {
        fprintf(stderr, "nats_load: add stream: %s (%d)\n", natsStatus_GetText(s), (int)err);
        return 1;
    }
    jsStreamInfo_Destroy(si);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static struct worker workers[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    unsigned long long ok = 0, errors = 0;
    int failed = 0;
    const char *why = "";
    size_t total = 0;
    double *all, t0;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--urls") == 0) {
            urls = argv[i + 1];
        } else if (strcmp(argv[i], "--subject") == 0) {
            subject = argv[i + 1];
        } else if (strcmp(argv[i], "--workload") == 0) {
            workload = argv[i + 1];
        } else if (strcmp(argv[i], "--threads") == 0) {
            threads = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--value-size") == 0) {
            value_size = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--duration") == 0) {
            duration = atof(argv[i + 1]);
        } else if (strcmp(argv[i], "--warmup") == 0) {
            warmup = atof(argv[i + 1]);
        } else {
            fprintf(stderr, "nats_load: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (strcmp(workload, "setup") == 0) {
        return setup();
    }
    if (strcmp(workload, "consumer") == 0) {
        return make_consumer();
    }
    if (threads < 1 || threads > MAX_THREADS || value_size < 0 || value_size > 65536) {
        fprintf(stderr, "nats_load: bad limits\n");
        return 2;
    }
    t0 = now_s();
    t_measure = t0 + warmup;
    t_end = t_measure + duration;
    for (int i = 0; i < threads; i++) {
        workers[i].id = i;
        workers[i].lat = malloc(MAX_SAMPLES / (size_t)threads * sizeof(double) + 8);
        pthread_create(&tids[i], NULL, run, &workers[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(tids[i], NULL);
        ok += workers[i].ok;
        errors += workers[i].errors;
        if (workers[i].failed) {
            failed++;
            why = workers[i].why;
        }
        total += workers[i].n;
    }
    all = malloc((total + 1) * sizeof *all);
    total = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + total, workers[i].lat, workers[i].n * sizeof *all);
        total += workers[i].n;
        free(workers[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_double);
#define PCT(p) (total ? all[(size_t)((double)(total - 1) * (p))] * 1000.0 : 0.0)
    printf("{\"workload\":\"%s\",\"conns\":%d,\"duration_s\":%.1f,\"ops\":%llu,"
           "\"ops_per_s\":%.0f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"max_ms\":%.3f,\"errors\":%llu,\"failed_clients\":%d",
           workload, threads, duration, ok, (double)ok / duration, PCT(0.5), PCT(0.9),
           PCT(0.99), PCT(1.0), errors, failed);
    if (failed == threads) {
        printf(",\"error\":\"every client failed: ");
        for (const char *c = why; *c; c++) {
            putchar(*c == '"' || *c == '\\' || (unsigned char)*c < 0x20 ? '\'' : *c);
        }
        printf("\"");
    }
    printf("}\n");
    free(all);
    return failed == threads ? 1 : 0;
}
