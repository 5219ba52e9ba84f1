/** @file evr/tcp.h
 *  Non-blocking stream sockets (TCP over IPv4/IPv6, and Unix-domain
 *  sockets) and listeners. See docs/net.md for the full contract.
 *
 * Streams (evr_stream_t):
 * - Reading: evr_stream_read_start() delivers data through a callback that
 *   gets a view into a buffer owned by the loop (64 KiB, shared by all
 *   streams of the loop; on io_uring, one of the loop's receive buffers:
 *   evr_loop_options_t). The view is valid only until the callback returns:
 *   copy what you keep, or write it with evr_stream_write_copy(). An idle
 *   stream therefore holds no read buffer at all.
 * - Writing: a write is tried at once when nothing is queued; what the kernel
 *   does not take is queued and sent later, queued buffers batched into one
 *   writev(). (On io_uring every write is queued and sent just before the
 *   loop's next wait.) evr_stream_write() does not copy (the caller keeps
 *   the buffers alive until the write callback); evr_stream_write_copy()
 *   copies only the part that could not be sent at once. Water marks report
 *   backpressure.
 * - Ending: evr_stream_shutdown() half-closes (FIN) after the queue drains;
 *   evr_stream_end() flushes, sends FIN and closes; evr_stream_abort() resets
 *   (RST) at once; evr_close() closes at once, cancelling queued writes.
 *   Sockets never raise SIGPIPE: writes fail with EVR_EPIPE instead.
 *
 * Every callback may close its own stream (or any other) with any of the
 * ending calls. Callbacks of write requests always run, exactly once, with 0,
 * a negative error, or EVR_ECANCELED when the stream was closed first; they
 * run before the stream's close callback.
 */
#ifndef EVR_TCP_H
#define EVR_TCP_H

#include <sys/types.h>
#include "evr/loop.h"
#include "evr/io.h"
#include "evr/timer.h"
#include "evr/addr.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A stream handle: see struct evr_stream. */
typedef struct evr_stream evr_stream_t;
/** A write request: see struct evr_write. */
typedef struct evr_write evr_write_t;
/** A listener handle: see struct evr_listener. */
typedef struct evr_listener evr_listener_t;
struct evr__connect; /* private: a pending evr_stream_connect_host() */

/** A buffer to write: base and length. */
typedef struct evr_buf {
  const void *base;   /**< The first byte. */
  size_t len;         /**< The number of bytes. */
} evr_buf_t;

/** A stream's read callback, run as data arrives.
 *  @param s      the stream.
 *  @param nread  > 0: buf[0..nread) is new data. EVR_EOF: the peer
 *                half-closed (reading stops by itself; writing may go on).
 *                Another negative value: an error (e.g. EVR_ECONNRESET;
 *                reading stops; the stream should be closed). Never 0.
 *  @param buf    the data, valid until the callback returns; NULL when
 *                nread < 0. */
typedef void (*evr_read_cb)(evr_stream_t *s, ssize_t nread, const char *buf);
/** A write request's callback, run once per accepted write, from the loop.
 *  @param req     the request; it may be submitted again or freed.
 *  @param status  0 (every byte handed to the kernel), a negative error, or
 *                 EVR_ECANCELED (the stream closed or aborted before the
 *                 bytes were sent). */
typedef void (*evr_write_cb)(evr_write_t *req, int status);
/** A connect's callback, run once per accepted evr_stream_connect() or
 *  evr_stream_connect_host().
 *  @param s       the stream.
 *  @param status  0 when connected; EVR_ECONNREFUSED, EVR_ETIMEDOUT,
 *                 EVR_ENETUNREACH, EVR_EHOSTUNREACH, EVR_EAI_*
 *                 (connect_host), ...; EVR_ECANCELED when the stream was
 *                 closed first. On failure the stream has no socket again:
 *                 connect again, or close it. */
typedef void (*evr_connect_cb)(evr_stream_t *s, int status);
/** A half-close's callback (evr_stream_shutdown()).
 *  @param s       the stream.
 *  @param status  0 once the FIN is sent, the error that prevented it, or
 *                 EVR_ECANCELED when the stream was closed first. */
