/* net/tls.c: TLS over a stream with OpenSSL 3 and memory BIOs. Records
 * the stream reads go into rbio; whatever OpenSSL produces in wbio is
 * written to the stream with evr_stream_write_copy() after each step. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "evr/tls.h"
#include "evr/error.h"

struct evr_tls_ctx {
  SSL_CTX *ssl_ctx;
  unsigned hs_timeout_ms;
  int server;
};

enum {
  F_STARTED = 1u << 0,   /* evr_tls_start() called */
  F_DONE = 1u << 1,      /* handshake complete */
  F_READING = 1u << 2,   /* the user reads */
  F_EOF = 1u << 3,       /* close_notify delivered */
  F_CLOSING = 1u << 4,
  F_SHUT = 1u << 5,      /* close_notify sent */
  F_FAILED = 1u << 6,    /* a fatal error was met */
  F_HS_FIRED = 1u << 7,  /* the handshake callback ran */
  F_STREAM_EOF = 1u << 8,
};

#define SSLP(t) ((SSL *)(t)->ssl)

static void set_reason_from_queue(evr_tls_t *t) {
  unsigned long e = ERR_peek_last_error();
  if (e) {
    const char *r = ERR_reason_error_string(e);
    snprintf(t->reason, sizeof t->reason, "%s", r ? r : "unknown TLS error");
  }
  long v = SSL_get_verify_result(SSLP(t));
  if (v != X509_V_OK)
    snprintf(t->reason, sizeof t->reason, "certificate verify failed: %s",
             X509_verify_cert_error_string(v));
  if (!t->reason[0]) snprintf(t->reason, sizeof t->reason, "TLS error");
  ERR_clear_error();
}

/* Move what OpenSSL wrote into wbio onto the stream. */
static int flush_out(evr_tls_t *t) {
  BIO *w = (BIO *)t->wbio;
  char *p;
  long n = BIO_get_mem_data(w, &p);
  int rc = 0;
  if (n > 0) rc = evr_stream_write_copy(&t->stream, p, (size_t)n);
  (void)BIO_reset(w);
  return rc;
}

static void hs_finish(evr_tls_t *t, int status) {
  if (t->flags & F_HS_FIRED) return;
  t->flags |= F_HS_FIRED;
  evr_timer_stop(&t->timer);
  if (status < 0) {
    t->flags |= F_FAILED;
    evr_stream_read_stop(&t->stream);
  }
  t->hs_cb(t, status);
}

static void deliver_error(evr_tls_t *t, int err) {
  t->flags |= F_FAILED;
  evr_stream_read_stop(&t->stream);
  if (t->flags & F_READING) {
    t->flags &= ~(unsigned)F_READING;
    t->read_cb(t, err, NULL);
  }
}

/* Run the handshake and deliver decrypted data while the user reads. */
static void pump(evr_tls_t *t) {
  SSL *ssl = SSLP(t);
  if (!(t->flags & F_DONE)) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    int frc = flush_out(t);
    if (r == 1) {
      t->flags |= F_DONE;
      if (frc < 0) {
        hs_finish(t, frc);
        return;
      }
      hs_finish(t, 0);
      if (t->flags & (F_CLOSING | F_FAILED)) return;
    } else {
      int e = SSL_get_error(ssl, r);
      if (e == SSL_ERROR_WANT_READ && frc == 0) {
        if (t->flags & F_STREAM_EOF) {
          snprintf(t->reason, sizeof t->reason, "connection closed during the handshake");
          hs_finish(t, EVR_ECONNRESET);
        }
        return;
      }
      if (frc < 0) {
        hs_finish(t, frc);
        return;
      }
      set_reason_from_queue(t);
      hs_finish(t, EVR_ETLS);
      return;
    }
  }
  char buf[16384];
  while ((t->flags & F_READING) && !(t->flags & (F_CLOSING | F_FAILED | F_EOF))) {
    ERR_clear_error();
    int n = SSL_read(ssl, buf, (int)sizeof buf);
    int frc = flush_out(t);
    if (n > 0) {
      t->read_cb(t, n, buf);
      continue;
    }
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ) {
      if (frc < 0) deliver_error(t, frc);
      return;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
      t->flags |= F_EOF;
      t->flags &= ~(unsigned)F_READING;
      evr_stream_read_stop(&t->stream);
      t->read_cb(t, EVR_EOF, NULL);
      return;
    }
    set_reason_from_queue(t);
    deliver_error(t, EVR_ETLS);
    return;
  }
}

