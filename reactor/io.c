/* reactor/io.c: I/O watchers and the single dispatch point for backends.
 *
 * Invariant: loop->fds[fd] is the active watcher of fd or NULL, and an event
 * reaches a user callback only through evr__io_dispatch(), which re-checks
 * that map and the watcher's current interest. Stopping a watcher calls the
 * backend's forget() so events harvested earlier in the same batch die, even
 * if the fd number is reused by a new watcher before the batch ends.
 */
#include <fcntl.h>
#include <stdlib.h>
#include "reactor/internal.h"

static void io_close(evr_handle_t *h) {
  (void)evr_io_stop(EVR_CONTAINER_OF(h, evr_io_t, base));
}

static const evr__handle_vt_t io_vt = {"io", io_close};

int evr_io_init(evr_loop_t *loop, evr_io_t *io, int fd) {
  if (!loop || !io) return EVR_EINVAL;
  if (fd < 0) return EVR_EBADF;
  if (fcntl(fd, F_GETFD) < 0) return -errno;
  evr__handle_init(loop, &io->base, &io_vt);
  io->fd = fd;
  io->events = 0;
  io->registered = 0;
  io->backend_slot = 0;
  io->cb = NULL;
  return 0;
}

/* Grow the fd map so that fd is a valid index. Only on watcher start. */
static int fds_reserve(evr_loop_t *loop, int fd) {
  if ((unsigned)fd < loop->nfds) return 0;
  unsigned n = loop->nfds ? loop->nfds : 64;
  while (n <= (unsigned)fd) n *= 2;
  evr_io_t **p = realloc(loop->fds, n * sizeof *p);
  if (!p) return EVR_ENOMEM;
  for (unsigned i = loop->nfds; i < n; i++) p[i] = NULL;
  loop->fds = p;
  loop->nfds = n;
  return 0;
}

void evr__io_free_map(evr_loop_t *loop) {
  free(loop->fds);
  loop->fds = NULL;
  loop->nfds = 0;
}

#define IO_MASK (EVR_READ | EVR_WRITE)

int evr_io_start(evr_io_t *io, unsigned events, evr_io_cb cb) {
  if (!io || !evr__handle_usable(&io->base) || !cb) return EVR_EINVAL;
  if (events == 0 || (events & ~(unsigned)IO_MASK)) return EVR_EINVAL;
  if (evr__handle_active(&io->base)) return EVR_EALREADY;
  evr_loop_t *loop = io->base.loop;
  if (evr__io_lookup(loop, io->fd)) return EVR_EEXIST;
  int rc = fds_reserve(loop, io->fd);
  if (rc) return rc;
  rc = loop->backend->update(loop, io, 0, events);
  if (rc) return rc;
  io->registered = events;
  io->events = events;
  io->cb = cb;
  loop->fds[io->fd] = io;
  evr__handle_start(&io->base);
  return 0;
}

int evr_io_set(evr_io_t *io, unsigned events) {
  if (!io || !evr__handle_usable(&io->base)) return EVR_EINVAL;
  if (events == 0 || (events & ~(unsigned)IO_MASK)) return EVR_EINVAL;
  if (!evr__handle_active(&io->base)) return EVR_EINVAL;
  if (events == io->events) return 0;
  evr_loop_t *loop = io->base.loop;
  int rc = loop->backend->update(loop, io, io->registered, events);
  if (rc) return rc;
  io->registered = events;
  io->events = events;
  return 0;
}

int evr_io_stop(evr_io_t *io) {
  if (!io || !(io->base.flags & EVR__H_INIT)) return EVR_EINVAL;
  if (!evr__handle_active(&io->base)) return 0;
  evr_loop_t *loop = io->base.loop;
  /* Removal errors are ignored on purpose: the fd may already be closed
   * (the kernel then dropped it from the interest set itself). */
  (void)loop->backend->update(loop, io, io->registered, 0);
  io->registered = 0;
  io->events = 0;
  loop->fds[io->fd] = NULL;
  loop->backend->forget(loop, io->fd);
  evr__handle_stop(&io->base);
  return 0;
}

void evr__io_dispatch(evr_loop_t *loop, int fd, unsigned revents) {
  evr_io_t *io = evr__io_lookup(loop, fd);
  if (!io) return;
  unsigned ev = revents & io->events;
  if (revents & (EVR_ERR | EVR_HUP)) {
    /* Let the user's read()/write() meet the condition. */
    ev |= io->events | (revents & (EVR_ERR | EVR_HUP));
  }
  if (!ev) return;
  loop->metrics.events++;
  io->cb(io, ev);
}