typedef void (*evr_shutdown_cb)(evr_stream_t *s, int status);
/** A stream's backpressure callback (evr_stream_set_water_marks()).
 *  @param s      the stream.
 *  @param above  1 when the write queue grows above the high mark, 0 when
 *                it then falls back to the low mark or below. */
typedef void (*evr_water_cb)(evr_stream_t *s, int above);
/** The stream had no read or write traffic for its idle timeout. The stream
 *  is left as it is: close it, or do nothing to wait another period.
 *  @param s  the stream. */
typedef void (*evr_idle_cb)(evr_stream_t *s);

/** A write request, caller-owned (or internal, for evr_stream_write_copy).
 *  Zero it before its first submission (= {0}, calloc, memset); evr keeps
 *  its state from then on. */
struct evr_write {
  void *data;             /**< For the user; evr never reads it. */
  evr_stream_t *stream;   /**< The stream it was submitted to (read-only). */
  /** @cond PRIVATE */
  evr__qnode_t node;
  evr_write_cb cb;
  const evr_buf_t *bufs;  /* the caller's array, or small[] / the copy */
  unsigned nbufs, idx;    /* bufs[idx] is the first not fully sent */
  size_t off;             /* bytes of bufs[idx] already sent */
  size_t left;            /* bytes not yet sent */
  evr_buf_t small[2];     /* bufs are copied here when nbufs <= 2 */
  int status;             /* outcome, once complete */
  unsigned flags;
  /** @endcond */
};

/** A byte stream over a connected socket or a pipe (a handle). */
struct evr_stream {
  evr_handle_t base;          /**< The handle header. */
  size_t write_queue_size;    /**< Bytes queued and not yet sent (read-only). */
  /** @cond PRIVATE */
  /* the state is in net/stream.h */
  struct evr__ionode node;    /* the descriptor's registration */
  int error;                  /* sticky socket error, or a due outcome */
  uint32_t read_max;          /* 0: the whole loop buffer */
  uint8_t conn;               /* where the connection stands */
  uint8_t req;                /* the pending connect, shutdown or end */
  uint8_t timer_use;          /* what `timer` is armed for, if anything */
  uint8_t sflags;
  uint32_t low_water, high_water;
  evr_write_t *wq_tail;       /* the write queue (FIFO): its last request,
                                 NULL when empty (net/stream.c) */
  struct evr__tnode timer;    /* connect timeout, due outcome or idle timeout */
  evr_read_cb read_cb;
  union {                     /* the callback of `req` */
    evr_connect_cb connect;   /* evr_stream_connect() */
    struct evr__connect *host;/* evr_stream_connect_host(): its state,
                                 which holds the callback */
    evr_shutdown_cb shutdown; /* evr_stream_shutdown() */
    evr_close_cb end;         /* evr_stream_end() */
  } pending;
  evr_water_cb water_cb;
  evr_idle_cb idle_cb;
  uint64_t idle_ns;           /* 0: no idle timeout */
  /** @endcond */
};

/** The stream's descriptor. Reading it directly while the stream lives is
 *  for readiness backends only: on io_uring a stream that has read keeps
 *  received bytes in the loop's buffers until its reader takes them, and a
 *  receive being cancelled by evr_stream_read_stop() may still take more.
 *  @param s  the stream.
 *  @return the connected, adopted or accepted socket (or pipe), or -1
 *          (NULL, none yet, still connecting, after a failed connect, or
 *          closed). */
EVR_API int evr_stream_fd(const evr_stream_t *s);

/** Initialise a stream handle (no socket yet). The first stream of a loop
 *  allocates what the loop's streams share (freed with the loop). Loop
 *  thread only, as every stream function.
 *  @param loop  the loop.
 *  @param s     the stream.
 *  @return 0; EVR_EINVAL (NULL argument); EVR_ENOMEM. */
EVR_API int evr_stream_init(evr_loop_t *loop, evr_stream_t *s);

