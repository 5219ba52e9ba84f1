/* net/stream.c: stream handles: reading into the loop's shared buffer, the
 * write queue, backpressure, half-close, graceful and abortive close, the
 * idle timeout and the socket options (docs/net.md).
 *
 * Invariants:
 *  - A write request's callback runs exactly once, from the loop, never
 *    inside evr_stream_write(): completed requests go to the done list of
 *    the loop's stream context, which its deferred task drains (phase 5).
 *    Requests of one stream complete in submission order, so their callbacks run in order;
 *    that is why a request with nothing to send still queues behind the
 *    others. A request is pending (W_PENDING) from its submission until just
 *    before its callback, wherever it waits, and cannot be submitted again
 *    meanwhile.
 *  - On close, what is due runs before the close callback: in the close
 *    phase, right before the stream's close_cb, its finish function
 *    (evr__stream_finish, called by the close phase for every stream) runs
 *    the write callbacks already due, then cancels the rest (EVR_ECANCELED).
 *  - The node's interest is exactly: READ while reading, WRITE while
 *    bytes are queued or a connect is in progress. An idle stream has no
 *    interest, no read buffer and no armed timer (unless an idle timeout is
 *    set); the hot paths never allocate.
 *  - One wheel node serves every timeout, and timer_use says which one it
 *    is armed for (net/stream.h). Only the four timer functions below touch
 *    it. The idle timeout is pushed later by traffic (a constant-time
 *    restart of the node), so it fires after idle_ns without progress.
 */
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "net/sock.h"
#include "net/stream.h"
#include "timers/wheel.h"

#define NET_BUF_SIZE (64u * 1024u)
/* Reads per readiness event: bounds what one busy stream takes from the
 * others in one iteration (level-triggered backends report the rest). */
#define READS_PER_EVENT 16
/* Write syscalls per readiness event, for the same reason. */
#define WRITES_PER_EVENT 16
/* iovecs per writev()/sendmsg(). */
#if defined(IOV_MAX) && IOV_MAX < 64
#define IOV_BATCH IOV_MAX
#else
#define IOV_BATCH 64
#endif

/* evr_write_t.flags. A request is zeroed by its owner before its first
 * submission and evr keeps the word from then on. Pending is a whole tag in
 * the upper bits rather than one bit, so that a request the caller forgot
 * to zero is most unlikely to pass for a pending one (memcheck reports the
 * read of such a request). */
#define W_TAG_MASK 0xffffff00u
#define W_PENDING 0x9e7a5100u /* submitted; its callback has not run yet */
#define W_OWNED 0x2u          /* evr_stream_write_copy()'s allocation: freed here */
#define W_ARR 0x4u            /* req->bufs is a copy allocated here */

static inline int req_pending(const evr_write_t *req) {
  return (req->flags & W_TAG_MASK) == W_PENDING;
}


/* ---- the wheel node: connect timeout, due outcomes, idle timeout ---- */

void evr__stream_timer_arm(evr_stream_t *s, unsigned use, uint64_t timeout_ns) {
  s->timer_use = (uint8_t)use;
  evr__tnode_start(s->base.loop, &s->timer, timeout_ns);
}

void evr__stream_timer_disarm(evr_stream_t *s) {
  s->timer_use = EVR__TIMER_NONE;
  evr__tnode_stop(s->base.loop, &s->timer);
}

/* Read or write progress: push the idle timeout later. */
static inline void touch(evr_stream_t *s) {
  if (s->timer_use == EVR__TIMER_IDLE)
    evr__tnode_start(s->base.loop, &s->timer, s->idle_ns);
}

static void stream_timeout(evr_stream_t *s, unsigned use);

/* The node expired (timers/timer.c, timer phase). */
void evr__stream_timeout(struct evr__tnode *n) {
  evr_stream_t *s = EVR_CONTAINER_OF(n, evr_stream_t, timer);
  unsigned use = s->timer_use;
  s->timer_use = EVR__TIMER_NONE; /* the node is idle now */
  stream_timeout(s, use);
}

int evr_stream_fd(const evr_stream_t *s) {
  return s && s->conn >= EVR__CONN_OPEN ? s->node.fd : -1;
}

/* ---- the loop's stream context ---- */

/* What the streams of one loop share (loop->net): made by the loop's first
 * evr_stream_init(), freed with the loop (evr__net_free). */
struct evr__net {
  evr_loop_t *loop;
  char *buf;           /* the read buffer, allocated on the first read */
  evr__list_t done;    /* evr_write_t whose callback is due, in order */
  evr_defer_t task;    /* runs `done` in the deferred phase */
};

