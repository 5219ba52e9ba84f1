/* net/tls.c: TLS over a stream with OpenSSL 3 and memory BIOs. Records
 * the stream reads go into rbio; whatever OpenSSL produces in wbio is
 * written to the stream with evr_stream_write_copy() after each step. */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "evr/tls.h"
#include "evr/error.h"

/* A client's cached sessions: the newest per server name, at most
 * SESS_MAX names, the least recently stored replaced first. */
#define SESS_MAX 32
#define EXTRA_MAX 64

struct sess_slot {
  char *name;  /* strdup'd; "" for a connection without a server name */
  SSL_SESSION *sess;
  unsigned long long stamp;
};

struct evr_tls_ctx {
  /* One for the owner's evr_tls_ctx_free(), one per connection. */
  atomic_uint refs;
  SSL_CTX *ssl_ctx;
  unsigned hs_timeout_ms;
  int server;
  /* Servers: the other certificate pairs, chosen by SNI. */
  SSL_CTX *extra[EXTRA_MAX];
  size_t nextra;
  /* ALPN, in the wire format (length-prefixed names). */
  unsigned char alpn[256];
  unsigned alpn_len;
  /* Clients: resumption. Connections of many loops share a context. */
  int resume;
  pthread_mutex_t lock;
  struct sess_slot sess[SESS_MAX];
  unsigned long long sess_clock;
};

/* Why the last context call of this thread failed. */
static _Thread_local char ctx_error[200];

static int ctx_fail(int rc, const char *what, const char *file) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  snprintf(ctx_error, sizeof ctx_error, "%s%s%s%s%s", what, file ? " " : "", file ? file : "",
           r ? ": " : "", r ? r : "");
  ERR_clear_error();
  return rc;
}

const char *evr_tls_ctx_error(void) { return ctx_error; }

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
      if (e == SSL_ERROR_WANT_READ) {
        if (frc < 0) {
          hs_finish(t, frc);
        } else if (t->flags & F_STREAM_EOF) {
          snprintf(t->reason, sizeof t->reason, "connection closed during the handshake");
          hs_finish(t, EVR_ECONNRESET);
        }
        return;
      }
      /* A protocol error: its reason, not that of the alert's failed
       * send (the peer may be gone). */
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

static SSL_CTX *ssl_ctx_new(int server) {
  SSL_CTX *x = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!x) return NULL;
  SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
  SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION);
  return x;
}

/* Servers: the first of the server's ALPN names, in its order of
 * preference, that the client offers too; without a common one the
 * handshake goes on without ALPN (evr_tls_alpn() gives NULL). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg) {
  (void)ssl;
  evr_tls_ctx_t *c = arg;
  unsigned char *sel = NULL;
  if (SSL_select_next_proto(&sel, outlen, c->alpn, c->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* Does the certificate of x name host (its subjectAltNames, wildcards
 * included, or its CN when it has none)? */
static int cert_names(SSL_CTX *x, const char *host) {
  X509 *cert = SSL_CTX_get0_certificate(x);
  return cert && X509_check_host(cert, host, 0, 0, NULL) == 1;
}

/* Servers: the pair whose certificate names the client's SNI name; the
 * first pair when none does, or without SNI. */
static int on_servername(SSL *ssl, int *alert, void *arg) {
  (void)alert;
  evr_tls_ctx_t *c = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name || c->nextra == 0 || cert_names(c->ssl_ctx, name)) return SSL_TLSEXT_ERR_OK;
  for (size_t i = 0; i < c->nextra; i++)
    if (cert_names(c->extra[i], name)) {
      SSL_set_SSL_CTX(ssl, c->extra[i]);
      break;
    }
  return SSL_TLSEXT_ERR_OK;
}

static int ctx_new(evr_tls_ctx_t **out, int server) {
  evr_tls_ctx_t *c = calloc(1, sizeof *c);
  if (!c) return EVR_ENOMEM;
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    free(c);
    return EVR_ENOMEM;
  }
  c->ssl_ctx = ssl_ctx_new(server);
  if (!c->ssl_ctx) {
    pthread_mutex_destroy(&c->lock);
    free(c);
    return EVR_ENOMEM;
  }
  atomic_init(&c->refs, 1);
  c->server = server;
  c->hs_timeout_ms = 10000;
  SSL_CTX_set_app_data(c->ssl_ctx, c);
  if (server) {
    SSL_CTX_set_tlsext_servername_callback(c->ssl_ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(c->ssl_ctx, c);
  }
  *out = c;
  return 0;
}