/** Adopt a connected stream descriptor (a socket from accept, a socketpair
 *  end, a pipe): it is made non-blocking and close-on-exec, and from now on
 *  the stream owns it (closing the stream closes it). The descriptor is
 *  checked before anything is changed: on error it is still the caller's,
 *  its flags as they were.
 *  @param s   an initialised stream without a socket.
 *  @param fd  the descriptor.
 *  @return 0; EVR_EINVAL (NULL, closing stream, fd < 0, a socket that is
 *          not SOCK_STREAM, a listening socket); EVR_EBUSY (already has an
 *          fd, or connecting); EVR_EBADF (fd is not open); the error of
 *          making it non-blocking and close-on-exec. */
EVR_API int evr_stream_open(evr_stream_t *s, int fd);

/** Connect to addr (IPv4, IPv6 or Unix). The pending connect keeps the
 *  loop alive until cb has run.
 *  @param s           an initialised stream without a socket.
 *  @param addr        the address to connect to.
 *  @param timeout_ms  bounds the connect (EVR_ETIMEDOUT); 0: no timeout.
 *  @param cb          the callback.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL, closing stream, no cb, an address of another family);
 *          EVR_EBUSY (already open or connecting); socket() errors such as
 *          EVR_EMFILE. An immediate refusal is reported through cb. */
EVR_API int evr_stream_connect(evr_stream_t *s, const evr_addr_t *addr,
                               unsigned timeout_ms, evr_connect_cb cb);

/** Resolve host on the thread pool, then try every address in the
 *  resolver's order until one connects. Closing the stream cancels it.
 *  @param s           an initialised stream without a socket.
 *  @param host        a host name or numeric literal, NUL-terminated.
 *  @param port        the port, in host order.
 *  @param timeout_ms  bounds the whole operation, resolution included
 *                     (EVR_ETIMEDOUT); 0: no timeout.
 *  @param cb          the callback.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL or empty argument, closing stream); EVR_EBUSY (already
 *          open or connecting); EVR_ENOMEM; the thread pool's errors (see
 *          evr_work_submit()). */
EVR_API int evr_stream_connect_host(evr_stream_t *s, const char *host,
                                    uint16_t port, unsigned timeout_ms,
                                    evr_connect_cb cb);

/** Start delivering data to cb. A reading stream is active: it keeps the
 *  loop alive while referenced.
 *  @param s   an open stream.
 *  @param cb  the read callback.
 *  @return 0; EVR_EINVAL (NULL, no cb, closing stream, evr_stream_end()
 *          called); EVR_ENOTCONN (no fd or still connecting); EVR_EALREADY
 *          (already reading: use stop first); EVR_EOF (EOF was already
 *          delivered); the stream's error, once one is known (e.g.
 *          EVR_ECONNRESET); the backend's error. */
EVR_API int evr_stream_read_start(evr_stream_t *s, evr_read_cb cb);

/** Deliver at most max bytes per read callback (default, and ceiling: the
 *  loop's 64 KiB buffer, or on io_uring a receive buffer). Lets a relay
 *  bound what one read can add to a write queue.
 *  @param s    the stream.
 *  @param max  the most bytes per callback.
 *  @return 0; EVR_EINVAL (NULL or max 0). */
EVR_API int evr_stream_set_read_max(evr_stream_t *s, size_t max);

/** Stop reading. Idempotent. Data already in the kernel stays there.
 *  @param s  the stream.
 *  @return 0; EVR_EINVAL (NULL or not a stream). */
EVR_API int evr_stream_read_stop(evr_stream_t *s);

/** Queue bufs[0..nbufs) for writing, without copying: the memory they point
 *  to must stay valid and unchanged until cb runs (the bufs array itself
 *  may be reused at once). cb may be NULL. Callbacks of one stream run in
 *  submission order whatever the sizes: a write of zero bytes (every
 *  buffer empty) completes after the writes submitted before it.
 *  req must be zeroed before its first submission. It is pending from a
 *  successful call until just before its callback runs, and may be
 *  submitted again from then on (also from inside the callback), not
 *  before; it needs no zeroing again. A pending write keeps the loop
 *  alive.
 *  @param req    the request.
 *  @param s      an open stream.
 *  @param bufs   the buffers.
 *  @param nbufs  the number of buffers (at least 1).
 *  @param cb     the callback; may be NULL.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL, nbufs 0, a buffer with a NULL base and a length, a total
 *          above SIZE_MAX, closing stream, req still pending, on this
 *          stream or another); EVR_ENOTCONN; EVR_EPIPE (after
 *          shutdown/end); a socket error already known or met by this
 *          call's attempt to send (e.g. EVR_ECONNRESET); EVR_ENOMEM (more
 *          than two buffers were left to queue); the backend's error. On
 *          error the request is not queued and a pending one is left as it
 *          was. */
