/* backends/epoll.c: the Linux backend.
 *
 * Level-triggered epoll; interest changes are applied at once (epoll_ctl is
 * one call per change, nothing to batch), so errors such as EPERM for a
 * regular file reach evr_io_start() directly. forget() clears entries of the
 * current batch so a closed-and-reused fd never sees a stale event.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>
#include "reactor/internal.h"

#define EPOLL_BATCH 1024

struct epoll_state {
  int epfd;
  int cur;   /* index being dispatched; forget() scans after it */
  int n;     /* events in the current batch; 0 outside dispatch */
  struct epoll_event events[EPOLL_BATCH];
};

static int ep_init(evr_loop_t *loop) {
  struct epoll_state *st = malloc(sizeof *st);
  if (!st) return EVR_ENOMEM;
  st->cur = st->n = 0;
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

static int ep_update(evr_loop_t *loop, evr_io_t *io, unsigned old_mask,
                     unsigned new_mask) {
  struct epoll_state *st = loop->backend_state;
  struct epoll_event ev = {.events = to_epoll(new_mask), .data.fd = io->fd};
  int op = new_mask == 0 ? EPOLL_CTL_DEL
                         : old_mask == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(st->epfd, op, io->fd, &ev) == 0) return 0;
  int err = errno;
  /* The fd may be left in the set from a watcher whose fd was dup'ed before
   * close (epoll tracks open file descriptions): re-add becomes a MOD. */
  if (op == EPOLL_CTL_ADD && err == EEXIST &&
      epoll_ctl(st->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0)
    return 0;
  return -err;
}

static int ep_poll(evr_loop_t *loop, int timeout_ms) {
  struct epoll_state *st = loop->backend_state;
  int n = epoll_wait(st->epfd, st->events, EPOLL_BATCH, timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  st->n = n;
  for (st->cur = 0; st->cur < n; st->cur++) {
    struct epoll_event *e = &st->events[st->cur];
    int fd = e->data.fd;
    if (fd < 0) continue; /* forgotten during this batch */
    if (!evr__io_lookup(loop, fd)) {
      /* No watcher: a stale registration (see ep_update); drop it so it
       * cannot wake us again. Errors mean it is already gone. */
      (void)epoll_ctl(st->epfd, EPOLL_CTL_DEL, fd, e);
      continue;
    }
    unsigned m = 0;
    if (e->events & EPOLLIN) m |= EVR_READ;
    if (e->events & EPOLLOUT) m |= EVR_WRITE;
    if (e->events & EPOLLERR) m |= EVR_ERR;
    if (e->events & EPOLLHUP) m |= EVR_HUP;
    evr__io_dispatch(loop, fd, m);
  }
  st->n = st->cur = 0;
  return n;
}

static void ep_forget(evr_loop_t *loop, int fd) {
  struct epoll_state *st = loop->backend_state;
  for (int i = st->cur + 1; i < st->n; i++)
    if (st->events[i].data.fd == fd) st->events[i].data.fd = -1;
}

/* A forked child shares the parent's epoll set: build a private one. */
static int ep_reinit(evr_loop_t *loop) {
  struct epoll_state *st = loop->backend_state;
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return -errno;
  (void)close(st->epfd);
  st->epfd = fd;
  for (unsigned i = 0; i < loop->nfds; i++) {
    evr_io_t *io = loop->fds[i];
    if (!io) continue;
    struct epoll_event ev = {.events = to_epoll(io->registered),
                             .data.fd = io->fd};
    if (epoll_ctl(fd, EPOLL_CTL_ADD, io->fd, &ev) < 0) return -errno;
  }
  return 0;
}

const evr__backend_t evr__backend_epoll = {
    .name = "epoll",
    .caps = EVR__CAP_REINIT_AFTER_FORK,
    .init = ep_init,
    .destroy = ep_destroy,
    .update = ep_update,
    .poll = ep_poll,
    .forget = ep_forget,
    .reinit = ep_reinit,
};
