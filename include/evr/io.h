/* evr/io.h: I/O watchers on file descriptors.
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

enum {
  EVR_READ = 0x1,   /* interest / event: readable (or EOF, or pending error) */
  EVR_WRITE = 0x2,  /* interest / event: writable */
  EVR_ERR = 0x4,    /* event only: error condition on the fd */
  EVR_HUP = 0x8     /* event only: hang-up (peer closed, pipe writer gone) */
};

typedef struct evr_io evr_io_t;
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

struct evr_io {
  evr_handle_t base;
  /* private */
  struct evr__ionode node;
  evr_io_cb cb;
};

/** The descriptor a watcher was initialised for. */
static inline int evr_io_fd(const evr_io_t *io) { return io->node.fd; }

/** The watcher's current interest: EVR_READ | EVR_WRITE, 0 when stopped. */
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
 *  again. @return 0; EVR_EINVAL (NULL); EVR_EBADF (fd < 0 or not open);
 *  EVR_EBUSY (an active watcher). */
EVR_API int evr_io_init(evr_loop_t *loop, evr_io_t *io, int fd);

/** Start watching for `events` (EVR_READ, EVR_WRITE or both). A stopped
 *  watcher may be restarted after its descriptor was closed and the number
 *  reused by a new file: it then watches the new file, under every backend.
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
 *  @return as evr_io_start(). */
EVR_API int evr_io_resume(evr_io_t *io, unsigned events, evr_io_cb cb);

/** Change the interest of an active watcher. Safe from any callback; an event
 *  already harvested but no longer wanted is not delivered.
 *  @return 0; EVR_EINVAL (NULL, empty or unknown mask, not active). */
EVR_API int evr_io_set(evr_io_t *io, unsigned events);

/** Stop watching. Idempotent. Events harvested in the current batch are not
 *  delivered after this; the fd may be closed (and its number reused by a new
 *  watcher) right after it returns. @return 0 or EVR_EINVAL. */
EVR_API int evr_io_stop(evr_io_t *io);

#ifdef __cplusplus
}
#endif
#endif
