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
#define W_RING 0x8u /* a W_OWNED request whose bytes are in a receive buffer
                     * of the ring (completion path), held by reference:
                     * small[1].len is the buffer's id */

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

/* A buffer of the completion path's ring that a stream holds (indexed by
 * the buffer's id): bytes [off, len) of p are the reader's, next links the
 * stream's next held buffer. refs: the reader's reference (until its bytes
 * are delivered) plus one per copying write that took bytes of it in place
 * (see evr_stream_write_copy); the buffer goes back to the ring at 0. */
struct held {
  char *p;
  uint32_t off, len;
  uint16_t next;
  uint16_t refs;
  uint8_t lent;  /* a write holds a reference (counted in net->lent) */
};

/* A list of streams (completion path): entries of closed streams are
 * cleared to NULL, so that a drain can go on while callbacks close some. */
struct slist {
  evr_stream_t **v;
  unsigned n, cap;
};

/* What the streams of one loop share (loop->net): made by the loop's first
 * evr_stream_init(), freed with the loop (evr__net_free). */
struct evr__net {
  evr_loop_t *loop;
  char *buf;           /* the read buffer, allocated on the first read */
  evr__list_t done;    /* evr_write_t whose callback is due, in order */
  evr_defer_t task;    /* runs `done` (then `redo`) in the deferred phase */
  void *wcache;        /* free blocks of evr_stream_write_copy() */
  unsigned nwcache;
  /* the completion path */
  struct held *held;   /* per buffer of the ring, made with the first receive */
  const char *view;    /* the bytes a read callback is running on, */
  const char *view_end; /* up to here, in the buffer of id view_bid */
  uint16_t view_bid;
  unsigned lent;       /* ring buffers that writes hold (struct held.lent) */
  struct slist flush;  /* streams whose queue waits for a send */
  struct slist redo;   /* readers whose held bytes are due */
  evr__list_t parked;  /* closed streams waiting for their operations */
};

static struct held *held_of(evr_loop_t *loop, uint16_t bid) {
  return &loop->net->held[bid];
}

static int net_get(evr_loop_t *loop) {
  if (loop->net) return 0;
  struct evr__net *net = calloc(1, sizeof *net);
  if (!net) return EVR_ENOMEM;
  net->loop = loop;
  net->buf = NULL;
  evr__list_init(&net->done);
  evr_defer_init(&net->task);
  evr__list_init(&net->parked);
  loop->net = net;
  return 0;
}

static void wcache_free(struct evr__net *net);

void evr__net_free(evr_loop_t *loop) {
  struct evr__net *net = loop->net;
  if (!net) return;
  /* evr_loop_free() refuses while a stream is open or a task pending. */
  assert(evr__list_empty(&net->done) && !evr_defer_pending(&net->task));
  assert(evr__list_empty(&net->parked));
  wcache_free(net);
  free(net->held);
  free(net->flush.v);
  free(net->redo.v);
  free(net->buf);
  free(net);
  loop->net = NULL;
}

/* The completion path serves this stream: a connected socket on a
 * completion backend. Pipes, and sockets while they connect, are watched
 * for readiness. */
static inline int cq(const evr_stream_t *s) {
  return (s->sflags & EVR__SF_SOCKET) && s->conn >= EVR__CONN_OPEN &&
         (s->base.loop->backend->caps & EVR__CAP_COMPLETION);
}

/* ---- evr_stream_write_copy()'s blocks ----
 * A copy that fits WC_BLOCK bytes with its request goes in a block kept on
 * a per-loop free list when its request completes (at most WC_KEEP
 * blocks), so that copying writes do not allocate once the loop has
 * warmed up. Larger copies are allocated and freed. */
#define WC_BLOCK 2048u
#define WC_KEEP 1024u

static evr_write_t *wcache_get(struct evr__net *net, size_t len) {
  if (sizeof(evr_write_t) + len > WC_BLOCK) return malloc(sizeof(evr_write_t) + len);
  if (net->wcache) {
    void *b = net->wcache;
    memcpy(&net->wcache, b, sizeof(void *));
    net->nwcache--;
    return b;
  }
  return malloc(WC_BLOCK);
}

static void held_unref(evr_loop_t *loop, uint16_t bid);

