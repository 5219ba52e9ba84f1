/* reactor/io.c: I/O watchers and the single dispatch point for backends.
 *
 * Invariant: loop->fds[fd] is the open watcher last started on fd (active,
 * stopped with its registration lingering, or stopped and unregistered:
 * io->registered tells) or NULL; it leaves the map when it closes or when
 * another watcher starts on the number. An event reaches a user callback
 * only through evr__io_dispatch(), which re-checks that map and the
 * watcher's current interest (0 when stopped). Keeping stopped watchers in
 * the map lets evr_io_init() recognise an open watcher it is given again
 * from the loop's memory alone. Stopping a watcher calls the
 * backend's forget() so events harvested earlier in the same batch die, even
 * if the fd number is reused by a new watcher before the batch ends.
 *
 * Lazy removal: evr_io_stop() does not tell the backend. The watcher keeps
 * its registration (io->registered), flagged EVR__H_LINGER with
 * io->events == 0 so nothing is dispatched to it, until the next poll phase
 * removes it (evr__io_flush). Restarting it before then with
 * evr_io_resume(), whose caller vouches that the descriptor stayed open,
 * costs no system call when the interest is the same (one-shot re-arming is
 * free); evr_io_start() makes one, which also checks that the descriptor
 * still names the registered file (it may have been closed and its number
 * reused). A watcher closed with
 * evr_close(), or a different watcher started on the same fd, removes the
 * lingering registration at once. A user who closes the fd of a stopped
 * watcher before the next poll leaves the removal to fail; the kernel
 * dropped the registration itself unless the file is still open elsewhere
 * (dup, fork), a case the epoll backend detects and repairs
 * (backends/epoll.c). Backends without EVR__CAP_LAZY_REMOVE get every
 * removal at once.
 */
#include <fcntl.h>
#include <stdlib.h>
#include "reactor/internal.h"

/* The backend's update(), unless the loop was inherited through fork() and
 * its backend state is a kernel object not yet replaced: then the change is
 * made in memory only, and evr_loop_fork() registers the watchers as they
 * are by then. (The poll backend's state is all in memory: it is kept up to
 * date as usual.) */
static int backend_update(evr_loop_t *loop, evr_io_t *io, unsigned old_mask,
                          unsigned new_mask) {
  if ((loop->backend->caps & EVR__CAP_REINIT_AFTER_FORK) && evr__loop_inherited(loop))
    return 0;
  return loop->backend->update(loop, io, old_mask, new_mask);
}

/* Remove io's registration (it stays in the fd map: see above). */
static void unlinger(evr_loop_t *loop, evr_io_t *io) {
  /* Errors are ignored: the fd may be closed already (see above). */
  (void)backend_update(loop, io, io->registered, 0);
  io->registered = 0;
  io->base.flags &= ~(EVR__H_LINGER | EVR__H_LQUEUED);
}

void evr__io_release(evr_io_t *io) {
  if (!(io->base.flags & EVR__H_INIT)) return;
  (void)evr_io_stop(io);
  evr_loop_t *loop = io->base.loop;
  if (io->base.flags & EVR__H_LINGER) unlinger(loop, io);
  if (evr__io_lookup(loop, io->fd) == io) loop->fds[io->fd] = NULL;
}

void evr__io_flush(evr_loop_t *loop) {
  for (unsigned i = 0; i < loop->nlinger; i++) {
    evr_io_t *io = evr__io_lookup(loop, loop->linger[i]);
    if (!io || !(io->base.flags & EVR__H_LQUEUED)) continue;
    if (io->base.flags & EVR__H_LINGER)
      unlinger(loop, io);
    else
      io->base.flags &= ~EVR__H_LQUEUED; /* restarted since */
  }
  loop->nlinger = 0;
}

void evr__io_drop_lingering(evr_loop_t *loop) {
  for (unsigned i = 0; i < loop->nlinger; i++) {
    evr_io_t *io = evr__io_lookup(loop, loop->linger[i]);
    if (!io || !(io->base.flags & EVR__H_LQUEUED)) continue;
    io->base.flags &= ~EVR__H_LQUEUED;
    if (!(io->base.flags & EVR__H_LINGER)) continue;
    io->registered = 0;
    io->base.flags &= ~EVR__H_LINGER;
  }
  loop->nlinger = 0;
}

void evr__io_close(evr_handle_t *h) {
  evr__io_release(EVR_CONTAINER_OF(h, evr_io_t, base));
}

int evr_io_init(evr_loop_t *loop, evr_io_t *io, int fd) {
  if (!loop || !io) return EVR_EINVAL;
  if (fd < 0) return EVR_EBADF;
  if (fcntl(fd, F_GETFD) < 0) return -errno;
  if (evr__io_lookup(loop, fd) == io) {
    /* An open watcher of this loop, last started on this number (only the
     * loop's own map is read to know it: io may be fresh memory). Re-init
     * it in place: it is on the handle list already. */
    if (evr__handle_active(&io->base)) return EVR_EBUSY;
    if (io->registered) unlinger(loop, io); /* the old file's, if any */
    io->base.flags = (io->base.flags & EVR__H_REF) | EVR__H_INIT;
    io->base.close_cb = NULL;
  } else {
    evr__handle_init(loop, &io->base, EVR__HT_IO);
  }
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
  free(loop->linger);
  loop->linger = NULL;
  loop->nlinger = loop->linger_cap = 0;
}

