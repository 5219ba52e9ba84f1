/* reactor/async.c: the loop's wake-up channel and async handles.
 *
 * Every loop owns one wake-up channel: the backend's native one when it has
 * it (EVFILT_USER on a kernel kqueue), else an eventfd (Linux) or a
 * non-blocking pipe (EVR_HAVE_EVENTFD and EVR_HAVE_PIPE2 in evr_config.h
 * pick the calls), watched through an I/O node of the loop's own (no
 * handle: it never keeps the loop alive, and evr_loop_walk() does not see
 * it). When it fires, the loop runs, in order: the
 * raised notifiers (async and signal handles), the posted callbacks, the
 * pool completions.
 * The invariant that makes wake-ups impossible to lose: a waker sets its
 * flag (notifier, queue entry, stop_flag) BEFORE evr__wake(), which writes
 * only when it turns wake_pending from 0 to 1; the loop consumes the channel
 * (drains the descriptor) FIRST, then clears wake_pending, then looks at the
 * flags. A waker that found wake_pending == 1 did so before the clear, so
 * its flag is seen; one that comes after the clear writes again. (Clearing
 * before draining would let the drain eat a write whose wake_pending stays
 * 1, after which nobody writes again.)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include "reactor/internal.h"
#if EVR_HAVE_EVENTFD
#include <sys/eventfd.h>
#endif

/* evr__wake() runs in signal handlers: its atomics must not take locks. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "lock-free atomic int required");

/* ---- the descriptor ---- */

static int wake_open(int *rfd, int *wfd) {
#if EVR_HAVE_EVENTFD
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd >= 0) {
    *rfd = *wfd = fd;
    return 0;
  }
  /* Kernels without eventfd (or its flags) fall back to a pipe. */
  if (errno != ENOSYS && errno != EINVAL) return -errno;
#endif
  int p[2];
#if EVR_HAVE_PIPE2
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) return -errno;
#else
  if (pipe(p) < 0) return -errno;
  int rc = evr__cloexec(p[0]);
  if (!rc) rc = evr__cloexec(p[1]);
  if (!rc) rc = evr__nonblock(p[0], 1);
  if (!rc) rc = evr__nonblock(p[1], 1);
  if (rc) {
    (void)close(p[0]);
    (void)close(p[1]);
    return rc;
  }
#endif
  *rfd = p[0];
  *wfd = p[1];
  return 0;
}

static void wake_close(evr_loop_t *loop) {
  /* close() errors leave nothing to undo; EINTR still releases the fd on
   * Linux and the BSDs, so it is not retried. */
  if (loop->wake_rfd >= 0) (void)close(loop->wake_rfd);
  if (loop->wake_wfd >= 0 && loop->wake_wfd != loop->wake_rfd)
    (void)close(loop->wake_wfd);
  loop->wake_rfd = loop->wake_wfd = -1;
}

void evr__wake(evr_loop_t *loop) {
  /* In a forked child before evr_loop_fork() the channel is the parent's;
   * the new channel starts triggered (evr__async_wake_reset). */
  if (evr__loop_inherited(loop)) return;
  if (atomic_exchange(&loop->wake_pending, 1)) return; /* already written */
  int saved = errno; /* async-signal-safe callers keep their errno */
  if (loop->backend->wake) {
    (void)loop->backend->wake(loop);
  } else {
    /* eventfd wants 8 bytes; a pipe takes any of them. */
    uint64_t one = 1;
    size_t len = loop->wake_wfd == loop->wake_rfd ? sizeof one : 1;
    ssize_t r;
    do
      r = write(loop->wake_wfd, &one, len);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: a full pipe or a saturated counter is readable already, so
     * the loop wakes anyway. Nothing else can fail on a valid descriptor. */
  }
  errno = saved;
}

static void wake_drain(evr_loop_t *loop) {
  char buf[64];
  size_t len = loop->wake_wfd == loop->wake_rfd ? sizeof(uint64_t) : sizeof buf;
  for (;;) {
    ssize_t r = read(loop->wake_rfd, buf, len);
    if (r < 0 && errno == EINTR) continue;
    /* eventfd: one read resets it. Pipe: stop at a short read or EAGAIN;
     * bytes written after this are for the next iteration. */
    if (r < (ssize_t)len || loop->wake_wfd == loop->wake_rfd) break;
  }
}

/* Run every raised notifier once. The list is spliced out and each node put
 * back before its callback, so callbacks may close any handle (a closed one
 * unlinks itself from wherever it sits) or create new ones (they wait for
 * the next wake-up). */
static void run_notifiers(evr_loop_t *loop) {
  evr__list_t batch;
  evr__list_move(&loop->notifiers, &batch);
  while (!evr__list_empty(&batch)) {
    evr__list_t *q = evr__list_first(&batch);
    evr__list_remove(q);
    evr__list_insert_tail(&loop->notifiers, q);
    evr__notify_t *n = EVR_CONTAINER_OF(q, evr__notify_t, node);
    if (__atomic_exchange_n(&n->pending, 0, __ATOMIC_SEQ_CST)) n->fire(n);
  }
}

