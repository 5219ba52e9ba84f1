/* reactor/fork.c: evr_loop_fork() and the pthread_atfork() handlers.
 *
 * A child inherits the parent's epoll/kqueue set and wake-up descriptor by
 * reference: using them would disturb the parent. Rule: a child never makes
 * a control call (epoll_ctl, kevent, a wake-up write) on a kernel object it
 * inherited; it drops it and builds its own. The atfork child handler bumps
 * evr__fork_gen, so every loop of the child knows it is inherited
 * (evr__loop_inherited): until evr_loop_fork(), watcher changes are made
 * in memory only (reactor/io.c) and wake-ups are not written, and
 * evr_loop_run() calls evr_loop_fork() itself before it polls. Closing an
 * inherited descriptor is fine: that changes only the child's fd table.
 * evr_loop_fork() drops the pending removals, rebuilds the backend from the
 * watchers (so every later change lands in the child's own set), and only
 * then replaces the wake-up descriptor. The
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

atomic_uint evr__fork_gen;

static void atfork_child(void) {
  atomic_fetch_add_explicit(&evr__fork_gen, 1, memory_order_relaxed);
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
  /* Removals still pending (lazy removal) or made since the fork were never
   * applied to the shared set: the new one simply leaves them out. */
  evr__io_drop_lingering(loop);
  if (loop->backend->reinit) rc = loop->backend->reinit(loop);
  /* A failed reinit may have left the shared kernel object in place: then
   * nothing else may be changed through it. */
  if (rc) return rc;
  loop->fork_gen = atomic_load(&evr__fork_gen);
  rc = evr__async_wake_reset(loop);
  if (rc) return rc;
  evr__pool_loop_fork(loop);
  if (loop->backend->caps & EVR__CAP_COMPLETION) evr__net_reinit(loop);
  return 0;
}
