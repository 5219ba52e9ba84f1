/* reactor/pool.c: the thread pool behind evr_work_submit().
 *
 * One pool per process, shared by all loops; each loop that submitted holds
 * a reference, and the last loop freed stops and joins the threads (a
 * destructor does the same at exit, for the threads that are not in the
 * middle of a work function: those cannot be waited for safely). Requests
 * are caller-owned and linked through req->node: pool.queue ->
 * pool.running -> loop->work_done. A request's state runs IDLE -> QUEUED ->
 * RUNNING -> DONE -> IDLE (just before done runs), and only an IDLE request
 * is accepted by a submit: a request is on at most one list and counted
 * once by its loop. Lock order: pool.lock, then a loop's post_lock. The
 * state moves to RUNNING and DONE under pool.lock, and a worker hands a
 * finished request to its loop while holding pool.lock, so the atfork
 * prepare handler (which takes pool.lock) always sees every pending request
 * on exactly one list.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include "reactor/internal.h"

#define POOL_DEFAULT_SIZE 4u
#define POOL_MAX_SIZE 1024u

/* req->state, guarded by pool.lock (W_IDLE is written by the loop thread
 * once no pool thread refers to the request). The owner zeroes a request
 * before its first submission, which makes it W_IDLE; any other state is
 * pending, and evr_work_submit() refuses it. The pending values are
 * distinctive so that a request the owner forgot to zero is unlikely to
 * pass for one (memcheck reports the read of such a request). */
enum { W_IDLE = 0, W_QUEUED = 0x51, W_RUNNING = 0x52, W_DONE = 0x53 };

enum { POOL_OFF, POOL_ON, POOL_STOPPING };

struct pool_thread {
  pthread_t id;
  int busy;                   /* running a work function (pool.lock) */
  int detached;               /* by stop_locked(), read only by its caller */
};

static struct pool {
  pthread_mutex_t lock;
  pthread_cond_t work_cond;   /* workers: queue not empty, or stop */
  pthread_cond_t state_cond;  /* submitters: a stop in progress is over */
  evr__list_t queue;          /* QUEUED requests, FIFO */
  evr__list_t running;        /* RUNNING requests */
  evr__list_t orphans;        /* in a forked child: pending at fork */
  struct pool_thread *threads;
  unsigned nthreads;
  unsigned size;              /* from evr_threadpool_set_size(); 0: default */
  unsigned users;             /* loops holding a reference */
  int state;                  /* POOL_* */
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .work_cond = PTHREAD_COND_INITIALIZER,
    .state_cond = PTHREAD_COND_INITIALIZER,
    .queue = {&pool.queue, &pool.queue},
    .running = {&pool.running, &pool.running},
    .orphans = {&pool.orphans, &pool.orphans},
    .state = POOL_OFF,
};

static unsigned clamp_size(unsigned long n) {
  if (n < 1) return 1;
  if (n > POOL_MAX_SIZE) return POOL_MAX_SIZE;
  return (unsigned)n;
}

static unsigned env_size(void) {
  const char *s = getenv("EVR_THREADPOOL_SIZE");
  if (!s || !*s) return POOL_DEFAULT_SIZE;
  char *end;
  unsigned long n = strtoul(s, &end, 10);
  if (*end != '\0') return POOL_DEFAULT_SIZE; /* not a number: ignored */
  return clamp_size(n);
}

/* Hand a finished (or cancelled) request to its loop. pool.lock is held. */
static void complete_locked(evr_work_t *req, int status) {
  evr_loop_t *loop = req->loop;
  req->state = W_DONE;
  req->status = status;
  (void)pthread_mutex_lock(&loop->post_lock);
  evr__list_insert_tail(&loop->work_done, &req->node);
  /* Under the loop's lock: the loop cannot run done, and so cannot be
   * freed, before this write is over. */
  evr__wake(loop);
  (void)pthread_mutex_unlock(&loop->post_lock);
}

