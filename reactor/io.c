/* reactor/io.c: I/O nodes, the evr_io_t watchers built on them, and the
 * single dispatch point for backends.
 *
 * A node (struct evr__ionode) is one descriptor's registration: fd, the
 * interest its owner wants (events), the interest the backend holds
 * (registered) and the backend's slot. Its owner is a public watcher, a
 * stream, a listener, a hand-off request or the loop's wake-up channel
 * (node->kind), and
 * evr__io_dispatch() hands each event to that owner after re-checking it.
 *
 * Invariant: loop->fds[fd] is the node last started on fd and not released
 * since, or NULL. Such a node is in one of three states: active (events !=
 * 0, registered == events), lingering (stopped: events == 0, registered !=
 * 0, see below), or stopped and unregistered (both 0). A node leaves the
 * map when it is released (its owner closes, or is about to close fd) or
 * when another node starts on the number. An event reaches an owner only
 * through evr__io_dispatch(), which re-checks that map and the node's
 * current interest (0 when stopped). Keeping stopped watchers in the map
 * lets evr_io_init() recognise an open watcher it is given again from the
 * loop's memory alone. Stopping a node calls the backend's forget() so
 * events harvested earlier in the same batch die, even if the fd number is
 * reused by a new node before the batch ends.
 *
 * Lazy removal, all of it kept in this file: stopping a node does not tell
 * the backend. The node keeps its registration (lingering) and its fd is
 * queued in loop->linger (EVR__IO_LQUEUED) until the next poll phase
 * removes it (evr__io_flush). Restarting it before then with same_file set
 * (evr_io_resume(), streams and listeners: the owner vouches that the
 * descriptor stayed open) costs no system call when the interest is the
 * same (one-shot re-arming is free); evr_io_start() makes one, which also
 * checks that the descriptor still names the registered file (it may have
 * been closed and its number reused). A released node, or a different node
 * started on the same fd, has its lingering registration removed at once.
 * A user who closes the fd of a stopped watcher before the next poll leaves
 * the removal to fail; the kernel dropped the registration itself unless
 * the file is still open elsewhere (dup, fork), a case the epoll backend
 * detects and repairs (backends/epoll.c). Backends without
 * EVR__CAP_LAZY_REMOVE get every removal at once.
 */
#include <fcntl.h>
#include <stdlib.h>
#include "reactor/internal.h"

#define IO_MASK (EVR_READ | EVR_WRITE)

static inline int lingering(const struct evr__ionode *n) {
  return n->events == 0 && n->registered != 0;
}

/* The backend's update(), unless the loop was inherited through fork() and
 * its backend state is a kernel object not yet replaced: then the change is
 * made in memory only, and evr_loop_fork() registers the nodes as they
 * are by then. (The poll backend's state is all in memory: it is kept up to
 * date as usual.) */
static int backend_update(evr_loop_t *loop, struct evr__ionode *n,
                          unsigned old_mask, unsigned new_mask) {
  if ((loop->backend->caps & EVR__CAP_REINIT_AFTER_FORK) && evr__loop_inherited(loop))
    return 0;
  return loop->backend->update(loop, n, old_mask, new_mask);
}

/* Remove n's registration (it stays in the fd map: see above). */
static void unregister(evr_loop_t *loop, struct evr__ionode *n) {
  /* Errors are ignored: the fd may be closed already (see above). */
  (void)backend_update(loop, n, n->registered, 0);
  n->registered = 0;
  n->flags &= (uint8_t)~EVR__IO_LQUEUED;
}

void evr__io_init(struct evr__ionode *n, int fd, unsigned kind) {
  n->fd = fd;
  n->backend_slot = 0;
  n->events = 0;
  n->registered = 0;
  n->flags = 0;
  n->kind = (uint8_t)kind;
}

