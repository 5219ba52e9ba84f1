/* backends/kqueue.c: the BSD/macOS backend (also runs on libkqueue).
 *
 * Read and write interest are two level-triggered filters per fd. Changes are
 * applied at once and all-or-nothing, so a failure reaches evr_io_start() and
 * leaves the registration as it was. kqueue reports the two filters of one fd
 * as separate events; they are merged into the first one in the batch, so a
 * watcher gets one callback per batch, as with epoll and poll. The invariant
 * that matters: during dispatch, mask[i] == 0 means "do not report event i";
 * forget() relies on it to kill events harvested before a watcher stopped.
 * Cross-thread wake-ups use an EVFILT_USER event on a kernel kqueue (one
 * kevent() call, async-signal-safe as a plain system call). libkqueue's
 * kevent() takes user-space locks, which a signal handler must not do, so
 * under it the loop keeps the generic eventfd/pipe (reactor/async.c).
 *
 * libkqueue (Linux) builds a kqueue from descriptors of its own (an epoll
 * set, a pipe whose write end is the kqueue descriptor, an eventfd for its
 * signal filter) and releases them only when a background thread notices
 * that the kqueue descriptor was closed. kq_close() waits for that
 * where libkqueue offers a way, so that freeing a loop leaves no descriptor
 * behind, as closing a kernel kqueue does.
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include <fcntl.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <unistd.h>
#include "evr_config.h"
#include "reactor/internal.h"

/* EVR_KQUEUE_USER_WAKE may be predefined (1 or 0) to force the choice, e.g.
 * to exercise the EVFILT_USER path under libkqueue in a test build. */
#ifndef EVR_KQUEUE_USER_WAKE
#if defined(EVFILT_USER) && !EVR_KQUEUE_EMULATED
#define EVR_KQUEUE_USER_WAKE 1
#else
#define EVR_KQUEUE_USER_WAKE 0
#endif
#endif

#define KQ_BATCH 1024
#define KQ_WAKE_IDENT 0 /* EVFILT_USER idents are not descriptors */

struct kq_state {
  int kq;
  pid_t pid;   /* the process that created kq */
  int cur;     /* index being dispatched; forget() scans after it */
  int n;       /* events in the current batch; 0 outside dispatch */
  struct kevent events[KQ_BATCH];
  unsigned char mask[KQ_BATCH]; /* EVR_* bits to report; 0 = dropped */
  int err[KQ_BATCH];            /* socket error that came with EV_EOF, or 0 */
};

static const struct timespec zero = {0, 0};

#if EVR_KQUEUE_EMULATED
/* Exported by libkqueue 2.7.0 and later, though not declared in its header:
 * returns once its background thread has released every kqueue whose
 * descriptor was closed (2.7.0 polls for that, with a bound; later versions
 * ask the thread and wait for its answer). Weak, so that older versions,
 * which lack it, still link: their kqueues are released a little later. */
extern void libkqueue_drain_pending_close(void) __attribute__((weak));
#endif

/* Close a kqueue this process opened. Under libkqueue the close only asks
 * its thread to release the kqueue's own descriptors: wait for it, or a
 * caller that counts its descriptors right after evr_loop_free() (or that
 * needs the slots, at RLIMIT_NOFILE) finds them still open. */
static void kq_close(int kq) {
  (void)close(kq);
#if EVR_KQUEUE_EMULATED
  if (libkqueue_drain_pending_close) libkqueue_drain_pending_close();
#endif
}

static int kq_open(void) {
  int fd = kqueue();
  if (fd < 0) return -errno;
  /* kqueue() has no CLOEXEC flag on every system (kqueuex, kqueue1 are not
   * portable); the short window before this call is accepted. */
  int rc = evr__cloexec(fd);
  if (rc) {
    kq_close(fd);
    return rc;
  }
  return fd;
}

#if EVR_KQUEUE_USER_WAKE
/* Register the wake-up event: EV_CLEAR resets its triggered state when a
 * wait reports it, so every NOTE_TRIGGER after that report wakes again. */
