/* reactor/fork.c: evr_loop_fork() and the pthread_atfork() handlers.
 *
 * A child inherits the parent's epoll/kqueue set and wake-up descriptor by
 * reference: using them would disturb the parent. evr_loop_fork() therefore
 * rebuilds the backend FIRST (so every later registration change lands in
 * the child's own set) and only then replaces the wake-up descriptor. The
 * atfork handlers keep the pool and the signal lists consistent across
 * fork(): prepare takes their locks, parent and child release them, and the
 * child's pool forgets the threads that did not survive.
 */
#include "reactor/internal.h"

static void atfork_prepare(void) {
  evr__signal_fork_prepare();
  evr__pool_fork_prepare();
}

static void atfork_parent(void) {
  evr__pool_fork_parent();
  evr__signal_fork_parent();
}

static void atfork_child(void) {
  evr__pool_fork_child();
  evr__signal_fork_child();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_rc;

static void atfork_install(void) {
  atfork_rc = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int evr__fork_register(void) {
  int rc = pthread_once(&atfork_once, atfork_install);
  if (rc) return -rc;
  return -atfork_rc;
}

int evr_loop_fork(evr_loop_t *loop) {
  if (!loop) return EVR_EINVAL;
  int rc = 0;
  evr__io_flush(loop);
  if (loop->backend->reinit) rc = loop->backend->reinit(loop);
  /* A failed reinit may have left the shared kernel object in place: then
   * nothing else may be changed through it. */
  if (rc) return rc;
  rc = evr__async_wake_reset(loop);
  if (rc) return rc;
  evr__pool_loop_fork(loop);
  return 0;
}
