/* test_snapfile.c - the backup file container (fsm/snapfile.c) and the
 * two-step encode backups use (jinn_fsm_encode_begin/finish). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fn.h"
#include "fsm/fsm.h"
#include "fsm/snapfile.h"
#include "fsm_apply.h"
#include "unit.h"

/* A whole file around payload, in chunks of chunk bytes, as backup.c
 * streams it. */
static void build(struct jinn_wbuf *out, const uint8_t *payload, size_t len, uint32_t chunk)
{
    struct jinn_backup_header h = {
        JINN_BACKUP_VERSION, JINN_SNAPSHOT_VERSION, 2, chunk, 0xabc, 42, 3, 1234, len};
    uint8_t head[JINN_BACKUP_HEADER_LEN], tail[JINN_BACKUP_TRAILER_LEN];
    uint32_t total = 0;
    jinn_backup_header_encode(&h, head);
    jinn_wbuf_put_raw(out, head, sizeof head);
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        jinn_wbuf_put_raw(out, payload + off, n);
        jinn_wbuf_put_u32(out, jinn_crc32(0, payload + off, n));
        total = jinn_crc32(total, payload + off, n);
    }
    jinn_backup_trailer_encode(len, total, tail);
    jinn_wbuf_put_raw(out, tail, sizeof tail);
}

static int read_blob(const void *blob, size_t len, struct jinn_backup_header *h,
                     struct jinn_wbuf *payload, char *err, size_t err_len)
{
    FILE *f = fmemopen((void *)blob, len, "rb");
    int rv;
    if (f == NULL) {
        return -1;
    }
    rv = jinn_backup_read_file(f, h, payload, err, err_len);
    fclose(f);
    return rv;
}

TEST(snapfile_round_trip_and_every_damage_refused)
{
    uint8_t payload[100];
    struct jinn_wbuf file, got;
    struct jinn_backup_header h;
    char err[256];
    for (size_t i = 0; i < sizeof payload; i++) {
        payload[i] = (uint8_t)(i * 7 + 1);
    }
    jinn_wbuf_init(&file);
    jinn_wbuf_init(&got);
    build(&file, payload, sizeof payload, 16);
    CHECK(!file.failed);
    CHECK_INT(file.len, JINN_BACKUP_HEADER_LEN + 100 + 7 * 4 + JINN_BACKUP_TRAILER_LEN);
    CHECK_INT(read_blob(file.data, file.len, &h, &got, err, sizeof err), 0);
    CHECK_INT(jinn_backup_file_size(&h), file.len);
    CHECK(h.cluster_id == 0xabc && h.index == 42 && h.term == 3 && h.time_ms == 1234);
    CHECK(got.len == sizeof payload && memcmp(got.data, payload, got.len) == 0);
    /* Every truncation is refused, and said to be one past the header. */
    for (size_t cut = 0; cut < file.len; cut++) {
        int rv = read_blob(file.data, cut, &h, NULL, err, sizeof err);
        CHECK(rv == JINN_ECORRUPT);
        if (cut >= JINN_BACKUP_HEADER_LEN) {
            CHECK(strstr(err, "truncated") != NULL);
        }
    }
    /* Every flipped bit in every byte is refused. */
    for (size_t i = 0; i < file.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            int rv;
            file.data[i] ^= (uint8_t)(1 << bit);
            rv = read_blob(file.data, file.len, &h, NULL, err, sizeof err);
            file.data[i] ^= (uint8_t)(1 << bit);
            CHECK(rv == JINN_ECORRUPT || rv == JINN_EVERSION);
        }
    }
    /* Bytes after the trailer. */
    jinn_wbuf_put_u8(&file, 0);
    CHECK_INT(read_blob(file.data, file.len, &h, NULL, err, sizeof err), JINN_ECORRUPT);
    CHECK(strstr(err, "after the trailer") != NULL);
    jinn_wbuf_free(&file);
    jinn_wbuf_free(&got);
}

TEST(snapfile_newer_versions_are_refused_as_newer)
{
    struct jinn_backup_header h = {
        JINN_BACKUP_VERSION + 1, JINN_SNAPSHOT_VERSION, 2, 16, 1, 1, 1, 1, 0};
    uint8_t head[JINN_BACKUP_HEADER_LEN];
    struct jinn_backup_header out;
    char err[256];
    /* A newer container: refused before its checksum (which may differ). */
    jinn_backup_header_encode(&h, head);
    head[64] ^= 0xff;
    CHECK_INT(jinn_backup_header_decode(head, sizeof head, &out, err, sizeof err),
              JINN_EVERSION);
    CHECK(strstr(err, "newer jinn") != NULL);
    /* A newer snapshot format inside a known container. */
    h.version = JINN_BACKUP_VERSION;
    h.snapshot_version = JINN_SNAPSHOT_VERSION + 1;
    jinn_backup_header_encode(&h, head);
    CHECK_INT(jinn_backup_header_decode(head, sizeof head, &out, err, sizeof err),
              JINN_EVERSION);
    /* Every older format the decoder still reads is accepted (rev1 m1). */
    for (uint32_t v = JINN_SNAPSHOT_VERSION_MIN; v <= JINN_SNAPSHOT_VERSION; v++) {
        h.snapshot_version = v;
        jinn_backup_header_encode(&h, head);
        CHECK_INT(jinn_backup_header_decode(head, sizeof head, &out, err, sizeof err), 0);
        CHECK_INT(out.snapshot_version, v);
    }
    h.snapshot_version = JINN_SNAPSHOT_VERSION_MIN - 1;
    jinn_backup_header_encode(&h, head);
    CHECK(jinn_backup_header_decode(head, sizeof head, &out, err, sizeof err) != 0);
    /* A hostile chunk size is refused before anything is allocated. */
    h.snapshot_version = JINN_SNAPSHOT_VERSION;
    h.chunk_size = 0;
    jinn_backup_header_encode(&h, head);
    CHECK_INT(jinn_backup_header_decode(head, sizeof head, &out, err, sizeof err),
              JINN_ECORRUPT);
    h.chunk_size = JINN_BACKUP_CHUNK_MAX + 1;
    jinn_backup_header_encode(&h, head);
    CHECK_INT(jinn_backup_header_decode(head, sizeof head, &out, err, sizeof err),
              JINN_ECORRUPT);
}

