/* evr/loop.h: the event loop, the handle base type and handle lifetime.
 *
 * A loop runs on one thread. Unless a function's comment says it is
 * thread-safe, call it only from the thread that runs the loop.
 *
 * One iteration of evr_loop_run() runs these phases, in this order:
 *   1. update the cached time       4. poll for I/O, run I/O callbacks
 *   2. run expired timers           5. run deferred tasks, then check hooks
 *   3. run prepare hooks            6. run close callbacks
 * See docs/loop.md for the full contract.
 */
#ifndef EVR_LOOP_H
#define EVR_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include "evr/version.h"
#include "evr/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct evr_loop evr_loop_t;
typedef struct evr_handle evr_handle_t;

/* Intrusive list node used inside handles. Private: do not touch. */
typedef struct evr__qnode {
  struct evr__qnode *next;
  struct evr__qnode *prev;
} evr__qnode_t;

typedef void (*evr_close_cb)(evr_handle_t *handle);

/* The common first member of every handle type (evr_io_t, evr_stream_t ...;
 * timers are watchers, not handles: evr/timer.h).
 * Generic functions take &h->base. */
struct evr_handle {
  /* public */
  void *data;                 /* for the user; evr never reads it */
  /* read-only */
  evr_loop_t *loop;
  /* private */
  evr__qnode_t node;          /* loop's handle list, then its closing list */
  evr_close_cb close_cb;
  uint8_t type;               /* index into the library's table of handle
                                 types (name, close); 0: not initialised */
  uint8_t flags;
  uint8_t tflags;             /* the type's own flags and word (in what */
  uint16_t tword;             /* would be padding on 64-bit systems) */
};

typedef enum evr_run_mode {
  EVR_RUN_DEFAULT = 0, /* until nothing keeps the loop alive, or evr_loop_stop() */
  EVR_RUN_ONCE = 1,    /* one iteration; blocks for I/O if nothing is ready */
  EVR_RUN_NOWAIT = 2   /* one iteration; never blocks */
} evr_run_mode_t;

/* Options for evr_loop_new(). Zero-initialise, then set what you need. */
typedef struct evr_loop_options {
  /* Backend name ("epoll", "kqueue", "poll"). NULL: EVR_BACKEND from the
   * environment if set (ignored in setuid/setgid processes), else the best
   * built backend. A named backend that is not built or fails to start makes
   * evr_loop_new() fail with EVR_ENOTSUP: there is no silent fallback. */
  const char *backend;
  /* EVR_LOOP_* flags. */
  unsigned flags;
  /* The io_uring backend's receive buffers, shared by the loop's streams
   * (docs/loop.md): how many (a power of two, at most 32768; 0: 512) and
   * the size of each (0: 8192; at least 1024). Other backends read into
   * one 64 KiB buffer and ignore these. */
  unsigned io_buffers;
  unsigned io_buffer_size;
} evr_loop_options_t;

/* Ignore EVR_BACKEND in the environment. */
#define EVR_LOOP_IGNORE_ENV 0x1u

/** Create a loop.
 *  @param out   receives the loop on success; untouched on failure.
 *  @param opts  NULL for defaults.
 *  @return 0; EVR_EINVAL (out is NULL or unknown flags); EVR_ENOTSUP (the
 *          named backend is not built or failed to initialise); EVR_ENOMEM;
 *          or the backend's error (e.g. EVR_EMFILE) when no backend starts. */
EVR_API int evr_loop_new(evr_loop_t **out, const evr_loop_options_t *opts);

/** Free a loop that has no handles left (closed handles whose close callbacks
 *  have run do not count), no pending deferred tasks or thread-pool work and
 *  no queued posted callbacks. If it is the last loop that used the thread
 *  pool, the pool's threads are stopped and joined before it returns.
 *  @return 0; EVR_EINVAL (NULL); EVR_EBUSY (handles, tasks, work, posted
 *          callbacks or close callbacks remain, or the loop is running); the
 *          loop is then untouched. */
EVR_API int evr_loop_free(evr_loop_t *loop);

/** Run the loop in the given mode.
 *  @return 1 if something still keeps the loop alive, 0 if not; EVR_EINVAL
 *          (NULL loop or bad mode); EVR_EBUSY (the loop is already running:
 *          no re-entrant runs); or a negative code if the backend's wait fails
 *          in a way that cannot be retried. */
EVR_API int evr_loop_run(evr_loop_t *loop, evr_run_mode_t mode);

/** Make the running evr_loop_run() return after the current iteration; the
 *  poll phase of that iteration does not block. Thread-safe: from another
 *  thread it wakes a loop blocked in poll (docs/threads.md). */
EVR_API void evr_loop_stop(evr_loop_t *loop);

/** 1 if active referenced handles, pending requests (thread-pool work),
 *  deferred tasks, queued posted callbacks or close callbacks keep the loop
 *  alive, else 0. */
EVR_API int evr_loop_alive(const evr_loop_t *loop);

/** Name of the loop's backend: "epoll", "kqueue" or "poll". */
EVR_API const char *evr_loop_backend(const evr_loop_t *loop);

/** The backends compiled into this build, best first, as a NULL-terminated
 *  array of names. Thread-safe. */
EVR_API const char *const *evr_backends(void);

