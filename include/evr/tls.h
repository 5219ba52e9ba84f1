/** @file evr/tls.h
 *  TLS over an evr stream, on OpenSSL 3 (built when EVR_TLS is on).
 *  See docs/net.md, "TLS".
 *
 * An evr_tls_t embeds the evr_stream_t it runs over: initialise it with
 * evr_tls_init(), connect or accept its `stream` as any stream (or adopt a
 * connected descriptor with evr_stream_open()), then evr_tls_start() runs
 * the handshake. From then on use only the evr_tls_* calls on it; the
 * stream's own read, write and ending calls belong to the TLS layer.
 *
 * Records go through memory BIOs: every byte is read and written by the
 * stream, so TLS works on every backend. Renegotiation is refused.
 *
 * Every callback may close its TLS object with evr_tls_close().
 */
#ifndef EVR_TLS_H
#define EVR_TLS_H

#include "evr/tcp.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A TLS context: certificates, keys, trust and options shared by many
 *  connections (opaque; one OpenSSL SSL_CTX). */
typedef struct evr_tls_ctx evr_tls_ctx_t;
/** A TLS connection over a stream: see struct evr_tls. */
typedef struct evr_tls evr_tls_t;

/** The handshake's outcome.
 *  @param t       the connection.
 *  @param status  0 when done; EVR_ETLS (a protocol or verification error:
 *                 evr_tls_reason() says which); EVR_ETIMEDOUT (the
 *                 handshake timeout); EVR_ECONNRESET (the peer closed
 *                 during the handshake); the stream's error. On failure
 *                 close the connection. */
typedef void (*evr_tls_handshake_cb)(evr_tls_t *t, int status);
/** Decrypted data, with the contract of evr_read_cb: nread > 0 bytes in
 *  buf, valid until the callback returns; EVR_EOF when the peer sent
 *  close_notify (reading stops; writing may go on); another negative value
 *  on error (EVR_ETLS, e.g. a truncated stream without close_notify, or
 *  the stream's error; reading stops). Never 0. */
typedef void (*evr_tls_read_cb)(evr_tls_t *t, ssize_t nread, const char *buf);
/** Runs once the connection is closed and its memory may be freed. */
typedef void (*evr_tls_close_cb)(evr_tls_t *t);

/** A TLS connection. The caller owns the memory (until the close
 *  callback). */
struct evr_tls {
  evr_stream_t stream;  /**< The underlying stream (first member). */
  void *data;           /**< For the user; evr never reads it. */
  /** @cond PRIVATE */
  evr_timer_t timer;    /* the handshake timeout, or a deferred drain */
  void *ssl;            /* SSL * */
  void *rbio, *wbio;    /* BIO *: records in, records out */
  evr_tls_ctx_t *ctx;
  evr_tls_handshake_cb hs_cb;
  evr_tls_read_cb read_cb;
  evr_tls_close_cb close_cb;
  unsigned flags;
  char reason[160];
  /** @endcond */
};

/** A server context with a certificate chain file and its private key
 *  file (PEM). TLS 1.2 and later.
 *  @param out        the context.
 *  @param cert_file  the certificate chain, leaf first.
 *  @param key_file   the private key.
 *  @return 0; EVR_EINVAL (NULL argument); EVR_ENOMEM; EVR_ETLS (a file
 *          could not be loaded, or the key does not match). */
EVR_API int evr_tls_ctx_new_server(evr_tls_ctx_t **out, const char *cert_file,
                                   const char *key_file);

/** A client context that verifies the peer's certificate against ca_file
 *  (PEM), or the system's trust store when ca_file is NULL. TLS 1.2 and
 *  later.
 *  @param out      the context.
 *  @param ca_file  the trusted CAs, or NULL.
 *  @return 0; EVR_EINVAL; EVR_ENOMEM; EVR_ETLS (ca_file not loadable). */
EVR_API int evr_tls_ctx_new_client(evr_tls_ctx_t **out, const char *ca_file);