static int load_pair(SSL_CTX *x, const char *cert_file, const char *key_file) {
  if (SSL_CTX_use_certificate_chain_file(x, cert_file) != 1)
    return ctx_fail(EVR_ETLS, "certificate", cert_file);
  if (SSL_CTX_use_PrivateKey_file(x, key_file, SSL_FILETYPE_PEM) != 1)
    return ctx_fail(EVR_ETLS, "private key", key_file);
  if (SSL_CTX_check_private_key(x) != 1)
    return ctx_fail(EVR_ETLS, "private key does not match the certificate", cert_file);
  return 0;
}

int evr_tls_ctx_new_server(evr_tls_ctx_t **out, const char *cert_file,
                           const char *key_file) {
  if (!out || !cert_file || !key_file) return ctx_fail(EVR_EINVAL, "invalid argument", NULL);
  evr_tls_ctx_t *c;
  int rc = ctx_new(&c, 1);
  if (rc < 0) return ctx_fail(rc, "out of memory", NULL);
  if ((rc = load_pair(c->ssl_ctx, cert_file, key_file)) < 0) {
    evr_tls_ctx_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int evr_tls_ctx_add_server_cert(evr_tls_ctx_t *ctx, const char *cert_file,
                                const char *key_file) {
  if (!ctx || !ctx->server || !cert_file || !key_file)
    return ctx_fail(EVR_EINVAL, "invalid argument", NULL);
  if (ctx->nextra == EXTRA_MAX) return ctx_fail(EVR_ENOSPC, "too many certificates", NULL);
  SSL_CTX *x = ssl_ctx_new(1);
  if (!x) return ctx_fail(EVR_ENOMEM, "out of memory", NULL);
  int rc = load_pair(x, cert_file, key_file);
  if (rc < 0) {
    SSL_CTX_free(x);
    return rc;
  }
  /* The handshake goes on with x's certificate but asks x for ALPN. */
  if (ctx->alpn_len) SSL_CTX_set_alpn_select_cb(x, alpn_select, ctx);
  ctx->extra[ctx->nextra++] = x;
  return 0;
}

int evr_tls_ctx_set_alpn(evr_tls_ctx_t *ctx, const char *protocols) {
  if (!ctx || !protocols) return ctx_fail(EVR_EINVAL, "invalid argument", NULL);
  unsigned char wire[sizeof ctx->alpn];
  unsigned len = 0;
  for (const char *p = protocols; *p;) {
    size_t n = strcspn(p, ",");
    if (n == 0 || n > 255 || len + 1 + n > sizeof wire)
      return ctx_fail(EVR_EINVAL, "bad ALPN list", protocols);
    wire[len++] = (unsigned char)n;
    memcpy(wire + len, p, n);
    len += (unsigned)n;
    p += n;
    if (*p == ',') {
      p++;
      if (!*p) return ctx_fail(EVR_EINVAL, "bad ALPN list", protocols);
    }
  }
  if (len == 0) return ctx_fail(EVR_EINVAL, "bad ALPN list", protocols);
  memcpy(ctx->alpn, wire, len);
  ctx->alpn_len = len;
  if (ctx->server) {
    SSL_CTX_set_alpn_select_cb(ctx->ssl_ctx, alpn_select, ctx);
    for (size_t i = 0; i < ctx->nextra; i++)
      SSL_CTX_set_alpn_select_cb(ctx->extra[i], alpn_select, ctx);
  } else if (SSL_CTX_set_alpn_protos(ctx->ssl_ctx, ctx->alpn, ctx->alpn_len) != 0) {
    return ctx_fail(EVR_ENOMEM, "out of memory", NULL);
  }
  return 0;
}

/* The name a client's sessions are kept under: its SNI name, else the IP
 * address it verifies, else "". malloc'd. */
static char *sess_key(SSL *ssl) {
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name) return strdup(name);
  char *ip = X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(ssl));
  char *k = strdup(ip ? ip : "");
  OPENSSL_free(ip);
  return k;
}

/* A new session (TLS 1.3: a ticket, after the handshake) for a client with
 * resumption: replaces the one kept for its server. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
  evr_tls_ctx_t *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  if (!c || !c->resume) return 0;
  char *key = sess_key(ssl);
  if (!key) return 0;
  pthread_mutex_lock(&c->lock);
  struct sess_slot *slot = NULL, *oldest = &c->sess[0];
  for (size_t i = 0; i < SESS_MAX && !slot; i++) {
    struct sess_slot *e = &c->sess[i];
    if (e->name && strcmp(e->name, key) == 0) slot = e;
    else if (!e->name || (oldest->name && e->stamp < oldest->stamp)) oldest = e;
  }
  if (!slot) slot = oldest;
  SSL_SESSION_free(slot->sess); /* NULL is ignored */
  free(slot->name);
  slot->name = key;
  slot->sess = sess; /* the reference OpenSSL gives by our returning 1 */
  slot->stamp = ++c->sess_clock;
  pthread_mutex_unlock(&c->lock);
  return 1;
}

