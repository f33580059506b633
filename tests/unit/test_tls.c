/* test_tls.c - the memory-BIO TLS sessions of src/tls.c: a handshake whose
 * bytes travel one at a time still completes and carries data both ways;
 * garbage fails the handshake instead of hanging or crashing; the peer
 * check tells a cluster CA's certificate from any other. Certificates are
 * made here with OpenSSL. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "tls.h"
#include "unit.h"

/* A self-signed certificate and key in dir/name.crt and dir/name.key. */
static int make_cert(const char *dir, const char *name)
{
    char path[512];
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *subject;
    FILE *f;
    int rv = -1;
    if (key == NULL || x == NULL) {
        goto out;
    }
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    subject = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1,
                               0);
    X509_set_issuer_name(x, subject);
    if (X509_sign(x, key, EVP_sha256()) == 0) {
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s.crt", dir, name);
    f = fopen(path, "w");
    if (f == NULL || PEM_write_X509(f, x) != 1) {
        goto out_close;
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    f = fopen(path, "w");
    if (f == NULL || PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1) {
        goto out_close;
    }
    rv = 0;
out_close:
    if (f != NULL) {
        fclose(f);
    }
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return rv;
}

/* Moves what from has to send into to, at most step bytes. */
static void pass(struct jinn_tls *from, struct jinn_tls *to, size_t step, char **held,
                 size_t *held_len)
{
    size_t len;
    bool oom;
    char *more = jinn_tls_take(from, &len, &oom);
    if (more != NULL) {
        char *all = jinn_realloc(*held, *held_len + len);
        memcpy(all + *held_len, more, len);
        *held = all;
        *held_len += len;
        jinn_free(more);
    }
    if (*held_len > 0) {
        size_t n = *held_len < step ? *held_len : step;
        (void)jinn_tls_feed(to, *held, n);
        memmove(*held, *held + n, *held_len - n);
        *held_len -= n;
    }
}

TEST(tls_handshake_byte_by_byte_and_data)
{
    char dir[] = "/tmp/jinn-tls-unit-XXXXXX";
    char crt[600], key[600];
    char err[256];
    SSL_CTX *sctx, *cctx;
    struct jinn_tls s, c;
    char *to_s = NULL, *to_c = NULL;
    size_t to_s_len = 0, to_c_len = 0;
    int rs = 0, rc = 0;
    char buf[64];
    long n;
    const char *trust[1];

    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(make_cert(dir, "srv"), 0);
    CHECK_INT(make_cert(dir, "cli"), 0);
    snprintf(crt, sizeof crt, "%s/srv.crt", dir);
    snprintf(key, sizeof key, "%s/srv.key", dir);
    /* The client's certificate is the "cluster CA" (self-signed). */
    {
        char cli_crt[600];
        snprintf(cli_crt, sizeof cli_crt, "%s/cli.crt", dir);
        sctx = jinn_tls_server_ctx(crt, key, NULL, cli_crt, err, sizeof err);
        CHECK(sctx != NULL);
        CHECK_INT(jinn_tls_set_peer_ca(cli_crt, err, sizeof err), 0);
        trust[0] = crt;
        {
            char cli_key[600];
            snprintf(cli_key, sizeof cli_key, "%s/cli.key", dir);
            cctx = jinn_tls_client_ctx(cli_crt, cli_key, trust, 1, err, sizeof err);
        }
        CHECK(cctx != NULL);
    }
    CHECK_INT(jinn_tls_open(&s, sctx, true), 0);
    CHECK_INT(jinn_tls_open(&c, cctx, false), 0);
    for (int i = 0; i < 100000 && (rs != 1 || rc != 1); i++) {
        rc = jinn_tls_handshake(&c);
        pass(&c, &s, 1, &to_s, &to_s_len);
        rs = jinn_tls_handshake(&s);
        pass(&s, &c, 1, &to_c, &to_c_len);
        CHECK(rs >= 0 && rc >= 0);
        if (rs < 0 || rc < 0) {
            break;
        }
    }
    CHECK_INT(rs, 1);
    CHECK_INT(rc, 1);
    CHECK(jinn_tls_is_peer(&s));
    CHECK_INT(jinn_tls_write(&c, "GET / HTTP/1.1\r\n\r\n", 18), 0);
    for (int i = 0; i < 10000 && to_s_len + 1 > 0; i++) {
        pass(&c, &s, 7, &to_s, &to_s_len);
        if (to_s_len == 0) {
            break;
        }
    }
    n = jinn_tls_read(&s, buf, sizeof buf);
    CHECK_INT(n, 18);
    CHECK(memcmp(buf, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
    jinn_tls_close(&s);
    jinn_tls_close(&c);

    /* Garbage instead of a ClientHello fails, it does not wait forever. */
    CHECK_INT(jinn_tls_open(&s, sctx, true), 0);
    CHECK_INT(jinn_tls_feed(&s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 0);
    CHECK_INT(jinn_tls_handshake(&s), -1);
    jinn_tls_close(&s);

    /* Without the peer CA nobody is a member. */
    CHECK_INT(jinn_tls_set_peer_ca(NULL, NULL, 0), 0);
    CHECK(!jinn_tls_peer_ca_set());
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    jinn_free(to_s);
    jinn_free(to_c);
    {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK_INT(system(cmd), 0);
    }
}