EVR_API int evr_stream_write(evr_write_t *req, evr_stream_t *s,
                             const evr_buf_t bufs[], unsigned nbufs,
                             evr_write_cb cb);

/** Write len bytes from data, copying what cannot be sent at once (so data
 *  may be reused when this returns). Allocates only when bytes must be
 *  queued. On io_uring, bytes of the view a read callback is running on
 *  (within its buf[0..nread)) are not copied: the loop's receive buffer
 *  that holds them stays out of the receive ring until they are sent (at
 *  most half of the ring's buffers are lent so at a time; past that the
 *  bytes are copied). Errors of the queued part are reported through the stream's read
 *  callback (if reading) and the next write calls.
 *  @param s     an open stream.
 *  @param data  the bytes; may be NULL when len is 0.
 *  @param len   the number of bytes.
 *  @return 0; the errors of evr_stream_write(); EVR_ENOMEM. */
EVR_API int evr_stream_write_copy(evr_stream_t *s, const void *data, size_t len);

/** Half-close: once every queued byte is sent, shutdown(SHUT_WR) (the peer
 *  reads EOF). Reading goes on; later writes fail with EVR_EPIPE.
 *  @param s   an open stream.
 *  @param cb  the callback; may be NULL.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL, closing stream); EVR_ENOTCONN; EVR_EALREADY (shutdown or
 *          end already requested). */
EVR_API int evr_stream_shutdown(evr_stream_t *s, evr_shutdown_cb cb);

/** Graceful close: stop reading, send every queued byte, send FIN, then
 *  close the handle (close_cb runs as for evr_close()). If the queue cannot
 *  drain (peer reset, or the idle timeout fires) the pending writes fail and
 *  the stream closes anyway. A stream that is not open (no socket yet, or
 *  connecting) is closed as by evr_close().
 *  @param s         the stream.
 *  @param close_cb  runs once the stream is closed; may be NULL.
 *  @return 0; EVR_EINVAL (NULL or not a stream); EVR_EALREADY (closing,
 *          or shutdown or end already requested). */
EVR_API int evr_stream_end(evr_stream_t *s, evr_close_cb close_cb);

/** Abortive close: the peer gets a reset (SO_LINGER 0 on sockets), queued
 *  writes get EVR_ECANCELED, the handle closes as with evr_close().
 *  @param s         the stream.
 *  @param close_cb  runs once the stream is closed; may be NULL.
 *  @return 0; EVR_EINVAL (NULL or not a stream); EVR_EALREADY (already
 *          closing). */
EVR_API int evr_stream_abort(evr_stream_t *s, evr_close_cb close_cb);

/** Backpressure: cb(s, 1) when write_queue_size grows above high, cb(s, 0)
 *  when it falls back to low or below (low <= high <= UINT32_MAX: marks
 *  up to 4 GiB - 1). high 0 disables.
 *  @param s     the stream.
 *  @param low   the low mark in bytes.
 *  @param high  the high mark in bytes; 0 disables the reports.
 *  @param cb    the callback; may be NULL only when high is 0.
 *  @return 0; EVR_EINVAL (NULL, low > high, high above UINT32_MAX, no cb). */
EVR_API int evr_stream_set_water_marks(evr_stream_t *s, size_t low, size_t high,
                                       evr_water_cb cb);

/** Idle timeout: cb runs when neither a read nor a write made progress for
 *  ms milliseconds (0 disables). Traffic re-arms it without allocating.
 *  The timeout counts once the stream is open.
 *  @param s   the stream.
 *  @param ms  the timeout in milliseconds; 0 disables it.
 *  @param cb  the callback; may be NULL only when ms is 0.
 *  @return 0; EVR_EINVAL (NULL, closing stream, no cb). */