static int net_get(evr_loop_t *loop) {
  if (loop->net) return 0;
  struct evr__net *net = malloc(sizeof *net);
  if (!net) return EVR_ENOMEM;
  net->loop = loop;
  net->buf = NULL;
  evr__list_init(&net->done);
  evr_defer_init(&net->task);
  loop->net = net;
  return 0;
}

void evr__net_free(evr_loop_t *loop) {
  struct evr__net *net = loop->net;
  if (!net) return;
  /* evr_loop_free() refuses while a stream is open or a task pending. */
  assert(evr__list_empty(&net->done) && !evr_defer_pending(&net->task));
  free(net->buf);
  free(net);
  loop->net = NULL;
}

/* ---- completed write requests ---- */

static void net_run_done(struct evr__net *net);

static void net_task_cb(evr_defer_t *task) {
  net_run_done(EVR_CONTAINER_OF(task, struct evr__net, task));
}

static void req_release_bufs(evr_write_t *req) {
  if (req->flags & W_ARR) {
    free((void *)req->bufs);
    req->flags &= ~W_ARR;
  }
  req->bufs = NULL;
}

/* The request left the queue (or never entered it) with this outcome: its
 * callback is due from the deferred phase. */
static void req_complete(evr_write_t *req, int status) {
  struct evr__net *net = req->stream->base.loop->net;
  req_release_bufs(req);
  if (req->flags & W_OWNED) {
    free(req);
    return;
  }
  req->status = status;
  evr__list_insert_tail(&net->done, &req->node);
  if (!evr_defer_pending(&net->task))
    (void)evr_defer(net->loop, &net->task, net_task_cb);
}

/* Run a request's callback now (it is off every list). The callback may
 * submit it again. */
static void req_deliver(evr_loop_t *loop, evr_write_t *req, int status) {
  req->flags = 0;
  evr__req_unregister(loop);
  if (req->cb) req->cb(req, status);
}

static void net_run_done(struct evr__net *net) {
  evr__list_t batch;
  evr__list_move(&net->done, &batch);
  while (!evr__list_empty(&batch)) {
    evr__list_t *n = evr__list_first(&batch);
    evr_write_t *req = EVR_CONTAINER_OF(n, evr_write_t, node);
    evr__list_remove(n);
    req_deliver(net->loop, req, req->status);
  }
}

/* ---- the write queue ----
 * FIFO: requests are added at the tail and leave from the head (completed
 * in order, or all failed or cancelled), and the sender walks it from the
 * head. So it is a circular list through the requests' node.next, and the
 * stream holds only its last request: the tail's next is the head. (A
 * request's node is free for the loop's list of completed requests once
 * it has left the queue.) */

static inline int wq_empty(const evr_stream_t *s) { return s->wq_tail == NULL; }

static inline evr_write_t *wq_head(const evr_stream_t *s) {
  return EVR_CONTAINER_OF(s->wq_tail->node.next, evr_write_t, node);
}

/* The request after req in the queue, NULL after the tail. */
static inline evr_write_t *wq_next(const evr_stream_t *s, const evr_write_t *req) {
  return req == s->wq_tail ? NULL
                           : EVR_CONTAINER_OF(req->node.next, evr_write_t, node);
}

static void wq_push(evr_stream_t *s, evr_write_t *req) {
  if (s->wq_tail) {
    req->node.next = s->wq_tail->node.next;
    s->wq_tail->node.next = &req->node;
  } else {
    req->node.next = &req->node;
  }
  req->node.prev = NULL; /* unused in the queue */
  s->wq_tail = req;
}

static evr_write_t *wq_pop(evr_stream_t *s) {
  evr_write_t *head = wq_head(s);
  if (head == s->wq_tail)
    s->wq_tail = NULL;
  else
    s->wq_tail->node.next = head->node.next;
  evr__list_init(&head->node);
  return head;
}

/* ---- the descriptor's I/O node ---- */

void evr__stream_io_attach(evr_stream_t *s, int fd) {
  evr__io_init(&s->node, fd, EVR__IO_STREAM);
}

void evr__stream_io_release(evr_stream_t *s) {
  evr__io_release(s->base.loop, &s->node);
  if (s->node.fd >= 0) evr__close_fd(s->node.fd);
  s->node.fd = -1;
}

int evr__stream_sync(evr_stream_t *s) {
  unsigned want = 0;
  if (s->sflags & EVR__SF_READING) want |= EVR_READ;
  if (s->conn == EVR__CONN_CONNECTING || !wq_empty(s))
    want |= EVR_WRITE;
  /* The stream owns its fd: it stayed open since any stop. */
  assert(s->node.fd >= 0 || !want);
  int rc = evr__io_set(s->base.loop, &s->node, want);
  if (rc == 0 && (want || evr__stream_connecting(s)))
    evr__handle_start(&s->base);
  else
    evr__handle_stop(&s->base);
  return rc;
}

