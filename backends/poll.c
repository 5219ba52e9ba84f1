/* backends/poll.c: the portable POSIX backend.
 *
 * A dense pollfd array; a node's backend_slot is its index, so removal
 * swaps the last entry into the hole in O(1). poll() runs on a copy made when
 * the set changed, which stays stable while callbacks add and remove watchers;
 * forget() clears the fd's later entries in that copy. The wait is ppoll()
 * with the exact timeout where the build has it (EVR_HAVE_PPOLL), else
 * poll() with the timeout rounded up to whole milliseconds.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include "reactor/internal.h"

struct poll_state {
  struct pollfd *set;     /* the interest set, dense */
  struct pollfd *ready;   /* what poll() ran on; dispatched from here */
  unsigned n, cap;
  unsigned ready_n, ready_cap;
  int dirty;              /* set changed since the last copy */
  int cur, batch;         /* dispatch cursor and size; 0 outside dispatch */
};

static int pl_init(evr_loop_t *loop) {
  struct poll_state *st = calloc(1, sizeof *st);
  if (!st) return EVR_ENOMEM;
  loop->backend_state = st;
  return 0;
}

static void pl_destroy(evr_loop_t *loop) {
  struct poll_state *st = loop->backend_state;
  if (!st) return;
  free(st->set);
  free(st->ready);
  free(st);
  loop->backend_state = NULL;
}

static short to_poll(unsigned mask) {
  short e = 0;
  if (mask & EVR_READ) e |= POLLIN;
  if (mask & EVR_WRITE) e |= POLLOUT;
  return e;
}

static int grow(struct pollfd **p, unsigned *cap, unsigned need) {
  if (need <= *cap) return 0;
  unsigned n = *cap ? *cap : 64;
  while (n < need) n *= 2;
  struct pollfd *q = realloc(*p, n * sizeof *q);
  if (!q) return EVR_ENOMEM;
  *p = q;
  *cap = n;
  return 0;
}

static int pl_update(evr_loop_t *loop, struct evr__ionode *io,
                     unsigned old_mask, unsigned new_mask) {
  struct poll_state *st = loop->backend_state;
  st->dirty = 1;
  if (old_mask == 0) {
    int rc = grow(&st->set, &st->cap, st->n + 1);
    if (rc) return rc;
    io->backend_slot = st->n;
    st->set[st->n++] = (struct pollfd){.fd = io->fd, .events = to_poll(new_mask)};
    return 0;
  }
  unsigned i = io->backend_slot;
  assert(i < st->n && st->set[i].fd == io->fd);
  if (new_mask) {
    st->set[i].events = to_poll(new_mask);
    return 0;
  }
  st->set[i] = st->set[--st->n];
  if (i < st->n) {
    struct evr__ionode *moved = evr__io_lookup(loop, st->set[i].fd);
    assert(moved);
    moved->backend_slot = i;
  }
  return 0;
}

static int pl_wait(struct poll_state *st, int64_t timeout_ns) {
#if EVR_HAVE_PPOLL
  struct timespec ts;
  if (timeout_ns >= 0) ts = evr__ns_to_timespec(timeout_ns);
  return ppoll(st->ready, st->ready_n, timeout_ns >= 0 ? &ts : NULL, NULL);
#else
  return poll(st->ready, st->ready_n, evr__ns_to_ms_up(timeout_ns));
#endif
}

static int pl_poll(evr_loop_t *loop, int64_t timeout_ns) {
  struct poll_state *st = loop->backend_state;
  if (st->dirty) {
    int rc = grow(&st->ready, &st->ready_cap, st->n);
    if (rc) return rc;
    if (st->n) memcpy(st->ready, st->set, st->n * sizeof *st->ready);
    st->ready_n = st->n;
    st->dirty = 0;
  }
  int n = pl_wait(st, timeout_ns);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  st->batch = (int)st->ready_n;
  int seen = 0;
  for (st->cur = 0; st->cur < st->batch && seen < n; st->cur++) {
    struct pollfd *p = &st->ready[st->cur];
    if (!p->revents) continue;
    seen++;
    short r = p->revents;
    p->revents = 0;
    if (p->fd < 0) continue; /* forgotten during this batch */
    unsigned m = 0;
    if (r & POLLIN) m |= EVR_READ;
    if (r & POLLOUT) m |= EVR_WRITE;
    if (r & (POLLERR | POLLNVAL)) m |= EVR_ERR;
    if (r & POLLHUP) m |= EVR_HUP;
    evr__io_dispatch(loop, p->fd, m, 0);
  }
  st->batch = st->cur = 0;
  return n;
}

static void pl_forget(evr_loop_t *loop, int fd) {
  struct poll_state *st = loop->backend_state;
  for (int i = st->cur + 1; i < st->batch; i++)
    if (st->ready[i].fd == fd) {
      /* Keep the copy's entry counted but inert; the next poll recopies. */
      st->ready[i].fd = -1;
    }
}

const evr__backend_t evr__backend_poll = {
    .name = "poll",
    .caps = 0,
    .init = pl_init,
    .destroy = pl_destroy,
    .update = pl_update,
    .poll = pl_poll,
    .forget = pl_forget,
};
