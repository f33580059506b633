/* cli/fnsig.c - signed modules from the shell (fsm/fnsig.h).
 *
 *   jinn fn keygen NAME                 writes NAME.key (0600) and NAME.pub
 *   jinn fn sign MODULE --key NAME.key [--name FN]   writes MODULE.sig
 *   jinn fn policy [--require-signature on|off] [--trust NAME=PUBKEY|@NAME.pub]...
 *                  [--untrust NAME]...
 *   jinn fn deploy FN MODULE --sig FILE  (cli/fn.c; MODULE.sig when present)
 *
 * MODULE.sig is one JSON line {"key":K,"function":FN,"signature":BASE64}:
 * the signature is over the function name too, so FN must be the name the
 * module is deployed as (default: MODULE's file name without .wasm). */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"
#include "fsm/fn.h"
#include "fsm/fnsig.h"
#include "sha256.h"

static int write_text(const char *path, const char *text, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "jinn: cannot write %s: ", path);
        perror(NULL);
        return -1;
    }
    if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || close(fd) != 0) {
        fprintf(stderr, "jinn: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

/* The first line of a small file, without its newline, into buf. */
static int read_line(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;
    if (f == NULL) {
        fprintf(stderr, "jinn: cannot open %s: ", path);
        perror(NULL);
        return -1;
    }
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static char *b64(const void *p, size_t n)
{
    struct jinn_wbuf w;
    char *s;
    jinn_wbuf_init(&w);
    jinn_wbuf_put_base64(&w, p, n);
    s = w.failed ? NULL : jinn_strndup((const char *)w.data, w.len);
    jinn_wbuf_free(&w);
    return s;
}

static int keygen(const char *name)
{
    uint8_t seed_pub[64], pub[32];
    char path[4096];
    char *text;
    int rv = 1;

    if (!jinn_fnsig_key_name_valid(name, strlen(name))) {
        fprintf(stderr, "jinn: key name must be [a-z0-9][a-z0-9_.-]{0,63}\n");
        return 2;
    }
    if (jinn_fnsig_keygen(seed_pub, pub) != 0) {
        fprintf(stderr, "jinn: key generation failed\n");
        return 1;
    }
    memcpy(seed_pub + 32, pub, 32); /* libsodium's secret key: seed || public */
    snprintf(path, sizeof path, "%s.key", name);
    if (access(path, F_OK) == 0) {
        fprintf(stderr, "jinn: %s exists; not overwritten\n", path);
        return 1;
    }
    text = b64(seed_pub, 64);
    if (text == NULL || write_text(path, text, strlen(text), 0600) != 0) {
        goto out;
    }
    jinn_free(text);
    text = b64(pub, 32);
    snprintf(path, sizeof path, "%s.pub", name);
    if (text == NULL || write_text(path, text, strlen(text), 0644) != 0) {
        goto out;
    }
    printf("%s.key (secret, keep it off the cluster) and %s.pub written\n"
           "trust it: jinn fn policy --trust %s=%s\n",
           name, name, name, text);
    rv = 0;
out:
    jinn_free(text);
    memset(seed_pub, 0, sizeof seed_pub);
    return rv;
}

/* NAME from ".../NAME.key". */
static void key_name_of(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    size_t len;
    base = base ? base + 1 : path;
    len = strlen(base);
    if (len > 4 && strcmp(base + len - 4, ".key") == 0) {
        len -= 4;
    }
    snprintf(out, cap, "%.*s", (int)len, base);
}

static int read_module(const char *path, struct jinn_wbuf *w)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "jinn: cannot open %s: ", path);
        perror(NULL);
        return -1;
    }
    for (;;) {
        size_t n;
        if (!jinn_wbuf_reserve(w, 65536)) {
            fclose(f);
            return -1;
        }
        n = fread(w->data + w->len, 1, 65536, f);
        w->len += n;
        if (w->len > JINN_FN_MODULE_MAX) {
            fprintf(stderr, "jinn: %s is over 16 MiB\n", path);
            fclose(f);
            return -1;
        }
        if (n < 65536) {
            break;
        }
    }
    fclose(f);
    return 0;
}

