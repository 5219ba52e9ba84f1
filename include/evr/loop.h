/** @file evr/loop.h
 *  The event loop, the handle base type and handle lifetime.
 *
 * A loop runs on one thread. Unless a function's comment says it is
 * thread-safe, call it only from the thread that runs the loop.
 *
 * One iteration of evr_loop_run() runs these phases, in this order:
 *  1. update the cached time;
 *  2. run expired timers;
 *  3. run prepare hooks;
 *  4. poll for I/O, run I/O callbacks;
 *  5. run deferred tasks, then check hooks;
 *  6. run close callbacks.
 *
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

/** An event loop (opaque): made by evr_loop_new(), freed by
 *  evr_loop_free(). */
typedef struct evr_loop evr_loop_t;
/** The common header of every handle: see struct evr_handle. */
typedef struct evr_handle evr_handle_t;

/* Intrusive list node used inside handles. Private: do not touch. */
typedef struct evr__qnode {
  struct evr__qnode *next;
  struct evr__qnode *prev;
} evr__qnode_t;

/** Runs in the close phase once a handle closed with evr_close() (or an
 *  ending call of a stream) is closed; the handle's memory is the caller's
 *  again from this call on.
 *  @param handle  the handle that was closed. */
typedef void (*evr_close_cb)(evr_handle_t *handle);

/** The common first member of every handle type (evr_io_t, evr_stream_t
 *  ...; timers are watchers, not handles: evr/timer.h).
 *  Generic functions take &h->base. */
struct evr_handle {
  void *data;                 /**< For the user; evr never reads it. */
  evr_loop_t *loop;           /**< The handle's loop (read-only). */
  /** @cond PRIVATE */
  evr__qnode_t node;          /* loop's handle list, then its closing list */
  evr_close_cb close_cb;
  uint8_t type;               /* index into the library's table of handle
                                 types (name, close); 0: not initialised */
  uint8_t flags;
  uint8_t tflags;             /* the type's own flags and word (in what */
  uint16_t tword;             /* would be padding on 64-bit systems) */
  /** @endcond */
};

/** How evr_loop_run() runs. */
typedef enum evr_run_mode {
  /** Until nothing keeps the loop alive, or evr_loop_stop(). */
  EVR_RUN_DEFAULT = 0,
  /** One iteration; blocks for I/O if nothing is ready. */
  EVR_RUN_ONCE = 1,
  /** One iteration; never blocks. */
  EVR_RUN_NOWAIT = 2
} evr_run_mode_t;

/** Options for evr_loop_new(). Zero-initialise, then set what you need. */
typedef struct evr_loop_options {
  /** Backend name ("epoll", "io_uring", "kqueue", "poll"). NULL: EVR_BACKEND
   *  from the environment if set (ignored in setuid/setgid processes), else
   *  the best built backend. A named backend that is not built or fails to
   *  start makes evr_loop_new() fail with EVR_ENOTSUP: there is no silent
   *  fallback. */
  const char *backend;
  /** EVR_LOOP_* flags. */
  unsigned flags;
  /** The io_uring backend's receive buffers, shared by the loop's streams
   *  (docs/loop.md): how many (a power of two, at most 32768; 0: 512).
   *  Other backends read into one 64 KiB buffer and ignore this. */
  unsigned io_buffers;
  /** The size in bytes of each io_uring receive buffer (1024 to 16 MiB;
   *  0: 8192). Other backends ignore this. */
  unsigned io_buffer_size;
} evr_loop_options_t;

/** evr_loop_options_t.flags: ignore EVR_BACKEND in the environment. */
#define EVR_LOOP_IGNORE_ENV 0x1u

/** Create a loop.
 *  @param out   receives the loop on success; untouched on failure.
 *  @param opts  NULL for defaults.
 *  @return 0; EVR_EINVAL (out is NULL, unknown flags, io_buffers or
 *          io_buffer_size out of range); EVR_ENOTSUP (the named backend is
 *          not built or failed to initialise); EVR_ENOMEM; or the
 *          backend's error (e.g. EVR_EMFILE) when no backend starts, or the
 *          error of creating the loop's wake-up descriptor. */
EVR_API int evr_loop_new(evr_loop_t **out, const evr_loop_options_t *opts);

/** Free a loop that has no handles left (closed handles whose close callbacks
 *  have run do not count), no active timers, no pending deferred tasks or
 *  requests (thread-pool work, writes, connects...) and no queued posted
 *  callbacks. If it is the last loop that used the thread pool, the pool's
 *  threads are stopped and joined before it returns.
 *  @param loop  the loop.
 *  @return 0; EVR_EINVAL (NULL); EVR_EBUSY (handles, timers, tasks,
 *          requests, posted callbacks or close callbacks remain, or the
 *          loop is running); the loop is then untouched. */