#define IO_MASK (EVR_READ | EVR_WRITE)

/* evr_io_start() (same_file 0) and evr_io_resume() (same_file 1). */
static int io_start(evr_io_t *io, unsigned events, evr_io_cb cb, int same_file) {
  if (!io || !evr__handle_usable(&io->base) || !cb) return EVR_EINVAL;
  if (events == 0 || (events & ~(unsigned)IO_MASK)) return EVR_EINVAL;
  if (evr__handle_active(&io->base)) return EVR_EALREADY;
  evr_loop_t *loop = io->base.loop;
  evr_io_t *cur = evr__io_lookup(loop, io->fd);
  if (cur == io && io->registered) {
    /* Stopped in this iteration and still registered (lazy removal). Unless
     * the caller vouches for the file, the descriptor may have been closed
     * since and its number given to a new file: the backend then checks the
     * registration (epoll: one EPOLL_CTL_MOD, which fails for a file it
     * does not hold, and then adds the new one) and applies the new
     * interest in the same call. */
    if (!same_file || io->registered != events) {
      int rc = backend_update(loop, io, io->registered, events);
      if (rc) return rc;
      io->registered = events;
    }
    io->base.flags &= ~EVR__H_LINGER;
    io->events = events;
    io->cb = cb;
    evr__handle_start(&io->base);
    return 0;
  }
  if (cur && cur != io) {
    /* Another open watcher on this number: it may be taken over unless it
     * is active; it stays open, out of the map. */
    if (evr__handle_active(&cur->base)) return EVR_EEXIST;
    if (cur->registered) unlinger(loop, cur);
  }
  int rc = fds_reserve(loop, io->fd);
  if (rc) return rc;
  rc = backend_update(loop, io, 0, events);
  if (rc) return rc;
  io->registered = events;
  io->events = events;
  io->cb = cb;
  loop->fds[io->fd] = io;
  evr__handle_start(&io->base);
  return 0;
}

int evr_io_start(evr_io_t *io, unsigned events, evr_io_cb cb) {
  return io_start(io, events, cb, 0);
}

int evr_io_resume(evr_io_t *io, unsigned events, evr_io_cb cb) {
  return io_start(io, events, cb, 1);
}

int evr_io_set(evr_io_t *io, unsigned events) {
  if (!io || !evr__handle_usable(&io->base)) return EVR_EINVAL;
  if (events == 0 || (events & ~(unsigned)IO_MASK)) return EVR_EINVAL;
  if (!evr__handle_active(&io->base)) return EVR_EINVAL;
  if (events == io->events) return 0;
  evr_loop_t *loop = io->base.loop;
  int rc = backend_update(loop, io, io->registered, events);
  if (rc) return rc;
  io->registered = events;
  io->events = events;
  return 0;
}

/* Queue io's fd for removal at the next poll. 0 or EVR_ENOMEM. */
static int linger_push(evr_loop_t *loop, evr_io_t *io) {
  if (io->base.flags & EVR__H_LQUEUED) return 0;
  if (loop->nlinger == loop->linger_cap) {
    unsigned n = loop->linger_cap ? loop->linger_cap * 2 : 64;
    int *p = realloc(loop->linger, n * sizeof *p);
    if (!p) return EVR_ENOMEM;
    loop->linger = p;
    loop->linger_cap = n;
  }
  loop->linger[loop->nlinger++] = io->fd;
  io->base.flags |= EVR__H_LQUEUED;
  return 0;
}

int evr_io_stop(evr_io_t *io) {
  if (!io || !(io->base.flags & EVR__H_INIT)) return EVR_EINVAL;
  if (!evr__handle_active(&io->base)) return 0;
  evr_loop_t *loop = io->base.loop;
  io->events = 0;
  loop->backend->forget(loop, io->fd);
  evr__handle_stop(&io->base);
  io->base.flags |= EVR__H_LINGER;
  /* Remove it now if the backend wants that (see EVR__CAP_LAZY_REMOVE) or
   * there is no room to remember it (the queue grows rarely). */
  if (!(loop->backend->caps & EVR__CAP_LAZY_REMOVE) || linger_push(loop, io) != 0)
    unlinger(loop, io);
  return 0;
}

void evr__io_dispatch(evr_loop_t *loop, int fd, unsigned revents) {
  evr_io_t *io = evr__io_lookup(loop, fd);
  if (!io || !io->events) return; /* none, or stopped and lingering */
  unsigned ev = revents & io->events;
  if (revents & (EVR_ERR | EVR_HUP)) {
    /* Let the user's read()/write() meet the condition. */
    ev |= io->events | (revents & (EVR_ERR | EVR_HUP));
  }
  if (!ev) return;
  loop->metrics.events++;
  io->cb(io, ev);
}
