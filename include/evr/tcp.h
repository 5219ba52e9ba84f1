/* evr/tcp.h: non-blocking stream sockets (TCP over IPv4/IPv6, and Unix-domain
 * sockets) and listeners. See docs/net.md for the full contract.
 *
 * Streams (evr_stream_t)
 *   Reading: evr_stream_read_start() delivers data through a callback that
 *   gets a view into a buffer owned by the loop (64 KiB, shared by all
 *   streams of the loop). The view is valid only until the callback returns:
 *   copy what you keep, or write it with evr_stream_write_copy(). An idle
 *   stream therefore holds no read buffer at all.
 *   Writing: a write is tried at once when nothing is queued; what the kernel
 *   does not take is queued and sent later, queued buffers batched into one
 *   writev(). evr_stream_write() does not copy (the caller keeps the buffers
 *   alive until the write callback); evr_stream_write_copy() copies only the
 *   part that could not be sent at once. Water marks report backpressure.
 *   Ending: evr_stream_shutdown() half-closes (FIN) after the queue drains;
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

typedef struct evr_stream evr_stream_t;
typedef struct evr_write evr_write_t;
typedef struct evr_listener evr_listener_t;
struct evr__connect; /* private: a pending evr_stream_connect_host() */

/* A buffer to write: base and length. */
typedef struct evr_buf {
  const void *base;
  size_t len;
} evr_buf_t;

/* nread > 0: buf[0..nread) is new data, valid until the callback returns.
 * nread == EVR_EOF: the peer half-closed (reading stops by itself; writing
 * may go on). nread < 0: an error (e.g. EVR_ECONNRESET; reading stops; the
 * stream should be closed). nread is never 0. */
typedef void (*evr_read_cb)(evr_stream_t *s, ssize_t nread, const char *buf);
/* status: 0 (every byte handed to the kernel), a negative error, or
 * EVR_ECANCELED (the stream closed or aborted before the bytes were sent). */
typedef void (*evr_write_cb)(evr_write_t *req, int status);
/* status: 0 when connected; EVR_ECONNREFUSED, EVR_ETIMEDOUT,
 * EVR_ENETUNREACH, EVR_EHOSTUNREACH, EVR_EAI_* (connect_host), ...;
 * EVR_ECANCELED when the stream was closed first. */
typedef void (*evr_connect_cb)(evr_stream_t *s, int status);
/* status: 0 once the FIN is sent, or the error that prevented it. */
typedef void (*evr_shutdown_cb)(evr_stream_t *s, int status);
/* above: 1 when the write queue grows above the high mark, 0 when it then
 * falls back to the low mark or below. */
typedef void (*evr_water_cb)(evr_stream_t *s, int above);
/* The stream had no read or write traffic for its idle timeout. The stream
 * is left as it is: close it, or do nothing to wait another period. */
typedef void (*evr_idle_cb)(evr_stream_t *s);

/* A write request, caller-owned (or internal, for evr_stream_write_copy).
 * Zero it before its first submission (= {0}, calloc, memset); evr keeps
 * its state from then on. */
struct evr_write {
  /* public */
  void *data;
  /* read-only */
  evr_stream_t *stream;
  /* private */
  evr__qnode_t node;
  evr_write_cb cb;
  const evr_buf_t *bufs;  /* the caller's array, or small[] / the copy */
  unsigned nbufs, idx;    /* bufs[idx] is the first not fully sent */
  size_t off;             /* bytes of bufs[idx] already sent */
  size_t left;            /* bytes not yet sent */
  evr_buf_t small[2];     /* bufs are copied here when nbufs <= 2 */
  int status;             /* outcome, once complete */
  unsigned flags;
};

struct evr_stream {
  evr_handle_t base;
  /* read-only */
  size_t write_queue_size;    /* bytes queued and not yet sent */
  /* private: the state is in net/stream.h */
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
};

/** The stream's descriptor: the connected, adopted or accepted socket (or
 *  pipe), or -1 (none yet, still connecting, after a failed connect, or
 *  closed). */
EVR_API int evr_stream_fd(const evr_stream_t *s);

/** Initialise a stream handle (no socket yet). The first stream of a loop
 *  allocates what the loop's streams share (freed with the loop).
 *  @return 0; EVR_EINVAL; EVR_ENOMEM. */
EVR_API int evr_stream_init(evr_loop_t *loop, evr_stream_t *s);

/** Adopt a connected stream descriptor (a socket from accept, a socketpair
 *  end, a pipe): it is made non-blocking and close-on-exec, and from now on
 *  the stream owns it (closing the stream closes it). The descriptor is
 *  checked before anything is changed: on error it is still the caller's,
 *  its flags as they were.
 *  @return 0; EVR_EINVAL (NULL, fd < 0, a socket that is not SOCK_STREAM,
 *          a listening socket); EVR_EBUSY (already has an fd); EVR_EBADF. */