/* ---- init, open ---- */

int evr_stream_init(evr_loop_t *loop, evr_stream_t *s) {
  if (!loop || !s) return EVR_EINVAL;
  int rc = net_get(loop);
  if (rc) return rc;
  evr__handle_init(loop, &s->base, EVR__HT_STREAM);
  s->write_queue_size = 0;
  evr__io_init(&s->node, -1, EVR__IO_STREAM);
  s->error = 0;
  s->read_max = 0;
  s->conn = EVR__CONN_NONE;
  s->req = EVR__REQ_NONE;
  s->timer_use = EVR__TIMER_NONE;
  s->sflags = 0;
  s->low_water = s->high_water = 0;
  s->wq_tail = NULL;
  evr__tnode_init(&s->timer, EVR__TK_STREAM);
  s->read_cb = NULL;
  s->pending.connect = NULL;
  s->water_cb = NULL;
  s->idle_cb = NULL;
  s->idle_ns = 0;
  return 0;
}

int evr_stream_open(evr_stream_t *s, int fd) {
  if (!evr__stream_usable(s) || fd < 0) return EVR_EINVAL;
  if (s->conn != EVR__CONN_NONE) return EVR_EBUSY;
  /* Every check comes before the first change: a refused descriptor is
   * still the caller's, with the flags it had. */
  int type;
  socklen_t len = sizeof type;
  unsigned sock = 0;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) {
    if (type != SOCK_STREAM) return EVR_EINVAL;
#ifdef SO_ACCEPTCONN
    int listening = 0;
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
        listening)
      return EVR_EINVAL;
#endif
    sock = EVR__SF_SOCKET;
  } else if (errno != ENOTSOCK) {
    return -errno; /* EVR_EBADF for a closed descriptor */
  }
  int rc = evr__sock_prepare(fd); /* changes nothing when it fails */
  if (rc < 0) return rc;
  evr__stream_io_attach(s, fd);
  s->conn = EVR__CONN_OPEN;
  s->sflags = (uint8_t)sock;
  s->error = 0;
  evr__stream_idle_arm(s);
  return 0;
}

/* ---- errors ---- */

static void water_check_low(evr_stream_t *s) {
  if ((s->sflags & EVR__SF_ABOVE) && s->write_queue_size <= s->low_water) {
    s->sflags &= (uint8_t)~EVR__SF_ABOVE;
    if (s->water_cb) s->water_cb(s, 0);
  }
}

static void water_check_high(evr_stream_t *s) {
  if (s->high_water && !(s->sflags & EVR__SF_ABOVE) &&
      s->write_queue_size > s->high_water) {
    s->sflags |= EVR__SF_ABOVE;
    if (s->water_cb) s->water_cb(s, 1);
  }
}

static void fail_writes(evr_stream_t *s, int err) {
  while (!wq_empty(s)) {
    evr_write_t *req = wq_pop(s);
    s->write_queue_size -= req->left;
    req_complete(req, err);
  }
  s->write_queue_size = 0;
}

static void do_shutdown(evr_stream_t *s);

/* A socket error while the loop runs: it sticks, queued writes fail with it,
 * a pending FIN fails, and a reader hears about it. Runs user callbacks. */
static void stream_error(evr_stream_t *s, int err) {
  if (!s->error) s->error = err;
  fail_writes(s, err);
  int reading = (s->sflags & EVR__SF_READING) != 0;
  s->sflags &= (uint8_t)~(EVR__SF_READING | EVR__SF_HUP_ERROR);
  (void)evr__stream_sync(s);
  if (s->conn == EVR__CONN_DRAINING) {
    do_shutdown(s); /* sees s->error; an end() closes here */
    if (evr__stream_closing(s)) return;
  }
  water_check_low(s);
  if (evr__stream_closing(s)) return;
  if (reading && s->read_cb) s->read_cb(s, err, NULL);
}

/* ---- reading ---- */

