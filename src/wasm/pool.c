/* pool.c - see pool.h.
 *
 * One struct slot per sandbox process, with three libuv handles: the
 * process, the protocol pipe (fd 3 in the child: libuv makes it a
 * socketpair) and a timer (the ready deadline while starting, the job's
 * timeout while busy). A slot is freed when all three are closed; the
 * process handle closes only in its exit callback, after libuv has reaped
 * the child, so a pool never leaves a zombie behind. */
#include "wasm/pool.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "log.h"
#include "wasm/proto.h"

#define READ_CHUNK (64u << 10)       /* the read buffer between frames */
#define READ_SHRINK_ABOVE (1u << 20) /* a buffer grown past this shrinks after its frame */
#define READY_TIMEOUT_MS 10000       /* a sandbox not ready by then is killed */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 5000
#define FAILURES_UNAVAILABLE 3 /* failed starts in a row: queued jobs are failed */
#define TICK_MS 100            /* queue deadlines, respawns */
#define SPAWNS_PER_TURN 4      /* forks per call: a pool of 64 must not stall the loop */

enum slot_state { SLOT_STARTING, SLOT_IDLE, SLOT_BUSY, SLOT_DEAD };

struct slot {
    struct jinn_wasm_pool *pool;
    struct slot *next;
    uv_process_t proc;
    uv_pipe_t pipe;
    uv_timer_t timer;
    int handles; /* open handles; the slot is freed at 0 */
    enum slot_state state;
    bool exited;
    bool awaiting_reply; /* a HOSTCALL is being served */
    uint8_t *buf;        /* frames read, not yet handled */
    size_t len, cap;
    struct jinn_wasm_job *job;
};

struct jinn_wasm_pool {
    uv_loop_t *loop;
    char *name, *so_path, *exe;
    uint64_t memory_limit, timeout_ms;
    unsigned size;
    struct slot *slots; /* every slot struct still allocated, dead ones included */
    unsigned alive;     /* slots not dead */
    struct jinn_wasm_job *qhead, *qtail;
    unsigned queued;
    uv_timer_t tick;
    bool tick_open;
    unsigned failures; /* starts that failed in a row */
    uint64_t next_spawn_ms;
    bool draining, destroying;
    void (*destroyed)(void *data);
    void *destroyed_data;
    uint64_t spawned, killed, crashed;
};

struct wreq {
    uv_write_t req;
    uint8_t *data;
    struct slot *slot;
};

static void slot_kill(struct slot *s);
static void pool_maintain(struct jinn_wasm_pool *p);
static void dispatch(struct jinn_wasm_pool *p);
static void tick_update(struct jinn_wasm_pool *p);

static uint64_t now_ms(const struct jinn_wasm_pool *p)
{
    return uv_now(p->loop);
}

/* A sandbox died or was killed before it was ready: the next start waits,
 * longer after every failure in a row (a module that cannot load must not
 * make the node fork in a loop). */
static void start_failed(struct jinn_wasm_pool *p)
{
    uint64_t backoff;
    p->failures++;
    backoff = (uint64_t)BACKOFF_MIN_MS << (p->failures < 8 ? p->failures : 8);
    p->next_spawn_ms = now_ms(p) + (backoff > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff);
}

/* ---- freeing ------------------------------------------------------------ */

static void pool_maybe_free(struct jinn_wasm_pool *p)
{
    if (p->slots != NULL || p->tick_open || !(p->destroying || p->draining) || p->alive > 0) {
        return;
    }
    void (*cb)(void *) = p->destroyed;
    void *data = p->destroyed_data;
    jinn_free(p->name);
    jinn_free(p->so_path);
    jinn_free(p->exe);
    jinn_free(p);
    if (cb != NULL) {
        cb(data);
    }
}

static void tick_closed(uv_handle_t *h)
{
    struct jinn_wasm_pool *p = h->data;
    p->tick_open = false;
    pool_maybe_free(p);
}