EVR_API int evr_stream_open(evr_stream_t *s, int fd);

/** Connect to addr (IPv4, IPv6 or Unix). timeout_ms 0 means no timeout.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL;
 *          EVR_EBUSY (already open or connecting); socket() errors such as
 *          EVR_EMFILE. An immediate refusal is reported through cb. */
EVR_API int evr_stream_connect(evr_stream_t *s, const evr_addr_t *addr,
                               unsigned timeout_ms, evr_connect_cb cb);

/** Resolve host on the thread pool, then try every address in the
 *  resolver's order until one connects. timeout_ms (0: none) bounds the
 *  whole operation, resolution included. Closing the stream cancels it.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL;
 *          EVR_EBUSY; EVR_ENOMEM. */
EVR_API int evr_stream_connect_host(evr_stream_t *s, const char *host,
                                    uint16_t port, unsigned timeout_ms,
                                    evr_connect_cb cb);

/** Start delivering data to cb. @return 0; EVR_EINVAL; EVR_ENOTCONN (no fd
 *  or still connecting); EVR_EALREADY (already reading: use stop first);
 *  EVR_EOF (EOF was already delivered). */
EVR_API int evr_stream_read_start(evr_stream_t *s, evr_read_cb cb);

/** Deliver at most max bytes per read callback (default, and ceiling: the
 *  loop's 64 KiB buffer). Lets a relay bound what one read can add to a
 *  write queue. @return 0; EVR_EINVAL (NULL or max 0). */
EVR_API int evr_stream_set_read_max(evr_stream_t *s, size_t max);

/** Stop reading. Idempotent. Data already in the kernel stays there. */
EVR_API int evr_stream_read_stop(evr_stream_t *s);

/** Queue bufs[0..nbufs) for writing, without copying: the memory they point
 *  to must stay valid and unchanged until cb runs (the bufs array itself
 *  may be reused at once). cb may be NULL. Callbacks of one stream run in
 *  submission order whatever the sizes: a write of zero bytes (every
 *  buffer empty) completes after the writes submitted before it.
 *  req must be zeroed before its first submission. It is pending from a
 *  successful call until just before its callback runs, and may be
 *  submitted again from then on (also from inside the callback), not
 *  before; it needs no zeroing again.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL, nbufs 0, req still pending, on this stream or another);
 *          EVR_ENOTCONN; EVR_EPIPE (after shutdown/end); a socket error
 *          already known (e.g. EVR_ECONNRESET). On error the request is not
 *          queued and a pending one is left as it was. */
EVR_API int evr_stream_write(evr_write_t *req, evr_stream_t *s,
                             const evr_buf_t bufs[], unsigned nbufs,
                             evr_write_cb cb);

/** Write len bytes from data, copying what cannot be sent at once (so data
 *  may be reused when this returns). Allocates only when bytes must be
 *  queued. Errors of the queued part are reported through the stream's read
 *  callback (if reading) and the next write calls.
 *  @return 0; the errors of evr_stream_write(); EVR_ENOMEM. */
EVR_API int evr_stream_write_copy(evr_stream_t *s, const void *data, size_t len);

/** Half-close: once every queued byte is sent, shutdown(SHUT_WR) (the peer
 *  reads EOF). Reading goes on. cb may be NULL.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL;
 *          EVR_ENOTCONN; EVR_EALREADY (shutdown or end already requested). */
EVR_API int evr_stream_shutdown(evr_stream_t *s, evr_shutdown_cb cb);

/** Graceful close: stop reading, send every queued byte, send FIN, then
 *  close the handle (close_cb runs as for evr_close()). If the queue cannot
 *  drain (peer reset, or the idle timeout fires) the pending writes fail and
 *  the stream closes anyway. @return 0; EVR_EINVAL; EVR_EALREADY. */
EVR_API int evr_stream_end(evr_stream_t *s, evr_close_cb close_cb);

/** Abortive close: the peer gets a reset (SO_LINGER 0 on sockets), queued
 *  writes get EVR_ECANCELED, the handle closes as with evr_close(). */
EVR_API int evr_stream_abort(evr_stream_t *s, evr_close_cb close_cb);

/** Backpressure: cb(s, 1) when write_queue_size grows above high, cb(s, 0)
 *  when it falls back to low or below (low <= high <= UINT32_MAX, i.e.
 *  marks up to 4 GiB - 1). high 0 disables.
 *  @return 0 or EVR_EINVAL. */