static void do_read(evr_stream_t *s) {
  evr_loop_t *loop = s->base.loop;
  char *buf = loop->net->buf;
  if (!buf) {
    buf = malloc(NET_BUF_SIZE);
    if (!buf) {
      s->sflags &= (uint8_t)~EVR__SF_READING;
      (void)evr__stream_sync(s);
      s->read_cb(s, EVR_ENOMEM, NULL);
      return;
    }
    loop->net->buf = buf;
  }
  for (int i = 0; i < READS_PER_EVENT && (s->sflags & EVR__SF_READING); i++) {
    size_t max = s->read_max ? s->read_max : NET_BUF_SIZE;
    ssize_t n = read(s->node.fd, buf, max);
    if (n > 0) {
      touch(s);
      s->read_cb(s, n, buf);
      if (evr__stream_closing(s)) return;
      if ((size_t)n < max) return; /* drained: don't pay for an EAGAIN */
      continue;
    }
    if (n == 0 && (s->sflags & EVR__SF_HUP_ERROR)) {
      /* A reset the backend consumed (kqueue emulated over epoll). */
      stream_error(s, s->error);
      return;
    }
    if (n == 0) {
      s->sflags = (uint8_t)((s->sflags & ~EVR__SF_READING) | EVR__SF_EOF);
      (void)evr__stream_sync(s);
      s->read_cb(s, EVR_EOF, NULL);
      return;
    }
    if (errno == EINTR) {
      i--;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    stream_error(s, -errno);
    return;
  }
}

int evr_stream_read_start(evr_stream_t *s, evr_read_cb cb) {
  if (!evr__stream_usable(s) || !cb || s->req == EVR__REQ_END) return EVR_EINVAL;
  if (s->conn < EVR__CONN_OPEN) return EVR_ENOTCONN;
  if (s->sflags & EVR__SF_READING) return EVR_EALREADY;
  if (s->sflags & EVR__SF_EOF) return EVR_EOF;
  if (s->error) return s->error;
  s->read_cb = cb;
  s->sflags |= EVR__SF_READING;
  int rc = evr__stream_sync(s);
  if (rc) {
    s->sflags &= (uint8_t)~EVR__SF_READING;
    (void)evr__stream_sync(s);
  }
  return rc;
}

int evr_stream_read_stop(evr_stream_t *s) {
  if (!evr__stream_valid(s)) return EVR_EINVAL;
  if (!(s->sflags & EVR__SF_READING)) return 0;
  s->sflags &= (uint8_t)~EVR__SF_READING;
  if (!evr__stream_closing(s)) (void)evr__stream_sync(s);
  return 0;
}

int evr_stream_set_read_max(evr_stream_t *s, size_t max) {
  if (!evr__stream_valid(s) || max == 0) return EVR_EINVAL;
  s->read_max = max >= NET_BUF_SIZE ? 0 : (uint32_t)max;
  return 0;
}

/* ---- writing ---- */

/* One writev()/sendmsg(): bytes taken, or a negative code (EVR_EAGAIN). */
static ssize_t stream_writev(const evr_stream_t *s, struct iovec *iov, int n) {
  ssize_t r;
  do {
    if (s->sflags & EVR__SF_SOCKET) {
#if EVR__SIGPIPE_MASK
      evr__sigpipe_t sp; /* neither MSG_NOSIGNAL nor SO_NOSIGPIPE (sock.h) */
      evr__sigpipe_hold(&sp);
#endif
      if (n == 1) {
        r = send(s->node.fd, iov[0].iov_base, iov[0].iov_len, EVR__SEND_FLAGS);
      } else {
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)n;
        r = sendmsg(s->node.fd, &m, EVR__SEND_FLAGS);
      }
#if EVR__SIGPIPE_MASK
      evr__sigpipe_release(&sp, r < 0 && errno == EPIPE);
#endif
    } else {
      /* Pipes: a closed reader raises SIGPIPE here unless the process
       * ignores it (docs/net.md). */
      r = n == 1 ? write(s->node.fd, iov[0].iov_base, iov[0].iov_len)
                 : writev(s->node.fd, iov, n);
    }
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return r;
  if (errno == EWOULDBLOCK) return EVR_EAGAIN;
  return -errno;
}

/* Append req's unsent buffers to iov[*n..IOV_BATCH); returns their bytes. */
static size_t req_fill_iov(const evr_write_t *req, struct iovec *iov, int *n) {
  size_t total = 0;
  for (unsigned i = req->idx; i < req->nbufs && *n < IOV_BATCH; i++) {
    size_t skip = i == req->idx ? req->off : 0;
    size_t len = req->bufs[i].len - skip;
    if (len == 0) continue;
    iov[*n].iov_base = (char *)(uintptr_t)req->bufs[i].base + skip;
    iov[*n].iov_len = len;
    (*n)++;
    total += len;
  }
  return total;
}

/* Mark up to n bytes of req as sent; returns how many it took. */
static size_t req_advance(evr_write_t *req, size_t n) {
  size_t used = 0;
  while (req->idx < req->nbufs) {
    size_t rem = req->bufs[req->idx].len - req->off;
    if (n < rem) {
      req->off += n;
      used += n;
      break;
    }
    n -= rem;
    used += rem;
    req->idx++;
    req->off = 0;
  }
  req->left -= used;
  return used;
}

static void do_end_close(evr_stream_t *s);

/* The watcher says writable: send from the queue. Runs user callbacks. */
static void do_write(evr_stream_t *s) {
  struct iovec iov[IOV_BATCH];
  int progress = 0;
  for (int round = 0; round < WRITES_PER_EVENT && !wq_empty(s);
       round++) {
    int n = 0;
    size_t total = 0;
    for (const evr_write_t *q = wq_head(s); q && n < IOV_BATCH; q = wq_next(s, q))
      total += req_fill_iov(q, iov, &n);
    /* Nothing to send (only empty requests are left): no system call. */
    ssize_t r = n ? stream_writev(s, iov, n) : 0;
    if (r == EVR_EAGAIN) break;
    if (r < 0) {
      stream_error(s, (int)r);
      return;
    }
    size_t sent = (size_t)r;
    s->write_queue_size -= sent;
    if (sent) progress = 1;
    while (!wq_empty(s)) {
      evr_write_t *req = wq_head(s);
      sent -= req_advance(req, sent);
      if (req->left) break;
      req_complete(wq_pop(s), 0);
    }
    if ((size_t)r < total) break; /* the kernel is full */
  }
  if (progress) touch(s);
  if (wq_empty(s)) {
    (void)evr__stream_sync(s);
    if (s->conn == EVR__CONN_DRAINING) {
      do_shutdown(s);
      if (evr__stream_closing(s)) return;
    }
  }
  water_check_low(s);
}

/* Validate a write and report the state that forbids it. */
static int write_check(const evr_stream_t *s) {
  if (!evr__stream_usable(s)) return EVR_EINVAL;
  if (s->conn < EVR__CONN_OPEN) return EVR_ENOTCONN;
  if (s->conn > EVR__CONN_OPEN) return EVR_EPIPE;
  if (s->error) return s->error;
  return 0;
}

/* Queue req (whose bufs point to memory that outlives it) at the tail. */
static int queue_req(evr_stream_t *s, evr_write_t *req) {
  wq_push(s, req);
  int rc = evr__stream_sync(s);
  if (rc) {
    /* Only the first request can fail (it adds EVR_WRITE): take it out. */
    assert(wq_head(s) == req && s->wq_tail == req);
    (void)wq_pop(s);
    return rc;
  }
  s->write_queue_size += req->left;
  return 0;
}

int evr_stream_write(evr_write_t *req, evr_stream_t *s, const evr_buf_t bufs[],
                     unsigned nbufs, evr_write_cb cb) {
  if (!req || !bufs || nbufs == 0) return EVR_EINVAL;
  /* Submitted and its callback not run yet, on this stream or another, in a
   * queue or among the completed requests: its node is in use. */
  if (req_pending(req)) return EVR_EINVAL;
  int rc = write_check(s);
  if (rc) return rc;
  size_t total = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    if (bufs[i].len > SIZE_MAX - total || (!bufs[i].base && bufs[i].len))
      return EVR_EINVAL;
    total += bufs[i].len;
  }

  req->stream = s;
  req->cb = cb;
  req->bufs = bufs;
  req->nbufs = nbufs;
  req->idx = 0;
  req->off = 0;
  req->left = total;
  req->status = 0;
  req->flags = 0;
  evr__list_init(&req->node);

  size_t sent = 0;
  int queue_empty = wq_empty(s);
  if (queue_empty && total) {
    struct iovec iov[IOV_BATCH];
    int n = 0;
    (void)req_fill_iov(req, iov, &n);
    ssize_t r = stream_writev(s, iov, n);
    if (r < 0 && r != EVR_EAGAIN) {
      s->error = (int)r;
      return (int)r;
    }
    if (r > 0) {
      sent = (size_t)r;
      (void)req_advance(req, sent);
      touch(s);
    }
  }
  /* Accepted: from here on the callback is due (the fail path below undoes
   * this only while nothing was sent). */
  evr__req_register(s->base.loop);
  req->flags = W_PENDING;
  if (req->left == 0) {
    req->bufs = NULL;
    req->nbufs = 0;
    req->idx = 0;
    /* All sent, or nothing to send, and nothing ahead of it: done. An empty
     * request behind queued ones waits in the queue instead (its callback
     * must not overtake theirs) and completes with the one before it. */
    if (queue_empty) {
      req_complete(req, 0);
      return 0;
    }
    rc = queue_req(s, req);
    if (rc) goto fail;
    return 0;
  }
  /* Keep the unsent tail of the caller's array: the array may be reused as
   * soon as this returns. Two entries fit in the request itself. */
  unsigned rest = req->nbufs - req->idx;
  if (rest <= 2) {
    for (unsigned i = 0; i < rest; i++) req->small[i] = bufs[req->idx + i];
    req->bufs = req->small;
  } else {
    evr_buf_t *copy = malloc(rest * sizeof *copy);
    if (!copy) {
      rc = EVR_ENOMEM;
      goto fail;
    }
    memcpy(copy, bufs + req->idx, rest * sizeof *copy);
    req->bufs = copy;
    req->flags |= W_ARR;
  }
  req->nbufs = rest;
  req->idx = 0;
  rc = queue_req(s, req);
  if (rc) goto fail;
  water_check_high(s);
  return 0;

fail:
  if (sent == 0) {
    req_release_bufs(req);
    req->flags = 0;
    evr__req_unregister(s->base.loop);
    return rc;
  }
  /* Part of it is in the kernel already: the stream cannot go on. */
  s->error = rc;
  req_complete(req, rc);
  return 0;
}

