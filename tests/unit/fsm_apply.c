/* fsm_apply.c - see fsm_apply.h. */
#include "fsm_apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"

int unit_sql_fsm(struct jinn_fsm *fsm, char *dir)
{
    jinn_fsm_init(fsm);
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    return jinn_sql_set_dir(&fsm->sql, dir);
}

void unit_sql_fsm_done(struct jinn_fsm *fsm, const char *dir)
{
    char cmd[128];
    jinn_fsm_close(fsm);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "  could not remove %s\n", dir);
    }
}

const struct jinn_result *unit_apply(struct jinn_fsm *fsm, uint64_t index, uint64_t time,
                                     struct jinn_cmd c)
{
    struct jinn_wbuf w;
    const struct jinn_result *res;
    c.time_ms = time;
    jinn_wbuf_init(&w);
    if (jinn_cmd_encode(&c, &w) != 0) {
        jinn_wbuf_free(&w);
        return NULL;
    }
    res = jinn_fsm_apply_buf(fsm, index, w.data, w.len);
    jinn_wbuf_free(&w);
    return res;
}

void unit_encode_publish(const char *queue, const char *payload, uint64_t time,
                         struct jinn_wbuf *w)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_Q_PUBLISH;
    c.time_ms = time;
    c.q.queue.p = (const uint8_t *)queue;
    c.q.queue.len = strlen(queue);
    c.q.payload.p = (const uint8_t *)payload;
    c.q.payload.len = strlen(payload);
    c.q.max_deliver = 3;
    jinn_wbuf_init(w);
    if (jinn_cmd_encode(&c, w) != 0) {
        jinn_wbuf_free(w);
    }
}