int evr_tls_ctx_set_resumption(evr_tls_ctx_t *ctx, int on) {
  if (!ctx) return ctx_fail(EVR_EINVAL, "invalid argument", NULL);
  if (ctx->server) {
    /* Stateless tickets, with keys made for this context. */
    if (on) SSL_CTX_clear_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
    else SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, on ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
    return 0;
  }
  pthread_mutex_lock(&ctx->lock);
  ctx->resume = on != 0;
  if (!on)
    for (size_t i = 0; i < SESS_MAX; i++) {
      SSL_SESSION_free(ctx->sess[i].sess);
      free(ctx->sess[i].name);
      ctx->sess[i] = (struct sess_slot){0};
    }
  pthread_mutex_unlock(&ctx->lock);
  SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, on ? SSL_SESS_CACHE_CLIENT |
                                                         SSL_SESS_CACHE_NO_INTERNAL_STORE
                                                   : SSL_SESS_CACHE_OFF);
  SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, on ? on_new_session : NULL);
  return 0;
}

/* Clients with resumption: offer the session kept for this server. */
static void offer_session(evr_tls_ctx_t *c, SSL *ssl) {
  if (c->server || !c->resume) return;
  char *key = sess_key(ssl);
  if (!key) return;
  pthread_mutex_lock(&c->lock);
  for (size_t i = 0; i < SESS_MAX; i++) {
    struct sess_slot *e = &c->sess[i];
    if (e->name && strcmp(e->name, key) == 0) {
      if (SSL_SESSION_is_resumable(e->sess)) SSL_set_session(ssl, e->sess);
      break;
    }
  }
  pthread_mutex_unlock(&c->lock);
  free(key);
}

int evr_tls_ctx_new_client(evr_tls_ctx_t **out, const char *ca_file) {
  if (!out) return ctx_fail(EVR_EINVAL, "invalid argument", NULL);
  evr_tls_ctx_t *c;
  int rc = ctx_new(&c, 0);
  if (rc < 0) return ctx_fail(rc, "out of memory", NULL);
  int ok = ca_file ? SSL_CTX_load_verify_locations(c->ssl_ctx, ca_file, NULL)
                   : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
  if (ok != 1) {
    rc = ctx_fail(EVR_ETLS, ca_file ? "CA file" : "the system's trust store", ca_file);
    evr_tls_ctx_free(c);
    return rc;
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

static void ctx_unref(evr_tls_ctx_t *ctx) {
  if (atomic_fetch_sub(&ctx->refs, 1) != 1) return;
  SSL_CTX_free(ctx->ssl_ctx);
  for (size_t i = 0; i < ctx->nextra; i++) SSL_CTX_free(ctx->extra[i]);
  for (size_t i = 0; i < SESS_MAX; i++) {
    SSL_SESSION_free(ctx->sess[i].sess);
    free(ctx->sess[i].name);
  }
  pthread_mutex_destroy(&ctx->lock);
  free(ctx);
}

/* Connections hold a reference: the owner may free a context they use. */
void evr_tls_ctx_free(evr_tls_ctx_t *ctx) {
  if (ctx) ctx_unref(ctx);
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
  offer_session(ctx, ssl);
  int rc = evr_stream_init(loop, &t->stream);
  if (rc < 0) {
    SSL_free(ssl);
    return rc;
  }
  atomic_fetch_add(&ctx->refs, 1);
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
  /* A connection closed without close_notify but without an error keeps
   * its session resumable (OpenSSL would mark it bad: TLS 1.1 and later
   * allow resuming it). */
  if ((t->flags & F_DONE) && !(t->flags & F_FAILED))
    SSL_set_shutdown(SSLP(t), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(SSLP(t));
  t->ssl = t->rbio = t->wbio = NULL;
  ctx_unref(t->ctx);
  t->ctx = NULL;
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

const char *evr_tls_server_name(const evr_tls_t *t) {
  if (!t || !t->ssl) return NULL;
  return SSL_get_servername(SSLP(t), TLSEXT_NAMETYPE_host_name);
}

const char *evr_tls_alpn(const evr_tls_t *t, size_t *len) {
  const unsigned char *p = NULL;
  unsigned n = 0;
  if (t && t->ssl && (t->flags & F_DONE)) SSL_get0_alpn_selected(SSLP(t), &p, &n);
  if (len) *len = p ? n : 0;
  return n ? (const char *)p : NULL;
}

int evr_tls_resumed(const evr_tls_t *t) {
  return t && t->ssl && (t->flags & F_DONE) && SSL_session_reused(SSLP(t));
}