int evr_stream_write_copy(evr_stream_t *s, const void *data, size_t len) {
  int rc = write_check(s);
  if (rc) return rc;
  if (!data && len) return EVR_EINVAL;
  if (len == 0) return 0;
  size_t sent = 0;
  if (wq_empty(s)) {
    struct iovec iov = {(void *)(uintptr_t)data, len};
    ssize_t r = stream_writev(s, &iov, 1);
    if (r < 0 && r != EVR_EAGAIN) {
      s->error = (int)r;
      return (int)r;
    }
    if (r > 0) {
      sent = (size_t)r;
      touch(s);
      if (sent == len) return 0;
    }
  }
  size_t tail = len - sent;
  evr_write_t *w = malloc(sizeof *w + tail);
  if (!w) {
    if (sent) s->error = EVR_ENOMEM;
    return EVR_ENOMEM;
  }
  memcpy(w + 1, (const char *)data + sent, tail);
  w->data = NULL;
  w->stream = s;
  w->cb = NULL;
  w->small[0].base = w + 1;
  w->small[0].len = tail;
  w->bufs = w->small;
  w->nbufs = 1;
  w->idx = 0;
  w->off = 0;
  w->left = tail;
  w->status = 0;
  w->flags = W_PENDING | W_OWNED;
  evr__list_init(&w->node);
  rc = queue_req(s, w);
  if (rc) {
    free(w);
    if (sent) s->error = rc;
    return rc;
  }
  water_check_high(s);
  return 0;
}

