/* fsm_apply.h - test helper: encode a command and apply it, as the log would. */
#ifndef JINN_TEST_FSM_APPLY_H
#define JINN_TEST_FSM_APPLY_H

#include <stdint.h>

#include "codec.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"

/* Stamps c with time, encodes it and applies it at index. NULL when the
 * command does not encode. The result is the FSM's (valid until the next
 * apply). */
const struct jinn_result *unit_apply(struct jinn_fsm *fsm, uint64_t index, uint64_t time,
                                     struct jinn_cmd c);

/* A Q_PUBLISH of payload to queue stamped with time, encoded as the log
 * holds it (max_deliver 3), in *w (initialised here; data NULL on failure). */
void unit_encode_publish(const char *queue, const char *payload, uint64_t time,
                         struct jinn_wbuf *w);

/* An FSM whose SQL databases live in a fresh directory made from the
 * mkdtemp template dir (modified in place). 0 on success. */
int unit_sql_fsm(struct jinn_fsm *fsm, char *dir);

/* Closes the FSM and removes its directory. */
void unit_sql_fsm_done(struct jinn_fsm *fsm, const char *dir);

#endif
