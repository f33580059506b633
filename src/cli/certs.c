/* certs.c - `jinn certs init DIR` and `jinn certs add DIR NODE [--ip IP]...`:
 * a small CA for people without their own PKI, made with OpenSSL's library
 * (EVP and X509 APIs; nothing is shelled out).
 *
 *   DIR/ca.crt, DIR/ca.key        the CA (ECDSA P-256, 10 years)
 *   DIR/NODE.crt, DIR/NODE.key    a node: SAN DNS:NODE (and IP:... for each
 *                                 --ip), serverAuth + clientAuth, --days
 *                                 (default 825) of validity
 * Keys are written mode 0600 and never overwritten. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config.h"

#define CERTS_CA_DAYS 3650
#define CERTS_NODE_DAYS 825
#define CERTS_MAX_IPS 8
#define CERTS_PATH_MAX 4096

static const char certs_usage[] = "jinn certs init DIR\n"
                                  "       jinn certs add DIR NODE [--ip IP]... [--days N]";

static void ossl_fail(const char *what)
{
    char buf[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    fprintf(stderr, "jinn certs: %s: %s\n", what, buf);
}

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL) {
        ossl_fail("generating a key");
    }
    return k;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL || X509_add_ext(cert, ext, -1) != 1) {
        X509_EXTENSION_free(ext);
        ossl_fail("adding an extension");
        return -1;
    }
    X509_EXTENSION_free(ext);
    return 0;
}

/* A certificate for key named cn, valid days, signed by issuer/ikey (self
 * when issuer is NULL). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, long days, X509 *issuer, EVP_PKEY *ikey)
{
    X509 *cert = X509_new();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    X509_NAME *name;
    if (cert == NULL || RAND_bytes(serial, sizeof serial) != 1) {
        goto fail;
    }
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) == NULL) {
        goto fail;
    }
    BN_free(bn);
    bn = NULL;
    if (X509_set_version(cert, 2) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(cert), -300) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(cert), (int)days, 0, NULL) == NULL ||
        X509_set_pubkey(cert, key) != 1) {
        goto fail;
    }
    name = X509_get_subject_name(cert);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name) !=
            1) {
        goto fail;
    }
    if (add_ext(cert, issuer != NULL ? issuer : cert, NID_subject_key_identifier, "hash") !=
        0) {
        goto fail_quiet;
    }
    if (issuer == NULL) {
        if (add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") != 0 ||
            add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") != 0) {
            goto fail_quiet;
        }
    } else if (add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always") != 0 ||
               add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
               add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature") != 0 ||
               add_ext(cert, issuer, NID_ext_key_usage, "serverAuth,clientAuth") != 0) {
        goto fail_quiet;
    }
    return cert;
fail:
    ossl_fail("making a certificate");
fail_quiet:
    BN_free(bn);
    X509_free(cert);
    (void)ikey;
    return NULL;
}

static int sign(X509 *cert, EVP_PKEY *key)
{
    if (X509_sign(cert, key, EVP_sha256()) <= 0) {
        ossl_fail("signing");
        return -1;
    }
    return 0;
}

/* Creates path exclusively (never overwrites) with mode and writes key or
 * cert as PEM. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    FILE *f;
    int ok;
    if (fd < 0) {
        fprintf(stderr, "jinn certs: %s: %s\n", path, strerror(errno));
        return -1;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    ok = key != NULL ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                     : PEM_write_X509(f, cert);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        ok = 0;
    }
    if (fclose(f) != 0 || ok != 1) {
        fprintf(stderr, "jinn certs: cannot write %s\n", path);
        unlink(path);
        return -1;
    }
    return 0;
}

static int path_in(char *out, const char *dir, const char *name, const char *ext)
{
    int n = snprintf(out, CERTS_PATH_MAX, "%s/%s%s", dir, name, ext);
    if (n < 0 || n >= CERTS_PATH_MAX) {
        fprintf(stderr, "jinn certs: path too long\n");
        return -1;
    }
    return 0;
}

static int certs_init(const char *dir)
{
    char crt[CERTS_PATH_MAX], keyp[CERTS_PATH_MAX];
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    int rv = 1;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "jinn certs: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (path_in(crt, dir, "ca", ".crt") != 0 || path_in(keyp, dir, "ca", ".key") != 0) {
        return 1;
    }
    if (access(crt, F_OK) == 0 || access(keyp, F_OK) == 0) {
        fprintf(stderr, "jinn certs: %s already holds a CA (ca.crt / ca.key); not replaced\n",
                dir);
        return 1;
    }
    key = new_key();
    if (key == NULL ||
        (cert = make_cert(key, "jinn cluster CA", CERTS_CA_DAYS, NULL, NULL)) == NULL ||
        sign(cert, key) != 0) {
        goto done;
    }
    if (write_pem(keyp, 0600, key, NULL) != 0 || write_pem(crt, 0644, NULL, cert) != 0) {
        goto done;
    }
    printf("CA written: %s (certificate), %s (key: keep it secret)\n", crt, keyp);
    rv = 0;
done:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rv;
}

static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *c;
    if (f == NULL) {
        fprintf(stderr, "jinn certs: %s: %s (run jinn certs init first)\n", path,
                strerror(errno));
        return NULL;
    }
    c = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (c == NULL) {
        ossl_fail(path);
    }
    return c;
}

static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k;
    if (f == NULL) {
        fprintf(stderr, "jinn certs: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (k == NULL) {
        ossl_fail(path);
    }
    return k;
}

static bool valid_node_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JINN_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '.' && c != '_') {
            return false;
        }
    }
    return true;
}

static int certs_add(const char *dir, const char *node, const char **ips, unsigned n_ips,
                     long days)
{
    char path[CERTS_PATH_MAX], san[64 + CERTS_MAX_IPS * 64];
    X509 *ca = NULL, *cert = NULL;
    EVP_PKEY *ca_key = NULL, *key = NULL;
    size_t used;
    int rv = 1;

    if (!valid_node_name(node)) {
        fprintf(stderr, "jinn certs: '%s' is not a node name (letters, digits, - . _)\n", node);
        return 2;
    }
    used = (size_t)snprintf(san, sizeof san, "DNS:%s", node);
    for (unsigned i = 0; i < n_ips; i++) {
        unsigned char buf[16];
        if (inet_pton(AF_INET, ips[i], buf) != 1 && inet_pton(AF_INET6, ips[i], buf) != 1) {
            fprintf(stderr, "jinn certs: --ip %s is not an IP address\n", ips[i]);
            return 2;
        }
        used += (size_t)snprintf(san + used, sizeof san - used, ",IP:%s", ips[i]);
    }
    /* Both checked before a key is made: a write failing on the second
     * left the first behind (a NODE.key with no certificate). */
    for (int i = 0; i < 2; i++) {
        if (path_in(path, dir, node, i == 0 ? ".key" : ".crt") != 0) {
            return 1;
        }
        if (access(path, F_OK) == 0) {
            fprintf(stderr, "jinn certs: %s: File exists; not replaced\n", path);
            return 1;
        }
    }
    if (path_in(path, dir, "ca", ".crt") != 0 || (ca = load_cert(path)) == NULL ||
        path_in(path, dir, "ca", ".key") != 0 || (ca_key = load_key(path)) == NULL) {
        goto done;
    }
    if (X509_check_private_key(ca, ca_key) != 1) {
        fprintf(stderr, "jinn certs: %s/ca.key does not belong to %s/ca.crt\n", dir, dir);
        goto done;
    }
    key = new_key();
    if (key == NULL || (cert = make_cert(key, node, days, ca, ca_key)) == NULL ||
        add_ext(cert, ca, NID_subject_alt_name, san) != 0 || sign(cert, ca_key) != 0) {
        goto done;
    }
    if (path_in(path, dir, node, ".key") != 0 || write_pem(path, 0600, key, NULL) != 0) {
        goto done;
    }
    if (path_in(path, dir, node, ".crt") != 0 || write_pem(path, 0644, NULL, cert) != 0) {
        goto done;
    }
    printf("node certificate written: %s/%s.crt and %s/%s.key (%s, %ld days)\n", dir, node, dir,
           node, san, days);
    {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        if (X509_digest(cert, EVP_sha256(), md, &len) == 1) {
            printf("sha256 fingerprint (for cluster_tls pin %s ...): ", node);
            for (unsigned i = 0; i < len; i++) {
                printf("%02X%s", md[i], i + 1 < len ? ":" : "\n");
            }
        }
    }
    rv = 0;