static void slot_handle_closed(uv_handle_t *h)
{
    struct slot *s = h->data;
    struct jinn_wasm_pool *p = s->pool;
    if (--s->handles > 0) {
        return;
    }
    for (struct slot **pp = &p->slots; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    jinn_free(s->buf);
    jinn_free(s);
    pool_maybe_free(p);
}

/* ---- jobs ----------------------------------------------------------------- */

static void job_done(struct jinn_wasm_job *job, enum jinn_wasm_outcome outcome, uint32_t detail,
                     const uint8_t *out, size_t out_len)
{
    struct jinn_wasm_result res;
    uint64_t now = uv_hrtime();
    memset(&res, 0, sizeof res);
    res.outcome = outcome;
    res.detail = detail;
    res.out = out;
    res.out_len = out_len;
    if (job->started_at != 0) {
        res.run_us = (now - job->started_at) / 1000;
        res.queued_us = (job->started_at - job->queued_at) / 1000;
    } else {
        res.queued_us = (now - job->queued_at) / 1000;
    }
    job->ops->done(job->data, &res);
}

/* Ends the slot's job (if any) with this outcome. */
static void slot_finish(struct slot *s, enum jinn_wasm_outcome outcome, uint32_t detail,
                        const uint8_t *out, size_t out_len)
{
    struct jinn_wasm_job *job = s->job;
    if (job == NULL) {
        return;
    }
    s->job = NULL;
    s->awaiting_reply = false;
    job_done(job, outcome, detail, out, out_len);
}

static struct jinn_wasm_job *queue_pop(struct jinn_wasm_pool *p)
{
    struct jinn_wasm_job *job = p->qhead;
    if (job != NULL) {
        p->qhead = job->next;
        if (p->qhead == NULL) {
            p->qtail = NULL;
        }
        p->queued--;
        job->next = NULL;
    }
    return job;
}

static void queue_push_front(struct jinn_wasm_pool *p, struct jinn_wasm_job *job)
{
    job->next = p->qhead;
    p->qhead = job;
    if (p->qtail == NULL) {
        p->qtail = job;
    }
    p->queued++;
}

/* Fails every queued job (the pool cannot start sandboxes, or stops). */
static void queue_fail_all(struct jinn_wasm_pool *p, enum jinn_wasm_outcome outcome,
                           uint32_t detail)
{
    struct jinn_wasm_job *job;
    while ((job = queue_pop(p)) != NULL) {
        job_done(job, outcome, detail, NULL, 0);
    }
}

/* ---- writing frames --------------------------------------------------------- */

static void written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct slot *s = w->slot;
    jinn_free(w->data);
    jinn_free(w);
    if (status < 0 && status != UV_ECANCELED && s->state != SLOT_DEAD) {
        jinn_warn("fn %s: sandbox %d: write failed (%s); killing it", s->pool->name,
                  s->proc.pid, uv_strerror(status));
        slot_kill(s); /* the exit callback ends its job as a crash */
    }
}

/* Sends w's bytes (a whole frame, length patched here) and takes them. */
static int slot_send(struct slot *s, struct jinn_wbuf *w)
{
    struct wreq *req;
    uv_buf_t b;
    int rv;
    if (w->failed || w->len < 5 || w->len - 4 > JINN_SBX_FRAME_MAX) {
        jinn_wbuf_free(w);
        return JINN_ENOMEM;
    }
    jinn_wbuf_patch_u32(w, 0, (uint32_t)(w->len - 4));
    req = jinn_malloc(sizeof *req);
    if (req == NULL) {
        jinn_wbuf_free(w);
        return JINN_ENOMEM;
    }
    req->data = w->data;
    req->slot = s;
    b = uv_buf_init((char *)w->data, (unsigned)w->len);
    w->data = NULL;
    w->len = w->cap = 0;
    rv = uv_write(&req->req, (uv_stream_t *)&s->pipe, &b, 1, written);
    if (rv != 0) {
        jinn_free(req->data);
        jinn_free(req);
        return JINN_EIO;
    }
    return 0;
}

