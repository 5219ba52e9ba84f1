/* backends/epoll.c: the Linux backend.
 *
 * Level-triggered epoll; interest changes are applied at once (epoll_ctl is
 * one call per change, nothing to batch), so errors such as EPERM for a
 * regular file reach evr_io_start() directly. forget() clears entries of the
 * current batch so a closed-and-reused fd never sees a stale event.
 *
 * Stale registrations. epoll tracks open file descriptions, not fd numbers:
 * a file closed while registered stays in the set if it is open elsewhere
 * (dup, fork), and can then be neither removed (its fd number is gone or
 * names another file) nor told apart by fd from a new file on that number.
 * That happens when a watcher is stopped and its fd closed before the core's
 * lazy removal ran (reactor/io.c). So each registration carries a
 * generation next to the fd (event data: fd | gen << 32, the generation kept
 * in the node's backend_slot), and an event that matches no node and cannot
 * be removed, or carries another generation than its fd's node, makes the
 * backend rebuild its set from the nodes after the batch: one rare,
 * O(watchers) repair instead of a loop that wakes up forever.
 *
 * Waiting: epoll_pwait2() (Linux 5.11) takes the timeout in nanoseconds. It
 * is called through syscall(), so that any libc will do, where the headers
 * define its number, and only when the timeout is not a whole number of
 * milliseconds (epoll_wait() is the cheaper call, and 0 and -1 are whole); a kernel that lacks it (ENOSYS) makes the process fall
 * back, once and for all, to epoll_wait() with the timeout rounded up to
 * whole milliseconds (never shorter than asked).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "reactor/internal.h"

#define EPOLL_BATCH 1024

struct epoll_state {
  int epfd;
  int cur;   /* index being dispatched; forget() scans after it */
  int n;     /* events in the current batch; 0 outside dispatch */
  uint32_t gen; /* last registration generation handed out */
  struct epoll_event events[EPOLL_BATCH];
};

static int ep_init(evr_loop_t *loop) {
  struct epoll_state *st = malloc(sizeof *st);
  if (!st) return EVR_ENOMEM;
  st->cur = st->n = 0;
  st->gen = 0;
  st->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (st->epfd < 0) {
    int rc = -errno;
    free(st);
    return rc;
  }
  loop->backend_state = st;
  return 0;
}

static void ep_destroy(evr_loop_t *loop) {
  struct epoll_state *st = loop->backend_state;
  if (!st) return;
  if (st->epfd >= 0) (void)close(st->epfd);
  free(st);
  loop->backend_state = NULL;
}

static uint32_t to_epoll(unsigned mask) {
  uint32_t e = 0;
  if (mask & EVR_READ) e |= EPOLLIN;
  if (mask & EVR_WRITE) e |= EPOLLOUT;
  return e;
}

static uint64_t ev_data(int fd, uint32_t gen) {
  return (uint64_t)(uint32_t)fd | (uint64_t)gen << 32;
}

static int ep_update(evr_loop_t *loop, struct evr__ionode *io,
                     unsigned old_mask, unsigned new_mask) {
  struct epoll_state *st = loop->backend_state;
  if (old_mask == 0) {
    if (++st->gen == 0) st->gen = 1;
    io->backend_slot = st->gen;
  }
  struct epoll_event ev = {.events = to_epoll(new_mask),
                           .data.u64 = ev_data(io->fd, io->backend_slot)};
  int op = new_mask == 0 ? EPOLL_CTL_DEL
                         : old_mask == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(st->epfd, op, io->fd, &ev) == 0) return 0;
  int err = errno;
  /* The fd may be left in the set from a watcher whose fd was dup'ed before
   * close (epoll tracks open file descriptions): re-add becomes a MOD. */
  if (op == EPOLL_CTL_ADD && err == EEXIST &&
      epoll_ctl(st->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0)
    return 0;
  /* A restarted watcher whose descriptor was closed and its number given to
   * a new file (reactor/io.c): the set holds no registration for that file.
   * Add it under a new generation; events of the old file, if it is still
   * open elsewhere, carry the old one and make us repair. */
  if (op == EPOLL_CTL_MOD && err == ENOENT) {
    if (++st->gen == 0) st->gen = 1;
    ev.data.u64 = ev_data(io->fd, st->gen);
    if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, io->fd, &ev) == 0) {
      io->backend_slot = st->gen;
      return 0;
    }
    err = errno;
  }
  return -err;
}

static int ep_rebuild(evr_loop_t *loop);

#ifdef SYS_epoll_pwait2
/* The kernel's struct __kernel_timespec: 64-bit fields on every ABI (a
 * 32-bit libc's struct timespec may be narrower). */
struct ep_timespec {
  int64_t tv_sec;
  long long tv_nsec;
};