size_t evr_stream_write_queue_size(const evr_stream_t *s) {
  return s ? s->write_queue_size : 0;
}

int evr_stream_set_water_marks(evr_stream_t *s, size_t low, size_t high,
                               evr_water_cb cb) {
  if (!evr__stream_valid(s)) return EVR_EINVAL;
  if (high && (low > high || !cb || high > UINT32_MAX)) return EVR_EINVAL;
  s->low_water = high ? (uint32_t)low : 0;
  s->high_water = (uint32_t)high;
  s->water_cb = high ? cb : NULL;
  if (!high) s->sflags &= (uint8_t)~EVR__SF_ABOVE;
  return 0;
}

/* ---- the watcher's callback ---- */

/* The descriptor is ready (evr__io_dispatch). */
void evr__stream_io(struct evr__ionode *n, unsigned events, int err) {
  evr_stream_t *s = EVR_CONTAINER_OF(n, evr_stream_t, node);
  if (s->conn == EVR__CONN_CONNECTING) {
    evr__connect_ready(s);
    return;
  }
  if (err && !s->error) {
    /* The backend took the socket's error (kqueue under libkqueue): it
     * sticks now, and the reader gets it once the data before it is read. */
    s->error = evr__errno_code(err);
    s->sflags |= EVR__SF_HUP_ERROR;
  }
  if ((events & EVR_READ) && (s->sflags & EVR__SF_READING)) {
    do_read(s);
    if (evr__stream_closing(s)) return;
  }
  if ((events & (EVR_WRITE | EVR_ERR | EVR_HUP)) && !wq_empty(s))
    do_write(s);
}

/* ---- ending ---- */

static void do_end_close(evr_stream_t *s) {
  evr_close_cb cb = s->pending.end;
  s->req = EVR__REQ_NONE;
  s->pending.end = NULL;
  (void)evr_close(&s->base, cb);
}

/* Send the FIN (the queue is empty, or failed), then report it: from the
 * next timer phase for shutdown(), by closing for end(). */
static void do_shutdown(evr_stream_t *s) {
  if (s->conn != EVR__CONN_DRAINING) return;
  s->conn = EVR__CONN_SHUT;
  int status = s->error;
  if (!status && shutdown(s->node.fd, SHUT_WR) < 0) status = -errno;
  if (status) {
    /* The connection is broken (ENOTCONN after a reset, ENOTSOCK for a
     * pipe): the error sticks like any other. */
    s->sflags |= EVR__SF_SHUT_FAILED;
    if (!s->error) s->error = status;
  }
  if (s->req == EVR__REQ_END) {
    do_end_close(s);
    return;
  }
  evr__stream_timer_arm(s, EVR__TIMER_DUE, 0);
}