static void slot_reply(void *data, uint32_t result, const void *bytes, size_t len)
{
    struct slot *s = data;
    struct jinn_wbuf w;
    if (s->state != SLOT_BUSY || !s->awaiting_reply) {
        return; /* the job ended meanwhile; the contract says this cannot happen */
    }
    s->awaiting_reply = false;
    if (len > JINN_SBX_FRAME_MAX - 16) {
        result = 0xFFFFFFFFu;
        len = 0;
    }
    jinn_wbuf_init(&w);
    jinn_wbuf_put_u32(&w, 0);
    jinn_wbuf_put_u8(&w, JINN_SBX_HOSTREPLY);
    jinn_wbuf_put_u32(&w, result);
    jinn_wbuf_put_bytes(&w, bytes, len);
    if (slot_send(s, &w) != 0) {
        jinn_warn("fn %s: could not answer a host call; killing the sandbox", s->pool->name);
        slot_kill(s);
    }
}

/* ---- reading frames --------------------------------------------------------- */

static void protocol_error(struct slot *s, const char *what)
{
    jinn_warn("fn %s: sandbox %d broke the protocol (%s); killing it", s->pool->name,
              s->proc.pid, what);
    s->pool->killed++;
    if (s->state == SLOT_STARTING) {
        start_failed(s->pool);
    }
    slot_kill(s);
    slot_finish(s, JINN_WASM_PROTOCOL, 0, NULL, 0);
    pool_maintain(s->pool);
}

/* Handles one frame. The slot may be dead afterwards. */
static void handle_frame(struct slot *s, uint8_t type, const uint8_t *payload, size_t len)
{
    struct jinn_wasm_pool *p = s->pool;
    struct jinn_rbuf r;
    jinn_rbuf_init(&r, payload, len);

    switch (type) {
    case JINN_SBX_READY:
        if (s->state != SLOT_STARTING || len != 0) {
            protocol_error(s, "unexpected READY");
            return;
        }
        uv_timer_stop(&s->timer);
        s->state = SLOT_IDLE;
        p->failures = 0;
        dispatch(p);
        return;
    case JINN_SBX_HOSTCALL: {
        const uint8_t *b1, *b2;
        size_t n1, n2;
        uint8_t call = jinn_rbuf_get_u8(&r);
        uint32_t a = jinn_rbuf_get_u32(&r);
        uint32_t outmax = jinn_rbuf_get_u32(&r);
        n1 = jinn_rbuf_get_bytes(&r, &b1, JINN_SBX_FRAME_MAX);
        n2 = jinn_rbuf_get_bytes(&r, &b2, JINN_SBX_FRAME_MAX);
        if (r.failed || r.left != 0 || s->state != SLOT_BUSY || s->awaiting_reply ||
            call < JINN_SBX_LOG || call > JINN_SBX_ENQUEUE) {
            protocol_error(s, "bad HOSTCALL");
            return;
        }
        if (call == JINN_SBX_LOG) {
            s->job->ops->log(s->job->data, (int)(a > 1000 ? 1000 : a), b1, n1);
            return;
        }
        s->awaiting_reply = true;
        s->job->ops->hostcall(s->job->data, call, a, outmax, b1, n1, b2, n2, slot_reply, s);
        return;
    }
    case JINN_SBX_STDERR: {
        const uint8_t *b;
        size_t n = jinn_rbuf_get_bytes(&r, &b, JINN_SBX_FRAME_MAX);
        if (r.failed || r.left != 0 || s->state != SLOT_BUSY) {
            protocol_error(s, "bad STDERR");
            return;
        }
        s->job->ops->log(s->job->data, -1, b, n);
        return;
    }
    case JINN_SBX_DONE: {
        const uint8_t *out;
        uint8_t outcome = jinn_rbuf_get_u8(&r);
        uint32_t detail = jinn_rbuf_get_u32(&r);
        size_t n = jinn_rbuf_get_bytes(&r, &out, JINN_SBX_STDOUT_MAX);
        enum jinn_wasm_outcome o;
        if (r.failed || r.left != 0 || s->state != SLOT_BUSY || s->awaiting_reply ||
            outcome > JINN_SBX_OUTPUT_TOO_LARGE) {
            protocol_error(s, "bad DONE");
            return;
        }
        o = outcome == JINN_SBX_EXITED    ? JINN_WASM_EXITED
            : outcome == JINN_SBX_TRAPPED ? JINN_WASM_TRAPPED
                                          : JINN_WASM_TOO_LARGE;
        uv_timer_stop(&s->timer);
        s->state = SLOT_IDLE;
        slot_finish(s, o, detail, out, n);
        if (s->state == SLOT_IDLE) {
            dispatch(p);
        }
        return;
    }
    default:
        protocol_error(s, "unknown frame type");
        return;
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct slot *s = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)s->buf + s->len, (unsigned)(s->cap - s->len));
}