static int kq_wake_register(int kq) {
  struct kevent ch;
  EV_SET(&ch, KQ_WAKE_IDENT, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 0);
  int r;
  do
    r = kevent(kq, &ch, 1, NULL, 0, &zero);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : 0;
}

static int kq_wake(evr_loop_t *loop) {
  struct kq_state *st = loop->backend_state;
  struct kevent ch;
  EV_SET(&ch, KQ_WAKE_IDENT, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0);
  int r;
  do
    r = kevent(st->kq, &ch, 1, NULL, 0, &zero);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : 0;
}
#endif

static int kq_init(evr_loop_t *loop) {
  struct kq_state *st = malloc(sizeof *st);
  if (!st) return EVR_ENOMEM;
  st->cur = st->n = 0;
  st->pid = getpid();
  st->kq = kq_open();
  if (st->kq < 0) {
    int rc = st->kq;
    free(st);
    return rc;
  }
  loop->backend_state = st;
#if EVR_KQUEUE_USER_WAKE
  /* On failure the loop's destroy() releases st and the kqueue. */
  return kq_wake_register(st->kq);
#else
  return 0;
#endif
}

static void kq_destroy(evr_loop_t *loop) {
  struct kq_state *st = loop->backend_state;
  if (!st) return;
  /* In a forked child that never called reinit the number is not ours. */
  if (st->kq >= 0 && st->pid == getpid()) kq_close(st->kq);
  free(st);
  loop->backend_state = NULL;
}

/* Apply n (at most 2) changes as a unit. EV_RECEIPT makes the kernel process
 * every change and report each result, instead of stopping at the first
 * failure with the earlier ones already applied; a failure then undoes the
 * changes that succeeded. Deleting a filter that is already gone (the fd was
 * closed, which drops its filters on BSD, or is being closed) is success:
 * the wanted state is reached. */
static int kq_apply(int kq, struct kevent *ch, int n) {
  struct kevent res[2];
  int ok[2] = {0, 0};
  int err = 0;
  assert(n > 0 && n <= 2);
  for (int i = 0; i < n; i++) ch[i].flags |= EV_RECEIPT;
  int r;
  do
    r = kevent(kq, ch, n, res, n, &zero);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  for (int j = 0; j < r; j++) {
    if (!(res[j].flags & EV_ERROR)) continue; /* not a receipt */
    for (int i = 0; i < n; i++) {
      if (ch[i].filter != res[j].filter || ch[i].ident != res[j].ident)
        continue;
      int e = (int)res[j].data;
      if (e == 0 ||
          ((ch[i].flags & EV_DELETE) && (e == ENOENT || e == EBADF)))
        ok[i] = 1;
      else if (!err)
        err = e;
    }
  }
  if (!err) {
    for (int i = 0; i < n; i++)
      if (!ok[i]) return EVR_EIO; /* no receipt: should not happen */
    return 0;
  }
#if EVR_KQUEUE_EMULATED
  /* libkqueue before 2.7.0 reports every filter it could not create as
   * EFAULT. A closed descriptor is EBADF, as with a kernel kqueue: callers
   * (evr_io_start(), kq_reinit()) tell it apart. All changes name one fd. */
  if (err == EFAULT && fcntl((int)ch[0].ident, F_GETFD) < 0 && errno == EBADF)
    err = EBADF;
#endif
  for (int i = 0; i < n; i++) {
    if (!ok[i]) continue;
    struct kevent undo = ch[i];
    undo.flags = (ch[i].flags & EV_ADD) ? EV_DELETE : EV_ADD;
    /* Best effort: re-adding a filter just deleted only fails if the fd
     * went away, and then nothing is left to report on it. */
    (void)kevent(kq, &undo, 1, NULL, 0, &zero);
  }
  return -err;
}