EVR_API int evr_loop_free(evr_loop_t *loop);

/** Run the loop in the given mode. In a child made with fork() it first
 *  calls evr_loop_fork() if the child has not.
 *  @param loop  the loop.
 *  @param mode  EVR_RUN_DEFAULT, EVR_RUN_ONCE or EVR_RUN_NOWAIT.
 *  @return 1 if something still keeps the loop alive, 0 if not; EVR_EINVAL
 *          (NULL loop or bad mode); EVR_EBUSY (the loop is already running:
 *          no re-entrant runs); the error of evr_loop_fork(); or a negative
 *          code if the backend's wait fails in a way that cannot be
 *          retried. */
EVR_API int evr_loop_run(evr_loop_t *loop, evr_run_mode_t mode);

/** Make the running evr_loop_run() return after the current iteration; the
 *  poll phase of that iteration does not block. Called while the loop is
 *  not running, it makes the next evr_loop_run() return at once.
 *  Thread-safe: from another thread it wakes a loop blocked in poll
 *  (docs/threads.md).
 *  @param loop  the loop; NULL is ignored. */
EVR_API void evr_loop_stop(evr_loop_t *loop);

/** Whether anything keeps the loop alive: active referenced handles and
 *  timers, pending requests (thread-pool work, writes, connects...),
 *  deferred tasks, queued posted callbacks or close callbacks.
 *  @param loop  the loop.
 *  @return 1 if the loop is alive, else 0 (also for NULL). */
EVR_API int evr_loop_alive(const evr_loop_t *loop);

/** The name of the loop's backend.
 *  @param loop  the loop.
 *  @return "epoll", "io_uring", "kqueue" or "poll" (a static string); NULL
 *          for a NULL loop. */
EVR_API const char *evr_loop_backend(const evr_loop_t *loop);

/** The backends compiled into this build, best first. Thread-safe.
 *  @return a static NULL-terminated array of names. */
EVR_API const char *const *evr_backends(void);

/** The cached monotonic time of the loop in milliseconds, updated at the start
 *  of every iteration and by evr_update_time().
 *  @param loop  the loop.
 *  @return the time in ms; 0 for NULL. */
EVR_API uint64_t evr_now(const evr_loop_t *loop);

/** The same cached time in nanoseconds (the clock reading behind evr_now()).
 *  @param loop  the loop.
 *  @return the time in ns; 0 for NULL. */
EVR_API uint64_t evr_now_ns(const evr_loop_t *loop);

/** Refresh the cached time from the monotonic clock.
 *  @param loop  the loop; NULL is ignored. */
EVR_API void evr_update_time(evr_loop_t *loop);

/** Monotonic clock in nanoseconds (not cached). Thread-safe.
 *  @return the clock reading, in ns. */
EVR_API uint64_t evr_hrtime(void);

/** Loop counters, see evr_loop_metrics(). */
typedef struct evr_loop_metrics {
  uint64_t iterations;        /**< Completed loop iterations. */
  uint64_t events;            /**< I/O callbacks dispatched. */
  uint64_t idle_ns;           /**< Time spent blocked in the backend's wait. */
  uint64_t timer_lateness_max_ns; /**< Largest (callback time - due time) seen. */
} evr_loop_metrics_t;

/** Copy the loop's counters into *out.
 *  @param loop  the loop.
 *  @param out   receives the counters.
 *  @return 0; EVR_EINVAL (NULL argument). */
EVR_API int evr_loop_metrics(const evr_loop_t *loop, evr_loop_metrics_t *out);

/* ---- handles ---- */

/** Close a handle asynchronously: its activity stops now (an I/O watcher is
 *  removed from the backend before this returns, so its fd may be closed right
 *  after), and close_cb runs later, in the close phase, never inside
 *  evr_close(). Safe from any callback, including the handle's own.
 *  The handle's memory may be reused once close_cb has run.
 *  @param handle    &h->base of any handle.
 *  @param close_cb  runs once the handle is closed; may be NULL.
 *  @return 0; EVR_EINVAL (NULL or uninitialised handle); EVR_EALREADY (the
 *          handle is already closing or closed). */
EVR_API int evr_close(evr_handle_t *handle, evr_close_cb close_cb);

