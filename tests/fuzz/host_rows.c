/* host_rows.c - libFuzzer target for jinn_wasm_host_rows, the scanner that
 * rewrites a SQL query answer into host_db_query's row objects without
 * building a JSON tree.
 *
 * Any bytes: no read past the input, no crash. Differential: when the
 * input is valid JSON, the answer must be what jansson gives for the same
 * rewrite (an object of "columns" and "rows" -> [{column: value}]), or a
 * refusal only where that rewrite calls the answer malformed or it nests
 * deeper than the scanner allows. */
#include <jansson.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "fuzz.h"
#include "log.h"
#include "wasm/host.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_ERROR);
    return 0;
}

/* jansson's version of the rewrite; NULL when the answer is malformed. */
static json_t *reference(json_t *answer)
{
    json_t *cols = json_object_get(answer, "columns");
    json_t *rows = json_object_get(answer, "rows");
    json_t *out, *row, *v;
    size_t i, k;
    if (!json_is_object(answer) || !json_is_array(cols) || !json_is_array(rows)) {
        return NULL;
    }
    out = json_array();
    json_array_foreach(rows, i, row)
    {
        json_t *obj;
        if (!json_is_array(row) || json_array_size(row) > json_array_size(cols)) {
            json_decref(out);
            return NULL;
        }
        obj = json_object();
        json_array_foreach(row, k, v)
        {
            const char *name = json_string_value(json_array_get(cols, k));
            json_object_set(obj, name ? name : "?", v);
        }
        json_array_append_new(out, obj);
    }
    return out;
}

/* Deepest nesting of [ and { outside strings. */
static int depth_of(const uint8_t *p, size_t n)
{
    int depth = 0, max = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        if (in_string) {
            if (p[i] == '\\') {
                i++;
            } else if (p[i] == '"') {
                in_string = false;
            }
        } else if (p[i] == '"') {
            in_string = true;
        } else if (p[i] == '[' || p[i] == '{') {
            max = ++depth > max ? depth : max;
        } else if (p[i] == ']' || p[i] == '}') {
            depth--;
        }
    }
    return max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jinn_wbuf out;
    json_t *answer, *want, *got = NULL;
    int rv;

    jinn_wbuf_init(&out);
    rv = jinn_wasm_host_rows((const char *)data, size, SIZE_MAX, &out);
    FUZZ_CHECK(rv == 0 || rv == -1);
    /* Valid JSON in (the API's answers always are): what the scanner
     * accepts is valid JSON, jansson's rewrite of the same answer, and it
     * refuses only what that rewrite calls malformed or what nests deeper
     * than the scanner allows. Numbers are copied as written, so both are
     * compared as jansson reads them. */
    answer = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    want = answer != NULL ? reference(answer) : NULL;
    if (answer != NULL && rv == 0 && !out.failed) {
        got = json_loadb((const char *)out.data, out.len, 0, NULL);
        FUZZ_CHECK(json_is_array(got));
        FUZZ_CHECK(want != NULL);
    }
    if (want != NULL) {
        FUZZ_CHECK(got != NULL || depth_of(data, size) > 60);
        FUZZ_CHECK(got == NULL || json_equal(got, want));
    }
    json_decref(want);
    json_decref(answer);
    json_decref(got);
    jinn_wbuf_free(&out);
    return 0;
}
