/* tls.h - OpenSSL sessions driven through memory BIOs, for libuv streams.
 *
 * The event loop owns the sockets; OpenSSL only sees bytes: ciphertext read
 * from the network is fed in (jinn_tls_feed), plaintext comes out
 * (jinn_tls_read), plaintext to send goes in (jinn_tls_write) and the
 * ciphertext to write to the network is taken out (jinn_tls_take). Nothing
 * blocks, a handshake may arrive split in any way, and the caller bounds
 * what it feeds (one socket read at a time).
 *
 * Used by the HTTP server (http_tls, with optional client certificates)
 * and by the HTTP client fetch.c (node-to-node calls, presenting the
 * node's cluster_tls certificate). */
#ifndef JINN_TLS_H
#define JINN_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* A TLS 1.2+ server context: our certificate chain and key; client
 * certificates are asked for when client_ca or peer_ca is given and
 * verified against both; required when client_ca is given. NULL on error
 * (err says which file and why). */
SSL_CTX *jinn_tls_server_ctx(const char *cert, const char *key, const char *client_ca,
                             const char *peer_ca, char *err, size_t n);

/* A TLS 1.2+ client context presenting cert/key (both NULL: none) and
 * trusting the CA certificates in trust[] only: chains must end at one of
 * them (no partial chains, no system CAs). A session's server must also
 * carry the address it was called at (jinn_tls_expect_ip). */
SSL_CTX *jinn_tls_client_ctx(const char *cert, const char *key, const char *const *trust,
                             size_t n_trust, char *err, size_t n);

/* Accept exactly the leaf certificate of cert_file (its first one, by
 * SHA-256) whatever its chain: a node's calls to itself meet its own
 * http_tls certificate. 0 or -1 (err filled). */
int jinn_tls_client_pin_leaf(SSL_CTX *ctx, const char *cert_file, char *err, size_t n);

/* The server of this client session must have ip (a literal) in its
 * certificate's subjectAltName, unless it is the pinned leaf. 0 or -1. */
struct jinn_tls;
int jinn_tls_expect_ip(struct jinn_tls *t, const char *ip);

/* The CA whose certificates identify cluster members on HTTP connections
 * (cluster_tls's ca); NULL file clears it. 0 or -1 (err filled, the old
 * one kept). */
int jinn_tls_set_peer_ca(const char *file, char *err, size_t n);
bool jinn_tls_peer_ca_set(void);
/* The same in two steps, for a reload that is all or nothing: load (NULL
 * on error, err filled, nothing changed), then install (cannot fail; takes
 * the store). */
X509_STORE *jinn_tls_peer_ca_load(const char *file, char *err, size_t n);
void jinn_tls_peer_ca_install(X509_STORE *store);

struct jinn_tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    bool established;
};

/* 0 or -1. ctx gains a reference (a reload may free the caller's). */
int jinn_tls_open(struct jinn_tls *t, SSL_CTX *ctx, bool server);
void jinn_tls_close(struct jinn_tls *t);

/* Ciphertext from the network. 0 or -1. */
int jinn_tls_feed(struct jinn_tls *t, const void *p, size_t n);

/* Advances the handshake: 1 established, 0 more bytes needed, -1 failed
 * (an alert may wait in jinn_tls_take). */
int jinn_tls_handshake(struct jinn_tls *t);

/* Plaintext received: > 0 bytes, 0 none yet, -1 the peer closed or broke
 * the session. */
long jinn_tls_read(struct jinn_tls *t, void *out, size_t cap);

/* Encrypts n bytes (all of them). 0 or -1. */
int jinn_tls_write(struct jinn_tls *t, const void *p, size_t n);

/* The ciphertext waiting to be sent, in a jinn_malloc'd buffer (caller
 * frees), or NULL with *len 0 when there is none (or no memory: -1 in
 * *len is not used; a NULL with pending bytes is reported as out of
 * memory through *oom). */
char *jinn_tls_take(struct jinn_tls *t, size_t *len, bool *oom);

/* Whether the established session's client certificate chains to the
 * peer CA (jinn_tls_set_peer_ca): a cluster member is on the other end. */
bool jinn_tls_is_peer(const struct jinn_tls *t);

/* Sends close_notify (taken with jinn_tls_take). */
void jinn_tls_shutdown(struct jinn_tls *t);

/* The last OpenSSL error as text, for logs (clears the queue). */
const char *jinn_tls_error(char *buf, size_t n);

#endif
