/* tests/test_pool.c: the thread pool: work on pool threads, done on the loop
 * thread exactly once with the right status, cancellation, liveness, lazy
 * start, size control and joining when the last loop is freed. */
/* evr-test: backends threads timeout=600 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "helpers.h"

static int under_valgrind(void) {
  const char *v = getenv("EVR_TEST_UNDER_VALGRIND");
  return v && *v && *v != '0';
}

static pthread_t loop_thread;

/* cmocka asserts stay on the test's thread; pool threads count failures. */
static atomic_int thread_failures;
static void thread_check(int ok) {
  if (!ok) atomic_fetch_add(&thread_failures, 1);
}

/* Threads of this process (Linux: /proc/self/task); -1 where unknown. */
static int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void sleep_us(long us);

/* pthread_join() returns once a thread has finished, which can be a moment
 * before the kernel drops its task entry: wait (bounded) for the count. */
static void assert_threads(int base, int extra) {
  if (base < 0) return;
  int n = count_threads();
  for (int i = 0; i < 2000 && n != base + extra; i++) {
    sleep_us(1000);
    n = count_threads();
  }
  assert_int_equal(n, base + extra);
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* ---- basics ---- */

static int done_calls;
static int done_status;
static int done_wrong_thread;
static atomic_int work_calls;
static atomic_int work_on_loop_thread;

static void count_work(evr_work_t *req) {
  (void)req;
  atomic_fetch_add(&work_calls, 1);
  if (pthread_equal(pthread_self(), loop_thread))
    atomic_fetch_add(&work_on_loop_thread, 1);
}

static void record_done(evr_work_t *req, int status) {
  (void)req;
  done_calls++;
  done_status = status;
  if (!pthread_equal(pthread_self(), loop_thread)) done_wrong_thread++;
}

static void reset_counts(void) {
  done_calls = 0;
  done_status = 12345;
  done_wrong_thread = 0;
  atomic_store(&work_calls, 0);
  atomic_store(&work_on_loop_thread, 0);
  loop_thread = pthread_self();
  atomic_store(&thread_failures, 0);
}

static void test_pool_rejects_bad_arguments(void **state) {
  (void)state;
  evr_work_t w = {0};
  assert_int_equal(evr_work_submit(NULL, &w, count_work, record_done), EVR_EINVAL);
  assert_int_equal(evr_work_submit(test_loop, NULL, count_work, record_done), EVR_EINVAL);
  assert_int_equal(evr_work_submit(test_loop, &w, NULL, record_done), EVR_EINVAL);
  assert_int_equal(evr_work_submit(test_loop, &w, count_work, NULL), EVR_EINVAL);
  assert_int_equal(evr_work_cancel(NULL), EVR_EINVAL);
  assert_int_equal(evr_work_cancel(&w), EVR_EINVAL); /* zeroed, never submitted */
  /* Rejected calls start nothing. */
  assert_int_equal(evr_threadpool_threads(), 0);
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

static void test_pool_work_runs_off_loop_and_done_on_loop_thread(void **state) {
  (void)state;
  evr_work_t w = {0};
  reset_counts();
  w.data = &w;
  assert_evr_ok(evr_work_submit(test_loop, &w, count_work, record_done));
  /* Pending work keeps the loop alive and the loop unfreeable. */
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_int_equal(evr_loop_free(test_loop), EVR_EBUSY);
  assert_int_equal(done_calls, 0); /* never inside submit */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(done_calls, 1);
  assert_int_equal(done_status, 0);
  assert_int_equal(done_wrong_thread, 0);
  assert_int_equal(atomic_load(&work_calls), 1);
  assert_int_equal(atomic_load(&work_on_loop_thread), 0);
  assert_ptr_equal(w.data, &w); /* data is the user's */
  /* Once done ran, the request is no longer pending. */
  assert_int_equal(evr_work_cancel(&w), EVR_EINVAL);
}

/* ---- cancel ---- */

/* A gate that holds every pool thread, so queued requests stay queued. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open;
static int gate_waiting;

static void gate_reset(void) {
  pthread_mutex_lock(&gate_lock);
  gate_open = 0;
  gate_waiting = 0;
  pthread_mutex_unlock(&gate_lock);
}

static void gated_work(evr_work_t *req) {
  (void)req;
  atomic_fetch_add(&work_calls, 1);
  pthread_mutex_lock(&gate_lock);
  gate_waiting++;
  pthread_cond_broadcast(&gate_cond);
  while (!gate_open) pthread_cond_wait(&gate_cond, &gate_lock);
  pthread_mutex_unlock(&gate_lock);
}

/* Wait until n pool threads sit at the gate (bounded by ctest's timeout). */
static void gate_wait_for(int n) {
  pthread_mutex_lock(&gate_lock);
  while (gate_waiting < n) pthread_cond_wait(&gate_cond, &gate_lock);
  pthread_mutex_unlock(&gate_lock);
}

static void gate_release(void) {
  pthread_mutex_lock(&gate_lock);
  gate_open = 1;
  pthread_cond_broadcast(&gate_cond);
  pthread_mutex_unlock(&gate_lock);
}

static int statuses[8];
static int status_calls[8];
static void indexed_done(evr_work_t *req, int status) {
  int i = (int)(intptr_t)req->data;
  statuses[i] = status;
  status_calls[i]++;
  if (!pthread_equal(pthread_self(), loop_thread)) done_wrong_thread++;
}

static void test_pool_cancel_queued_gives_ecanceled_running_gives_ebusy(void **state) {
  (void)state;
  enum { POOL = 2 };
  evr_work_t w[4] = {{0}};
  reset_counts();
  gate_reset();
  assert_evr_ok(evr_threadpool_set_size(POOL));
  for (int i = 0; i < 4; i++) {
    w[i].data = (void *)(intptr_t)i;
    statuses[i] = 999;
    status_calls[i] = 0;
    assert_evr_ok(evr_work_submit(test_loop, &w[i], gated_work, indexed_done));
  }
  /* Both threads hold w[0] and w[1]; w[2] and w[3] are queued. */
  gate_wait_for(POOL);
  assert_int_equal(evr_work_cancel(&w[0]), EVR_EBUSY);
  assert_int_equal(evr_work_cancel(&w[1]), EVR_EBUSY);
  assert_evr_ok(evr_work_cancel(&w[3]));
  assert_int_equal(evr_work_cancel(&w[3]), EVR_EBUSY); /* done is due */
  assert_int_equal(status_calls[3], 0);                /* never inside cancel */
  gate_release();
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  for (int i = 0; i < 4; i++) assert_int_equal(status_calls[i], 1);
  assert_int_equal(statuses[0], 0);
  assert_int_equal(statuses[1], 0);
  assert_int_equal(statuses[2], 0);
  assert_int_equal(statuses[3], EVR_ECANCELED);
  assert_int_equal(atomic_load(&work_calls), 3); /* w[3]'s work never ran */
  assert_int_equal(done_wrong_thread, 0);
  /* The fixture's loop still holds the pool: the size cannot change now. */
  assert_int_equal(evr_threadpool_set_size(0), EVR_EBUSY);
}

/* ---- a pending request cannot be submitted again ---- */

static atomic_int other_work_calls;
static int other_done_calls;
static void other_work(evr_work_t *req) {
  (void)req;
  atomic_fetch_add(&other_work_calls, 1);
}
static void other_done(evr_work_t *req, int status) {
  (void)req;
  (void)status;
  other_done_calls++;
}

static void test_pool_submit_of_pending_request_is_refused(void **state) {
  (void)state;
  evr_loop_t *l, *l2;
  evr_work_t w[3] = {{0}};
  int rc[3][2];
  reset_counts();
  gate_reset();
  atomic_store(&other_work_calls, 0);
  other_done_calls = 0;
  assert_evr_ok(evr_threadpool_set_size(1));
  assert_evr_ok(evr_loop_new(&l, NULL));
  assert_evr_ok(evr_loop_new(&l2, NULL));
  for (int i = 0; i < 3; i++) {
    w[i].data = (void *)(intptr_t)i;
    statuses[i] = 999;
    status_calls[i] = 0;
  }
  assert_evr_ok(evr_work_submit(l, &w[0], count_work, indexed_done));
  assert_evr_ok(evr_work_submit(l, &w[1], gated_work, indexed_done));
  assert_evr_ok(evr_work_submit(l, &w[2], count_work, indexed_done));
  /* One pool thread, first in first out: once w[1] runs, w[0] has finished
   * and waits for its done on l, and w[2] is still queued. */
  gate_wait_for(1);
  /* Every pending state refuses a new submission, to the same loop or to
   * another one. The results are checked once the gate is open again, so
   * that a failure leaves no pool thread stuck. */
  for (int i = 0; i < 3; i++) {
    rc[i][0] = evr_work_submit(l, &w[i], other_work, other_done);
    rc[i][1] = evr_work_submit(l2, &w[i], other_work, other_done);
  }
  int l2_alive = evr_loop_alive(l2);
  gate_release();
  /* Bounded, never blocking: a request counted twice would keep l alive
   * for ever. */
  for (int i = 0; i < 20000; i++) {
    evr_loop_run(l, EVR_RUN_NOWAIT);
    if (status_calls[0] + status_calls[1] + status_calls[2] >= 3 &&
        !evr_loop_alive(l))
      break;
    sleep_us(500);
  }
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rc[i][0], EVR_EBUSY);
    assert_int_equal(rc[i][1], EVR_EBUSY);
  }
  assert_int_equal(l2_alive, 0);
  /* Nothing changed: each request ran its own work and done, once. */
  for (int i = 0; i < 3; i++) {
    assert_int_equal(status_calls[i], 1);
    assert_int_equal(statuses[i], 0);
    assert_ptr_equal(w[i].data, (void *)(intptr_t)i);
  }
  assert_int_equal(atomic_load(&work_calls), 3);
  assert_int_equal(atomic_load(&other_work_calls), 0);
  assert_int_equal(other_done_calls, 0);
  assert_int_equal(done_wrong_thread, 0);
  assert_int_equal(evr_loop_alive(l), 0);
  assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
  /* Once done has run, the request may be submitted again. */
  assert_evr_ok(evr_work_submit(l2, &w[0], count_work, indexed_done));
  assert_int_equal(evr_loop_run(l2, EVR_RUN_DEFAULT), 0);
  assert_int_equal(status_calls[0], 2);
  assert_int_equal(evr_loop_free(l), 0);
  assert_int_equal(evr_loop_free(l2), 0);
  assert_int_equal(evr_threadpool_threads(), 0);
  assert_evr_ok(evr_threadpool_set_size(0));
}