/* Makes room for need bytes in the read buffer (need <= 4 + FRAME_MAX). */
static bool buf_fit(struct slot *s, size_t need)
{
    uint8_t *n;
    if (need <= s->cap) {
        return true;
    }
    n = jinn_realloc(s->buf, need);
    if (n == NULL) {
        return false;
    }
    s->buf = n;
    s->cap = need;
    return true;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct slot *s = stream->data;
    size_t off = 0;
    (void)buf;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        /* EOF or an error: the sandbox is gone or going. Its job ends in the
         * exit callback, with the signal that killed it. */
        if (s->state == SLOT_STARTING) {
            start_failed(s->pool);
        }
        if (s->state != SLOT_DEAD) {
            slot_kill(s);
        }
        return;
    }
    s->len += (size_t)nread;
    while (s->state != SLOT_DEAD && s->len - off >= 4) {
        const uint8_t *q = s->buf + off;
        uint32_t flen =
            (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        if (flen < 1 || flen > JINN_SBX_FRAME_MAX) {
            protocol_error(s, "frame length");
            return;
        }
        if (s->len - off - 4 < flen) {
            break;
        }
        handle_frame(s, q[4], q + 5, flen - 1);
        off += 4 + (size_t)flen;
    }
    if (s->state == SLOT_DEAD) {
        return;
    }
    if (off > 0) {
        memmove(s->buf, s->buf + off, s->len - off);
        s->len -= off;
    }
    if (s->len >= 4) {
        const uint8_t *q = s->buf;
        size_t flen =
            (size_t)q[0] | (size_t)q[1] << 8 | (size_t)q[2] << 16 | (size_t)q[3] << 24;
        if (!buf_fit(s, 4 + flen)) {
            jinn_warn("fn %s: out of memory reading a frame; killing the sandbox",
                      s->pool->name);
            slot_kill(s);
            return;
        }
    } else if (s->cap > READ_SHRINK_ABOVE) {
        uint8_t *n = jinn_realloc(s->buf, READ_CHUNK);
        if (n != NULL) {
            s->buf = n;
            s->cap = READ_CHUNK;
        }
    }
}

/* ---- sandbox processes ------------------------------------------------------ */

static void slot_exited(uv_process_t *proc, int64_t status, int term_signal)
{
    struct slot *s = proc->data;
    struct jinn_wasm_pool *p = s->pool;
    s->exited = true;
    if (s->state != SLOT_DEAD) {
        /* It died on its own. */
        bool starting = s->state == SLOT_STARTING;
        p->crashed++;
        jinn_warn("fn %s: sandbox %d %s (status %" PRId64 ", signal %d)%s", p->name, proc->pid,
                  starting ? "failed to start" : "died", status, term_signal,
                  starting ? "" : "; starting another");
        slot_kill(s);
        if (starting) {
            start_failed(p);
        }
    }
    if (s->job != NULL) {
        slot_finish(s, JINN_WASM_CRASH, (uint32_t)term_signal, NULL, 0);
    }
    uv_close((uv_handle_t *)&s->proc, slot_handle_closed);
    pool_maintain(p);
}

