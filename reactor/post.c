/* reactor/post.c: callbacks posted to a loop from any thread.
 *
 * One FIFO per loop under loop->post_lock. A post is one lock/unlock; the
 * order of the queue is the order in which posters took the lock, which
 * keeps each producer's own order. The loop splices the whole queue out
 * under the lock and runs it unlocked, so posts made meanwhile (also by the
 * callbacks) wait for the next wake-up and one round is bounded. The wake-up
 * is written while the lock is held: once the loop has run a callback, its
 * poster no longer touches the loop, so the loop may be freed right after.
 */
#include <stdlib.h>
#include "reactor/internal.h"

#define POST_ALLOCATED 0x1u /* node from evr_post(): freed after it runs */

static void post_enqueue(evr_loop_t *loop, evr_post_t *p) {
  /* Locking a valid default mutex cannot fail. */
  (void)pthread_mutex_lock(&loop->post_lock);
  evr__list_insert_tail(&loop->post_queue, &p->node);
  atomic_fetch_add(&loop->posts_queued, 1);
  evr__wake(loop);
  (void)pthread_mutex_unlock(&loop->post_lock);
}

int evr_post_node(evr_loop_t *loop, evr_post_t *node, evr_post_fn fn,
                  void *arg) {
  if (!loop || !node || !fn) return EVR_EINVAL;
  node->fn = fn;
  node->arg = arg;
  node->flags = 0;
  post_enqueue(loop, node);
  return 0;
}

int evr_post(evr_loop_t *loop, evr_post_fn fn, void *arg) {
  if (!loop || !fn) return EVR_EINVAL;
  evr_post_t *p = malloc(sizeof *p);
  if (!p) return EVR_ENOMEM;
  p->fn = fn;
  p->arg = arg;
  p->flags = POST_ALLOCATED;
  post_enqueue(loop, p);
  return 0;
}

int evr__post_pending(const evr_loop_t *loop) {
  /* atomic_load() takes a pointer to non-const in C11. */
  evr_loop_t *l = (evr_loop_t *)loop;
  return atomic_load(&l->posts_queued) != 0;
}

void evr__post_run(evr_loop_t *loop) {
  evr__list_t batch;
  (void)pthread_mutex_lock(&loop->post_lock);
  evr__list_move(&loop->post_queue, &batch);
  (void)pthread_mutex_unlock(&loop->post_lock);
  while (!evr__list_empty(&batch)) {
    evr__list_t *q = evr__list_first(&batch);
    evr_post_t *p = EVR_CONTAINER_OF(q, evr_post_t, node);
    evr__list_remove(q);
    evr_post_fn fn = p->fn;
    void *arg = p->arg;
    /* The node is done with before the call: fn may post it again. */
    if (p->flags & POST_ALLOCATED) free(p);
    atomic_fetch_sub(&loop->posts_queued, 1);
    fn(arg);
  }
}
