// Debian's libssl-dev (OpenSSL 3). Only RedisSink's TLS transport imports this module: every call
// into OpenSSL is here or in RedisTLS.swift.
#ifndef SPILLWAY_CSSL_SHIM_H
#define SPILLWAY_CSSL_SHIM_H
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <string.h>

// The oldest error on this thread's queue as text ("" when none), and the queue cleared.
static inline void spillway_ssl_error(char *buf, size_t len) {
    unsigned long e = ERR_get_error();
    if (e == 0) { if (len > 0) buf[0] = 0; }
    else ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

// A client context: TLS 1.2 at least; the peer verified against `ca_file` (or the system's CAs when
// NULL) unless `insecure`; a client certificate and key when given. NULL on failure, with the reason
// in `err`.
static inline SSL_CTX *spillway_ssl_client_context(const char *ca_file, const char *cert_file, const char *key_file,
                                                   int insecure, char *err, size_t errlen) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) { spillway_ssl_error(err, errlen); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    if (!insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            char reason[200];
            spillway_ssl_error(reason, sizeof reason);
            snprintf(err, errlen, "cannot load the CA certificates%s%s: %s", ca_file ? " from " : "", ca_file ? ca_file : "", reason);
            SSL_CTX_free(ctx);
            return NULL;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
            char reason[200];
            spillway_ssl_error(reason, sizeof reason);
            snprintf(err, errlen, "cannot load the client certificate %s: %s", cert_file, reason);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
            char reason[200];
            spillway_ssl_error(reason, sizeof reason);
            snprintf(err, errlen, "cannot load the client key %s: %s", key_file, reason);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

// A session on the connected socket `fd`, with SNI and the certificate's name (or IP address)
// checked against `server_name` (unless the context does not verify). The handshake is
// `spillway_ssl_connect`'s.
static inline SSL *spillway_ssl_new(SSL_CTX *ctx, int fd, const char *server_name, int is_ip) {
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); return NULL; }
    if (server_name != NULL && server_name[0] != 0) {
        if (!is_ip) SSL_set_tlsext_host_name(ssl, server_name);
        if (SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_NONE) {
            X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
            int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name) : SSL_set1_host(ssl, server_name);
            if (ok != 1) { SSL_free(ssl); return NULL; }
        }
    }
    return ssl;
}

// The handshake (blocking, within the socket's timeouts). 1 on success; otherwise 0 with the reason
// in `err` ("certificate verify failed: certificate has expired", …).
static inline int spillway_ssl_connect(SSL *ssl, char *err, size_t errlen) {
    ERR_clear_error();
    int r = SSL_connect(ssl);
    if (r == 1) return 1;
    long verify = SSL_get_verify_result(ssl);
    int code = SSL_get_error(ssl, r);
    char reason[200];
    spillway_ssl_error(reason, sizeof reason);
    if (verify != X509_V_OK) {
        snprintf(err, errlen, "certificate verify failed: %s", X509_verify_cert_error_string(verify));
    } else if (reason[0] != 0) {
        snprintf(err, errlen, "TLS handshake failed: %s", reason);
    } else if (code == SSL_ERROR_SYSCALL || code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
        snprintf(err, errlen, "TLS handshake failed: %s", r == 0 ? "the server closed the connection" : strerror(errno));
    } else {
        snprintf(err, errlen, "TLS handshake failed (SSL error %d)", code);
    }
    return 0;
}

// SSL_read / SSL_write: the byte count, or -1 with `*code` (SSL_get_error) and `*sys_errno`.
static inline long spillway_ssl_read(SSL *ssl, void *buf, int len, int *code, int *sys_errno) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(ssl, buf, len);
    if (n > 0) return n;
    *code = SSL_get_error(ssl, n);
    *sys_errno = errno;
    return -1;
}

static inline long spillway_ssl_write(SSL *ssl, const void *buf, int len, int *code, int *sys_errno) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(ssl, buf, len);
    if (n > 0) return n;
    *code = SSL_get_error(ssl, n);
    *sys_errno = errno;
    return -1;
}

static inline int spillway_ssl_pending(const SSL *ssl) { return SSL_pending(ssl); }
#endif