/* Immediate application rather than a changelist flushed by the next wait:
 * the core promises that evr_io_start() reports e.g. EBADF and that a failed
 * update changes nothing, and a queued change could only fail later, inside
 * poll, with no caller left to tell. It costs one kevent() per change of
 * interest, which level-triggered watchers rarely make.
 * The core asks for old_mask == new_mask only to have a lingering
 * registration checked (reactor/io.c: its descriptor may have been closed
 * and the number reused). This backend has no lazy removal: evr_io_stop()
 * removes the filters at once, so a stopped watcher holds none and its
 * restart is an add, which meets EBADF for a closed descriptor and
 * registers a new file on a reused number afresh. */
static int kq_update(evr_loop_t *loop, struct evr__ionode *io,
                     unsigned old_mask, unsigned new_mask) {
  struct kq_state *st = loop->backend_state;
  struct kevent ch[2];
  int n = 0;
  assert(old_mask != new_mask); /* see above */
  unsigned diff = (old_mask ^ new_mask) & (EVR_READ | EVR_WRITE);
  if (diff & EVR_READ) {
    EV_SET(&ch[n], (uintptr_t)io->fd, EVFILT_READ,
           (new_mask & EVR_READ) ? EV_ADD : EV_DELETE, 0, 0, 0);
    n++;
  }
  if (diff & EVR_WRITE) {
    EV_SET(&ch[n], (uintptr_t)io->fd, EVFILT_WRITE,
           (new_mask & EVR_WRITE) ? EV_ADD : EV_DELETE, 0, 0, 0);
    n++;
  }
  return n ? kq_apply(st->kq, ch, n) : 0;
}

static unsigned to_mask(const struct kevent *e) {
  unsigned m = 0;
  if (e->filter == EVFILT_READ) m |= EVR_READ;
  if (e->filter == EVFILT_WRITE) m |= EVR_WRITE;
  /* Only a changelist produces EV_ERROR and poll passes none; should one
   * appear, the user's next read() or write() meets the error. */
  if (e->flags & EV_ERROR) return m | EVR_ERR;
  /* EV_EOF on the read filter means no more data will arrive: the peer
   * closed or shut down its sending side (kqueue cannot tell these apart),
   * or the pipe's writer is gone. On a socket, fflags then holds a pending
   * error such as ECONNRESET. */
  if (e->flags & EV_EOF) {
    m |= EVR_HUP;
    if (e->fflags) m |= EVR_ERR;
  }
  return m;
}

/* The socket error reported with EV_EOF. Native kqueue leaves it pending on
 * the socket as well, but libkqueue reads it with getsockopt(SO_ERROR),
 * which clears it: read() then returns 0 and a reset would pass for a FIN.
 * The dispatch hands it to the node's owner (see net/stream.c). */
static int eof_error(const struct kevent *e) {
  return (e->flags & EV_EOF) && e->fflags && e->fflags < 4096 ? (int)e->fflags : 0;
}

static void drop_filter(int kq, const struct kevent *e) {
  if (e->filter != EVFILT_READ && e->filter != EVFILT_WRITE) return;
  struct kevent ch;
  EV_SET(&ch, e->ident, e->filter, EV_DELETE, 0, 0, 0);
  (void)kevent(kq, &ch, 1, NULL, 0, &zero); /* already gone is fine */
}

