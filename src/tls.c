/* tls.c - see tls.h. */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

#define WRITE_CHUNK (64 * 1024)

static X509_STORE *g_peer_store; /* cluster CA: who counts as a member */
static int g_pin_index = -1;      /* SSL_CTX ex_data: the pinned leaf's SHA-256 */

const char *jinn_tls_error(char *buf, size_t n)
{
    unsigned long e = ERR_get_error();
    snprintf(buf, n, "unknown error");
    if (e != 0) {
        ERR_error_string_n(e, buf, n);
    }
    ERR_clear_error();
    return buf;
}

static void file_error(char *err, size_t n, const char *what, const char *file)
{
    char buf[256];
    snprintf(err, n, "%s %s: %s", what, file, jinn_tls_error(buf, sizeof buf));
}

static SSL_CTX *ctx_new(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* No session tickets: nothing arrives after the handshake that a
     * pooled client connection would take for the server closing it. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    return ctx;
}

static int load_identity(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t n)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        file_error(err, n, "cert", cert);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        file_error(err, n, "key", key);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, n, "key %s does not belong to cert %s", key, cert);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

SSL_CTX *jinn_tls_server_ctx(const char *cert, const char *key, const char *client_ca,
                             const char *peer_ca, char *err, size_t n)
{
    SSL_CTX *ctx = ctx_new();
    if (ctx == NULL) {
        snprintf(err, n, "cannot create a TLS context");
        return NULL;
    }
    if (load_identity(ctx, cert, key, err, n) != 0) {
        goto fail;
    }
    if (client_ca != NULL && SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1) {
        file_error(err, n, "client_ca", client_ca);
        goto fail;
    }
    if (peer_ca != NULL && SSL_CTX_load_verify_locations(ctx, peer_ca, NULL) != 1) {
        file_error(err, n, "cluster_tls ca", peer_ca);
        goto fail;
    }
    if (client_ca != NULL) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    } else if (peer_ca != NULL) {
        /* Asked for, so that peers can prove they are members; clients
         * without one are served as any client. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void pin_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                     void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    jinn_free(ptr);
}

/* The server's certificate is accepted when it is exactly the pinned leaf
 * (this node's own http_tls certificate: a call to itself), else when it
 * chains to a trust[] anchor and matches the address expected
 * (jinn_tls_expect_ip). */
static int client_verify(X509_STORE_CTX *x, void *arg)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *leaf = X509_STORE_CTX_get0_cert(x);
    const unsigned char *pin = NULL;
    (void)arg;
    if (ssl != NULL && g_pin_index >= 0) {
        pin = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_pin_index);
    }
    if (pin != NULL && leaf != NULL) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (X509_digest(leaf, EVP_sha256(), md, &len) == 1 && len == 32 &&
            memcmp(md, pin, 32) == 0) {
            X509_STORE_CTX_set_error(x, X509_V_OK);
            return 1;
        }
    }
    return X509_verify_cert(x);
}

int jinn_tls_client_pin_leaf(SSL_CTX *ctx, const char *cert_file, char *err, size_t n)
{
    FILE *f;
    X509 *leaf;
    unsigned char *pin;
    unsigned int len = 0;
    if (g_pin_index < 0) {
        g_pin_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, pin_free);
        if (g_pin_index < 0) {
            snprintf(err, n, "cannot pin %s: no ex_data index", cert_file);
            return -1;
        }
    }
    f = fopen(cert_file, "r");
    if (f == NULL) {
        snprintf(err, n, "cannot read %s", cert_file);
        return -1;
    }
    leaf = PEM_read_X509(f, NULL, NULL, NULL); /* the first one: the leaf */
    fclose(f);
    pin = jinn_malloc(EVP_MAX_MD_SIZE);
    if (leaf == NULL || pin == NULL || X509_digest(leaf, EVP_sha256(), pin, &len) != 1 ||
        len != 32 || SSL_CTX_set_ex_data(ctx, g_pin_index, pin) != 1) {
        file_error(err, n, "cert", cert_file);
        X509_free(leaf);
        jinn_free(pin);
        return -1;
    }
    X509_free(leaf);
    return 0;
}

