/* net/connect.c: evr_stream_connect() and evr_stream_connect_host().
 *
 * A connect runs as: socket(); connect() (EINPROGRESS: wait writable, then
 * SO_ERROR). connect_host first resolves on the thread pool and then tries
 * every address in the resolver's order. The stream's wheel node bounds the
 * whole operation (EVR__TIMER_CONNECT); an outcome known inside the starting
 * call (an immediate refusal, a Unix socket that connects at once) is
 * delivered through the same node with a timeout of 0 (EVR__CONN_CONNECT_DUE,
 * EVR__TIMER_DUE), so the callback never runs inside the call.
 * Invariant: the connect callback runs exactly once; after the stream is
 * closed it runs (from the close phase) with EVR_ECANCELED, and a resolution
 * still running on the pool is detached at the close (its result is freed
 * when it lands).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "net/sock.h"
#include "net/stream.h"

/* State of a pending evr_stream_connect_host() (s->pending.host). */
struct evr__connect {
  evr_resolve_t req;
  evr_stream_t *s;    /* NULL once the stream gave up (closed, timed out) */
  evr_connect_cb cb;  /* the user's callback */
  evr_addr_t *addrs;  /* copy of the resolver's answer */
  int naddrs, next;   /* next: the address to try after the current one */
  int resolving;      /* req's callback has not run yet */
  int last_err;
};

static void state_free(struct evr__connect *st) {
  free(st->addrs);
  free(st);
}

/* The pending connect's callback, taken from the stream: its request is
 * no longer pending there, and a connect_host state is freed, or detached
 * while its resolution runs (on_resolved frees it). */
static evr_connect_cb connect_take(evr_stream_t *s) {
  evr_connect_cb cb;
  if (s->req == EVR__REQ_CONNECT_HOST) {
    struct evr__connect *st = s->pending.host;
    cb = st->cb;
    if (st->resolving) {
      st->s = NULL; /* freed by on_resolved, which runs with EVR_ECANCELED */
      (void)evr_resolve_cancel(&st->req);
    } else {
      state_free(st);
    }
  } else {
    assert(s->req == EVR__REQ_CONNECT);
    cb = s->pending.connect;
  }
  s->req = EVR__REQ_NONE;
  s->pending.connect = NULL;
  return cb;
}

static int addr_ok(const evr_addr_t *a) {
  if (!a || a->len == 0 || a->len > sizeof a->u) return 0;
  int fam = a->u.sa.sa_family;
  return fam == AF_INET || fam == AF_INET6 || fam == AF_UNIX;
}

/* Start connecting to a. @return 1 (in progress: waiting writable, conn is
 * CONNECTING), 0 (connected), or a negative code (no socket left); *early
 * is set when the code came from socket() (nothing to report through the
 * callback yet). */
static int try_connect(evr_stream_t *s, const evr_addr_t *a, int *early) {
  *early = 0;
  int fd = evr__socket(a->u.sa.sa_family, SOCK_STREAM);
  if (fd < 0) {
    *early = 1;
    return fd;
  }
  evr__stream_io_attach(s, fd);
  int r = connect(fd, &a->u.sa, a->len);
  if (r == 0) return 0;
  /* EINTR: the connect goes on asynchronously, as for EINPROGRESS. A Unix
   * socket whose listener's backlog is full says EAGAIN: reported as is. */
  int err = errno;
  if (err == EINPROGRESS || err == EINTR) {
    s->conn = EVR__CONN_CONNECTING;
    int rc = evr__stream_sync(s);
    if (rc == 0) return 1;
    evr__stream_io_release(s);
    return rc;
  }
  evr__stream_io_release(s);
  return -err;
}

void evr__connect_finish(evr_stream_t *s, int status) {
  evr_loop_t *loop = s->base.loop;
  evr_connect_cb cb = connect_take(s);
  evr__stream_timer_disarm(s); /* the timeout, or the due outcome */
  s->error = 0;
  if (status == 0) {
    s->conn = EVR__CONN_OPEN;
    s->sflags = EVR__SF_SOCKET;
  } else {
    evr__stream_io_release(s);
    s->conn = EVR__CONN_NONE;
    s->sflags = 0;
  }
  (void)evr__stream_sync(s);
  evr__req_unregister(loop);
  cb(s, status);
  /* Unless the callback closed the stream or gave the node a use. */
  if (status == 0 && !evr__stream_closing(s) && s->timer_use == EVR__TIMER_NONE)
    evr__stream_idle_arm(s);
}


/* Try the remaining resolved addresses. Runs from the loop. */
static void connect_next(evr_stream_t *s) {
  struct evr__connect *st = s->pending.host;
  while (st->next < st->naddrs) {
    int early;
    int r = try_connect(s, &st->addrs[st->next++], &early);
    if (r == 1) return;
    if (r == 0) {
      evr__connect_finish(s, 0);
      return;
    }
    st->last_err = r;
  }
  evr__connect_finish(s, st->last_err ? st->last_err : EVR_ECONNREFUSED);
}