void evr__wake_dispatch(evr_loop_t *loop) {
  /* The channel is consumed already (see the invariant above). */
  atomic_store(&loop->wake_pending, 0);
  run_notifiers(loop);
  evr__post_run(loop);
  evr__work_run_done(loop);
}

/* The wake-up descriptor is readable (evr__io_dispatch). */
void evr__wake_io(evr_loop_t *loop) {
  wake_drain(loop);
  evr__wake_dispatch(loop);
}

/* Create the descriptor and start watching it. */
static int wake_start(evr_loop_t *loop) {
  atomic_store(&loop->wake_pending, 0);
  if (loop->backend->wake) {
    /* The backend's own channel, set up by its init (or reinit). */
    loop->wake_rfd = loop->wake_wfd = -1;
    return 0;
  }
  int rc = wake_open(&loop->wake_rfd, &loop->wake_wfd);
  if (rc) {
    loop->wake_rfd = loop->wake_wfd = -1;
    return rc;
  }
  evr__io_init(&loop->wake_node, loop->wake_rfd, EVR__IO_WAKE);
  rc = evr__io_start(loop, &loop->wake_node, EVR_READ, 0);
  if (rc) wake_close(loop);
  return rc;
}

static void wake_stop(evr_loop_t *loop) {
  if (loop->wake_rfd < 0) return;
  evr__io_release(loop, &loop->wake_node);
  wake_close(loop);
}

int evr__async_loop_init(evr_loop_t *loop) {
  int rc = evr__fork_register();
  if (rc) return rc;
  evr__list_init(&loop->notifiers);
  evr__list_init(&loop->post_queue);
  evr__list_init(&loop->work_done);
  atomic_init(&loop->posts_queued, 0);
  atomic_init(&loop->wake_pending, 0);
  loop->pool_user = 0;
  loop->wake_rfd = loop->wake_wfd = -1;
  rc = pthread_mutex_init(&loop->post_lock, NULL);
  if (rc) return -rc;
  rc = wake_start(loop);
  if (rc) (void)pthread_mutex_destroy(&loop->post_lock);
  return rc;
}

void evr__async_loop_destroy(evr_loop_t *loop) {
  evr__pool_loop_detach(loop);
  wake_stop(loop);
  /* Wait out a thread still leaving a critical section (a poster whose
   * callback already ran); destroying an unlocked mutex is then safe. */
  (void)pthread_mutex_lock(&loop->post_lock);
  (void)pthread_mutex_unlock(&loop->post_lock);
  (void)pthread_mutex_destroy(&loop->post_lock);
}

/* In a forked child: an eventfd or pipe is shared with the parent, so
 * replace it (a native channel was rebuilt with the backend). Signals are
 * blocked meanwhile: a handler must not write to a number being closed. The
 * new channel starts triggered, so the first poll runs whatever was raised
 * or queued before the fork. */
int evr__async_wake_reset(evr_loop_t *loop) {
  sigset_t all, old;
  (void)sigfillset(&all);
  int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
  if (rc) return -rc;
  wake_stop(loop);
  /* A poster of the parent may have held the lock at fork(); no thread of
   * the child will release it. */
  rc = -pthread_mutex_init(&loop->post_lock, NULL);
  if (rc == 0) rc = wake_start(loop);
  if (rc == 0) evr__wake(loop);
  (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

/* ---- async handles ---- */

static void async_fire(evr__notify_t *n) {
  evr_async_t *a = EVR_CONTAINER_OF(n, evr_async_t, notify);
  a->cb(a);
}

void evr__async_close(evr_handle_t *h) {
  evr_async_t *a = EVR_CONTAINER_OF(h, evr_async_t, base);
  /* A send in progress still uses the loop's descriptor: let it finish. It
   * is a handful of instructions and one write(). */
  while (__atomic_load_n(&a->senders, __ATOMIC_SEQ_CST) != 0) (void)sched_yield();
  evr__list_remove(&a->notify.node);
  __atomic_store_n(&a->notify.pending, 0, __ATOMIC_SEQ_CST);
}

int evr_async_init(evr_loop_t *loop, evr_async_t *a, evr_async_cb cb) {
  if (!loop || !a || !cb) return EVR_EINVAL;
  evr__handle_init(loop, &a->base, EVR__HT_ASYNC);
  a->cb = cb;
  a->senders = 0;
  a->notify.pending = 0;
  a->notify.fire = async_fire;
  evr__list_init(&a->notify.node);
  evr__list_insert_tail(&loop->notifiers, &a->notify.node);
  evr__handle_start(&a->base);
  return 0;
}

int evr_async_send(evr_async_t *a) {
  /* type and loop are written once by evr_async_init(), before the handle
   * is shared; flags are not read here, they change on the loop thread. */
  if (!a || a->base.type != EVR__HT_ASYNC) return EVR_EINVAL;
  __atomic_fetch_add(&a->senders, 1, __ATOMIC_SEQ_CST);
  if (!__atomic_exchange_n(&a->notify.pending, 1, __ATOMIC_SEQ_CST))
    evr__wake(a->base.loop);
  __atomic_fetch_sub(&a->senders, 1, __ATOMIC_SEQ_CST);
  return 0;
}