/** The cached monotonic time of the loop in milliseconds, updated at the start
 *  of every iteration and by evr_update_time(). */
EVR_API uint64_t evr_now(const evr_loop_t *loop);

/** The same cached time in nanoseconds (the clock reading behind evr_now()). */
EVR_API uint64_t evr_now_ns(const evr_loop_t *loop);

/** Refresh the cached time from the monotonic clock. */
EVR_API void evr_update_time(evr_loop_t *loop);

/** Monotonic clock in nanoseconds (not cached). Thread-safe. */
EVR_API uint64_t evr_hrtime(void);

/* Loop counters, see evr_loop_metrics(). */
typedef struct evr_loop_metrics {
  uint64_t iterations;        /* completed loop iterations */
  uint64_t events;            /* I/O callbacks dispatched */
  uint64_t idle_ns;           /* time spent blocked in the backend's wait */
  uint64_t timer_lateness_max_ns; /* largest (callback time - due time) seen */
} evr_loop_metrics_t;

/** Copy the loop's counters into *out. @return 0 or EVR_EINVAL. */
EVR_API int evr_loop_metrics(const evr_loop_t *loop, evr_loop_metrics_t *out);

/* ---- handles ---- */

/** Close a handle asynchronously: its activity stops now (an I/O watcher is
 *  removed from the backend before this returns, so its fd may be closed right
 *  after), and close_cb (may be NULL) runs later, in the close phase, never
 *  inside evr_close(). Safe from any callback, including the handle's own.
 *  The handle's memory may be reused once close_cb has run.
 *  @return 0; EVR_EINVAL (NULL or uninitialised handle); EVR_EALREADY (the
 *          handle is already closing or closed). */
EVR_API int evr_close(evr_handle_t *handle, evr_close_cb close_cb);

/** 1 if the handle is closing or closed, else 0. */
EVR_API int evr_is_closing(const evr_handle_t *handle);

/** 1 if the handle is active (started), else 0. */
EVR_API int evr_is_active(const evr_handle_t *handle);

/** An unreferenced handle does not keep the loop alive. Handles start
 *  referenced. Idempotent. */
EVR_API void evr_ref(evr_handle_t *handle);
EVR_API void evr_unref(evr_handle_t *handle);
EVR_API int evr_has_ref(const evr_handle_t *handle);

/** Type name of a handle ("io", "stream", "prepare", ...). */
EVR_API const char *evr_handle_type_name(const evr_handle_t *handle);

typedef void (*evr_walk_cb)(evr_handle_t *handle, void *arg);

/** Call cb for every handle of the loop that is not closing. The callback may
 *  close the handle it is given (e.g. to tear a loop down before free). */
EVR_API void evr_loop_walk(evr_loop_t *loop, evr_walk_cb cb, void *arg);

/* ---- prepare and check hooks ---- */

/** Make a loop inherited through fork() usable in the child: give it its own
 *  backend state (a new epoll or kqueue set with every active watcher
 *  registered again) and a new wake-up descriptor. Call it in the child,
 *  before starting threads there; evr_loop_run() calls it first if the child
 *  has not. The parent's loop is unaffected: a child never makes a control
 *  call on a kernel object it inherited (before this call, watcher changes
 *  and closes in the child are made in the child's memory only, and
 *  wake-ups wait for the new descriptor), so a child may also just close the
 *  inherited handles and exit or exec.
 *  In the child, the thread pool starts afresh at the next submit. Work
 *  requests of this loop that were queued or running at the fork complete in
 *  the child with EVR_ECANCELED (work does not run there); they complete
 *  normally in the parent. Callbacks posted, sends and signals caught before
 *  the fork but not yet run are run in both processes. Loop thread only.
 *  @return 0; EVR_EINVAL (NULL); or the error of rebuilding the backend or
 *          creating the descriptor: the loop then cannot be run in the child
 *          (it may still be left unfreed until exit or exec). */
EVR_API int evr_loop_fork(evr_loop_t *loop);

typedef struct evr_hook evr_prepare_t;
typedef struct evr_hook evr_check_t;
typedef void (*evr_hook_cb)(struct evr_hook *hook);

/* A prepare hook runs every iteration before the poll phase, a check hook
 * after the deferred tasks. An active, referenced hook keeps the loop alive. */
struct evr_hook {
  evr_handle_t base;
  /* private */
  evr__qnode_t hook_node;
  evr_hook_cb cb;
};

/** Initialise a hook. @return 0 or EVR_EINVAL. */
EVR_API int evr_prepare_init(evr_loop_t *loop, evr_prepare_t *hook);
EVR_API int evr_check_init(evr_loop_t *loop, evr_check_t *hook);
/** Start a hook. @return 0; EVR_EINVAL (NULL cb, closing handle);
 *  EVR_EALREADY (already active). */
EVR_API int evr_prepare_start(evr_prepare_t *hook, evr_hook_cb cb);
EVR_API int evr_check_start(evr_check_t *hook, evr_hook_cb cb);
/** Stop a hook. Idempotent. @return 0 or EVR_EINVAL. */
EVR_API int evr_prepare_stop(evr_prepare_t *hook);
EVR_API int evr_check_stop(evr_check_t *hook);

#ifdef __cplusplus
}
#endif
#endif