int jinn_tls_expect_ip(struct jinn_tls *t, const char *ip)
{
    X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
    if (p == NULL || X509_VERIFY_PARAM_set1_ip_asc(p, ip) != 1) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

SSL_CTX *jinn_tls_client_ctx(const char *cert, const char *key, const char *const *trust,
                             size_t n_trust, char *err, size_t n)
{
    SSL_CTX *ctx = ctx_new();
    if (ctx == NULL) {
        snprintf(err, n, "cannot create a TLS context");
        return NULL;
    }
    if (cert != NULL && load_identity(ctx, cert, key, err, n) != 0) {
        goto fail;
    }
    for (size_t i = 0; i < n_trust; i++) {
        if (trust[i] != NULL && SSL_CTX_load_verify_locations(ctx, trust[i], NULL) != 1) {
            file_error(err, n, "trust", trust[i]);
            goto fail;
        }
    }
    /* No X509_V_FLAG_PARTIAL_CHAIN and no system CAs: a chain ends at a
     * self-signed anchor from trust[]. The node's own leaf is recognised
     * by its fingerprint (jinn_tls_client_pin_leaf), never by trusting the
     * intermediates of its chain file (any certificate they issued would
     * pass as a peer). */
    SSL_CTX_set_cert_verify_callback(ctx, client_verify, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

X509_STORE *jinn_tls_peer_ca_load(const char *file, char *err, size_t n)
{
    X509_STORE *store = X509_STORE_new();
    if (store == NULL || X509_STORE_load_file(store, file) != 1) {
        file_error(err, n, "cluster_tls ca", file);
        X509_STORE_free(store);
        return NULL;
    }
    return store;
}

void jinn_tls_peer_ca_install(X509_STORE *store)
{
    X509_STORE_free(g_peer_store);
    g_peer_store = store;
}

int jinn_tls_set_peer_ca(const char *file, char *err, size_t n)
{
    X509_STORE *store;
    if (file == NULL) {
        jinn_tls_peer_ca_install(NULL);
        return 0;
    }
    store = jinn_tls_peer_ca_load(file, err, n);
    if (store == NULL) {
        return -1;
    }
    jinn_tls_peer_ca_install(store);
    return 0;
}

bool jinn_tls_peer_ca_set(void)
{
    return g_peer_store != NULL;
}

int jinn_tls_open(struct jinn_tls *t, SSL_CTX *ctx, bool server)
{
    memset(t, 0, sizeof *t);
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        memset(t, 0, sizeof *t);
        ERR_clear_error();
        return -1;
    }
    /* An empty memory BIO reads as "try again", not as end of file. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
    }
    return 0;
}

void jinn_tls_close(struct jinn_tls *t)
{
    SSL_free(t->ssl); /* frees the BIOs too */
    memset(t, 0, sizeof *t);
}

int jinn_tls_feed(struct jinn_tls *t, const void *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (n > INT32_MAX || BIO_write(t->rbio, p, (int)n) != (int)n) {
        return -1;
    }
    return 0;
}

int jinn_tls_handshake(struct jinn_tls *t)
{
    int r, e;
    if (t->established) {
        return 1;
    }
    r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->established = true;
        return 1;
    }
    e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return 0;
    }
    return -1; /* the error stays queued for jinn_tls_error */
}

long jinn_tls_read(struct jinn_tls *t, void *out, size_t cap)
{
    int k, e;
    if (cap == 0) {
        return 0;
    }
    k = SSL_read(t->ssl, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (k > 0) {
        return k;
    }
    e = SSL_get_error(t->ssl, k);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return 0;
    }
    ERR_clear_error();
    return -1;
}

int jinn_tls_write(struct jinn_tls *t, const void *p, size_t n)
{
    const char *q = p;
    while (n > 0) {
        int chunk = n > WRITE_CHUNK ? WRITE_CHUNK : (int)n;
        int k = SSL_write(t->ssl, q, chunk);
        if (k <= 0) {
            ERR_clear_error();
            return -1;
        }
        q += k;
        n -= (size_t)k;
    }
    return 0;
}

char *jinn_tls_take(struct jinn_tls *t, size_t *len, bool *oom)
{
    char *p;
    char *copy;
    long n = BIO_get_mem_data(t->wbio, &p);
    *len = 0;
    *oom = false;
    if (n <= 0) {
        return NULL;
    }
    copy = jinn_malloc((size_t)n);
    if (copy == NULL) {
        *oom = true;
        return NULL;
    }
    memcpy(copy, p, (size_t)n);
    (void)BIO_reset(t->wbio);
    *len = (size_t)n;
    return copy;
}

bool jinn_tls_is_peer(const struct jinn_tls *t)
{
    X509 *cert;
    X509_STORE_CTX *vctx;
    bool ok = false;
    if (g_peer_store == NULL || t->ssl == NULL || !t->established) {
        return false;
    }
    cert = SSL_get0_peer_certificate(t->ssl);
    if (cert == NULL || SSL_get_verify_result(t->ssl) != X509_V_OK) {
        return false;
    }
    /* Verified against client_ca or the cluster CA: which one? Only the
     * cluster CA makes a member. */
    vctx = X509_STORE_CTX_new();
    if (vctx != NULL &&
        X509_STORE_CTX_init(vctx, g_peer_store, cert, SSL_get_peer_cert_chain(t->ssl)) == 1) {
        ok = X509_verify_cert(vctx) == 1;
    }
    X509_STORE_CTX_free(vctx);
    ERR_clear_error();
    return ok;
}

void jinn_tls_shutdown(struct jinn_tls *t)
{
    if (t->ssl != NULL && t->established) {
        (void)SSL_shutdown(t->ssl);
        ERR_clear_error();
    }
}