done:
    X509_free(ca);
    X509_free(cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    return rv;
}

int jinn_cli_certs(int argc, char **argv)
{
    const char *ips[CERTS_MAX_IPS];
    unsigned n_ips = 0;
    long days = CERTS_NODE_DAYS;
    const char *pos[3];
    unsigned n_pos = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--ip") == 0 && i + 1 < argc) {
            if (n_ips == CERTS_MAX_IPS) {
                fprintf(stderr, "jinn certs: at most %d --ip\n", CERTS_MAX_IPS);
                return 2;
            }
            ips[n_ips++] = argv[++i];
        } else if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
            char *end;
            days = strtol(argv[++i], &end, 10);
            if (*end != '\0' || days < 1 || days > 36500) {
                fprintf(stderr, "jinn certs: --days takes 1 to 36500\n");
                return 2;
            }
        } else if (argv[i][0] == '-' || n_pos == 3) {
            fprintf(stderr, "jinn certs: unexpected argument '%s'\nusage: %s\n", argv[i],
                    certs_usage);
            return 2;
        } else {
            pos[n_pos++] = argv[i];
        }
    }
    if (n_pos == 2 && strcmp(pos[0], "init") == 0 && n_ips == 0) {
        return certs_init(pos[1]);
    }
    if (n_pos == 3 && strcmp(pos[0], "add") == 0) {
        return certs_add(pos[1], pos[2], ips, n_ips, days);
    }
    fprintf(stderr, "usage: %s\n", certs_usage);
    return 2;
}