static int sign(const char *module, const char *key_path, const char *fn)
{
    char line[256], key[JINN_FNSIG_KEY_NAME_MAX + 8], fn_buf[JINN_FN_NAME_MAX + 8], path[4096];
    uint8_t seed_pub[64], pub[32], sha[32], sig[64], msg[JINN_FNSIG_MESSAGE_MAX];
    struct jinn_wbuf w;
    json_t *o = NULL;
    char *text = NULL, *s = NULL;
    size_t n;
    int rv = 1;

    key_name_of(key_path, key, sizeof key);
    if (!jinn_fnsig_key_name_valid(key, strlen(key))) {
        fprintf(stderr, "jinn: %s: the key file must be NAME.key with a valid NAME\n", key_path);
        return 2;
    }
    if (fn == NULL) {
        const char *base = strrchr(module, '/');
        base = base ? base + 1 : module;
        n = strlen(base);
        if (n > 5 && strcmp(base + n - 5, ".wasm") == 0) {
            n -= 5;
        }
        snprintf(fn_buf, sizeof fn_buf, "%.*s", (int)n, base);
        fn = fn_buf;
    }
    if (!jinn_fn_name_valid(fn, strlen(fn))) {
        fprintf(stderr, "jinn: function name '%s' is not valid; give it with --name\n", fn);
        return 2;
    }
    if (read_line(key_path, line, sizeof line) != 0) {
        return 1;
    }
    if (!jinn_fnsig_base64_decode(line, strlen(line), seed_pub, 64) ||
        jinn_fnsig_public(seed_pub, pub) != 0 || memcmp(pub, seed_pub + 32, 32) != 0) {
        fprintf(stderr, "jinn: %s is not a key from `jinn fn keygen` (base64 of 64 bytes)\n",
                key_path);
        goto out_key;
    }
    jinn_wbuf_init(&w);
    if (read_module(module, &w) != 0 || jinn_sha256(w.data, w.len, sha) != 0) {
        jinn_wbuf_free(&w);
        goto out_key;
    }
    jinn_wbuf_free(&w);
    n = jinn_fnsig_message(fn, strlen(fn), sha, msg);
    if (jinn_fnsig_sign(seed_pub, msg, n, sig) != 0) {
        fprintf(stderr, "jinn: signing failed\n");
        goto out_key;
    }
    text = b64(sig, 64);
    o = json_pack("{s:s, s:s, s:s}", "key", key, "function", fn, "signature", text ? text : "");
    s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    snprintf(path, sizeof path, "%s.sig", module);
    if (s == NULL || write_text(path, s, strlen(s), 0644) != 0) {
        goto out_key;
    }
    printf("%s signed by %s for function %s\n", path, key, fn);
    rv = 0;
out_key:
    memset(seed_pub, 0, sizeof seed_pub);
    json_decref(o);
    jinn_free(s);
    jinn_free(text);
    return rv;
}

int jinn_cli_fn_sig_headers(const char *sig_path, const char *fn, struct jinn_wbuf *headers)
{
    json_error_t jerr;
    json_t *o = json_load_file(sig_path, JSON_REJECT_DUPLICATES, &jerr);
    const char *key = json_string_value(json_object_get(o, "key"));
    const char *sig = json_string_value(json_object_get(o, "signature"));
    const char *signed_fn = json_string_value(json_object_get(o, "function"));
    uint8_t raw[64];

    if (o == NULL || key == NULL || sig == NULL ||
        !jinn_fnsig_key_name_valid(key, strlen(key)) ||
        !jinn_fnsig_base64_decode(sig, strlen(sig), raw, sizeof raw)) {
        fprintf(stderr, "jinn: %s is not a signature file from `jinn fn sign`\n", sig_path);
        json_decref(o);
        return -1;
    }
    if (signed_fn != NULL && strcmp(signed_fn, fn) != 0) {
        fprintf(stderr,
                "jinn: %s signs the module as function '%s', not '%s' (jinn fn sign --name)\n",
                sig_path, signed_fn, fn);
        json_decref(o);
        return -1;
    }
    jinn_wbuf_printf(headers, "X-Jinn-Signature: %s\r\nX-Jinn-Key: %s\r\n", sig, key);
    json_decref(o);
    return 0;
}