EVR_API int evr_stream_set_idle_timeout(evr_stream_t *s, uint64_t ms,
                                        evr_idle_cb cb);

/** Bytes queued and not yet handed to the kernel (write_queue_size).
 *  @param s  the stream.
 *  @return the byte count; 0 for NULL. */
EVR_API size_t evr_stream_write_queue_size(const evr_stream_t *s);

/** TCP_NODELAY on/off.
 *  @param s   an open stream.
 *  @param on  1 to disable Nagle's algorithm, 0 to enable it.
 *  @return 0; EVR_EINVAL (NULL or not a stream); EVR_ENOTCONN (no fd);
 *          EVR_ENOTSUP (not a TCP socket); the error of setsockopt(). */
EVR_API int evr_stream_nodelay(evr_stream_t *s, int on);

/** SO_KEEPALIVE on/off; idle_s > 0 also sets the idle time before probes
 *  where the system allows it.
 *  @param s       an open stream.
 *  @param on      1 to enable keepalive probes, 0 to disable them.
 *  @param idle_s  seconds of idleness before the first probe; 0 keeps the
 *                 system's setting.
 *  @return 0; EVR_EINVAL (NULL or not a stream); EVR_ENOTCONN (no fd);
 *          EVR_ENOTSUP (not a TCP socket); the error of setsockopt(). */
EVR_API int evr_stream_keepalive(evr_stream_t *s, int on, unsigned idle_s);

/** @{ */
/** The peer's (evr_stream_peername()) or the local (evr_stream_sockname())
 *  address.
 *  @param s    an open stream.
 *  @param out  receives the address.
 *  @return 0; EVR_EINVAL (NULL, not a stream); EVR_ENOTCONN (no fd); the
 *          error of getpeername() or getsockname() (e.g. EVR_ENOTSOCK for
 *          a pipe). */
EVR_API int evr_stream_peername(const evr_stream_t *s, evr_addr_t *out);
EVR_API int evr_stream_sockname(const evr_stream_t *s, evr_addr_t *out);
/** @} */

/* ---- listeners ---- */

/** A listener's callback, run in the poll phase for each accepted
 *  connection.
 *  @param l   the listener.
 *  @param fd  >= 0: a new connection, non-blocking and close-on-exec, now
 *             owned by the callback (adopt it with evr_stream_open(), or
 *             close it). < 0: an error that did not stop the listener, e.g.
 *             EVR_EMFILE or EVR_ENFILE when descriptors ran out (the
 *             listener then sheds pending connections and pauses briefly
 *             instead of spinning; it recovers by itself). */
typedef void (*evr_accept_cb)(evr_listener_t *l, int fd);

/** Flags of evr_listen_options_t. */
enum {
  EVR_LISTEN_REUSEPORT = 0x1, /**< SO_REUSEPORT: several listeners, one port. */
  EVR_LISTEN_V6ONLY = 0x2,    /**< IPv6 only (default: the system's choice). */
  EVR_LISTEN_DUALSTACK = 0x4, /**< IPv6 socket accepting IPv4 too. */
  EVR_LISTEN_NO_UNLINK = 0x8  /**< Unix: never remove a stale socket file. */
};

/** Options of evr_listen() and evr_listener_open(); NULL for defaults. */
typedef struct evr_listen_options {
  int backlog;           /**< The listen() backlog; 0: SOMAXCONN. */
  unsigned flags;        /**< EVR_LISTEN_* flags. */
  unsigned accept_batch; /**< Accepts per readiness event; 0: 64. */
} evr_listen_options_t;

/** A listening socket (a handle) that hands accepted connections to its
 *  callback. */
struct evr_listener {
  evr_handle_t base;     /**< The handle header. */
  int fd;                /**< The listening socket, or -1 (read-only). */
  uint64_t accepted;     /**< Connections handed to the callback (read-only). */
  /** Connections dropped for lack of descriptors (read-only). */
  uint64_t shed;
  /** @cond PRIVATE */
  struct evr__ionode node; /* the listening socket's registration */
  struct evr__tnode pause; /* EMFILE back-off */
  evr_accept_cb cb;
  unsigned batch;
  int spare_fd;          /* reserve descriptor for shedding under EMFILE */
  char *unlink_path;     /* Unix socket file we created */
  unsigned lflags;
  /** @endcond */
};