/* 1 once the kernel said it has no epoll_pwait2 (shared by every loop). */
static atomic_int pwait2_missing;
#endif

/* Wait at most timeout_ns (see the top of the file). -1 with errno set on
 * failure, as epoll_wait(). */
static int ep_wait(struct epoll_state *st, int64_t timeout_ns) {
#ifdef SYS_epoll_pwait2
  /* Whole milliseconds (0 and -1 included) need no finer wait. */
  if (timeout_ns % 1000000 != 0 &&
      !atomic_load_explicit(&pwait2_missing, memory_order_relaxed)) {
    struct ep_timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
      ts.tv_sec = timeout_ns / 1000000000;
      ts.tv_nsec = timeout_ns % 1000000000;
      tsp = &ts;
    }
    long n = syscall(SYS_epoll_pwait2, st->epfd, st->events, EPOLL_BATCH, tsp,
                     NULL, (size_t)0);
    if (n >= 0 || errno != ENOSYS) return (int)n;
    atomic_store_explicit(&pwait2_missing, 1, memory_order_relaxed);
  }
#endif
  return epoll_wait(st->epfd, st->events, EPOLL_BATCH, evr__ns_to_ms_up(timeout_ns));
}

static int ep_poll(evr_loop_t *loop, int64_t timeout_ns) {
  struct epoll_state *st = loop->backend_state;
  int n = ep_wait(st, timeout_ns);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  int stale = 0;
  st->n = n;
  for (st->cur = 0; st->cur < n; st->cur++) {
    struct epoll_event *e = &st->events[st->cur];
    int fd = (int)(uint32_t)e->data.u64;
    if (fd < 0) continue; /* forgotten during this batch */
    struct evr__ionode *io = evr__io_lookup(loop, fd);
    if (!io || !io->registered) {
      /* No node: left by an ADD that met EEXIST (see ep_update); drop
       * it so it cannot wake us again. If that fails, the registration
       * belongs to a closed file that is still open elsewhere. */
      if (epoll_ctl(st->epfd, EPOLL_CTL_DEL, fd, e) < 0) stale = 1;
      continue;
    }
    if ((uint32_t)(e->data.u64 >> 32) != io->backend_slot) {
      stale = 1; /* an earlier file's registration on this fd number */
      continue;
    }
    unsigned m = 0;
    if (e->events & EPOLLIN) m |= EVR_READ;
    if (e->events & EPOLLOUT) m |= EVR_WRITE;
    if (e->events & EPOLLERR) m |= EVR_ERR;
    if (e->events & EPOLLHUP) m |= EVR_HUP;
    evr__io_dispatch(loop, fd, m, 0);
  }
  st->n = st->cur = 0;
  /* A set that cannot be rebuilt would report the stale file again at once:
   * the loop must stop with the error, not spin on it. */
  if (stale) {
    int rc = ep_rebuild(loop);
    if (rc) return rc;
  }
  return n;
}

static void ep_forget(evr_loop_t *loop, int fd) {
  struct epoll_state *st = loop->backend_state;
  for (int i = st->cur + 1; i < st->n; i++)
    if ((int)(uint32_t)st->events[i].data.u64 == fd)
      st->events[i].data.u64 = UINT64_MAX; /* fd -1 */
}

/* A new set holding the registrations of the current watchers (lingering
 * ones included: their removal, due before the next wait, then finds them),
 * each under a new generation: no event of the old set can match them.
 * 0, or the error that kept the new set from being created (the old one is
 * then kept). A watcher whose fd was closed under it stays out: its user's
 * fault must not cost the others. */
static int ep_rebuild(evr_loop_t *loop) {
  struct epoll_state *st = loop->backend_state;
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return -errno;
  for (unsigned i = 0; i < loop->nfds; i++) {
    struct evr__ionode *io = loop->fds[i];
    if (!io || !io->registered) continue;
    if (++st->gen == 0) st->gen = 1;
    io->backend_slot = st->gen;
    struct epoll_event ev = {.events = to_epoll(io->registered),
                             .data.u64 = ev_data(io->fd, io->backend_slot)};
    (void)epoll_ctl(fd, EPOLL_CTL_ADD, io->fd, &ev);
  }
  (void)close(st->epfd);
  st->epfd = fd;
  return 0;
}

/* A forked child shares the parent's epoll set: build a private one. */
static int ep_reinit(evr_loop_t *loop) { return ep_rebuild(loop); }

const evr__backend_t evr__backend_epoll = {
    .name = "epoll",
    .caps = EVR__CAP_REINIT_AFTER_FORK | EVR__CAP_LAZY_REMOVE,
    .init = ep_init,
    .destroy = ep_destroy,
    .update = ep_update,
    .poll = ep_poll,
    .forget = ep_forget,
    .reinit = ep_reinit,
};