static int policy(const char *addr, int argc, char **argv, bool json_out)
{
    const char *require = NULL;
    struct jinn_wbuf target, body;
    char *resp = NULL, *text = NULL;
    size_t len;
    int status, rv = 1;
    json_t *cur = NULL, *keys_out = NULL, *k;
    bool change = false;
    size_t i;

    jinn_wbuf_init(&target);
    jinn_wbuf_init(&body);
    jinn_wbuf_printf(&target, "/v1/functions-policy");
    if (jinn_cli_call(addr, "GET", &target, NULL, "", 0, &resp, &len, &status) != 0) {
        goto out;
    }
    cur = json_loadb(resp, len, 0, NULL);
    jinn_free(resp);
    resp = NULL;
    if (cur == NULL) {
        fprintf(stderr, "jinn: the node's answer is not JSON\n");
        goto out;
    }
    keys_out = json_object();
    json_array_foreach(json_object_get(cur, "keys"), i, k)
    {
        json_object_set(keys_out, json_string_value(json_object_get(k, "name")),
                        json_object_get(k, "public_key"));
    }
    for (int a = 0; a < argc; a++) {
        if (a + 1 < argc && strcmp(argv[a], "--require-signature") == 0) {
            require = argv[++a];
            if (strcmp(require, "on") != 0 && strcmp(require, "off") != 0) {
                fprintf(stderr, "jinn: --require-signature on|off\n");
                rv = 2;
                goto out;
            }
            change = true;
        } else if (a + 1 < argc && strcmp(argv[a], "--trust") == 0) {
            char *eq = strchr(argv[++a], '='), pub[256];
            const char *value;
            if (eq == NULL) {
                fprintf(stderr, "jinn: --trust NAME=PUBKEY (or NAME=@NAME.pub)\n");
                rv = 2;
                goto out;
            }
            *eq = '\0';
            value = eq + 1;
            if (value[0] == '@') {
                if (read_line(value + 1, pub, sizeof pub) != 0) {
                    goto out;
                }
                value = pub;
            }
            json_object_set_new(keys_out, argv[a], json_string(value));
            change = true;
        } else if (a + 1 < argc && strcmp(argv[a], "--untrust") == 0) {
            if (json_object_del(keys_out, argv[++a]) != 0) {
                fprintf(stderr, "jinn: no trusted key named %s\n", argv[a]);
                goto out;
            }
            change = true;
        } else {
            fprintf(stderr, "jinn: fn policy: unexpected argument '%s'\n", argv[a]);
            rv = 2;
            goto out;
        }
    }
    if (change) {
        json_t *put = json_pack(
            "{s:b, s:O}", "require_signature",
            require ? strcmp(require, "on") == 0
                    : json_is_true(json_object_get(cur, "require_signature")),
            "keys", keys_out);
        text = put ? json_dumps(put, JSON_COMPACT) : NULL;
        json_decref(put);
        if (text == NULL) {
            goto out;
        }
        jinn_wbuf_free(&target);
        jinn_wbuf_init(&target);
        jinn_wbuf_printf(&target, "/v1/functions-policy");
        if (jinn_cli_call(addr, "PUT", &target, "Content-Type: application/json\r\n", text,
                          strlen(text), &resp, &len, &status) != 0) {
            goto out;
        }
        json_decref(cur);
        cur = json_loadb(resp, len, 0, NULL);
    }
    if (json_out || cur == NULL) {
        printf("%.*s\n", (int)len, resp ? resp : "");
    } else {
        printf("require_signature: %s\n",
               json_is_true(json_object_get(cur, "require_signature")) ? "on" : "off");
        json_array_foreach(json_object_get(cur, "keys"), i, k)
        {
            printf("trusted %s %s\n", json_string_value(json_object_get(k, "name")),
                   json_string_value(json_object_get(k, "public_key")));
        }
    }
    rv = 0;
out:
    jinn_free(text);
    jinn_free(resp);
    json_decref(cur);
    json_decref(keys_out);
    jinn_wbuf_free(&target);
    jinn_wbuf_free(&body);
    return rv;
}

int jinn_cli_fn_sig(const char *verb, int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    const char *key = NULL, *name = NULL, *pos = NULL;
    bool json_out = false;
    char **rest = jinn_calloc((size_t)argc + 1, sizeof *rest);
    int n_rest = 0, rv;

    if (rest == NULL) {
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json_out = true;
        } else if (i + 1 < argc && strcmp(argv[i], "--key") == 0) {
            key = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--name") == 0) {
            name = argv[++i];
        } else if (argv[i][0] != '-' && pos == NULL && strcmp(verb, "policy") != 0) {
            pos = argv[i];
        } else {
            rest[n_rest++] = argv[i];
        }
    }
    if (strcmp(verb, "keygen") == 0 && pos != NULL && n_rest == 0 && key == NULL) {
        rv = keygen(pos);
    } else if (strcmp(verb, "sign") == 0 && pos != NULL && key != NULL && n_rest == 0) {
        rv = sign(pos, key, name);
    } else if (strcmp(verb, "policy") == 0 && key == NULL && name == NULL) {
        rv = policy(addr, n_rest, rest, json_out);
    } else {
        fprintf(stderr, "usage: jinn fn keygen NAME\n"
                        "       jinn fn sign MODULE --key NAME.key [--name FUNCTION]\n"
                        "       jinn fn policy [--require-signature on|off] "
                        "[--trust NAME=PUBKEY|NAME=@NAME.pub]... [--untrust NAME]...\n");
        rv = 2;
    }
    jinn_free(rest);
    return rv;
}