static void on_stream_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  evr_tls_t *t = (evr_tls_t *)s;
  if (nread > 0) {
    if (BIO_write((BIO *)t->rbio, buf, (int)nread) != (int)nread) {
      /* A memory BIO fails only when it cannot grow. */
      snprintf(t->reason, sizeof t->reason, "out of memory");
      if (!(t->flags & F_DONE)) hs_finish(t, EVR_ENOMEM);
      else deliver_error(t, EVR_ENOMEM);
      return;
    }
  } else if (nread == EVR_EOF) {
    t->flags |= F_STREAM_EOF;
    BIO_set_mem_eof_return((BIO *)t->rbio, 0); /* reads now see the end */
  } else {
    if (!(t->flags & F_DONE)) hs_finish(t, (int)nread);
    else deliver_error(t, (int)nread);
    return;
  }
  pump(t);
}

static int want_stream_reads(evr_tls_t *t) {
  return (!(t->flags & F_DONE) || (t->flags & F_READING)) &&
         !(t->flags & (F_FAILED | F_CLOSING | F_STREAM_EOF));
}

static int ensure_stream_reading(evr_tls_t *t) {
  if (!want_stream_reads(t)) return 0;
  int rc = evr_stream_read_start(&t->stream, on_stream_read);
  return rc == EVR_EALREADY ? 0 : rc;
}

static void on_timer(evr_timer_t *tm) {
  evr_tls_t *t = (evr_tls_t *)((char *)tm - offsetof(evr_tls_t, timer));
  if (!(t->flags & F_DONE)) {
    snprintf(t->reason, sizeof t->reason, "handshake timed out");
    hs_finish(t, EVR_ETIMEDOUT);
    return;
  }
  pump(t); /* a drain deferred by evr_tls_read_start() */
}

/* ---- contexts ---- */

static int ctx_new(evr_tls_ctx_t **out, int server) {
  evr_tls_ctx_t *c = calloc(1, sizeof *c);
  if (!c) return EVR_ENOMEM;
  c->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!c->ssl_ctx) {
    free(c);
    return EVR_ENOMEM;
  }
  c->server = server;
  c->hs_timeout_ms = 10000;
  SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_RENEGOTIATION);
  *out = c;
  return 0;
}

int evr_tls_ctx_new_server(evr_tls_ctx_t **out, const char *cert_file,
                           const char *key_file) {
  if (!out || !cert_file || !key_file) return EVR_EINVAL;
  evr_tls_ctx_t *c;
  int rc = ctx_new(&c, 1);
  if (rc < 0) return rc;
  if (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, cert_file) != 1 ||
      SSL_CTX_use_PrivateKey_file(c->ssl_ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(c->ssl_ctx) != 1) {
    ERR_clear_error();
    evr_tls_ctx_free(c);
    return EVR_ETLS;
  }
  *out = c;
  return 0;
}

int evr_tls_ctx_new_client(evr_tls_ctx_t **out, const char *ca_file) {
  if (!out) return EVR_EINVAL;
  evr_tls_ctx_t *c;
  int rc = ctx_new(&c, 0);
  if (rc < 0) return rc;
  int ok = ca_file ? SSL_CTX_load_verify_locations(c->ssl_ctx, ca_file, NULL)
                   : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
  if (ok != 1) {
    ERR_clear_error();
    evr_tls_ctx_free(c);
    return EVR_ETLS;
  }
  SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
  *out = c;
  return 0;
}

int evr_tls_ctx_set_handshake_timeout(evr_tls_ctx_t *ctx, unsigned ms) {
  if (!ctx) return EVR_EINVAL;
  ctx->hs_timeout_ms = ms;
  return 0;
}

void evr_tls_ctx_free(evr_tls_ctx_t *ctx) {
  if (!ctx) return;
  SSL_CTX_free(ctx->ssl_ctx); /* reference counted: live SSLs keep it */
  free(ctx);
}

/* ---- connections ---- */

int evr_tls_init(evr_loop_t *loop, evr_tls_t *t, evr_tls_ctx_t *ctx,
                 const char *server_name) {
  if (!loop || !t || !ctx) return EVR_EINVAL;
  memset(t, 0, sizeof *t);
  SSL *ssl = SSL_new(ctx->ssl_ctx);
  BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
  if (!ssl || !r || !w) goto nomem;
  BIO_set_mem_eof_return(r, -1); /* empty is "want more", not the end */
  SSL_set_bio(ssl, r, w);        /* the SSL owns both from here */
  r = w = NULL;
  if (ctx->server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    if (server_name) {
      ASN1_OCTET_STRING *ip = a2i_IPADDRESS(server_name);
      if (ip) {
        ASN1_OCTET_STRING_free(ip);
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name) != 1)
          goto nomem;
      } else if (SSL_set_tlsext_host_name(ssl, server_name) != 1 ||
                 SSL_set1_host(ssl, server_name) != 1) {
        goto nomem;
      }
    }
  }
  int rc = evr_stream_init(loop, &t->stream);
  if (rc < 0) {
    SSL_free(ssl);
    return rc;
  }
  evr_timer_init(loop, &t->timer);
  t->ssl = ssl;
  t->rbio = SSL_get_rbio(ssl);
  t->wbio = SSL_get_wbio(ssl);
  t->ctx = ctx;
  return 0;