/* Grow the fd map so that fd is a valid index. Only on a start. */
static int fds_reserve(evr_loop_t *loop, int fd) {
  if ((unsigned)fd < loop->nfds) return 0;
  unsigned n = loop->nfds ? loop->nfds : 64;
  while (n <= (unsigned)fd) n *= 2;
  struct evr__ionode **p = realloc(loop->fds, n * sizeof *p);
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

int evr__io_start(evr_loop_t *loop, struct evr__ionode *n, unsigned events,
                  int same_file) {
  assert(n->events == 0 && events != 0 && !(events & ~(unsigned)IO_MASK));
  struct evr__ionode *cur = evr__io_lookup(loop, n->fd);
  if (cur == n && n->registered) {
    /* Stopped in this iteration and still registered (lazy removal). Unless
     * the owner vouches for the file, the descriptor may have been closed
     * since and its number given to a new file: the backend then checks the
     * registration (epoll: one EPOLL_CTL_MOD, which fails for a file it
     * does not hold, and then adds the new one) and applies the new
     * interest in the same call. */
    if (!same_file || n->registered != events) {
      int rc = backend_update(loop, n, n->registered, events);
      if (rc) return rc;
      n->registered = (uint8_t)events;
    }
    n->events = (uint8_t)events;
    return 0;
  }
  if (cur && cur != n) {
    /* Another node on this number: it may be taken over unless it is
     * active; it stays with its owner, out of the map. */
    if (cur->events) return EVR_EEXIST;
    if (cur->registered) unregister(loop, cur);
  }
  int rc = fds_reserve(loop, n->fd);
  if (rc) return rc;
  rc = backend_update(loop, n, 0, events);
  if (rc) return rc;
  n->registered = (uint8_t)events;
  n->events = (uint8_t)events;
  loop->fds[n->fd] = n;
  return 0;
}

int evr__io_modify(evr_loop_t *loop, struct evr__ionode *n, unsigned events) {
  assert(n->events != 0 && events != 0 && !(events & ~(unsigned)IO_MASK));
  if (events == n->events) return 0;
  int rc = backend_update(loop, n, n->registered, events);
  if (rc) return rc;
  n->registered = (uint8_t)events;
  n->events = (uint8_t)events;
  return 0;
}

/* Queue n's fd for removal at the next poll. 0 or EVR_ENOMEM. */
static int linger_push(evr_loop_t *loop, struct evr__ionode *n) {
  if (n->flags & EVR__IO_LQUEUED) return 0;
  if (loop->nlinger == loop->linger_cap) {
    unsigned cap = loop->linger_cap ? loop->linger_cap * 2 : 64;
    int *p = realloc(loop->linger, cap * sizeof *p);
    if (!p) return EVR_ENOMEM;
    loop->linger = p;
    loop->linger_cap = cap;
  }
  loop->linger[loop->nlinger++] = n->fd;
  n->flags |= EVR__IO_LQUEUED;
  return 0;
}

void evr__io_stop(evr_loop_t *loop, struct evr__ionode *n) {
  if (!n->events) return;
  n->events = 0;
  loop->backend->forget(loop, n->fd);
  /* Remove it now if the backend wants that (see EVR__CAP_LAZY_REMOVE) or
   * there is no room to remember it (the queue grows rarely). */
  if (!(loop->backend->caps & EVR__CAP_LAZY_REMOVE) || linger_push(loop, n) != 0)
    unregister(loop, n);
}

int evr__io_set(evr_loop_t *loop, struct evr__ionode *n, unsigned events) {
  if (!events) {
    evr__io_stop(loop, n);
    return 0;
  }
  if (n->events) return evr__io_modify(loop, n, events);
  return evr__io_start(loop, n, events, 1);
}

void evr__io_release(evr_loop_t *loop, struct evr__ionode *n) {
  evr__io_stop(loop, n);
  if (n->registered) unregister(loop, n);
  if (evr__io_lookup(loop, n->fd) == n) loop->fds[n->fd] = NULL;
}

void evr__io_flush(evr_loop_t *loop) {
  for (unsigned i = 0; i < loop->nlinger; i++) {
    struct evr__ionode *n = evr__io_lookup(loop, loop->linger[i]);
    if (!n || !(n->flags & EVR__IO_LQUEUED)) continue;
    if (lingering(n))
      unregister(loop, n);
    else
      n->flags &= (uint8_t)~EVR__IO_LQUEUED; /* restarted or removed since */
  }
  loop->nlinger = 0;
}

void evr__io_drop_lingering(evr_loop_t *loop) {
  for (unsigned i = 0; i < loop->nlinger; i++) {
    struct evr__ionode *n = evr__io_lookup(loop, loop->linger[i]);
    if (!n || !(n->flags & EVR__IO_LQUEUED)) continue;
    n->flags &= (uint8_t)~EVR__IO_LQUEUED;
    if (lingering(n)) n->registered = 0;
  }
  loop->nlinger = 0;
}

void evr__io_dispatch(evr_loop_t *loop, int fd, unsigned revents, int err) {
  struct evr__ionode *n = evr__io_lookup(loop, fd);
  if (!n || !n->events) return; /* none, or stopped and lingering */
  unsigned ev = revents & n->events;
  if (revents & (EVR_ERR | EVR_HUP)) {
    /* Let the owner's read()/write() meet the condition. */
    ev |= n->events | (revents & (EVR_ERR | EVR_HUP));
  }
  if (!ev) return;
  loop->metrics.events++;
  switch (n->kind) {
    case EVR__IO_WATCHER: {
      evr_io_t *io = EVR_CONTAINER_OF(n, evr_io_t, node);
      io->cb(io, ev);
      break;
    }
    case EVR__IO_STREAM:
      evr__stream_io(n, ev, err);
      break;
    case EVR__IO_LISTENER:
      evr__listener_io(n);
      break;
    case EVR__IO_HANDOFF:
      evr__handoff_io(n, ev);
      break;
    case EVR__IO_WAKE:
      evr__wake_io(loop);
      break;
    default:
      assert(!"unknown I/O node kind");
  }
}

/* ---- evr_io_t: a public watcher around a node ---- */

void evr__io_close(evr_handle_t *h) {
  evr_io_t *io = EVR_CONTAINER_OF(h, evr_io_t, base);
  evr__io_release(h->loop, &io->node);
  evr__handle_stop(h);
}

int evr_io_init(evr_loop_t *loop, evr_io_t *io, int fd) {
  if (!loop || !io) return EVR_EINVAL;
  if (fd < 0) return EVR_EBADF;
  if (fcntl(fd, F_GETFD) < 0) return -errno;
  if (evr__io_lookup(loop, fd) == &io->node) {
    /* An open watcher of this loop, last started on this number (only the
     * loop's own map is read to know it: io may be fresh memory). Re-init
     * it in place: it is on the handle list already. */
    if (io->node.events) return EVR_EBUSY;
    if (io->node.registered) unregister(loop, &io->node); /* the old file's */
    io->base.flags = (uint8_t)((io->base.flags & EVR__H_REF) | EVR__H_INIT);
    io->base.close_cb = NULL;
  } else {
    evr__handle_init(loop, &io->base, EVR__HT_IO);
  }
  evr__io_init(&io->node, fd, EVR__IO_WATCHER);
  io->cb = NULL;
  return 0;
}

static int check_events(const evr_io_t *io, unsigned events) {
  if (!io || !evr__handle_usable(&io->base)) return EVR_EINVAL;
  if (events == 0 || (events & ~(unsigned)IO_MASK)) return EVR_EINVAL;
  return 0;
}

/* evr_io_start() (same_file 0) and evr_io_resume() (same_file 1). */
static int io_start(evr_io_t *io, unsigned events, evr_io_cb cb, int same_file) {
  int rc = check_events(io, events);
  if (rc || !cb) return EVR_EINVAL;
  if (io->node.events) return EVR_EALREADY;
  rc = evr__io_start(io->base.loop, &io->node, events, same_file);
  if (rc) return rc;
  io->cb = cb;
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
  int rc = check_events(io, events);
  if (rc) return rc;
  if (!io->node.events) return EVR_EINVAL;
  return evr__io_modify(io->base.loop, &io->node, events);
}

int evr_io_stop(evr_io_t *io) {
  if (!io || !evr__handle_is(&io->base, EVR__HT_IO)) return EVR_EINVAL;
  evr__io_stop(io->base.loop, &io->node);
  evr__handle_stop(&io->base);
  return 0;
}