static void slot_timer(uv_timer_t *t)
{
    struct slot *s = t->data;
    struct jinn_wasm_pool *p = s->pool;
    if (s->state == SLOT_STARTING) {
        jinn_warn("fn %s: sandbox %d not ready within %d ms; killing it", p->name, s->proc.pid,
                  READY_TIMEOUT_MS);
        start_failed(p);
        slot_kill(s);
    } else if (s->state == SLOT_BUSY) {
        p->killed++;
        slot_kill(s);
        slot_finish(s, JINN_WASM_TIMEOUT, 0, NULL, 0);
    }
    pool_maintain(p);
}

/* Kills the sandbox (if still running) and closes its pipe and timer; the
 * process handle closes in the exit callback. A job still on the slot is
 * the caller's to finish. */
static void slot_kill(struct slot *s)
{
    struct jinn_wasm_pool *p = s->pool;
    if (s->state == SLOT_DEAD) {
        return;
    }
    s->state = SLOT_DEAD;
    p->alive--;
    if (!s->exited) {
        /* Not reaped yet, so the pid cannot have been reused. */
        uv_process_kill(&s->proc, SIGKILL);
    }
    uv_close((uv_handle_t *)&s->pipe, slot_handle_closed);
    uv_close((uv_handle_t *)&s->timer, slot_handle_closed);
}

static int slot_spawn(struct jinn_wasm_pool *p)
{
    struct slot *s = jinn_calloc(1, sizeof *s);
    uv_process_options_t o;
    uv_stdio_container_t stdio[4];
    char mem[32], stack[32];
    char *args[6];
    int rv;

    if (s == NULL || (s->buf = jinn_malloc(READ_CHUNK)) == NULL) {
        jinn_free(s);
        return JINN_ENOMEM;
    }
    s->cap = READ_CHUNK;
    s->pool = p;
    snprintf(mem, sizeof mem, "%" PRIu64, p->memory_limit);
    snprintf(stack, sizeof stack, "%u", JINN_WASM_STACK_DEPTH);
    args[0] = p->exe;
    args[1] = "sandbox";
    args[2] = p->so_path;
    args[3] = mem;
    args[4] = stack;
    args[5] = NULL;
    uv_pipe_init(p->loop, &s->pipe, 0);
    uv_timer_init(p->loop, &s->timer);
    s->pipe.data = s;
    s->timer.data = s;
    s->proc.data = s;
    memset(stdio, 0, sizeof stdio);
    stdio[0].flags = UV_IGNORE; /* /dev/null */
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_INHERIT_FD; /* the sandbox's own complaints join the node's log */
    stdio[2].data.fd = 2;
    stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = (uv_stream_t *)&s->pipe;
    memset(&o, 0, sizeof o);
    o.exit_cb = slot_exited;
    o.file = p->exe;
    o.args = args;
    o.stdio = stdio;
    o.stdio_count = 4;
    s->next = p->slots;
    p->slots = s;
    rv = uv_spawn(p->loop, &s->proc, &o);
    if (rv != 0) {
        jinn_warn("fn %s: cannot start a sandbox: %s", p->name, uv_strerror(rv));
        s->state = SLOT_DEAD;
        s->exited = true;
        s->handles = 3;
        uv_close((uv_handle_t *)&s->proc, slot_handle_closed);
        uv_close((uv_handle_t *)&s->pipe, slot_handle_closed);
        uv_close((uv_handle_t *)&s->timer, slot_handle_closed);
        return JINN_EIO;
    }
    s->handles = 3;
    s->state = SLOT_STARTING;
    p->alive++;
    p->spawned++;
    uv_read_start((uv_stream_t *)&s->pipe, alloc_cb, read_cb);
    uv_timer_start(&s->timer, slot_timer, READY_TIMEOUT_MS, 0);
    return 0;
}

