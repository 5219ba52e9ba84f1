/** @file evr/async.h
 *  Waking a loop from other threads: async handles and posting.
 *
 * Every loop owns one wake-up channel, created by evr_loop_new(): an
 * EVFILT_USER event with a kernel kqueue, else an eventfd on Linux, else a
 * non-blocking pipe. Async handles, posted callbacks, thread-pool
 * completions and signal handles all use it: their callbacks run on the loop
 * thread in the poll phase (phase 4), when the channel fires, in this order:
 * async and signal callbacks, posted callbacks, work done callbacks. A
 * wake-up that arrives while they run is seen in the next iteration, so one
 * round is bounded. The channel itself never keeps the loop alive.
 *
 * Thread-safety: evr_async_send(), evr_post() and evr_post_node() may be
 * called from any thread; evr_async_send() also from a signal handler.
 * Everything else here belongs to the loop thread. docs/threads.md has the
 * whole contract.
 */
#ifndef EVR_ASYNC_H
#define EVR_ASYNC_H

#include "evr/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Private: a flag raised by another thread or a signal handler and checked
 * by the loop when its wake-up descriptor fires. */
typedef struct evr__notify {
  evr__qnode_t node;                       /* the loop's list of notifiers */
  int pending;                             /* atomic (__atomic builtins) */
  void (*fire)(struct evr__notify *n);     /* loop thread, pending was set */
} evr__notify_t;

/* ---- async handles ---- */

/** An async handle: see struct evr_async. */
typedef struct evr_async evr_async_t;
/** An async handle's callback, run on the loop thread after one or more
 *  evr_async_send() calls.
 *  @param async  the handle. */
typedef void (*evr_async_cb)(evr_async_t *async);

/** A handle that other threads (and signal handlers) use to make a
 *  callback run on the loop thread. */
struct evr_async {
  evr_handle_t base;    /**< The handle header. */
  /** @cond PRIVATE */
  evr__notify_t notify;
  evr_async_cb cb;
  int senders;          /* atomic: evr_async_send() calls in progress */
  /** @endcond */
};

/** Initialise an async handle. It is active at once: while referenced it
 *  keeps the loop alive (use evr_unref() for a background handle). Loop
 *  thread only.
 *  @param loop   the loop.
 *  @param async  the handle.
 *  @param cb     the callback.
 *  @return 0; EVR_EINVAL (NULL loop, handle or cb). */
EVR_API int evr_async_init(evr_loop_t *loop, evr_async_t *async,
                           evr_async_cb cb);

/** Make cb run once on the loop thread. Sends that happen before the loop
 *  gets to run the callback coalesce into that one call; a send made while
 *  the callback runs causes one more call. Never blocks, never allocates.
 *  Thread-safe and async-signal-safe: it only uses lock-free atomics and
 *  write(2). It may be called until evr_close() is called on the handle;
 *  evr_close() waits for sends that are in progress, and the caller must
 *  ensure that no send starts after it.
 *  @param async  an initialised async handle.
 *  @return 0; EVR_EINVAL (NULL, or a handle that is not an initialised
 *          async handle). */
EVR_API int evr_async_send(evr_async_t *async);

/* ---- posting callbacks ---- */

/** A posted callback, run on the loop thread.
 *  @param arg  the argument given to evr_post() or evr_post_node(). */
typedef void (*evr_post_fn)(void *arg);

/** A caller-owned post node for evr_post_node(); all its fields are
 *  private. */
typedef struct evr_post {
  /** @cond PRIVATE */
  evr__qnode_t node;
  evr_post_fn fn;
  void *arg;
  unsigned flags;
  /** @endcond */
} evr_post_t;

/** Run fn(arg) on the loop thread, from any thread. Posted callbacks run in
 *  the order their evr_post*() calls took effect, so the callbacks of one
 *  producer thread run in that thread's order; each runs exactly once. A
 *  queued callback keeps the loop alive and makes evr_loop_free() return
 *  EVR_EBUSY. This call allocates one small node (freed by the loop after fn
 *  runs); evr_post_node() does not allocate. Thread-safe, not
 *  async-signal-safe (it takes a mutex and may call malloc). The loop must
 *  not be freed while the call is in progress.
 *  @param loop  the loop.
 *  @param fn    the callback.
 *  @param arg   passed to fn.
 *  @return 0 (fn will run once); EVR_EINVAL (NULL loop or fn); EVR_ENOMEM.
 *          On error fn never runs. */
EVR_API int evr_post(evr_loop_t *loop, evr_post_fn fn, void *arg);

/** evr_post() with a caller-owned node: no allocation. The node needs no
 *  initialisation and must not be queued already; it is unlinked before fn
 *  runs, so fn may post it again, and its memory may be reused once fn has
 *  started. Thread-safe, not async-signal-safe.
 *  @param loop  the loop.
 *  @param node  the caller's node, not queued.
 *  @param fn    the callback.
 *  @param arg   passed to fn.
 *  @return 0 (fn will run once); EVR_EINVAL (NULL loop, node or fn). */
EVR_API int evr_post_node(evr_loop_t *loop, evr_post_t *node, evr_post_fn fn,
                          void *arg);

#ifdef __cplusplus
}
#endif
#endif