static int put(struct jinn_fsm *fsm, uint64_t index, const char *key)
{
    struct jinn_cmd c;
    const struct jinn_result *res;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_PUT;
    c.kv.ns.p = (const uint8_t *)"ns";
    c.kv.ns.len = 2;
    c.kv.key.p = (const uint8_t *)key;
    c.kv.key.len = strlen(key);
    c.kv.value.p = (const uint8_t *)"v";
    c.kv.value.len = 1;
    res = unit_apply(fsm, index, 1000 + index, c);
    return res != NULL ? res->code : -1;
}

/* (module (import "gojinn" "host_log" (func (param i32 i32 i32)))
 *         (memory (export "memory") 1) (func (export "_start"))), as in
 * test_fn.c. */
static const uint8_t hello[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x03, 0x7f,
    0x7f, 0x7f, 0x00, 0x60, 0x00, 0x00, 0x02, 0x13, 0x01, 0x06, 0x67, 0x6f, 0x6a, 0x69,
    0x6e, 0x6e, 0x08, 0x68, 0x6f, 0x73, 0x74, 0x5f, 0x6c, 0x6f, 0x67, 0x00, 0x00, 0x03,
    0x02, 0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, 0x6d, 0x65,
    0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00,
    0x01, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};

static int fn_cmd(struct jinn_fsm *fsm, uint64_t index, int type, const char *name)
{
    struct jinn_fn_settings st;
    struct jinn_wbuf json;
    struct jinn_cmd c;
    const struct jinn_result *res;
    memset(&c, 0, sizeof c);
    jinn_wbuf_init(&json);
    jinn_fn_settings_defaults(&st);
    snprintf(st.route, sizeof st.route, "/%s", name);
    jinn_fn_settings_canonical(&st, &json);
    c.type = (uint8_t)type;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    if (type == JINN_CMD_FN_DEPLOY) {
        c.fn.module.p = hello;
        c.fn.module.len = sizeof hello;
        c.fn.settings.p = json.data;
        c.fn.settings.len = json.len;
    } else {
        c.fn.flags = JINN_FN_PURGE;
    }
    res = unit_apply(fsm, index, 1000 + index, c);
    jinn_wbuf_free(&json);
    return res != NULL ? res->code : -1;
}

/* A backup is the state at begin, whatever is applied before finish; with
 * a function deployed, it carries the module bytes exactly as
 * jinn_fsm_encode does (rev1 C1: they were missing, so no backup of a
 * cluster with functions decoded), even if the function is purged between
 * begin and finish. */
TEST(snapfile_backup_encode_is_the_state_at_begin)
{
    char d[] = "/tmp/jinn-snapfile-XXXXXX", d2[] = "/tmp/jinn-snapfile-XXXXXX";
    struct jinn_fsm fsm, back;
    struct jinn_wbuf at_begin, w;
    struct jinn_sql_pin *pin = NULL;
    struct jinn_fns_pin *fns_pin = NULL;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(put(&fsm, 1, "a"), JINN_OK);
    CHECK_INT(fn_cmd(&fsm, 2, JINN_CMD_FN_DEPLOY, "greet"), JINN_OK);
    CHECK(jinn_fns_module_bytes(&fsm.fns) == sizeof hello);
    jinn_wbuf_init(&at_begin);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&fsm, &at_begin), 0);
    CHECK_INT(jinn_fsm_encode_begin(&fsm, &w, &pin, &fns_pin), 0);
    CHECK_INT(put(&fsm, 3, "b"), JINN_OK);
    CHECK_INT(fn_cmd(&fsm, 4, JINN_CMD_FN_DELETE, "greet"), JINN_OK);
    CHECK_INT(jinn_fns_module_bytes(&fsm.fns), 0);
    CHECK_INT(jinn_fsm_encode_finish(pin, fns_pin, &w), 0);
    jinn_sql_pin_free(pin);
    jinn_fns_pin_free(fns_pin);
    CHECK(w.len == at_begin.len && memcmp(w.data, at_begin.data, w.len) == 0);
    /* And it decodes, function included. */
    CHECK_INT(unit_sql_fsm(&back, d2), 0);
    CHECK_INT(jinn_fsm_decode(&back, w.data, w.len), 0);
    CHECK(jinn_fns_module_bytes(&back.fns) == sizeof hello);
    unit_sql_fsm_done(&back, d2);
    jinn_wbuf_free(&w);
    jinn_wbuf_free(&at_begin);
    unit_sql_fsm_done(&fsm, d);
}