void evr__connect_ready(evr_stream_t *s) {
  if (s->conn != EVR__CONN_CONNECTING) return;
  int err = evr__sock_error(s->node.fd);
  if (err == 0) {
    /* Readiness with no pending error normally means connected. But the
     * error is read-once, and a kqueue emulated on epoll (libkqueue) reads
     * it itself to fill the event's fflags: confirm with getpeername(). The
     * cause is lost then; on loopback and LANs it is nearly always a
     * refusal, reported as such. */
    evr_addr_t peer;
    int rc = evr__peername(s->node.fd, &peer);
    if (rc == EVR_ENOTCONN || rc == EVR_EINVAL) err = EVR_ECONNREFUSED;
  }
  if (err == 0) {
    evr__connect_finish(s, 0);
    return;
  }
  /* No socket until the next attempt (conn stays within connecting). */
  evr__stream_io_release(s);
  if (s->req == EVR__REQ_CONNECT_HOST) {
    struct evr__connect *st = s->pending.host;
    if (st->next < st->naddrs) {
      st->last_err = err;
      connect_next(s);
      return;
    }
  }
  evr__connect_finish(s, err);
}

void evr__connect_abandon(evr_stream_t *s) {
  /* The stream is closing: detach a resolution now, so that nothing of the
   * connect runs any more; the callback itself runs from the close phase
   * (evr__stream_finish, EVR_ECANCELED) as a plain connect's. */
  if (s->req == EVR__REQ_CONNECT_HOST) {
    evr_connect_cb cb = connect_take(s);
    s->req = EVR__REQ_CONNECT;
    s->pending.connect = cb;
  }
  s->conn = EVR__CONN_NONE;
}

/* s->conn and the request are set; a stream without a connection has no
 * timer armed. */
static int connect_begin(evr_stream_t *s, unsigned timeout_ms) {
  assert(s->timer_use == EVR__TIMER_NONE);
  s->error = 0;
  s->sflags = 0;
  evr__req_register(s->base.loop);
  if (timeout_ms)
    evr__stream_timer_arm(s, EVR__TIMER_CONNECT,
                          (uint64_t)timeout_ms * UINT64_C(1000000));
  return evr__stream_sync(s);
}

int evr_stream_connect(evr_stream_t *s, const evr_addr_t *addr,
                       unsigned timeout_ms, evr_connect_cb cb) {
  if (!evr__stream_usable(s) || !cb || !addr_ok(addr)) return EVR_EINVAL;
  if (s->conn != EVR__CONN_NONE) return EVR_EBUSY;
  int early;
  int r = try_connect(s, addr, &early);
  if (early) return r;
  s->req = EVR__REQ_CONNECT;
  s->pending.connect = cb;
  if (r <= 0) s->conn = EVR__CONN_CONNECT_DUE; /* connected or refused at once */
  (void)connect_begin(s, timeout_ms);
  if (r <= 0) {
    /* The outcome, from the next timer phase (in place of the timeout). */
    s->error = r;
    evr__stream_timer_arm(s, EVR__TIMER_DUE, 0);
  }
  return 0;
}

static void on_resolved(evr_resolve_t *req, int status,
                        const evr_addr_t *addrs) {
  struct evr__connect *st = EVR_CONTAINER_OF(req, struct evr__connect, req);
  st->resolving = 0;
  evr_stream_t *s = st->s;
  if (!s) {
    state_free(st);
    return;
  }
  if (status < 0) {
    evr__connect_finish(s, status);
    return;
  }
  st->addrs = malloc((size_t)status * sizeof *st->addrs);
  if (!st->addrs) {
    evr__connect_finish(s, EVR_ENOMEM);
    return;
  }
  memcpy(st->addrs, addrs, (size_t)status * sizeof *st->addrs);
  st->naddrs = status;
  st->next = 0;
  s->conn = EVR__CONN_CONNECTING; /* no socket yet: try_connect makes one */
  connect_next(s);
}

int evr_stream_connect_host(evr_stream_t *s, const char *host, uint16_t port,
                            unsigned timeout_ms, evr_connect_cb cb) {
  if (!evr__stream_usable(s) || !cb || !host || !*host) return EVR_EINVAL;
  if (s->conn != EVR__CONN_NONE) return EVR_EBUSY;
  struct evr__connect *st = calloc(1, sizeof *st);
  if (!st) return EVR_ENOMEM;
  st->s = s;
  st->cb = cb;
  int rc = evr_resolve(s->base.loop, &st->req, host, port, AF_UNSPEC,
                       on_resolved);
  if (rc) {
    free(st);
    return rc;
  }
  st->resolving = 1;
  s->conn = EVR__CONN_RESOLVING;
  s->req = EVR__REQ_CONNECT_HOST;
  s->pending.host = st;
  (void)connect_begin(s, timeout_ms);
  return 0;
}