/** Initialise a listener handle (no socket yet). Loop thread only, as
 *  every listener function.
 *  @param loop  the loop.
 *  @param l     the listener.
 *  @return 0; EVR_EINVAL (NULL argument). */
EVR_API int evr_listener_init(evr_loop_t *loop, evr_listener_t *l);

/** Bind to addr (port 0 picks a free port: see evr_listener_sockname()),
 *  listen and start accepting. SO_REUSEADDR is set on TCP sockets. For a
 *  Unix path whose file exists: if it is a socket nobody listens on (a
 *  stale file from a dead process) it is removed and replaced, unless
 *  EVR_LISTEN_NO_UNLINK; if a process listens on it, EVR_EADDRINUSE; if it
 *  is not a socket, EVR_EADDRINUSE and the file is left alone. The file is
 *  removed when the listener closes, but only by the process that called
 *  evr_listen() and only if the path still names that same file (device and
 *  inode): a forked child closing its copy of the listener, or a file put
 *  at the path meanwhile, leaves the path as it is.
 *  A listening listener is active: it keeps the loop alive while
 *  referenced.
 *  @param l     an initialised listener without a socket.
 *  @param addr  the address to bind (IPv4, IPv6 or Unix).
 *  @param opts  NULL for defaults.
 *  @param cb    the callback.
 *  @return 0; EVR_EINVAL (NULL, closing listener, already listening, no
 *          cb, an address of another family, a negative backlog, unknown
 *          or contradictory flags, V6ONLY or DUALSTACK on a non-IPv6
 *          address); EVR_EADDRINUSE; EVR_EACCES; EVR_ENOTSUP (REUSEPORT
 *          unsupported, or on a Unix socket); EVR_ENOMEM; the errors of
 *          socket(), setsockopt(), bind() and listen(). */
EVR_API int evr_listen(evr_listener_t *l, const evr_addr_t *addr,
                       const evr_listen_options_t *opts, evr_accept_cb cb);

/** Adopt a descriptor that is already bound and listening (systemd socket
 *  activation, a parent process). It is made non-blocking and close-on-exec;
 *  the listener owns it from now on. On error the caller still owns it and
 *  its flags are as they were. A Unix socket file behind it is never
 *  removed by evr.
 *  @param l     an initialised listener without a socket.
 *  @param fd    a bound, listening stream socket.
 *  @param opts  NULL for defaults (backlog and the address flags do not
 *               apply).
 *  @param cb    the callback.
 *  @return 0; EVR_EINVAL (NULL, closing listener, already listening, no
 *          cb, not a listening stream socket, bad opts); EVR_EBADF (fd < 0
 *          or not open); EVR_EEXIST (the loop already watches fd);
 *          EVR_ENOMEM. */
EVR_API int evr_listener_open(evr_listener_t *l, int fd,
                              const evr_listen_options_t *opts, evr_accept_cb cb);

/** Stop accepting (the socket stays bound; the kernel keeps queueing up to
 *  the backlog). A paused listener is inactive: it does not keep the loop
 *  alive. Idempotent.
 *  @param l  a listening listener.
 *  @return 0; EVR_EINVAL (NULL, closing, or not listening). */
EVR_API int evr_listener_pause(evr_listener_t *l);
/** Resume accepting after evr_listener_pause(). Idempotent.
 *  @param l  a listening listener.
 *  @return 0; EVR_EINVAL (NULL, closing, or not listening); the backend's
 *          error (the listener then stays paused). */
EVR_API int evr_listener_resume(evr_listener_t *l);

/** The bound address; for port 0, with the port the system picked.
 *  @param l    a listening listener.
 *  @param out  receives the address.
 *  @return 0; EVR_EINVAL (NULL, or no socket); the error of
 *          getsockname(). */
EVR_API int evr_listener_sockname(const evr_listener_t *l, evr_addr_t *out);

#ifdef __cplusplus
}
#endif
#endif
