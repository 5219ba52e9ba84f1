/* evr/defer.h: deferred tasks (the check phase; Node's setImmediate).
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

typedef struct evr_defer evr_defer_t;
typedef void (*evr_defer_cb)(evr_defer_t *task);

struct evr_defer {
  /* public */
  void *data;
  /* private */
  evr__qnode_t node;
  evr_defer_cb fn;
  evr_loop_t *loop;
};

/** Initialise a task node (it is then not queued). */
EVR_API void evr_defer_init(evr_defer_t *task);

/** Queue fn(task) to run in this or the next deferred phase (see above).
 *  @return 0; EVR_EINVAL (NULL argument); EVR_EALREADY (the task is already
 *          queued; it stays queued once, with its first fn). */
EVR_API int evr_defer(evr_loop_t *loop, evr_defer_t *task, evr_defer_cb fn);

/** Unqueue a task that has not run yet. The node may be reused right after.
 *  @return 0; EVR_EINVAL (NULL); EVR_ENOENT (not queued: never deferred,
 *          already ran, or already cancelled). */
EVR_API int evr_defer_cancel(evr_defer_t *task);

/** 1 if the task is queued, else 0. */
EVR_API int evr_defer_pending(const evr_defer_t *task);

#ifdef __cplusplus
}
#endif
#endif
