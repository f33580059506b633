/* fsm_apply.c - see fsm_apply.h. */
#include "fsm_apply.h"

#include "codec.h"

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