/** Whether the handle is closing or closed.
 *  @param handle  the handle.
 *  @return 1 if the handle is closing or closed, else 0 (also for NULL). */
EVR_API int evr_is_closing(const evr_handle_t *handle);

/** Whether the handle is active (started).
 *  @param handle  the handle.
 *  @return 1 if the handle is active, else 0 (also for NULL). */
EVR_API int evr_is_active(const evr_handle_t *handle);

/** Make an unreferenced handle keep the loop alive again while it is
 *  active. Handles start referenced. Idempotent.
 *  @param handle  the handle; NULL is ignored. */
EVR_API void evr_ref(evr_handle_t *handle);
/** Unreference a handle: an unreferenced handle does not keep the loop
 *  alive, even while it is active. Idempotent.
 *  @param handle  the handle; NULL is ignored. */
EVR_API void evr_unref(evr_handle_t *handle);
/** Whether the handle is referenced (see evr_unref()).
 *  @param handle  the handle.
 *  @return 1 if referenced, else 0 (also for NULL). */
EVR_API int evr_has_ref(const evr_handle_t *handle);

/** Type name of a handle.
 *  @param handle  the handle.
 *  @return "io", "prepare", "check", "async", "signal", "stream" or
 *          "listener"; "unknown" for NULL or an uninitialised handle. */
EVR_API const char *evr_handle_type_name(const evr_handle_t *handle);

/** Called by evr_loop_walk() for each handle.
 *  @param handle  an open handle of the loop.
 *  @param arg     evr_loop_walk()'s arg. */
typedef void (*evr_walk_cb)(evr_handle_t *handle, void *arg);

/** Call cb for every handle of the loop that is not closing. The callback may
 *  close the handle it is given (e.g. to tear a loop down before free).
 *  @param loop  the loop; NULL is ignored.
 *  @param cb    called once per handle; NULL is ignored.
 *  @param arg   passed to cb. */
EVR_API void evr_loop_walk(evr_loop_t *loop, evr_walk_cb cb, void *arg);

/* ---- fork ---- */

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
 *  @param loop  the loop, in the child.
 *  @return 0; EVR_EINVAL (NULL); or the error of rebuilding the backend or
 *          creating the descriptor: the loop then cannot be run in the child
 *          (it may still be left unfreed until exit or exec). */
EVR_API int evr_loop_fork(evr_loop_t *loop);

/* ---- prepare and check hooks ---- */

/** A prepare hook: a struct evr_hook started with evr_prepare_start(). */
typedef struct evr_hook evr_prepare_t;
/** A check hook: a struct evr_hook started with evr_check_start(). */
typedef struct evr_hook evr_check_t;
/** A hook's callback, run once per iteration while the hook is active.
 *  @param hook  the hook. */
typedef void (*evr_hook_cb)(struct evr_hook *hook);

/** A prepare hook runs every iteration before the poll phase, a check hook
 *  after the deferred tasks. An active, referenced hook keeps the loop alive.
 *  A hook started during its own phase first runs in the next iteration. */
struct evr_hook {
  evr_handle_t base;          /**< The handle header. */
  /** @cond PRIVATE */
  evr__qnode_t hook_node;
  evr_hook_cb cb;
  /** @endcond */
};

/** @{ */
/** Initialise a hook (inactive). Loop thread only.
 *  @param loop  the loop.
 *  @param hook  the hook.
 *  @return 0; EVR_EINVAL (NULL argument). */
EVR_API int evr_prepare_init(evr_loop_t *loop, evr_prepare_t *hook);
EVR_API int evr_check_init(evr_loop_t *loop, evr_check_t *hook);
/** @} */
/** @{ */
/** Start a hook: cb then runs once per iteration, in start order.
 *  @param hook  an initialised hook of the matching kind.
 *  @param cb    the callback.
 *  @return 0; EVR_EINVAL (NULL, NULL cb, uninitialised or closing handle,
 *          or a hook of the other kind); EVR_EALREADY (already active). */
EVR_API int evr_prepare_start(evr_prepare_t *hook, evr_hook_cb cb);
EVR_API int evr_check_start(evr_check_t *hook, evr_hook_cb cb);
/** @} */
/** @{ */
/** Stop a hook. Idempotent.
 *  @param hook  a hook of the matching kind.
 *  @return 0; EVR_EINVAL (NULL, uninitialised, or a hook of the other
 *          kind). */
EVR_API int evr_prepare_stop(evr_prepare_t *hook);
EVR_API int evr_check_stop(evr_check_t *hook);
/** @} */

#ifdef __cplusplus
}
#endif
#endif