static void *worker(void *arg) {
  struct pool_thread *self = arg;
  (void)pthread_mutex_lock(&pool.lock);
  for (;;) {
    while (pool.state == POOL_ON && evr__list_empty(&pool.queue))
      (void)pthread_cond_wait(&pool.work_cond, &pool.lock);
    /* Stopping: requests still queued belong to loops that were never
     * freed (process exit); they are left alone. */
    if (pool.state != POOL_ON) break;
    evr__list_t *q = evr__list_first(&pool.queue);
    evr__list_remove(q);
    evr__list_insert_tail(&pool.running, q);
    evr_work_t *req = EVR_CONTAINER_OF(q, evr_work_t, node);
    req->state = W_RUNNING;
    self->busy = 1;
    (void)pthread_mutex_unlock(&pool.lock);

    req->work(req);

    (void)pthread_mutex_lock(&pool.lock);
    self->busy = 0;
    evr__list_remove(&req->node);
    complete_locked(req, 0);
  }
  (void)pthread_mutex_unlock(&pool.lock);
  return NULL;
}

/* Start the threads. pool.lock is held. Threads are created with every
 * signal blocked (and keep that mask): process signals go to loop threads,
 * where evr's handler or the user's own expects them. */
static int start_locked(void) {
  unsigned n = pool.size ? pool.size : env_size();
  struct pool_thread *t = calloc(n, sizeof *t);
  if (!t) return EVR_ENOMEM;
  sigset_t all, old;
  (void)sigfillset(&all);
  int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
  if (rc) {
    free(t);
    return -rc;
  }
  unsigned i;
  for (i = 0; i < n; i++) {
    rc = pthread_create(&t[i].id, NULL, worker, &t[i]);
    if (rc) break;
  }
  (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (i == 0) {
    free(t);
    return -rc; /* EAGAIN: resources or a thread limit */
  }
  /* Fewer threads than asked for still make a working pool. */
  pool.threads = t;
  pool.nthreads = i;
  pool.state = POOL_ON;
  return 0;
}

/* Stop and join the threads. pool.lock is held, and released meanwhile:
 * submitters arriving during the stop wait on state_cond, then restart.
 * at_exit: a thread busy in a work function is not waited for (the work
 * may block for ever, and exit must not hang on it); it is detached, and
 * finishes or dies with the process. Its slot then stays allocated, since
 * it writes its busy flag there. */
static void stop_locked(int at_exit) {
  pool.state = POOL_STOPPING;
  (void)pthread_cond_broadcast(&pool.work_cond);
  struct pool_thread *t = pool.threads;
  unsigned n = pool.nthreads;
  int detached_busy = 0;
  for (unsigned i = 0; i < n; i++) {
    /* Decided under the lock: an idle thread cannot become busy now. */
    int join = !(at_exit && t[i].busy) && !pthread_equal(t[i].id, pthread_self());
    if (!join) {
      /* exit() called from a work function runs the destructor on a pool
       * thread, which cannot join itself. */
      (void)pthread_detach(t[i].id);
      detached_busy = 1;
    }
    t[i].detached = !join;
  }
  (void)pthread_mutex_unlock(&pool.lock);
  for (unsigned i = 0; i < n; i++)
    if (!t[i].detached) (void)pthread_join(t[i].id, NULL);
  (void)pthread_mutex_lock(&pool.lock);
  if (!detached_busy) free(t);
  pool.threads = NULL;
  pool.nthreads = 0;
  pool.state = POOL_OFF;
  (void)pthread_cond_broadcast(&pool.state_cond);
}

int evr_threadpool_set_size(unsigned n) {
  int rc = 0;
  (void)pthread_mutex_lock(&pool.lock);
  if (pool.state != POOL_OFF)
    rc = EVR_EBUSY;
  else
    pool.size = n ? clamp_size(n) : 0; /* 0: back to the default */
  (void)pthread_mutex_unlock(&pool.lock);
  return rc;
}

unsigned evr_threadpool_threads(void) {
  (void)pthread_mutex_lock(&pool.lock);
  unsigned n = pool.state == POOL_ON ? pool.nthreads : 0;
  (void)pthread_mutex_unlock(&pool.lock);
  return n;
}

int evr_work_submit(evr_loop_t *loop, evr_work_t *req, evr_work_fn work,
                    evr_work_done_fn done) {
  if (!loop || !req || !work || !done) return EVR_EINVAL;
  (void)pthread_mutex_lock(&pool.lock);
  while (pool.state == POOL_STOPPING)
    (void)pthread_cond_wait(&pool.state_cond, &pool.lock);
  /* Pending (queued, running, finished with done still due, or orphaned by
   * a fork): its node sits on a pool or loop list and its loop counts it.
   * Refused before anything is written or started. */
  if (req->state != W_IDLE) {
    (void)pthread_mutex_unlock(&pool.lock);
    return EVR_EBUSY;
  }
  if (pool.state == POOL_OFF) {
    int rc = start_locked();
    if (rc) {
      (void)pthread_mutex_unlock(&pool.lock);
      return rc;
    }
  }
  if (!loop->pool_user) {
    loop->pool_user = 1;
    pool.users++;
  }
  req->loop = loop;
  req->work = work;
  req->done = done;
  req->status = 0;
  req->state = W_QUEUED;
  evr__list_insert_tail(&pool.queue, &req->node);
  (void)pthread_cond_signal(&pool.work_cond);
  (void)pthread_mutex_unlock(&pool.lock);
  evr__req_register(loop);
  return 0;
}

int evr_work_cancel(evr_work_t *req) {
  if (!req) return EVR_EINVAL;
  int rc;
  (void)pthread_mutex_lock(&pool.lock);
  switch (req->state) {
    case W_QUEUED:
      /* On pool.queue, or on pool.orphans in a forked child. */
      evr__list_remove(&req->node);
      complete_locked(req, EVR_ECANCELED);
      rc = 0;
      break;
    case W_RUNNING:
    case W_DONE:
      rc = EVR_EBUSY;
      break;
    default:
      rc = EVR_EINVAL;
      break;
  }
  (void)pthread_mutex_unlock(&pool.lock);
  return rc;
}

void evr__work_run_done(evr_loop_t *loop) {
  evr__list_t batch;
  (void)pthread_mutex_lock(&loop->post_lock);
  evr__list_move(&loop->work_done, &batch);
  (void)pthread_mutex_unlock(&loop->post_lock);
  while (!evr__list_empty(&batch)) {
    evr__list_t *q = evr__list_first(&batch);
    evr_work_t *req = EVR_CONTAINER_OF(q, evr_work_t, node);
    evr__list_remove(q);
    /* No pool thread refers to req any more (the hand-over was under
     * post_lock), so it may be resubmitted or freed from done. */
    req->state = W_IDLE;
    evr__req_unregister(loop);
    req->done(req, req->status);
  }
}

void evr__pool_loop_detach(evr_loop_t *loop) {
  if (!loop->pool_user) return;
  (void)pthread_mutex_lock(&pool.lock);
  loop->pool_user = 0;
  assert(pool.users > 0);
  if (--pool.users == 0 && pool.state == POOL_ON) stop_locked(0);
  (void)pthread_mutex_unlock(&pool.lock);
}

/* In a forked child: complete this loop's requests that were pending at the
 * fork. Their work runs (or ran) in the parent only. */
void evr__pool_loop_fork(evr_loop_t *loop) {
  (void)pthread_mutex_lock(&pool.lock);
  evr__list_t *q = evr__list_first(&pool.orphans);
  while (q != &pool.orphans) {
    evr__list_t *next = q->next;
    evr_work_t *req = EVR_CONTAINER_OF(q, evr_work_t, node);
    if (req->loop == loop) {
      evr__list_remove(q);
      complete_locked(req, EVR_ECANCELED);
    }
    q = next;
  }
  (void)pthread_mutex_unlock(&pool.lock);
}

/* ---- fork and exit ---- */

void evr__pool_fork_prepare(void) { (void)pthread_mutex_lock(&pool.lock); }

void evr__pool_fork_parent(void) { (void)pthread_mutex_unlock(&pool.lock); }

static void list_append(evr__list_t *to, evr__list_t *from) {
  while (!evr__list_empty(from)) {
    evr__list_t *q = evr__list_first(from);
    evr__list_remove(q);
    evr__list_insert_tail(to, q);
  }
}

void evr__pool_fork_child(void) {
  /* Only the forking thread exists here: the pool has no threads, and the
   * condition variables may record waiters that are gone. */
  free(pool.threads);
  pool.threads = NULL;
  pool.nthreads = 0;
  pool.state = POOL_OFF;
  list_append(&pool.orphans, &pool.running);
  list_append(&pool.orphans, &pool.queue);
  (void)pthread_cond_init(&pool.work_cond, NULL);
  (void)pthread_cond_init(&pool.state_cond, NULL);
  (void)pthread_mutex_unlock(&pool.lock);
}

__attribute__((destructor)) static void pool_at_exit(void) {
  (void)pthread_mutex_lock(&pool.lock);
  if (pool.state == POOL_ON) stop_locked(1);
  (void)pthread_mutex_unlock(&pool.lock);
}