static void wcache_put(struct evr__net *net, evr_write_t *w) {
  size_t copied = w->small[0].len;
  if (w->flags & W_RING) {
    /* The bytes were the ring's: its buffer loses this reference. */
    held_unref(net->loop, (uint16_t)w->small[1].len);
    copied = 0;
  }
  if (sizeof(evr_write_t) + copied > WC_BLOCK || net->nwcache >= WC_KEEP) {
    free(w);
    return;
  }
  memcpy((void *)w, &net->wcache, sizeof(void *));
  net->wcache = w;
  net->nwcache++;
}

static void wcache_free(struct evr__net *net) {
  while (net->wcache) {
    void *b = net->wcache;
    memcpy(&net->wcache, b, sizeof(void *));
    free(b);
  }
  net->nwcache = 0;
}

/* ---- completed write requests ---- */

static void net_run_done(struct evr__net *net);

static void net_run_redo(struct evr__net *net);

static void net_task_cb(evr_defer_t *task) {
  struct evr__net *net = EVR_CONTAINER_OF(task, struct evr__net, task);
  net_run_done(net);
  if (net->redo.n) net_run_redo(net);
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
    wcache_put(net, req);
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
  evr_loop_t *loop = s->base.loop;
  if (s->base.tflags & EVR__SX_FILE) {
    s->base.tflags &= (uint8_t)~EVR__SX_FILE;
    loop->backend->release(loop, s->node.fd);
  }
  evr__io_release(s->base.loop, &s->node);
  if (s->node.fd >= 0) evr__close_fd(s->node.fd);
  s->node.fd = -1;
}

static int cq_sync(evr_stream_t *s);