/** Add another certificate and key to a server context. During each
 *  handshake the server presents the first pair, in the order added,
 *  whose certificate names the client's SNI name (its subjectAltNames,
 *  wildcards included); the pair of evr_tls_ctx_new_server() when none
 *  does or the client sends no name. At most 64 more pairs.
 *  @param ctx        a server context.
 *  @param cert_file  the certificate chain, leaf first.
 *  @param key_file   the private key.
 *  @return 0; EVR_EINVAL (NULL, or a client context); EVR_ENOSPC (64
 *          already); EVR_ENOMEM; EVR_ETLS (a file could not be loaded, or
 *          the key does not match: evr_tls_ctx_error() says which). */
EVR_API int evr_tls_ctx_add_server_cert(evr_tls_ctx_t *ctx, const char *cert_file,
                                        const char *key_file);

/** Application-layer protocol negotiation (ALPN). A client offers the
 *  protocols listed; a server picks the first of its own, in its order of
 *  preference, that the client offers. Without a common protocol the handshake
 *  goes on without one (the server then sees evr_tls_alpn() NULL and may
 *  close). Applies to later connections.
 *  @param ctx        the context.
 *  @param protocols  comma-separated names, e.g. "h2,http/1.1" (each 1 to
 *                    255 bytes, 255 bytes in all with a length byte each).
 *  @return 0; EVR_EINVAL (NULL, an empty name, too long); EVR_ENOMEM. */
EVR_API int evr_tls_ctx_set_alpn(evr_tls_ctx_t *ctx, const char *protocols);

/** Session resumption, on by default for servers, off for clients.
 *  A server issues session tickets (stateless, with keys of this context;
 *  contexts in other processes do not share them). A client keeps the
 *  newest session for each server name (the SNI name, or the IP address
 *  verified) of up to 32 servers, replacing the least recently stored, and
 *  offers it on its next connection to that server; connections of any
 *  loop and thread may share the context. A ticket may be offered more
 *  than once. evr_tls_resumed() tells whether a handshake resumed.
 *  @param ctx  the context.
 *  @param on   1 to resume, 0 not to (a client drops what it kept).
 *  @return 0; EVR_EINVAL (NULL). */
EVR_API int evr_tls_ctx_set_resumption(evr_tls_ctx_t *ctx, int on);

/** Why the last failed context call of the calling thread
 *  (evr_tls_ctx_new_server(), evr_tls_ctx_new_client(),
 *  evr_tls_ctx_add_server_cert(), evr_tls_ctx_set_alpn(),
 *  evr_tls_ctx_set_resumption()) failed, e.g. "private key /etc/k.pem:
 *  no such file". Successful calls leave it as it was.
 *  @return the reason, or "" when none failed. */
EVR_API const char *evr_tls_ctx_error(void);

/** Bound each later-started handshake to ms milliseconds (default 10000;
 *  0: no bound).
 *  @param ctx  the context.
 *  @param ms   the bound.
 *  @return 0; EVR_EINVAL (NULL). */
EVR_API int evr_tls_ctx_set_handshake_timeout(evr_tls_ctx_t *ctx, unsigned ms);

/** Free a context. Connections made from it keep what they need: it may be
 *  freed while they live. NULL is ignored.
 *  @param ctx  the context. */
EVR_API void evr_tls_ctx_free(evr_tls_ctx_t *ctx);

/** Initialise a connection and its stream (no socket yet).
 *  @param loop         the loop.
 *  @param t            the connection.
 *  @param ctx          a server or client context.
 *  @param server_name  client only: sent as SNI and checked against the
 *                      peer's certificate (DNS name or IP address); NULL
 *                      checks the chain only. Copied.
 *  @return 0; EVR_EINVAL; EVR_ENOMEM. On error nothing is left to close. */
EVR_API int evr_tls_init(evr_loop_t *loop, evr_tls_t *t, evr_tls_ctx_t *ctx,
                         const char *server_name);

/** Start the handshake over the connected stream; cb runs exactly once,
 *  never inside this call (unless the connection is closed first).
 *  @param t   an initialised connection whose stream is connected.
 *  @param cb  the handshake callback.
 *  @return 0; EVR_EINVAL (NULL, no cb, already started, closing);
 *          the errors of evr_stream_read_start() (e.g. EVR_ENOTCONN). */
