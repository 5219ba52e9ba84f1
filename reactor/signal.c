/* reactor/signal.c: signal handles.
 *
 * Process-wide state: for each signal, the list of active handles (of every
 * loop) and the disposition found when the first handle started. The
 * sigaction() handler walks the signal's list, raises each handle's notify
 * flag and wakes the handle's loop (atomics and write(2): async-signal-safe).
 * Two locks: sig_mutex serialises start/stop from loop threads; sig_spin
 * guards the lists against the handler. sig_spin is only taken with every
 * signal blocked in the taking thread, so a handler spinning on it never
 * interrupts its holder; the holder's critical section is a list update.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include "reactor/internal.h"

static pthread_mutex_t sig_mutex = PTHREAD_MUTEX_INITIALIZER;
static atomic_flag sig_spin = ATOMIC_FLAG_INIT;
static sigset_t sig_fork_mask;            /* saved by the atfork prepare */
static int sig_ready;                     /* lists initialised (sig_mutex) */
static evr__list_t sig_handles[NSIG];     /* sig_spin */
static unsigned sig_count[NSIG];          /* active handles (sig_mutex) */
static struct sigaction sig_old[NSIG];    /* disposition to restore */

_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "lock-free atomics required");

static void spin_lock(void) {
  while (atomic_flag_test_and_set_explicit(&sig_spin, memory_order_acquire)) {
  }
}

static void spin_unlock(void) {
  atomic_flag_clear_explicit(&sig_spin, memory_order_release);
}

/* Block every signal in this thread, then take sig_spin. */
static void spin_lock_blocked(sigset_t *old) {
  sigset_t all;
  (void)sigfillset(&all);
  /* Cannot fail with a valid how and set. */
  (void)pthread_sigmask(SIG_SETMASK, &all, old);
  spin_lock();
}

static void spin_unlock_blocked(const sigset_t *old) {
  spin_unlock();
  (void)pthread_sigmask(SIG_SETMASK, old, NULL);
}

static void sig_handler(int signum) {
  int saved = errno;
  spin_lock();
  evr__list_t *head = &sig_handles[signum];
  for (evr__list_t *q = head->next; q != head; q = q->next) {
    evr_signal_t *s = EVR_CONTAINER_OF(q, evr_signal_t, sig_node);
    __atomic_store_n(&s->notify.pending, 1, __ATOMIC_SEQ_CST);
    evr__wake(s->base.loop);
  }
  spin_unlock();
  errno = saved;
}

static void signal_fire(evr__notify_t *n) {
  evr_signal_t *s = EVR_CONTAINER_OF(n, evr_signal_t, notify);
  if (evr__handle_active(&s->base)) s->cb(s, s->signum);
}

/* Install evr's handler for signum if this is its first handle. sig_mutex
 * is held. */
static int sig_acquire(int signum) {
  if (sig_count[signum] == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sig_handler;
    (void)sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(signum, &sa, &sig_old[signum]) < 0) return -errno;
  }
  sig_count[signum]++;
  return 0;
}

/* Drop one handle's claim on signum; the last one restores the disposition
 * (before the handle leaves the list, so a signal in between meets the old
 * disposition rather than an empty list). sig_mutex is held. */
static void sig_release(int signum) {
  assert(sig_count[signum] > 0);
  /* Restoring a disposition that sigaction() itself returned cannot fail. */
  if (--sig_count[signum] == 0) (void)sigaction(signum, &sig_old[signum], NULL);
}

static void sig_link(evr_signal_t *s, int signum) {
  sigset_t old;
  spin_lock_blocked(&old);
  evr__list_insert_tail(&sig_handles[signum], &s->sig_node);
  spin_unlock_blocked(&old);
}

static void sig_unlink(evr_signal_t *s) {
  sigset_t old;
  spin_lock_blocked(&old);
  evr__list_remove(&s->sig_node);
  spin_unlock_blocked(&old);
}


int evr_signal_init(evr_loop_t *loop, evr_signal_t *s) {
  if (!loop || !s) return EVR_EINVAL;
  evr__handle_init(loop, &s->base, EVR__HT_SIGNAL);
  s->signum = 0;
  s->cb = NULL;
  evr__list_init(&s->sig_node);
  s->notify.pending = 0;
  s->notify.fire = signal_fire;
  evr__list_init(&s->notify.node);
  evr__list_insert_tail(&loop->notifiers, &s->notify.node);
  return 0;
}

int evr_signal_start(evr_signal_t *s, int signum, evr_signal_cb cb) {
  if (!s || !evr__handle_is(&s->base, EVR__HT_SIGNAL) ||
      !evr__handle_usable(&s->base) || !cb)
    return EVR_EINVAL;
  if (signum <= 0 || signum >= NSIG) return EVR_EINVAL;
  if (evr__handle_active(&s->base) && s->signum == signum) {
    s->cb = cb;
    return 0;
  }
  (void)pthread_mutex_lock(&sig_mutex);
  if (!sig_ready) {
    for (int i = 0; i < NSIG; i++) evr__list_init(&sig_handles[i]);
    sig_ready = 1;
  }
  int rc = sig_acquire(signum);
  if (rc == 0) {
    if (evr__handle_active(&s->base)) {
      /* Moving to another signal: leave the old one. */
      sig_release(s->signum);
      sig_unlink(s);
    }
    /* Cleared before the handler can reach s: a signal caught from here on
     * is reported, one of the old signal is not. */
    __atomic_store_n(&s->notify.pending, 0, __ATOMIC_SEQ_CST);
    sig_link(s, signum);
  }
  (void)pthread_mutex_unlock(&sig_mutex);
  if (rc) return rc;
  s->signum = signum;
  s->cb = cb;
  evr__handle_start(&s->base);
  return 0;
}

int evr_signal_stop(evr_signal_t *s) {
  if (!s || !evr__handle_is(&s->base, EVR__HT_SIGNAL)) return EVR_EINVAL;
  if (!evr__handle_active(&s->base)) return 0;
  (void)pthread_mutex_lock(&sig_mutex);
  sig_release(s->signum);
  sig_unlink(s);
  (void)pthread_mutex_unlock(&sig_mutex);
  /* The handler can no longer reach s: a signal caught before is dropped. */
  __atomic_store_n(&s->notify.pending, 0, __ATOMIC_SEQ_CST);
  s->signum = 0;
  evr__handle_stop(&s->base);
  return 0;
}

void evr__signal_close(evr_handle_t *h) {
  evr_signal_t *s = EVR_CONTAINER_OF(h, evr_signal_t, base);
  (void)evr_signal_stop(s);
  evr__list_remove(&s->notify.node);
}

/* ---- fork ---- */

void evr__signal_fork_prepare(void) {
  (void)pthread_mutex_lock(&sig_mutex);
  spin_lock_blocked(&sig_fork_mask);
}

void evr__signal_fork_parent(void) {
  spin_unlock_blocked(&sig_fork_mask);
  (void)pthread_mutex_unlock(&sig_mutex);
}

/* The child keeps the handlers and the lists: handles of loops that the
 * child goes on using (after evr_loop_fork()) keep working. */
void evr__signal_fork_child(void) {
  spin_unlock_blocked(&sig_fork_mask);
  (void)pthread_mutex_unlock(&sig_mutex);
}
