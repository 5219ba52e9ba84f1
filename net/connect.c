/* net/connect.c: evr_stream_connect() and evr_stream_connect_host().
 *
 * A connect runs as: socket(); connect() (EINPROGRESS: wait writable, then
 * SO_ERROR). connect_host first resolves on the thread pool and then tries
 * every address in the resolver's order. The embedded timer bounds the whole
 * operation; an outcome known inside the starting call (an immediate
 * refusal, a Unix socket that connects at once) is delivered through the
 * same timer with a timeout of 0, so the callback never runs inside the call.
 * Invariant: the connect callback runs exactly once; after the stream is
 * closed it runs (from the close phase) with EVR_ECANCELED, and a resolution
 * still running on the pool is detached (its result is freed when it lands).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "net/sock.h"
#include "net/stream.h"

/* State of a pending evr_stream_connect_host(). */
struct evr__connect {
  evr_resolve_t req;
  evr_stream_t *s;    /* NULL once the stream gave up (closed, timed out) */
  evr_addr_t *addrs;  /* copy of the resolver's answer */
  int naddrs, next;   /* next: the address to try after the current one */
  int resolving;      /* req's callback has not run yet */
  int last_err;
};

static void state_free(struct evr__connect *st) {
  free(st->addrs);
  free(st);
}

/* The stream no longer needs its connect_host state. */
static void state_release(evr_stream_t *s) {
  struct evr__connect *st = s->connect_state;
  if (!st) return;
  s->connect_state = NULL;
  if (st->resolving) {
    st->s = NULL; /* freed by on_resolved, which runs with EVR_ECANCELED */
    (void)evr_resolve_cancel(&st->req);
  } else {
    state_free(st);
  }
}

static int addr_ok(const evr_addr_t *a) {
  if (!a || a->len == 0 || a->len > sizeof a->u) return 0;
  int fam = a->u.sa.sa_family;
  return fam == AF_INET || fam == AF_INET6 || fam == AF_UNIX;
}

/* Start connecting to a. @return 1 (in progress: waiting writable), 0
 * (connected), or a negative code; *early is set when the code came from
 * socket() (nothing to report through the callback yet). */
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
    s->sflags |= EVR__S_CONN_WAIT;
    int rc = evr__stream_sync(s);
    if (rc == 0) return 1;
    s->sflags &= ~EVR__S_CONN_WAIT;
    evr__stream_io_release(s);
    return rc;
  }
  evr__stream_io_release(s);
  return -err;
}

void evr__connect_finish(evr_stream_t *s, int status) {
  evr_loop_t *loop = s->base.loop;
  state_release(s);
  (void)evr_timer_stop(&s->timer);
  s->sflags &= ~(EVR__S_CONNECTING | EVR__S_CONN_WAIT | EVR__S_CONN_DUE);
  s->error = 0;
  s->eof_error = 0;
  if (status == 0) {
    s->fd = s->node.fd;
    s->sflags |= EVR__S_SOCKET;
    s->last_activity = loop->now_ms;
  } else {
    evr__stream_io_release(s);
  }
  (void)evr__stream_sync(s);
  evr_connect_cb cb = s->pending_cb.connect;
  s->pending_cb.connect = NULL;
  evr__req_unregister(loop);
  cb(s, status);
  if (status == 0 && !evr__stream_closing(s) &&
      !evr_timer_is_active(&s->timer))
    evr__stream_idle_arm(s);
}

/* Deliver an outcome known now from the timer's next phase. */
static void connect_due(evr_stream_t *s, int status) {
  s->error = status;
  s->sflags |= EVR__S_CONN_DUE;
  (void)evr_timer_start(&s->timer, evr__stream_timer_cb, 0, 0);
}

/* Try the remaining resolved addresses. Runs from the loop. */
static void connect_next(evr_stream_t *s) {
  struct evr__connect *st = s->connect_state;
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
  if (!(s->sflags & EVR__S_CONN_WAIT)) return;
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
  s->sflags &= ~EVR__S_CONN_WAIT;
  evr__stream_io_release(s);
  struct evr__connect *st = s->connect_state;
  if (st && st->next < st->naddrs) {
    st->last_err = err;
    connect_next(s);
    return;
  }
  evr__connect_finish(s, err);
}

void evr__connect_abandon(evr_stream_t *s) {
  /* The callback itself runs from the stream's finisher (ECANCELED). */
  state_release(s);
  s->sflags &= ~(EVR__S_CONN_WAIT | EVR__S_CONN_DUE);
}

/* s->sflags already has EVR__S_CONNECTING. */
static int connect_begin(evr_stream_t *s, unsigned timeout_ms,
                         evr_connect_cb cb) {
  s->error = 0;
  s->eof_error = 0;
  s->pending_cb.connect = cb;
  evr__req_register(s->base.loop);
  if (timeout_ms)
    (void)evr_timer_start(&s->timer, evr__stream_timer_cb, timeout_ms, 0);
  return evr__stream_sync(s);
}

int evr_stream_connect(evr_stream_t *s, const evr_addr_t *addr,
                       unsigned timeout_ms, evr_connect_cb cb) {
  if (!evr__stream_usable(s) || !cb || !addr_ok(addr)) return EVR_EINVAL;
  if (s->fd >= 0 || (s->sflags & EVR__S_CONNECTING)) return EVR_EBUSY;
  int early;
  s->sflags = EVR__S_CONNECTING;
  int r = try_connect(s, addr, &early);
  if (early) {
    s->sflags = 0;
    return r;
  }
  (void)connect_begin(s, timeout_ms, cb);
  if (r <= 0) connect_due(s, r); /* connected at once, or refused at once */
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
  connect_next(s);
}

int evr_stream_connect_host(evr_stream_t *s, const char *host, uint16_t port,
                            unsigned timeout_ms, evr_connect_cb cb) {
  if (!evr__stream_usable(s) || !cb || !host || !*host) return EVR_EINVAL;
  if (s->fd >= 0 || (s->sflags & EVR__S_CONNECTING)) return EVR_EBUSY;
  struct evr__connect *st = calloc(1, sizeof *st);
  if (!st) return EVR_ENOMEM;
  st->s = s;
  int rc = evr_resolve(s->base.loop, &st->req, host, port, AF_UNSPEC,
                       on_resolved);
  if (rc) {
    free(st);
    return rc;
  }
  st->resolving = 1;
  s->connect_state = st;
  s->sflags = EVR__S_CONNECTING;
  (void)connect_begin(s, timeout_ms, cb);
  return 0;
}