EVR_API int evr_stream_set_water_marks(evr_stream_t *s, size_t low, size_t high,
                                       evr_water_cb cb);

/** Idle timeout: cb runs when neither a read nor a write made progress for
 *  ms milliseconds (0 disables). Traffic re-arms it without allocating.
 *  @return 0 or EVR_EINVAL. */
EVR_API int evr_stream_set_idle_timeout(evr_stream_t *s, uint64_t ms,
                                        evr_idle_cb cb);

/** Bytes queued and not yet handed to the kernel. */
EVR_API size_t evr_stream_write_queue_size(const evr_stream_t *s);

/** TCP_NODELAY on/off. @return 0; EVR_ENOTSUP (not a TCP socket); errors. */
EVR_API int evr_stream_nodelay(evr_stream_t *s, int on);

/** SO_KEEPALIVE on/off; idle_s > 0 also sets the idle time before probes
 *  where the system allows it. @return 0; EVR_ENOTSUP; errors. */
EVR_API int evr_stream_keepalive(evr_stream_t *s, int on, unsigned idle_s);

/** The peer's and the local address. @return 0; EVR_ENOTCONN; errors. */
EVR_API int evr_stream_peername(const evr_stream_t *s, evr_addr_t *out);
EVR_API int evr_stream_sockname(const evr_stream_t *s, evr_addr_t *out);

/* ---- listeners ---- */

/* fd >= 0: a new connection, non-blocking and close-on-exec, now owned by
 * the callback (adopt it with evr_stream_open(), or close it). fd < 0: an
 * error that did not stop the listener, e.g. EVR_EMFILE or EVR_ENFILE when
 * descriptors ran out (the listener then sheds pending connections and
 * pauses briefly instead of spinning; it recovers by itself). */
typedef void (*evr_accept_cb)(evr_listener_t *l, int fd);

enum {
  EVR_LISTEN_REUSEPORT = 0x1, /* SO_REUSEPORT: several listeners, one port */
  EVR_LISTEN_V6ONLY = 0x2,    /* IPv6 only (default: the system's choice) */
  EVR_LISTEN_DUALSTACK = 0x4, /* IPv6 socket accepting IPv4 too */
  EVR_LISTEN_NO_UNLINK = 0x8  /* Unix: never remove a stale socket file */
};

typedef struct evr_listen_options {
  int backlog;           /* 0: SOMAXCONN */
  unsigned flags;        /* EVR_LISTEN_* */
  unsigned accept_batch; /* accepts per readiness event, 0: 64 */
} evr_listen_options_t;

struct evr_listener {
  evr_handle_t base;
  /* read-only */
  int fd;
  uint64_t accepted;     /* connections handed to the callback */
  uint64_t shed;         /* connections dropped for lack of descriptors */
  /* private */
  struct evr__ionode node; /* the listening socket's registration */
  struct evr__tnode pause; /* EMFILE back-off */
  evr_accept_cb cb;
  unsigned batch;
  int spare_fd;          /* reserve descriptor for shedding under EMFILE */
  char *unlink_path;     /* Unix socket file we created */
  unsigned lflags;
};

/** Initialise a listener handle. @return 0 or EVR_EINVAL. */
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
 *  @return 0; EVR_EINVAL; EVR_EADDRINUSE; EVR_EACCES; EVR_ENOTSUP
 *          (REUSEPORT unsupported); socket errors. */
EVR_API int evr_listen(evr_listener_t *l, const evr_addr_t *addr,
                       const evr_listen_options_t *opts, evr_accept_cb cb);

/** Adopt a descriptor that is already bound and listening (systemd socket
 *  activation, a parent process). It is made non-blocking and close-on-exec;
 *  the listener owns it from now on. On error the caller still owns it and
 *  its flags are as they were. A Unix socket file behind it is never
 *  removed by evr.
 *  @return 0; EVR_EINVAL (not a listening stream socket); EVR_EBADF;
 *          EVR_EEXIST (the loop already watches fd); EVR_ENOMEM. */
EVR_API int evr_listener_open(evr_listener_t *l, int fd,
                              const evr_listen_options_t *opts, evr_accept_cb cb);

/** Stop / resume accepting (the socket stays bound; the kernel keeps
 *  queueing up to the backlog). @return 0 or EVR_EINVAL. */
EVR_API int evr_listener_pause(evr_listener_t *l);
EVR_API int evr_listener_resume(evr_listener_t *l);

/** The bound address. @return 0; EVR_EINVAL; errors. */
EVR_API int evr_listener_sockname(const evr_listener_t *l, evr_addr_t *out);

#ifdef __cplusplus
}
#endif
#endif