static int shut_status(const evr_stream_t *s) {
  if (!(s->sflags & EVR__SF_SHUT_FAILED)) return 0;
  return s->error ? s->error : EVR_EIO;
}

int evr_stream_shutdown(evr_stream_t *s, evr_shutdown_cb cb) {
  if (!evr__stream_usable(s)) return EVR_EINVAL;
  if (s->conn < EVR__CONN_OPEN) return EVR_ENOTCONN;
  if (s->conn > EVR__CONN_OPEN) return EVR_EALREADY;
  s->conn = EVR__CONN_DRAINING;
  s->req = EVR__REQ_SHUTDOWN;
  s->pending.shutdown = cb;
  evr__req_register(s->base.loop);
  if (wq_empty(s)) do_shutdown(s);
  return 0;
}

int evr_stream_end(evr_stream_t *s, evr_close_cb close_cb) {
  if (!evr__stream_valid(s)) return EVR_EINVAL;
  if (evr__stream_closing(s)) return EVR_EALREADY;
  if (s->conn > EVR__CONN_OPEN) return EVR_EALREADY;
  if (s->conn < EVR__CONN_OPEN) {
    /* Nothing to drain: a pending connect is cancelled as by a close. */
    return evr_close(&s->base, close_cb);
  }
  s->sflags &= (uint8_t)~EVR__SF_READING;
  s->conn = EVR__CONN_DRAINING;
  s->req = EVR__REQ_END;
  s->pending.end = close_cb;
  if (wq_empty(s))
    do_shutdown(s); /* closes */
  else
    (void)evr__stream_sync(s);
  return 0;
}

