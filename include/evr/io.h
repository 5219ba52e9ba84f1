/** @file evr/io.h
 *  I/O watchers on file descriptors.
 *
 * Level-triggered: the callback runs every iteration while the fd is ready for
 * an interest in its mask, whatever the backend does inside. An error or a
 * hang-up is reported with EVR_ERR / EVR_HUP together with the watcher's
 * interest bits, so a read() or write() in the callback sees the condition.
 * The watcher never owns the fd: evr never closes it.
 */
#ifndef EVR_IO_H
#define EVR_IO_H

#include "evr/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Interest and event bits of I/O watchers. */
enum {
  EVR_READ = 0x1,   /**< Interest / event: readable (or EOF, or pending error). */
  EVR_WRITE = 0x2,  /**< Interest / event: writable. */
  EVR_ERR = 0x4,    /**< Event only: error condition on the fd. */
  EVR_HUP = 0x8     /**< Event only: hang-up (peer closed, pipe writer gone). */
};

/** An I/O watcher handle: see struct evr_io. */
typedef struct evr_io evr_io_t;
/** An I/O watcher's callback, run in the poll phase while the descriptor is
 *  ready for the watcher's interest.
 *  @param io      the watcher.
 *  @param events  the ready interest bits (EVR_READ, EVR_WRITE), with
 *                 EVR_ERR or EVR_HUP added on an error or hang-up (then with
 *                 every interest bit of the watcher). */
typedef void (*evr_io_cb)(evr_io_t *io, unsigned events);

/* The registration of one descriptor with the loop: what the loop's
 * descriptor map, its backend and its dispatch work on (reactor/io.c).
 * Embedded in evr_io_t, and in streams and listeners, which watch their
 * descriptors without a watcher handle. Private: do not touch. */
struct evr__ionode {
  int fd;
  uint32_t backend_slot;  /* backend-private per-fd data */
  uint8_t events;         /* interest (EVR_READ | EVR_WRITE); 0: stopped */
  uint8_t registered;     /* interest the backend currently has */
  uint8_t flags;          /* reactor/io.c's bookkeeping */
  uint8_t kind;           /* who gets the events: a watcher, a stream, ... */
};

/** A watcher of one file descriptor (a handle). It never owns the
 *  descriptor. Only one watcher of a loop may be active on a descriptor. */
struct evr_io {
  evr_handle_t base;       /**< The handle header. */
  /** @cond PRIVATE */
  struct evr__ionode node;
  evr_io_cb cb;
  /** @endcond */
};

/** The descriptor a watcher was initialised for.
 *  @param io  an initialised watcher (not NULL).
 *  @return the descriptor. */
static inline int evr_io_fd(const evr_io_t *io) { return io->node.fd; }

/** The watcher's current interest.
 *  @param io  an initialised watcher (not NULL).
 *  @return EVR_READ, EVR_WRITE, both, or 0 when stopped. */
static inline unsigned evr_io_events(const evr_io_t *io) {
  return io->node.events;
}

/** Initialise a watcher for fd. Does not register anything yet.
 *  May be called again on an open watcher of the same loop that was last
 *  started on the same descriptor number, e.g. to watch a new file that got
 *  the number after the old one was closed: if the watcher is stopped it is
 *  re-initialised in place (still open, once on the loop's handle list),
 *  if it is active the call is refused. Any other open watcher must be
 *  closed (and its close callback run) before its memory is initialised
 *  again. Loop thread only.
 *  @param loop  the loop.
 *  @param io    the watcher.
 *  @param fd    the descriptor to watch; it stays the caller's.
 *  @return 0; EVR_EINVAL (NULL loop or io); EVR_EBADF (fd < 0 or not open);
 *          EVR_EBUSY (an active watcher). */
EVR_API int evr_io_init(evr_loop_t *loop, evr_io_t *io, int fd);

/** Start watching for `events` (EVR_READ, EVR_WRITE or both). A stopped
 *  watcher may be restarted after its descriptor was closed and the number
 *  reused by a new file: it then watches the new file, under every backend.
 *  An active watcher keeps the loop alive while it is referenced.
 *  @param io      an initialised watcher, stopped.
 *  @param events  EVR_READ, EVR_WRITE or both.
 *  @param cb      the callback.
 *  @return 0; EVR_EINVAL (NULL, no cb, empty or unknown mask, closing
 *          handle); EVR_EALREADY (already active: use evr_io_set());
 *          EVR_EEXIST (another watcher of this loop is active on the fd);
 *          EVR_EPERM (the backend cannot watch this kind of fd, e.g. a regular
 *          file under epoll); EVR_ENOMEM; other backend errors. */
EVR_API int evr_io_start(evr_io_t *io, unsigned events, evr_io_cb cb);

/** evr_io_start() for a stopped watcher whose descriptor has stayed open
 *  since evr_io_stop() (not closed, not replaced with dup2()): the caller
 *  vouches that it still names the same file. Restarting within the
 *  iteration of the stop with the same interest then costs no system call
 *  under epoll (one-shot re-arming); evr_io_start() makes one, to check the
 *  descriptor. A watcher whose descriptor was closed, even if its number now
 *  names a new file, must be restarted with evr_io_start(): resumed, it may
 *  hear nothing, or the old file's events if that is open elsewhere.
 *  @param io      an initialised watcher, stopped.
 *  @param events  EVR_READ, EVR_WRITE or both.
 *  @param cb      the callback.
 *  @return as evr_io_start(). */
EVR_API int evr_io_resume(evr_io_t *io, unsigned events, evr_io_cb cb);

/** Change the interest of an active watcher. Safe from any callback; an event
 *  already harvested but no longer wanted is not delivered.
 *  @param io      an active watcher.
 *  @param events  the new interest: EVR_READ, EVR_WRITE or both.
 *  @return 0; EVR_EINVAL (NULL, empty or unknown mask, closing handle, not
 *          active); the backend's error (e.g. EVR_ENOMEM). */
EVR_API int evr_io_set(evr_io_t *io, unsigned events);

/** Stop watching. Idempotent. Events harvested in the current batch are not
 *  delivered after this; the fd may be closed (and its number reused by a new
 *  watcher) right after it returns.
 *  @param io  the watcher.
 *  @return 0; EVR_EINVAL (NULL or not an initialised watcher). */
EVR_API int evr_io_stop(evr_io_t *io);

#ifdef __cplusplus
}
#endif
#endif