/* Keeps `size` sandboxes (with backoff after failed starts), expires queued
 * jobs, fails them when no sandbox can be started, and finishes a drain. */
static void pool_maintain(struct jinn_wasm_pool *p)
{
    uint64_t now = now_ms(p);
    unsigned working = 0;

    if (p->destroying) {
        return;
    }
    for (struct slot *s = p->slots; s != NULL; s = s->next) {
        working += s->state == SLOT_IDLE || s->state == SLOT_BUSY;
    }
    if (p->draining) {
        if (p->queued == 0) {
            bool busy = false;
            for (struct slot *s = p->slots; s != NULL; s = s->next) {
                busy |= s->state == SLOT_BUSY;
            }
            if (!busy) {
                for (struct slot *s = p->slots; s != NULL; s = s->next) {
                    slot_kill(s);
                }
                if (p->tick_open && !uv_is_closing((uv_handle_t *)&p->tick)) {
                    uv_close((uv_handle_t *)&p->tick, tick_closed);
                }
                return;
            }
        }
    }
    for (unsigned n = 0; n < SPAWNS_PER_TURN && p->alive < p->size && now >= p->next_spawn_ms &&
                         !(p->draining && p->queued == 0);
         n++) {
        if (slot_spawn(p) != 0) {
            start_failed(p);
            break;
        }
    }
    if (p->failures >= FAILURES_UNAVAILABLE && working == 0) {
        queue_fail_all(p, JINN_WASM_UNAVAILABLE, p->failures);
    }
    /* Jobs that waited their whole timeout for a sandbox. The queue is in
     * arrival order and every job has the same timeout. */
    while (p->qhead != NULL && (uv_hrtime() - p->qhead->queued_at) / 1000000 >= p->timeout_ms) {
        struct jinn_wasm_job *job = queue_pop(p);
        job_done(job, JINN_WASM_QUEUE_TIMEOUT, 0, NULL, 0);
    }
    tick_update(p);
}

static void pool_tick(uv_timer_t *t)
{
    pool_maintain(t->data);
}

/* The tick runs only while there is something to watch: queued jobs
 * (deadlines) or missing sandboxes (respawns). An idle full pool costs no
 * wakeups, however many functions a node has. */
static void tick_update(struct jinn_wasm_pool *p)
{
    bool needed = p->qhead != NULL || p->alive < p->size;
    if (!p->tick_open || uv_is_closing((uv_handle_t *)&p->tick)) {
        return;
    }
    if (needed && !uv_is_active((uv_handle_t *)&p->tick)) {
        uv_timer_start(&p->tick, pool_tick, TICK_MS, TICK_MS);
    } else if (!needed && uv_is_active((uv_handle_t *)&p->tick)) {
        uv_timer_stop(&p->tick);
    }
}

/* Starts queued jobs on idle sandboxes. */
static void dispatch(struct jinn_wasm_pool *p)
{
    if (p->destroying) {
        return;
    }
    for (struct slot *s = p->slots; s != NULL && p->qhead != NULL; s = s->next) {
        struct jinn_wasm_job *job;
        struct jinn_wbuf w;
        if (s->state != SLOT_IDLE) {
            continue;
        }
        /* Under overload callers give up while queued: their jobs are not
         * worth a sandbox. */
        while ((job = queue_pop(p)) != NULL && job->ops->wanted != NULL &&
               !job->ops->wanted(job->data)) {
            job_done(job, JINN_WASM_ABANDONED, 0, NULL, 0);
        }
        if (job == NULL) {
            break;
        }
        jinn_wbuf_init(&w);
        jinn_wbuf_reserve(&w, 13 + job->invoke_len);
        jinn_wbuf_put_u32(&w, 0);
        jinn_wbuf_put_u8(&w, JINN_SBX_INVOKE);
        jinn_wbuf_put_u64(&w, job->id);
        jinn_wbuf_put_raw(&w, job->invoke, job->invoke_len);
        if (slot_send(s, &w) != 0) {
            /* The job never reached the sandbox: it waits for another. */
            queue_push_front(p, job);
            slot_kill(s);
            continue;
        }
        job->started_at = uv_hrtime();
        s->job = job;
        s->state = SLOT_BUSY;
        uv_timer_start(&s->timer, slot_timer, p->timeout_ms, 0);
    }
    if (p->draining) {
        pool_maintain(p);
    }
}