nomem:
  ERR_clear_error();
  BIO_free(r);
  BIO_free(w);
  SSL_free(ssl);
  return EVR_ENOMEM;
}

int evr_tls_start(evr_tls_t *t, evr_tls_handshake_cb cb) {
  if (!t || !cb || !t->ssl || (t->flags & (F_STARTED | F_CLOSING))) return EVR_EINVAL;
  int rc = evr_stream_read_start(&t->stream, on_stream_read);
  if (rc < 0) return rc;
  t->hs_cb = cb;
  t->flags |= F_STARTED;
  if (t->ctx->hs_timeout_ms) evr_timer_start(&t->timer, on_timer, t->ctx->hs_timeout_ms, 0);
  if (!t->ctx->server) {
    /* The client speaks first: its ClientHello. */
    ERR_clear_error();
    int r = SSL_do_handshake(SSLP(t));
    int frc = flush_out(t);
    if (frc < 0) {
      evr_stream_read_stop(&t->stream);
      evr_timer_stop(&t->timer);
      t->flags &= ~(unsigned)F_STARTED;
      return frc;
    }
    (void)r; /* the outcome comes with the server's answer */
  }
  return 0;
}

int evr_tls_read_start(evr_tls_t *t, evr_tls_read_cb cb) {
  if (!t || !cb || (t->flags & F_CLOSING)) return EVR_EINVAL;
  if (t->flags & F_READING) return EVR_EALREADY;
  if (t->flags & F_EOF) return EVR_EOF;
  t->read_cb = cb;
  t->flags |= F_READING;
  if (!(t->flags & F_STARTED)) return 0;
  int rc = ensure_stream_reading(t);
  if (rc < 0 && rc != EVR_EOF) {
    t->flags &= ~(unsigned)F_READING;
    return rc;
  }
  /* Records already received wait in rbio or the SSL: drain from the loop. */
  if ((t->flags & F_DONE) &&
      (SSL_pending(SSLP(t)) > 0 || BIO_ctrl_pending((BIO *)t->rbio) > 0 ||
       (t->flags & F_STREAM_EOF)))
    evr_timer_start(&t->timer, on_timer, 0, 0);
  return 0;
}

int evr_tls_read_stop(evr_tls_t *t) {
  if (!t) return EVR_EINVAL;
  t->flags &= ~(unsigned)F_READING;
  if (t->flags & F_DONE) {
    evr_stream_read_stop(&t->stream);
    evr_timer_stop(&t->timer);
  }
  return 0;
}

int evr_tls_write(evr_tls_t *t, const void *data, size_t len) {
  if (!t || (!data && len) || (t->flags & F_CLOSING)) return EVR_EINVAL;
  if (!(t->flags & F_DONE) || (t->flags & F_FAILED)) return EVR_ENOTCONN;
  if (t->flags & F_SHUT) return EVR_EPIPE;
  const char *p = data;
  while (len > 0) {
    int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
    ERR_clear_error();
    int n = SSL_write(SSLP(t), p, chunk);
    if (n <= 0) {
      set_reason_from_queue(t);
      return EVR_ETLS;
    }
    int rc = flush_out(t);
    if (rc < 0) return rc;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

size_t evr_tls_write_queue_size(const evr_tls_t *t) {
  return t ? evr_stream_write_queue_size(&t->stream) : 0;
}

int evr_tls_shutdown(evr_tls_t *t, evr_shutdown_cb cb) {
  if (!t || (t->flags & F_CLOSING)) return EVR_EINVAL;
  if (!(t->flags & F_DONE)) return EVR_ENOTCONN;
  if (t->flags & F_SHUT) return EVR_EALREADY;
  ERR_clear_error();
  SSL_shutdown(SSLP(t)); /* queues close_notify; the peer's is not awaited */
  ERR_clear_error();
  int rc = flush_out(t);
  if (rc < 0) return rc;
  t->flags |= F_SHUT;
  return evr_stream_shutdown(&t->stream, cb);
}

static void on_stream_closed(evr_handle_t *h) {
  evr_tls_t *t = (evr_tls_t *)h;
  evr_timer_stop(&t->timer);
  SSL_free(SSLP(t));
  t->ssl = t->rbio = t->wbio = NULL;
  if (t->close_cb) t->close_cb(t);
}

int evr_tls_close(evr_tls_t *t, evr_tls_close_cb cb) {
  if (!t || (t->flags & F_CLOSING)) return EVR_EINVAL;
  t->flags |= F_CLOSING;
  t->close_cb = cb;
  evr_timer_stop(&t->timer);
  return evr_close(&t->stream.base, on_stream_closed);
}

const char *evr_tls_reason(const evr_tls_t *t) { return t ? t->reason : ""; }

const char *evr_tls_version(const evr_tls_t *t) {
  if (!t || !t->ssl || !(t->flags & F_DONE)) return NULL;
  return SSL_get_version(SSLP(t));
}