EVR_API int evr_tls_start(evr_tls_t *t, evr_tls_handshake_cb cb);

/** Deliver decrypted data to cb; may be called before the handshake is
 *  done (data then follows it). Data already decrypted or buffered is
 *  delivered from the loop, never inside this call.
 *  @param t   the connection.
 *  @param cb  the read callback.
 *  @return 0; EVR_EINVAL; EVR_EALREADY (already reading); EVR_EOF
 *          (close_notify already delivered). */
EVR_API int evr_tls_read_start(evr_tls_t *t, evr_tls_read_cb cb);

/** Stop reading. Idempotent.
 *  @param t  the connection.
 *  @return 0; EVR_EINVAL. */
EVR_API int evr_tls_read_stop(evr_tls_t *t);

/** Encrypt len bytes and queue the records on the stream (a copy: data
 *  may be reused at once). There is no callback: a failure of the queued
 *  part is reported through the read callback (if reading) and later
 *  calls, as for evr_stream_write_copy(); evr_tls_write_queue_size() gives
 *  the bytes of records not yet sent, and water marks set on t->stream
 *  with evr_stream_set_water_marks() apply to them, for backpressure.
 *  @param t     the connection.
 *  @param data  the bytes; may be NULL when len is 0.
 *  @param len   the number of bytes.
 *  @return 0; EVR_EINVAL; EVR_ENOTCONN (handshake not done); EVR_EPIPE
 *          (after evr_tls_shutdown()); EVR_ETLS; the stream's errors. */
EVR_API int evr_tls_write(evr_tls_t *t, const void *data, size_t len);

/** Record bytes queued on the stream and not yet sent.
 *  @param t  the connection.
 *  @return the count (0 for NULL). */
EVR_API size_t evr_tls_write_queue_size(const evr_tls_t *t);

/** Send close_notify after the queued records, then half-close the
 *  stream (FIN). Reading goes on; the peer reads EVR_EOF.
 *  @param t   the connection.
 *  @param cb  as evr_stream_shutdown()'s (its stream is t's); may be NULL.
 *  @return 0; EVR_EINVAL; EVR_ENOTCONN (handshake not done);
 *          EVR_EALREADY. */
EVR_API int evr_tls_shutdown(evr_tls_t *t, evr_shutdown_cb cb);

/** Close at once (without close_notify: shut down first for a clean
 *  end), cancelling queued records and a pending handshake (whose
 *  callback then does not run). cb runs from the loop's close phase.
 *  @param t   the connection.
 *  @param cb  the close callback; may be NULL.
 *  @return 0; EVR_EINVAL (NULL, already closing). */
EVR_API int evr_tls_close(evr_tls_t *t, evr_tls_close_cb cb);

/** The reason of the last EVR_ETLS of this connection.
 *  @param t  the connection.
 *  @return OpenSSL's reason, or the certificate verification error, or ""
 *          when none. */
EVR_API const char *evr_tls_reason(const evr_tls_t *t);

/** The server name (SNI) the client sent, on either side.
 *  @param t  the connection.
 *  @return the name, valid until the connection is closed; NULL when none
 *          (or, on a server, before the client's hello). */
EVR_API const char *evr_tls_server_name(const evr_tls_t *t);

/** The protocol agreed by ALPN (evr_tls_ctx_set_alpn()).
 *  @param t    the connection.
 *  @param len  receives its length (0 when none); may be NULL.
 *  @return the name, not NUL-terminated, valid until the connection is
 *          closed; NULL when none was agreed or the handshake is not
 *          done. */
EVR_API const char *evr_tls_alpn(const evr_tls_t *t, size_t *len);

/** Whether the handshake resumed a session (evr_tls_ctx_set_resumption()).
 *  @param t  the connection.
 *  @return 1 when it did; 0 when it did not or is not done. */
EVR_API int evr_tls_resumed(const evr_tls_t *t);

/** The negotiated protocol version.
 *  @param t  the connection.
 *  @return "TLSv1.3", "TLSv1.2", or NULL before the handshake is done. */
EVR_API const char *evr_tls_version(const evr_tls_t *t);

#ifdef __cplusplus
}
#endif
#endif