/* ---- the interface ---------------------------------------------------------- */

int jinn_wasm_pool_create(uv_loop_t *loop, const struct jinn_wasm_pool_config *cfg,
                          struct jinn_wasm_pool **out)
{
    struct jinn_wasm_pool *p = jinn_calloc(1, sizeof *p);
    if (p == NULL) {
        return JINN_ENOMEM;
    }
    p->loop = loop;
    p->name = jinn_strdup(cfg->name);
    p->so_path = jinn_strdup(cfg->so_path);
    p->exe = jinn_strdup(cfg->exe != NULL ? cfg->exe : "/proc/self/exe");
    if (p->name == NULL || p->so_path == NULL || p->exe == NULL) {
        jinn_free(p->name);
        jinn_free(p->so_path);
        jinn_free(p->exe);
        jinn_free(p);
        return JINN_ENOMEM;
    }
    p->memory_limit = cfg->memory_limit;
    p->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 1;
    p->size = cfg->size > 0 ? cfg->size : 1;
    uv_timer_init(loop, &p->tick);
    p->tick.data = p;
    p->tick_open = true;
    uv_timer_start(&p->tick, pool_tick, TICK_MS, TICK_MS);
    pool_maintain(p);
    *out = p;
    return 0;
}

int jinn_wasm_pool_submit(struct jinn_wasm_pool *p, struct jinn_wasm_job *job)
{
    if (p->draining || p->destroying) {
        return JINN_ESHUTDOWN;
    }
    if (p->queued >= JINN_WASM_QUEUE_MAX) {
        return JINN_EBUSY;
    }
    job->next = NULL;
    job->queued_at = uv_hrtime();
    job->started_at = 0;
    if (p->qtail != NULL) {
        p->qtail->next = job;
    } else {
        p->qhead = job;
    }
    p->qtail = job;
    p->queued++;
    dispatch(p);
    tick_update(p);
    return 0;
}

void jinn_wasm_pool_drain(struct jinn_wasm_pool *p, void (*cb)(void *data), void *data)
{
    if (p->draining || p->destroying) {
        return;
    }
    p->destroyed = cb;
    p->destroyed_data = data;
    p->draining = true;
    pool_maintain(p);
}

void jinn_wasm_pool_destroy(struct jinn_wasm_pool *p, void (*cb)(void *data), void *data)
{
    p->destroyed = cb;
    p->destroyed_data = data;
    if (p->destroying) {
        return;
    }
    p->destroying = true;
    queue_fail_all(p, JINN_WASM_STOPPED, 0);
    for (struct slot *s = p->slots; s != NULL; s = s->next) {
        if (s->state != SLOT_DEAD) {
            slot_kill(s);
        }
        slot_finish(s, JINN_WASM_STOPPED, 0, NULL, 0);
    }
    if (p->tick_open && !uv_is_closing((uv_handle_t *)&p->tick)) {
        uv_close((uv_handle_t *)&p->tick, tick_closed);
    }
}

void jinn_wasm_pool_stats(const struct jinn_wasm_pool *p, struct jinn_wasm_pool_stats *out)
{
    memset(out, 0, sizeof *out);
    for (const struct slot *s = p->slots; s != NULL; s = s->next) {
        out->ready += s->state == SLOT_IDLE;
        out->busy += s->state == SLOT_BUSY;
    }
    out->size = p->alive;
    out->queued = p->queued;
    out->spawned = p->spawned;
    out->killed = p->killed;
    out->crashed = p->crashed;
}
