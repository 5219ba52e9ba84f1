/* reactor/defer.c: the deferred-task queue (phase 5, Node's check phase).
 *
 * The queue is spliced out before it runs, so tasks deferred by running tasks
 * wait for the next iteration: one round is bounded and I/O is not starved.
 * A task's node is linked exactly while it is queued.
 */
#include "reactor/internal.h"

void evr_defer_init(evr_defer_t *task) {
  if (!task) return;
  evr__list_init(&task->node);
  task->fn = NULL;
  task->loop = NULL;
}

int evr_defer(evr_loop_t *loop, evr_defer_t *task, evr_defer_cb fn) {
  if (!loop || !task || !fn) return EVR_EINVAL;
  if (task->loop && evr__list_linked(&task->node)) return EVR_EALREADY;
  task->fn = fn;
  task->loop = loop;
  evr__list_insert_tail(&loop->deferred, &task->node);
  return 0;
}

int evr_defer_cancel(evr_defer_t *task) {
  if (!task) return EVR_EINVAL;
  if (!task->loop || !evr__list_linked(&task->node)) return EVR_ENOENT;
  evr__list_remove(&task->node);
  return 0;
}

int evr_defer_pending(const evr_defer_t *task) {
  return task && task->loop && evr__list_linked(&task->node) ? 1 : 0;
}

void evr__defer_run(evr_loop_t *loop) {
  evr__list_t batch;
  evr__list_move(&loop->deferred, &batch);
  while (!evr__list_empty(&batch)) {
    evr__list_t *n = evr__list_first(&batch);
    evr_defer_t *t = EVR_CONTAINER_OF(n, evr_defer_t, node);
    /* Unlinked before the call: the task may defer itself again. */
    evr__list_remove(n);
    t->fn(t);
  }
}