/* ---- 10,000 items ---- */

struct item {
  evr_work_t req;
  unsigned duration_us;
  atomic_int worked;  /* times work ran */
  int done;           /* times done ran */
  int status;
  int cancel_rc;      /* 1: not cancelled; else evr_work_cancel()'s result */
};

static struct item *items;
static unsigned nitems;
static unsigned ndone;
static int bad_done;

static void item_work(evr_work_t *req) {
  struct item *it = (struct item *)(void *)req; /* req is the first member */
  thread_check(!pthread_equal(pthread_self(), loop_thread));
  atomic_fetch_add(&it->worked, 1);
  if (it->duration_us) sleep_us((long)it->duration_us);
}

static void item_done(evr_work_t *req, int status) {
  struct item *it = (struct item *)(void *)req; /* req is the first member */
  if (!pthread_equal(pthread_self(), loop_thread)) bad_done++;
  it->done++;
  it->status = status;
  ndone++;
}

static uint64_t rng_state;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void test_pool_ten_thousand_items_some_cancelled_done_once(void **state) {
  (void)state;
  const char *seed = getenv("EVR_TEST_SEED");
  rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
  if (!rng_state) rng_state = 1;
  printf("seed: EVR_TEST_SEED=0x%llx\n", (unsigned long long)rng_state);
  reset_counts();
  nitems = under_valgrind() ? 1000 : 10000;
  items = calloc(nitems, sizeof *items);
  assert_non_null(items);
  ndone = 0;
  bad_done = 0;
  for (unsigned i = 0; i < nitems; i++) {
    struct item *it = &items[i];
    /* Mostly instant, some up to 200 us. */
    it->duration_us = (rng() % 4 == 0) ? (unsigned)(rng() % 200) : 0;
    it->cancel_rc = 1;
    atomic_init(&it->worked, 0);
    it->status = 999;
    assert_evr_ok(evr_work_submit(test_loop, &it->req, item_work, item_done));
  }
  /* Cancel about one in five, in random order; whichever have not started
   * yet are cancelled, the others report EVR_EBUSY. */
  unsigned cancelled = 0, busy = 0;
  for (unsigned k = 0; k < nitems / 5; k++) {
    struct item *it = &items[rng() % nitems];
    if (it->cancel_rc != 1) continue;
    it->cancel_rc = evr_work_cancel(&it->req);
    assert_true(it->cancel_rc == 0 || it->cancel_rc == EVR_EBUSY);
    if (it->cancel_rc == 0) cancelled++; else busy++;
  }
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(ndone, nitems);
  assert_int_equal(bad_done, 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  for (unsigned i = 0; i < nitems; i++) {
    struct item *it = &items[i];
    assert_int_equal(it->done, 1);
    if (it->cancel_rc == 0) {
      assert_int_equal(it->status, EVR_ECANCELED);
      assert_int_equal(atomic_load(&it->worked), 0);
    } else {
      assert_int_equal(it->status, 0);
      assert_int_equal(atomic_load(&it->worked), 1);
    }
  }
  printf("cancelled %u, already started %u\n", cancelled, busy);
  free(items);
}

/* ---- done may resubmit and cancel ---- */

static evr_work_t chain_req;
static int chain_left;
static void chain_done(evr_work_t *req, int status) {
  done_calls++;
  if (status != 0) done_status = status;
  if (chain_left-- > 0) assert_evr_ok(evr_work_submit(test_loop, req, count_work, chain_done));
}

static void test_pool_done_may_resubmit_its_request(void **state) {
  (void)state;
  reset_counts();
  done_status = 0;
  chain_left = 5;
  assert_evr_ok(evr_work_submit(test_loop, &chain_req, count_work, chain_done));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(done_calls, 6);
  assert_int_equal(done_status, 0);
  assert_int_equal(atomic_load(&work_calls), 6);
}

/* ---- size, lazy start, join ---- */

static void test_pool_starts_lazily_and_joins_when_last_loop_freed(void **state) {
  (void)state;
  evr_loop_t *a, *b;
  evr_work_t wa = {0}, wb = {0};
  reset_counts();
  int threads0 = count_threads();
  /* The fixture's loop submitted nothing: no pool yet. */
  assert_int_equal(evr_threadpool_threads(), 0);
  assert_evr_ok(evr_threadpool_set_size(3));
  assert_evr_ok(evr_loop_new(&a, NULL));
  assert_evr_ok(evr_loop_new(&b, NULL));
  assert_int_equal(evr_threadpool_threads(), 0);
  assert_threads(threads0, 0);
  assert_evr_ok(evr_work_submit(a, &wa, count_work, record_done));
  assert_int_equal(evr_threadpool_threads(), 3);
  assert_threads(threads0, 3);
  /* A running pool cannot change its size. */
  assert_int_equal(evr_threadpool_set_size(5), EVR_EBUSY);
  assert_evr_ok(evr_work_submit(b, &wb, count_work, record_done));
  assert_int_equal(evr_loop_run(a, EVR_RUN_DEFAULT), 0);
  assert_int_equal(evr_loop_run(b, EVR_RUN_DEFAULT), 0);
  assert_int_equal(done_calls, 2);
  /* Another loop still uses the pool: it keeps running. */
  assert_evr_ok(evr_loop_free(a));
  assert_int_equal(evr_threadpool_threads(), 3);
  /* The last one joins the threads before evr_loop_free() returns. */
  assert_evr_ok(evr_loop_free(b));
  assert_int_equal(evr_threadpool_threads(), 0);
  assert_threads(threads0, 0);
  /* Stopped: the size may change again, and the pool restarts on demand. */
  assert_evr_ok(evr_threadpool_set_size(1));
  assert_evr_ok(evr_loop_new(&a, NULL));
  assert_evr_ok(evr_work_submit(a, &wa, count_work, record_done));
  assert_int_equal(evr_threadpool_threads(), 1);
  assert_int_equal(evr_loop_run(a, EVR_RUN_DEFAULT), 0);
  assert_evr_ok(evr_loop_free(a));
  assert_int_equal(evr_threadpool_threads(), 0);
  assert_int_equal(done_calls, 3);
  assert_int_equal(done_wrong_thread, 0);
  assert_evr_ok(evr_threadpool_set_size(0));
}

static void test_pool_size_comes_from_environment_by_default(void **state) {
  (void)state;
  evr_loop_t *l;
  evr_work_t w = {0};
  reset_counts();
  assert_evr_ok(evr_threadpool_set_size(0));
  assert_int_equal(setenv("EVR_THREADPOOL_SIZE", "2", 1), 0);
  assert_evr_ok(evr_loop_new(&l, NULL));
  assert_evr_ok(evr_work_submit(l, &w, count_work, record_done));
  assert_int_equal(evr_threadpool_threads(), 2);
  assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
  assert_evr_ok(evr_loop_free(l));
  /* The API beats the environment. */
  assert_evr_ok(evr_threadpool_set_size(5));
  assert_evr_ok(evr_loop_new(&l, NULL));
  assert_evr_ok(evr_work_submit(l, &w, count_work, record_done));
  assert_int_equal(evr_threadpool_threads(), 5);
  assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
  assert_evr_ok(evr_loop_free(l));
  /* Unset: 4; not a number: ignored (4); below the range: clamped to 1. */
  assert_evr_ok(evr_threadpool_set_size(0));
  const char *vals[] = {NULL, "many", "0"};
  const unsigned want[] = {4, 4, 1};
  for (int i = 0; i < 3; i++) {
    if (vals[i])
      assert_int_equal(setenv("EVR_THREADPOOL_SIZE", vals[i], 1), 0);
    else
      assert_int_equal(unsetenv("EVR_THREADPOOL_SIZE"), 0);
    assert_evr_ok(evr_loop_new(&l, NULL));
    assert_evr_ok(evr_work_submit(l, &w, count_work, record_done));
    assert_int_equal(evr_threadpool_threads(), want[i]);
    assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
    assert_evr_ok(evr_loop_free(l));
  }
  assert_int_equal(unsetenv("EVR_THREADPOOL_SIZE"), 0);
  assert_int_equal(done_wrong_thread, 0);
}

/* Exactly `size` requests run at once: a barrier of `size` is reached (so
 * there are at least that many threads) and never exceeded. */
static pthread_mutex_t conc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t conc_cond = PTHREAD_COND_INITIALIZER;
static int conc_now, conc_max, conc_target, conc_reached;

static void conc_work(evr_work_t *req) {
  (void)req;
  pthread_mutex_lock(&conc_lock);
  conc_now++;
  if (conc_now > conc_max) conc_max = conc_now;
  if (conc_now == conc_target) conc_reached = 1;
  pthread_cond_broadcast(&conc_cond);
  /* The first `target` requests wait for each other (ctest's timeout is
   * the guard should the pool have fewer threads). */
  while (!conc_reached) pthread_cond_wait(&conc_cond, &conc_lock);
  conc_now--;
  pthread_mutex_unlock(&conc_lock);
}

static void test_pool_runs_exactly_size_requests_at_once(void **state) {
  (void)state;
  enum { SIZE = 3, N = 12 };
  evr_work_t w[N] = {{0}};
  reset_counts();
  conc_now = conc_max = conc_reached = 0;
  conc_target = SIZE;
  assert_evr_ok(evr_threadpool_set_size(SIZE));
  for (int i = 0; i < N; i++) assert_evr_ok(evr_work_submit(test_loop, &w[i], conc_work, record_done));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(done_calls, N);
  assert_int_equal(conc_reached, 1);
  assert_int_equal(conc_max, SIZE);
}

/* ---- a request per loop from several loops at once ---- */

enum { LOOPS = 4 };
static atomic_int per_loop_wrong;
struct loop_job {
  evr_loop_t *loop;
  pthread_t self;
  int done;
  evr_work_t req[50];
};

static void job_done(evr_work_t *req, int status) {
  struct loop_job *j = req->data;
  if (status != 0 || !pthread_equal(pthread_self(), j->self))
    atomic_fetch_add(&per_loop_wrong, 1);
  j->done++;
}

static void *loop_thread_main(void *arg) {
  struct loop_job *j = arg;
  j->self = pthread_self();
  thread_check(evr_loop_new(&j->loop, NULL) == 0);
  for (int i = 0; i < 50; i++) {
    j->req[i].data = j;
    thread_check(evr_work_submit(j->loop, &j->req[i], count_work, job_done) == 0);
  }
  thread_check(evr_loop_run(j->loop, EVR_RUN_DEFAULT) == 0);
  thread_check(j->done == 50);
  thread_check(evr_loop_free(j->loop) == 0);
  return NULL;
}

static void test_pool_serves_loops_in_several_threads(void **state) {
  (void)state;
  static struct loop_job jobs[LOOPS];
  pthread_t t[LOOPS];
  reset_counts();
  atomic_store(&per_loop_wrong, 0);
  for (int i = 0; i < LOOPS; i++) {
    jobs[i].done = 0;
    assert_int_equal(pthread_create(&t[i], NULL, loop_thread_main, &jobs[i]), 0);
  }
  for (int i = 0; i < LOOPS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  assert_int_equal(atomic_load(&per_loop_wrong), 0);
  assert_int_equal(atomic_load(&work_calls), LOOPS * 50);
  /* Every loop that used the pool is freed (the fixture's never used it). */
  assert_int_equal(evr_threadpool_threads(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_pool_rejects_bad_arguments),
      EVR_TEST(test_pool_work_runs_off_loop_and_done_on_loop_thread),
      EVR_TEST(test_pool_cancel_queued_gives_ecanceled_running_gives_ebusy),
      EVR_TEST(test_pool_submit_of_pending_request_is_refused),
      EVR_TEST(test_pool_ten_thousand_items_some_cancelled_done_once),
      EVR_TEST(test_pool_done_may_resubmit_its_request),
      EVR_TEST(test_pool_starts_lazily_and_joins_when_last_loop_freed),
      EVR_TEST(test_pool_size_comes_from_environment_by_default),
      EVR_TEST(test_pool_runs_exactly_size_requests_at_once),
      EVR_TEST(test_pool_serves_loops_in_several_threads),
  };
  return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