static int kq_poll(evr_loop_t *loop, int64_t timeout_ns) {
  struct kq_state *st = loop->backend_state;
  struct timespec ts, *tsp = NULL;
  if (timeout_ns >= 0) {
    ts = evr__ns_to_timespec(timeout_ns); /* kevent() waits in ns */
    tsp = &ts;
  }
  int n = kevent(st->kq, NULL, 0, st->events, KQ_BATCH, tsp);
  if (n < 0) return errno == EINTR ? 0 : -errno;

  int woken = 0;
  /* Merge pass, before any user code runs: a node's backend_slot remembers the
   * index (plus one) of the first event of the fd. A value left from an
   * earlier batch is recognised as such because that entry must name the
   * same fd and still be live. */
  for (int i = 0; i < n; i++) {
    struct kevent *e = &st->events[i];
    st->mask[i] = 0;
#if EVR_KQUEUE_USER_WAKE
    if (e->filter == EVFILT_USER) {
      woken = 1; /* reported once the I/O of this batch is dispatched */
      continue;
    }
#endif
    int fd = (int)e->ident;
    struct evr__ionode *io = evr__io_lookup(loop, fd);
    unsigned m = to_mask(e);
    unsigned filt = m & (EVR_READ | EVR_WRITE);
    if (!io || !(io->registered & filt)) {
      /* A filter nobody asked for: left behind by a removal that failed, or
       * by an fd closed while watched, which libkqueue cannot notice. Being
       * level-triggered it would fire on every wait, so drop it. */
      drop_filter(st->kq, e);
      continue;
    }
    uint32_t s = io->backend_slot;
    if (s > 0 && s <= (uint32_t)i && (int)st->events[s - 1].ident == fd &&
        st->mask[s - 1]) {
      st->mask[s - 1] |= (unsigned char)m;
      if (!st->err[s - 1]) st->err[s - 1] = eof_error(e);
    } else {
      io->backend_slot = (uint32_t)i + 1;
      st->mask[i] = (unsigned char)m;
      st->err[i] = eof_error(e);
    }
  }

  st->n = n;
  for (st->cur = 0; st->cur < n; st->cur++) {
    unsigned m = st->mask[st->cur];
    if (!m) continue; /* merged, unwatched or forgotten during this batch */
    evr__io_dispatch(loop, (int)st->events[st->cur].ident, m, st->err[st->cur]);
  }
  st->n = st->cur = 0;
  /* The wait consumed the trigger (EV_CLEAR) before this call, which the
   * lost-wake-up argument in reactor/async.c relies on. */
  if (woken) evr__wake_dispatch(loop);
  return n;
}

static void kq_forget(evr_loop_t *loop, int fd) {
  struct kq_state *st = loop->backend_state;
  for (int i = st->cur + 1; i < st->n; i++)
    if ((int)st->events[i].ident == fd) st->mask[i] = 0;
}

/* A kqueue is not inherited across fork (libkqueue closes its descriptors in
 * the child to match), so the child builds a new one and registers every
 * active watcher again. The old number is closed only in the process that
 * opened it: in a child it may already belong to an unrelated descriptor.
 * A watcher whose descriptor the child closed (EBADF) stays out, as with
 * epoll: it is the user's doing, and must cost neither the other watchers
 * nor the loop (an error here would leave the loop unusable: every run
 * would try again). Its later removal meets EBADF or ENOENT, which
 * kq_apply() takes as done. Any other error is the loop's. */
static int kq_reinit(evr_loop_t *loop) {
  struct kq_state *st = loop->backend_state;
  int kq = kq_open();
  if (kq < 0) return kq;
  if (st->pid == getpid()) kq_close(st->kq);
  st->kq = kq;
  st->pid = getpid();
  int first_err = 0;
#if EVR_KQUEUE_USER_WAKE
  first_err = kq_wake_register(kq);
#endif
  for (unsigned i = 0; i < loop->nfds; i++) {
    struct evr__ionode *io = loop->fds[i];
    if (!io || !io->registered) continue;
    int rc = kq_update(loop, io, 0, io->registered);
    if (rc && rc != EVR_EBADF && !first_err) first_err = rc;
  }
  return first_err;
}

const evr__backend_t evr__backend_kqueue = {
    .name = "kqueue",
#if EVR_KQUEUE_USER_WAKE
    .caps = EVR__CAP_REINIT_AFTER_FORK | EVR__CAP_NATIVE_WAKE,
#else
    .caps = EVR__CAP_REINIT_AFTER_FORK,
#endif
    .init = kq_init,
    .destroy = kq_destroy,
    .update = kq_update,
    .poll = kq_poll,
    .forget = kq_forget,
    .reinit = kq_reinit,
#if EVR_KQUEUE_USER_WAKE
    .wake = kq_wake,
#endif
};
