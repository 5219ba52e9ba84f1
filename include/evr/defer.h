/** @file evr/defer.h
 *  Deferred tasks (the check phase; Node's setImmediate).
 *
 * A deferred task runs in phase 5 of the iteration, after the I/O callbacks.
 * Tasks run in FIFO order. A task deferred while the queue runs (including by
 * a task itself) waits for the next iteration, so I/O is never starved. A
 * pending task makes the next poll non-blocking and keeps the loop alive.
 * The task node is caller-owned: deferring never allocates.
 */
#ifndef EVR_DEFER_H
#define EVR_DEFER_H

#include "evr/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A deferred task: see struct evr_defer. */
typedef struct evr_defer evr_defer_t;
/** A deferred task's function, run once per evr_defer() in the deferred
 *  phase. The task is no longer queued when it runs: it may defer itself
 *  again (it then runs in the next iteration) or be freed.
 *  @param task  the task. */
typedef void (*evr_defer_cb)(evr_defer_t *task);

/** A deferred task: a caller-owned node, not a handle (nothing to close).
 *  Initialise it with evr_defer_init() before its first use. */
struct evr_defer {
  void *data;           /**< For the user; evr never reads it. */
  /** @cond PRIVATE */
  evr__qnode_t node;
  evr_defer_cb fn;
  evr_loop_t *loop;
  /** @endcond */
};

/** Initialise a task node (it is then not queued). Do not call it on a
 *  queued task.
 *  @param task  the task; NULL is ignored. */
EVR_API void evr_defer_init(evr_defer_t *task);

/** Queue fn(task) to run in this or the next deferred phase (see above).
 *  Loop thread only.
 *  @param loop  the loop.
 *  @param task  an initialised task.
 *  @param fn    the function to run.
 *  @return 0; EVR_EINVAL (NULL argument); EVR_EALREADY (the task is already
 *          queued; it stays queued once, with its first fn). */
EVR_API int evr_defer(evr_loop_t *loop, evr_defer_t *task, evr_defer_cb fn);

/** Unqueue a task that has not run yet. The node may be reused right after.
 *  @param task  the task.
 *  @return 0; EVR_EINVAL (NULL); EVR_ENOENT (not queued: never deferred,
 *          already ran, or already cancelled). */
EVR_API int evr_defer_cancel(evr_defer_t *task);

/** Whether the task is queued.
 *  @param task  the task.
 *  @return 1 if the task is queued, else 0 (also for NULL). */
EVR_API int evr_defer_pending(const evr_defer_t *task);

#ifdef __cplusplus
}
#endif
#endif