int evr__stream_sync(evr_stream_t *s) {
  if (cq(s)) return cq_sync(s);
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
  s->base.tflags = 0;
  s->base.tword = EVR__NO_BUF;
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
  /* A send in flight reads the head's buffers: the queue fails in order,
   * with the stream's error, once its completion is in (cq_sent, or
   * evr__stream_finish once closed). */
  if (s->sflags & EVR__SF_SEND) {
    if (!s->error) s->error = err;
    s->base.tflags |= EVR__SX_FAILQ;
    return;
  }
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
  err = s->error; /* the first error is the one everybody hears of */
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

/* Append req's unsent buffers to iov[*n..max); returns their bytes. */
static size_t req_fill_iov(const evr_write_t *req, struct iovec *iov, int *n,
                           int max) {
  size_t total = 0;
  for (unsigned i = req->idx; i < req->nbufs && *n < max; i++) {
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
      total += req_fill_iov(q, iov, &n, IOV_BATCH);
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
  /* The completion path sends from the queue, before the next wait. */
  if (queue_empty && total && !cq(s)) {
    struct iovec iov[IOV_BATCH];
    int n = 0;
    (void)req_fill_iov(req, iov, &n, IOV_BATCH);
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
  if (wq_empty(s) && !cq(s)) {
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
  const char *from = (const char *)data + sent;
  struct evr__net *net = s->base.loop->net;
  /* Bytes of the receive buffer a read callback is running on are sent
   * from that buffer, which stays out of the ring until they are: no copy.
   * At most half the ring's buffers are lent so, so that receives go on
   * while slow peers hold buffers; past that the bytes are copied (as they
   * are when a buffer has UINT16_MAX references). */
  struct held *h = net->view ? held_of(s->base.loop, net->view_bid) : NULL;
  int ring = h && (uintptr_t)from >= (uintptr_t)net->view &&
             (uintptr_t)from + tail <= (uintptr_t)net->view_end && h->refs > 0 &&
             h->refs < UINT16_MAX && (h->lent || net->lent < s->base.loop->io_buffers / 2);
  evr_write_t *w = wcache_get(net, ring ? 0 : tail);
  if (!w) {
    if (sent) s->error = EVR_ENOMEM;
    return EVR_ENOMEM;
  }
  w->small[0].len = tail;
  w->flags = W_PENDING | W_OWNED;
  if (ring) {
    w->small[0].base = from;
    w->small[1].len = net->view_bid;
    w->flags |= W_RING;
    h->refs++;
    if (!h->lent) {
      h->lent = 1;
      net->lent++;
    }
  } else {
    memcpy(w + 1, from, tail);
    w->small[0].base = w + 1;
  }
  w->data = NULL;
  w->stream = s;
  w->cb = NULL;
  w->bufs = w->small;
  w->nbufs = 1;
  w->idx = 0;
  w->off = 0;
  w->left = tail;
  w->status = 0;
  evr__list_init(&w->node);
  rc = queue_req(s, w);
  if (rc) {
    wcache_put(s->base.loop->net, w);
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
  /* A failure put off while a send was in flight (completion path). */
  int failq = (s->base.tflags & EVR__SX_FAILQ) && s->error;
  s->base.tflags &= (uint8_t)~EVR__SX_FAILQ;
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
      wcache_put(loop->net, req);
    else
      req_deliver(loop, req, failq ? s->error : EVR_ECANCELED);
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

static void cq_close(evr_stream_t *s);

void evr__stream_close(evr_handle_t *h) {
  evr_stream_t *s = EVR_CONTAINER_OF(h, evr_stream_t, base);
  if (evr__stream_connecting(s)) evr__connect_abandon(s);
  evr__stream_timer_disarm(s);
  cq_close(s); /* before the descriptor goes */
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

/* ---- the completion path ----
 * On a completion backend (io_uring) a connected socket does not wait for
 * readiness: it keeps one multishot receive in flight while it reads, whose
 * completions carry buffers of the loop's ring, and one send of the head
 * of its write queue (up to EVR__SEND_IOV buffers) while the queue is not
 * empty. Sends are made before the next wait (evr__net_flush), so the
 * writes of an iteration go out together, with the wait's system call.
 *
 * The reader gets each buffer's bytes (in read_max pieces) in the call
 * that follows its completion; the buffer goes back to the ring after the
 * callback. Bytes that arrive while the reader is stopped (the receive is
 * being cancelled) stay held by the stream, in order, and are delivered
 * first from the deferred phase after the next read_start(); so is an EOF
 * or error that came after them. A closed stream's close callback waits
 * for the completions of its operations (the handle is parked, and counts
 * as a pending request meanwhile); its held buffers go back at once.
 */


/* Drop a reference to a receive buffer: the last gives it back. */
static void held_unref(evr_loop_t *loop, uint16_t bid) {
  struct held *h = held_of(loop, bid);
  assert(h->refs > 0);
  if (--h->refs) return;
  if (h->lent) {
    h->lent = 0;
    loop->net->lent--;
  }
  loop->backend->buf_put(loop, bid);
}

/* Drop the reader's reference to every held buffer. */
static void held_drop(evr_stream_t *s) {
  evr_loop_t *loop = s->base.loop;
  while (s->base.tword != EVR__NO_BUF) {
    uint16_t bid = s->base.tword;
    s->base.tword = held_of(loop, bid)->next;
    held_unref(loop, bid);
  }
}

static void held_push(evr_stream_t *s, unsigned bid, char *p, uint32_t len) {
  struct held *h = held_of(s->base.loop, (uint16_t)bid);
  h->p = p;
  h->off = 0;
  h->len = len;
  h->next = EVR__NO_BUF;
  h->refs = 1;
  h->lent = 0;
  if (s->base.tword == EVR__NO_BUF) {
    s->base.tword = (uint16_t)bid;
    return;
  }
  uint16_t t = s->base.tword;
  while (held_of(s->base.loop, t)->next != EVR__NO_BUF) t = held_of(s->base.loop, t)->next;
  held_of(s->base.loop, t)->next = (uint16_t)bid;
}

static int slist_push(struct slist *l, evr_stream_t *s) {
  if (l->n == l->cap) {
    unsigned cap = l->cap ? 2 * l->cap : 64;
    evr_stream_t **v = realloc(l->v, cap * sizeof *v);
    if (!v) return EVR_ENOMEM;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = s;
  return 0;
}

static void slist_clear(struct slist *l, const evr_stream_t *s) {
  for (unsigned i = 0; i < l->n; i++)
    if (l->v[i] == s) l->v[i] = NULL;
}

static void cq_deliver(evr_stream_t *s);

/* The deferred task's second part: readers whose held bytes are due. */
static void net_run_redo(struct evr__net *net) {
  for (unsigned i = 0; i < net->redo.n; i++) {
    evr_stream_t *s = net->redo.v[i];
    if (!s) continue;
    net->redo.v[i] = NULL;
    s->base.tflags &= (uint8_t)~EVR__SX_REDO;
    cq_deliver(s);
  }
  net->redo.n = 0;
}

static int cq_sync(evr_stream_t *s) {
  evr_loop_t *loop = s->base.loop;
  struct evr__net *net = loop->net;
  int rc = 0;
  if (s->node.events) (void)evr__io_set(loop, &s->node, 0); /* the connect's */
  if (!(s->base.tflags & EVR__SX_FILE) && loop->backend->attach) {
    /* Once; a refusal only means the descriptor is named. */
    (void)loop->backend->attach(loop, s->node.fd);
    s->base.tflags |= EVR__SX_FILE;
  }
  int reading = (s->sflags & EVR__SF_READING) != 0;
  if (reading && (s->base.tword != EVR__NO_BUF || (s->base.tflags & EVR__SX_END))) {
    /* Held bytes (or their end) first, from the deferred phase. */
    if (!(s->base.tflags & EVR__SX_REDO)) {
      rc = slist_push(&net->redo, s);
      if (!rc) {
        s->base.tflags |= EVR__SX_REDO;
        if (!evr_defer_pending(&net->task)) (void)evr_defer(loop, &net->task, net_task_cb);
      }
    }
  } else if (reading && !(s->sflags & EVR__SF_RECV)) {
    if (!net->held) {
      net->held = malloc(loop->io_buffers * sizeof *net->held);
      if (!net->held) rc = EVR_ENOMEM;
    }
    if (!rc) rc = loop->backend->recv(loop, s->node.fd, s);
    if (!rc) s->sflags |= EVR__SF_RECV;
  }
  if (!reading && (s->sflags & EVR__SF_RECV) && !(s->base.tflags & EVR__SX_CANCEL) &&
      loop->backend->cancel(loop, s, EVR__OP_RECV, 0) == 0)
    s->base.tflags |= EVR__SX_CANCEL;
  if (!wq_empty(s) && !(s->sflags & EVR__SF_SEND) && !(s->base.tflags & EVR__SX_FLUSH)) {
    int r = slist_push(&net->flush, s);
    if (r && !rc) rc = r;
    if (!r) s->base.tflags |= EVR__SX_FLUSH;
  }
  if (rc == 0 && (reading || !wq_empty(s)))
    evr__handle_start(&s->base);
  else
    evr__handle_stop(&s->base);
  return rc;
}

/* Submit a send of the head of the queue. 0 or the backend's error. */
static int cq_send(evr_stream_t *s) {
  /* Empty requests at the head are done (their turn has come). */
  while (!wq_empty(s) && wq_head(s)->left == 0) req_complete(wq_pop(s), 0);
  if (wq_empty(s)) return 0;
  struct iovec iov[EVR__SEND_IOV];
  int n = 0;
  for (const evr_write_t *q = wq_head(s); q && n < EVR__SEND_IOV; q = wq_next(s, q))
    (void)req_fill_iov(q, iov, &n, EVR__SEND_IOV);
  int rc = s->base.loop->backend->send(s->base.loop, s->node.fd, iov, n, s);
  if (rc == 0) s->sflags |= EVR__SF_SEND;
  return rc;
}

void evr__net_flush(evr_loop_t *loop) {
  struct evr__net *net = loop->net;
  for (unsigned i = 0; i < net->flush.n; i++) {
    evr_stream_t *s = net->flush.v[i];
    if (!s) continue;
    net->flush.v[i] = NULL;
    s->base.tflags &= (uint8_t)~EVR__SX_FLUSH;
    if ((s->sflags & EVR__SF_SEND) || s->error || !cq(s)) continue;
    int rc = cq_send(s);
    if (rc) stream_error(s, rc);
    else if (wq_empty(s)) (void)evr__stream_sync(s); /* only empty requests */
  }
  net->flush.n = 0;
}

/* The send completed: res bytes of the queue went out, or it failed. */
static void cq_sent(evr_stream_t *s, int res) {
  if (res <= 0) {
    /* A send of at least one byte returns one at least. */
    stream_error(s, res == 0 ? EVR_EIO : res);
    return;
  }
  size_t sent = (size_t)res;
  s->write_queue_size -= sent;
  touch(s);
  while (!wq_empty(s)) {
    evr_write_t *req = wq_head(s);
    sent -= req_advance(req, sent);
    if (req->left) break;
    req_complete(wq_pop(s), 0);
  }
  if (s->error) fail_writes(s, s->error); /* an error came meanwhile */
  (void)evr__stream_sync(s);
  if (wq_empty(s) && s->conn == EVR__CONN_DRAINING) {
    do_shutdown(s);
    if (evr__stream_closing(s)) return;
  }
  water_check_low(s);
}

/* Hand held bytes to the reader, then their end; re-arm the receive. */
static void cq_deliver(evr_stream_t *s) {
  evr_loop_t *loop = s->base.loop;
  while ((s->sflags & EVR__SF_READING) && s->base.tword != EVR__NO_BUF) {
    uint16_t bid = s->base.tword;
    struct held *h = held_of(loop, bid);
    uint32_t n = h->len - h->off;
    if (s->read_max && n > s->read_max) n = s->read_max;
    char *p = h->p + h->off;
    h->off += n;
    touch(s);
    struct evr__net *net = loop->net;
    const char *view = net->view, *view_end = net->view_end;
    uint16_t view_bid = net->view_bid;
    net->view = p;
    net->view_end = p + n;
    net->view_bid = bid;
    s->read_cb(s, (ssize_t)n, p);
    net->view = view; /* (no callback runs inside another: kept all the same) */
    net->view_end = view_end;
    net->view_bid = view_bid;
    if (evr__stream_closing(s)) return; /* its buffers went back */
    if (h->off == h->len && s->base.tword == bid) {
      s->base.tword = h->next;
      held_unref(loop, bid);
    }
  }
  if (!(s->sflags & EVR__SF_READING)) return;
  if (s->base.tflags & EVR__SX_END) {
    s->base.tflags &= (uint8_t)~EVR__SX_END;
    if (s->sflags & EVR__SF_HUP_ERROR) {
      stream_error(s, s->error);
      return;
    }
    s->sflags = (uint8_t)((s->sflags & ~EVR__SF_READING) | EVR__SF_EOF);
    (void)evr__stream_sync(s);
    s->read_cb(s, EVR_EOF, NULL);
    return;
  }
  (void)evr__stream_sync(s); /* receive again */
}

/* A closed stream whose operations are all in: its close goes on. */
static void cq_unpark(evr_stream_t *s) {
  if (!(s->base.tflags & EVR__SX_PARKED) || (s->sflags & (EVR__SF_RECV | EVR__SF_SEND)))
    return;
  s->base.tflags &= (uint8_t)~EVR__SX_PARKED;
  evr__list_remove(&s->base.node);
  evr__list_insert_tail(&s->base.loop->closing, &s->base.node);
  evr__req_unregister(s->base.loop);
}

void evr__stream_done(void *owner, unsigned kind, int res, unsigned flags,
                      unsigned bid, char *buf) {
  evr_stream_t *s = owner;
  evr_loop_t *loop = s->base.loop;
  if (kind == EVR__OP_SEND) {
    s->sflags &= (uint8_t)~EVR__SF_SEND;
    if (evr__stream_closing(s))
      cq_unpark(s);
    else
      cq_sent(s, res);
    return;
  }
  if (!(flags & EVR__OPF_MORE)) {
    s->sflags &= (uint8_t)~EVR__SF_RECV;
    s->base.tflags &= (uint8_t)~EVR__SX_CANCEL;
  }
  if (evr__stream_closing(s) || (s->base.tflags & EVR__SX_END)) {
    /* Closed, or bytes after an end (none come): dropped. */
    if (flags & EVR__OPF_BUF) loop->backend->buf_put(loop, bid);
    if (evr__stream_closing(s)) cq_unpark(s);
    return;
  }
  if (res > 0 && (flags & EVR__OPF_BUF)) {
    held_push(s, bid, buf, (uint32_t)res);
    cq_deliver(s);
    return;
  }
  if (flags & EVR__OPF_BUF) loop->backend->buf_put(loop, bid);
  if (res == 0) {
    s->base.tflags |= EVR__SX_END;
    cq_deliver(s);
    return;
  }
  if (res < 0 && res != -ENOBUFS && res != -ECANCELED) {
    if (s->base.tword == EVR__NO_BUF) {
      stream_error(s, res);
      return;
    }
    /* The reader gets it after the bytes it holds. */
    if (!s->error) s->error = res;
    s->sflags |= EVR__SF_HUP_ERROR;
    s->base.tflags |= EVR__SX_END;
    cq_deliver(s);
    return;
  }
  /* The ring ran dry, or a cancelled receive: receive again if reading. */
  if (!(s->sflags & EVR__SF_RECV)) (void)evr__stream_sync(s);
}

/* Send what the kernel takes now from the queue (no send in flight). */
static void send_now(evr_stream_t *s) {
  struct iovec iov[IOV_BATCH];
  while (!wq_empty(s)) {
    int n = 0;
    size_t total = 0;
    for (const evr_write_t *q = wq_head(s); q && n < IOV_BATCH; q = wq_next(s, q))
      total += req_fill_iov(q, iov, &n, IOV_BATCH);
    ssize_t r = n ? stream_writev(s, iov, n) : 0;
    if (r < 0) return;
    size_t sent = (size_t)r;
    s->write_queue_size -= sent;
    while (!wq_empty(s)) {
      evr_write_t *req = wq_head(s);
      sent -= req_advance(req, sent);
      if (req->left) break;
      req_complete(wq_pop(s), 0);
    }
    if ((size_t)r < total || n == 0) return;
  }
}

/* The stream closes (evr__stream_close): operations in flight are
 * cancelled and its held buffers and list entries go. */
static void cq_close(evr_stream_t *s) {
  evr_loop_t *loop = s->base.loop;
  struct evr__net *net = loop->net;
  if (s->base.tflags & EVR__SX_FLUSH) slist_clear(&net->flush, s);
  if (s->base.tflags & EVR__SX_REDO) slist_clear(&net->redo, s);
  s->base.tflags &= (uint8_t)~(EVR__SX_FLUSH | EVR__SX_REDO | EVR__SX_END);
  if (s->base.tword != EVR__NO_BUF) held_drop(s);
  if (!cq(s)) return;
  /* Like a write on the other backends, which sends at once what the
   * kernel takes: what is queued and not in flight goes out now, as far as
   * the kernel takes it; the rest is cancelled (evr__stream_finish). */
  if (!(s->sflags & EVR__SF_SEND) && !s->error) send_now(s);
  unsigned ops = s->sflags & (EVR__SF_RECV | EVR__SF_SEND);
  if ((ops & EVR__SF_RECV) && !(s->base.tflags & EVR__SX_CANCEL) &&
      loop->backend->cancel(loop, s, EVR__OP_RECV, !(ops & EVR__SF_SEND)) == 0)
    s->base.tflags |= EVR__SX_CANCEL;
  if (ops & EVR__SF_SEND) (void)loop->backend->cancel(loop, s, EVR__OP_SEND, 1);
}

/* The close phase reached the stream: 1 (parked) while operations are in
 * flight. */
int evr__stream_busy(evr_handle_t *h) {
  evr_stream_t *s = EVR_CONTAINER_OF(h, evr_stream_t, base);
  if (!(s->sflags & (EVR__SF_RECV | EVR__SF_SEND))) return 0;
  s->base.tflags |= EVR__SX_PARKED;
  evr__list_insert_tail(&s->base.loop->net->parked, &s->base.node);
  evr__req_register(s->base.loop);
  return 1;
}

/* A forked child's new ring has none of the operations: make them again. */
void evr__net_reinit(evr_loop_t *loop) {
  struct evr__net *net = loop->net;
  if (!net) return;
  while (!evr__list_empty(&net->parked)) {
    evr_stream_t *s = EVR_CONTAINER_OF(evr__list_first(&net->parked), evr_stream_t, base.node);
    s->sflags &= (uint8_t)~(EVR__SF_RECV | EVR__SF_SEND);
    cq_unpark(s);
  }
  for (evr__list_t *n = loop->handles.next; n != &loop->handles; n = n->next) {
    evr_handle_t *h = EVR_CONTAINER_OF(n, evr_handle_t, node);
    if (h->type != EVR__HT_STREAM) continue;
    evr_stream_t *s = EVR_CONTAINER_OF(h, evr_stream_t, base);
    if (!cq(s)) continue;
    s->sflags &= (uint8_t)~(EVR__SF_RECV | EVR__SF_SEND);
    /* The new ring's file table is empty: attached again by the sync. */
    s->base.tflags &= (uint8_t)~(EVR__SX_CANCEL | EVR__SX_FILE);
    (void)evr__stream_sync(s);
  }
}