int evr_stream_abort(evr_stream_t *s, evr_close_cb close_cb) {
  if (!evr__stream_valid(s)) return EVR_EINVAL;
  if (evr__stream_closing(s)) return EVR_EALREADY;
  if (s->conn >= EVR__CONN_OPEN && (s->sflags & EVR__SF_SOCKET)) {
    /* Closing with a zero linger time sends a RST. Unix sockets ignore it
     * (their peer sees ECONNRESET only if unread data is dropped). */
    struct linger lg = {1, 0};
    (void)setsockopt(s->node.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  return evr_close(&s->base, close_cb);
}

/* The close phase, right before the stream's close_cb (see the file
 * comment): what is due first, then what is cancelled. */
void evr__stream_finish(evr_handle_t *h) {
  evr_stream_t *s = EVR_CONTAINER_OF(h, evr_stream_t, base);
  evr_loop_t *loop = s->base.loop;
  net_run_done(loop->net);
  if (s->req == EVR__REQ_CONNECT) { /* see evr__connect_abandon() */
    evr_connect_cb cb = s->pending.connect;
    s->req = EVR__REQ_NONE;
    s->pending.connect = NULL;
    evr__req_unregister(loop);
    if (cb) cb(s, EVR_ECANCELED);
  }
  while (!wq_empty(s)) {
    evr_write_t *req = wq_pop(s);
    s->write_queue_size -= req->left;
    req_release_bufs(req);
    if (req->flags & W_OWNED)
      free(req);
    else
      req_deliver(loop, req, EVR_ECANCELED);
  }
  s->write_queue_size = 0;
  if (s->req == EVR__REQ_SHUTDOWN) {
    /* Sent (its callback was due on the timer), or cancelled. */
    evr_shutdown_cb cb = s->pending.shutdown;
    int status = s->conn == EVR__CONN_SHUT ? shut_status(s) : EVR_ECANCELED;
    s->req = EVR__REQ_NONE;
    s->pending.shutdown = NULL;
    evr__req_unregister(loop);
    if (cb) cb(s, status);
  }
  /* An end() overtaken by evr_close() or abort(): their close_cb counts. */
  s->req = EVR__REQ_NONE;
  s->pending.end = NULL;
}

void evr__stream_close(evr_handle_t *h) {
  evr_stream_t *s = EVR_CONTAINER_OF(h, evr_stream_t, base);
  if (evr__stream_connecting(s)) evr__connect_abandon(s);
  evr__stream_timer_disarm(s);
  evr__stream_io_release(s);
  s->sflags &= (uint8_t)~EVR__SF_READING;
  /* What is due and what is cancelled runs from evr__stream_finish(). */
}

/* ---- timeouts ---- */

void evr__stream_idle_arm(evr_stream_t *s) {
  if (!s->idle_ns || s->conn < EVR__CONN_OPEN || evr__stream_closing(s)) return;
  /* A due shutdown callback comes first; it arms the idle timeout after. */
  if (s->timer_use == EVR__TIMER_DUE) return;
  evr__stream_timer_arm(s, EVR__TIMER_IDLE, s->idle_ns);
}

static void shutdown_due(evr_stream_t *s) {
  evr_loop_t *loop = s->base.loop;
  evr_shutdown_cb cb = s->pending.shutdown;
  int status = shut_status(s);
  s->req = EVR__REQ_NONE;
  s->pending.shutdown = NULL;
  /* Write callbacks of the bytes before the FIN come first. */
  net_run_done(loop->net);
  evr__req_unregister(loop);
  if (cb) cb(s, status);
  if (evr__stream_closing(s)) return;
  evr__stream_idle_arm(s);
}

static void idle_expired(evr_stream_t *s) {
  if (s->req == EVR__REQ_END) {
    /* end() cannot drain: give up on the queue and close. */
    fail_writes(s, EVR_ETIMEDOUT);
    do_end_close(s);
    return;
  }
  if (s->idle_cb) s->idle_cb(s);
  /* Left open: wait another period (from now). */
  evr__stream_idle_arm(s);
}

static void stream_timeout(evr_stream_t *s, unsigned use) {
  switch (use) {
    case EVR__TIMER_CONNECT:
      evr__connect_finish(s, EVR_ETIMEDOUT);
      break;
    case EVR__TIMER_DUE:
      if (s->conn == EVR__CONN_CONNECT_DUE)
        evr__connect_finish(s, s->error);
      else
        shutdown_due(s);
      break;
    case EVR__TIMER_IDLE:
      idle_expired(s);
      break;
    default:
      assert(!"stream timer expired unarmed");
  }
}

int evr_stream_set_idle_timeout(evr_stream_t *s, uint64_t ms, evr_idle_cb cb) {
  if (!evr__stream_valid(s) || (ms && !cb)) return EVR_EINVAL;
  if (evr__stream_closing(s)) return EVR_EINVAL;
  /* Clamped far beyond any real use (2^62 ns is 146 years). */
  s->idle_ns = ms > (UINT64_C(1) << 62) / 1000000u ? UINT64_C(1) << 62
                                                   : ms * 1000000u;
  s->idle_cb = ms ? cb : NULL;
  /* Connecting, or a due outcome: the idle timeout is armed after it. */
  if (s->timer_use == EVR__TIMER_CONNECT || s->timer_use == EVR__TIMER_DUE)
    return 0;
  if (!ms) {
    if (s->timer_use == EVR__TIMER_IDLE) evr__stream_timer_disarm(s);
    return 0;
  }
  evr__stream_idle_arm(s);
  return 0;
}

/* ---- socket options and names ---- */

static int tcp_check(const evr_stream_t *s) {
  if (!evr__stream_valid(s)) return EVR_EINVAL;
  if (evr_stream_fd(s) < 0) return EVR_ENOTCONN; /* also once closed */
  if (!(s->sflags & EVR__SF_SOCKET)) return EVR_ENOTSUP;
  evr_addr_t a;
  int rc = evr__sockname(s->node.fd, &a);
  if (rc) return rc;
  int fam = a.u.sa.sa_family;
  return fam == AF_INET || fam == AF_INET6 ? 0 : EVR_ENOTSUP;
}

int evr_stream_nodelay(evr_stream_t *s, int on) {
  int rc = tcp_check(s);
  if (rc) return rc;
  int v = on ? 1 : 0;
  if (setsockopt(s->node.fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) < 0)
    return -errno;
  return 0;
}

int evr_stream_keepalive(evr_stream_t *s, int on, unsigned idle_s) {
  int rc = tcp_check(s);
  if (rc) return rc;
  int v = on ? 1 : 0;
  if (setsockopt(s->node.fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v) < 0)
    return -errno;
  if (on && idle_s > 0) {
    int secs = idle_s > INT_MAX ? INT_MAX : (int)idle_s;
#if defined(TCP_KEEPIDLE)
    if (setsockopt(s->node.fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof secs) < 0)
      return -errno;
#elif defined(TCP_KEEPALIVE)
    if (setsockopt(s->node.fd, IPPROTO_TCP, TCP_KEEPALIVE, &secs, sizeof secs) < 0)
      return -errno;
#else
    (void)secs;
#endif
  }
  return 0;
}

int evr_stream_peername(const evr_stream_t *s, evr_addr_t *out) {
  if (!evr__stream_valid(s) || !out) return EVR_EINVAL;
  if (evr_stream_fd(s) < 0) return EVR_ENOTCONN;
  return evr__peername(s->node.fd, out);
}

int evr_stream_sockname(const evr_stream_t *s, evr_addr_t *out) {
  if (!evr__stream_valid(s) || !out) return EVR_EINVAL;
  if (evr_stream_fd(s) < 0) return EVR_ENOTCONN;
  return evr__sockname(s->node.fd, out);
}
