/* tests/test_async.c: async handles: coalescing, cross-thread and
 * signal-handler sends, liveness, close, and thread-safe evr_loop_stop(). */
/* evr-test: backends threads timeout=300 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "helpers.h"

static pthread_t loop_thread;

/* cmocka asserts must stay on the test's thread: other threads count
 * failures, checked after they are joined. */
static atomic_int thread_failures;
static void thread_check(int ok) {
  if (!ok) atomic_fetch_add(&thread_failures, 1);
}

static int calls;
static int wrong_thread;
static void count_cb(evr_async_t *a) {
  (void)a;
  calls++;
  if (!pthread_equal(pthread_self(), loop_thread)) wrong_thread++;
}

static void test_async_rejects_bad_arguments(void **state) {
  (void)state;
  static evr_async_t a;
  assert_int_equal(evr_async_init(NULL, &a, count_cb), EVR_EINVAL);
  assert_int_equal(evr_async_init(test_loop, NULL, count_cb), EVR_EINVAL);
  assert_int_equal(evr_async_init(test_loop, &a, NULL), EVR_EINVAL);
  assert_int_equal(evr_async_send(NULL), EVR_EINVAL);
  /* A handle of another type is not an async handle. */
  static evr_check_t c;
  assert_evr_ok(evr_check_init(test_loop, &c));
  assert_int_equal(evr_async_send((evr_async_t *)(void *)&c), EVR_EINVAL);
}

static void test_async_sends_before_run_coalesce_into_one_callback(void **state) {
  (void)state;
  static evr_async_t a;
  calls = 0;
  wrong_thread = 0;
  loop_thread = pthread_self();
  assert_evr_ok(evr_async_init(test_loop, &a, count_cb));
  assert_string_equal(evr_handle_type_name(&a.base), "async");
  assert_int_equal(evr_is_active(&a.base), 1);
  for (int i = 0; i < 1000; i++) assert_evr_ok(evr_async_send(&a));
  assert_int_equal(calls, 0); /* never inside send */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 1);
  /* Nothing sent since: more iterations run nothing. */
  for (int i = 0; i < 3; i++) evr_loop_run(test_loop, EVR_RUN_NOWAIT);
  assert_int_equal(calls, 1);
  assert_evr_ok(evr_async_send(&a));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls, 2);
  assert_int_equal(wrong_thread, 0);
}

static int self_sends;
static void resend_cb(evr_async_t *a) {
  calls++;
  if (self_sends-- > 0) assert_evr_ok(evr_async_send(a));
}

static void test_async_send_from_own_callback_runs_it_next_iteration(void **state) {
  (void)state;
  static evr_async_t a;
  calls = 0;
  self_sends = 2;
  assert_evr_ok(evr_async_init(test_loop, &a, resend_cb));
  assert_evr_ok(evr_async_send(&a));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 2);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 3);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 3);
}

static void test_async_unref_does_not_keep_loop_alive(void **state) {
  (void)state;
  static evr_async_t a;
  calls = 0;
  assert_evr_ok(evr_async_init(test_loop, &a, count_cb));
  assert_int_equal(evr_loop_alive(test_loop), 1);
  evr_unref(&a.base);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  /* DEFAULT returns at once instead of waiting for a send. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls, 0);
}

static int closed;
static void on_close(evr_handle_t *h) {
  (void)h;
  closed++;
}

static void test_async_close_drops_a_pending_send(void **state) {
  (void)state;
  static evr_async_t a, b;
  calls = 0;
  closed = 0;
  assert_evr_ok(evr_async_init(test_loop, &a, count_cb));
  assert_evr_ok(evr_async_init(test_loop, &b, count_cb));
  assert_evr_ok(evr_async_send(&a));
  assert_evr_ok(evr_async_send(&b));
  assert_evr_ok(evr_close(&a.base, on_close));
  assert_int_equal(evr_close(&a.base, on_close), EVR_EALREADY);
  assert_int_equal(closed, 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 1); /* b only */
  assert_int_equal(closed, 1);
}

/* Callbacks may close other async handles raised in the same round. */
static evr_async_t pair[2];
static void close_other_cb(evr_async_t *a) {
  calls++;
  evr_async_t *other = a == &pair[0] ? &pair[1] : &pair[0];
  if (!evr_is_closing(&other->base)) assert_evr_ok(evr_close(&other->base, NULL));
  assert_evr_ok(evr_close(&a->base, NULL));
}

static void test_async_callback_may_close_another_raised_handle(void **state) {
  (void)state;
  calls = 0;
  assert_evr_ok(evr_async_init(test_loop, &pair[0], close_other_cb));
  assert_evr_ok(evr_async_init(test_loop, &pair[1], close_other_cb));
  assert_evr_ok(evr_async_send(&pair[0]));
  assert_evr_ok(evr_async_send(&pair[1]));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls, 1);
}

/* ---- another thread ---- */

static atomic_int prepared;
static void prepare_cb(evr_prepare_t *p) {
  (void)p;
  atomic_store(&prepared, 1);
}

struct sender {
  evr_async_t *a;
  int count;
  atomic_int *sent;
};

static void wait_prepared(void) {
  /* Bounded by the test's ctest timeout. */
  while (!atomic_load(&prepared)) sched_yield();
  /* Give the loop a chance to block in poll; not required for correctness. */
  usleep(20000);
}

static void *send_once_later(void *arg) {
  struct sender *s = arg;
  wait_prepared();
  thread_check(evr_async_send(s->a) == 0);
  return NULL;
}

static void close_self_cb(evr_async_t *a) {
  calls++;
  if (!pthread_equal(pthread_self(), loop_thread)) wrong_thread++;
  assert_evr_ok(evr_close(&a->base, NULL));
}

static void test_async_send_from_thread_wakes_blocked_default_run(void **state) {
  (void)state;
  static evr_async_t a;
  static evr_prepare_t p;
  pthread_t t;
  calls = 0;
  wrong_thread = 0;
  loop_thread = pthread_self();
  atomic_store(&prepared, 0);
  assert_evr_ok(evr_async_init(test_loop, &a, close_self_cb));
  assert_evr_ok(evr_prepare_init(test_loop, &p));
  assert_evr_ok(evr_prepare_start(&p, prepare_cb));
  evr_unref(&p.base);
  struct sender s = {&a, 1, NULL};
  atomic_store(&thread_failures, 0);
  assert_int_equal(pthread_create(&t, NULL, send_once_later, &s), 0);
  /* Only the send can end this run: the async handle is its only ref. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  assert_int_equal(calls, 1);
  assert_int_equal(wrong_thread, 0);
}

/* Many threads sending at once: no send is lost. Every sender bumps `sent`
 * BEFORE its send; the callback records what it saw. After the senders are
 * joined, a helper raises `fin`; the handles close only once a callback has
 * seen the final count, so a lost wake-up hangs the run (ctest's timeout). */
enum { SENDERS = 4 };
static int sends = 20000; /* 10x fewer under valgrind */
static atomic_int sent_total;
static int seen_max;
static int all_sent;
static evr_async_t many, fin;

static void *send_many(void *arg) {
  struct sender *s = arg;
  for (int i = 0; i < s->count; i++) {
    atomic_fetch_add(s->sent, 1);
    thread_check(evr_async_send(s->a) == 0);
  }
  return NULL;
}

static void maybe_finish(void) {
  if (all_sent && seen_max == SENDERS * sends && !evr_is_closing(&fin.base)) {
    assert_evr_ok(evr_close(&many.base, NULL));
    assert_evr_ok(evr_close(&fin.base, NULL));
  }
}

static void seen_cb(evr_async_t *a) {
  (void)a;
  calls++;
  int v = atomic_load(&sent_total);
  if (v > seen_max) seen_max = v;
  maybe_finish();
}

static void fin_cb(evr_async_t *a) {
  (void)a;
  all_sent = 1;
  maybe_finish();
}

static pthread_t senders[SENDERS];
static void *join_then_fin(void *arg) {
  (void)arg;
  for (int i = 0; i < SENDERS; i++) thread_check(pthread_join(senders[i], NULL) == 0);
  thread_check(evr_async_send(&fin) == 0);
  return NULL;
}

static void test_async_concurrent_senders_lose_no_wakeup(void **state) {
  (void)state;
  pthread_t joiner;
  const char *vg = getenv("EVR_TEST_UNDER_VALGRIND");
  sends = vg && *vg && *vg != '0' ? 2000 : 20000;
  struct sender s = {&many, sends, &sent_total};
  calls = 0;
  seen_max = 0;
  all_sent = 0;
  atomic_store(&sent_total, 0);
  atomic_store(&thread_failures, 0);
  assert_evr_ok(evr_async_init(test_loop, &many, seen_cb));
  assert_evr_ok(evr_async_init(test_loop, &fin, fin_cb));
  for (int i = 0; i < SENDERS; i++)
    assert_int_equal(pthread_create(&senders[i], NULL, send_many, &s), 0);
  assert_int_equal(pthread_create(&joiner, NULL, join_then_fin, NULL), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(pthread_join(joiner, NULL), 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  assert_int_equal(seen_max, SENDERS * sends);
  assert_true(calls >= 1 && calls <= SENDERS * sends);
}

/* ---- from a signal handler ---- */

static evr_async_t *sig_async;
static void usr2_handler(int signum) {
  (void)signum;
  (void)evr_async_send(sig_async);
}

static void test_async_send_from_signal_handler(void **state) {
  (void)state;
  static evr_async_t a;
  struct sigaction sa, old;
  calls = 0;
  loop_thread = pthread_self();
  assert_evr_ok(evr_async_init(test_loop, &a, close_self_cb));
  sig_async = &a;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = usr2_handler;
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGUSR2, &sa, &old), 0);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(sigaction(SIGUSR2, &old, NULL), 0);
  assert_int_equal(calls, 1);
}

/* ---- evr_loop_stop() from another thread ---- */

static void *stop_later(void *arg) {
  wait_prepared();
  evr_loop_stop(arg);
  return NULL;
}

static void test_loop_stop_from_thread_ends_blocked_default_run(void **state) {
  (void)state;
  static evr_async_t keep; /* referenced, never sent: the run would block forever */
  static evr_prepare_t p;
  pthread_t t;
  calls = 0;
  atomic_store(&prepared, 0);
  assert_evr_ok(evr_async_init(test_loop, &keep, count_cb));
  assert_evr_ok(evr_prepare_init(test_loop, &p));
  assert_evr_ok(evr_prepare_start(&p, prepare_cb));
  assert_int_equal(pthread_create(&t, NULL, stop_later, test_loop), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 1);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(calls, 0);
}

/* ---- descriptors ---- */

static void nop_async(evr_async_t *a) { (void)a; }

/* A loop's wake-up channel and its async handles release every descriptor:
 * a loop costs the same descriptors whatever was sent to it. */
static void test_async_loops_release_their_descriptors(void **state) {
  (void)state;
  int fds = count_open_fds();
  for (int round = 0; round < 20; round++) {
    evr_loop_t *l;
    static evr_async_t a;
    assert_evr_ok(evr_loop_new(&l, NULL));
    assert_evr_ok(evr_async_init(l, &a, nop_async));
    assert_evr_ok(evr_async_send(&a));
    assert_int_equal(evr_loop_run(l, EVR_RUN_NOWAIT), 1);
    assert_evr_ok(evr_close(&a.base, NULL));
    assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
    assert_evr_ok(evr_loop_free(l));
  }
  assert_fds_back_to(fds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_async_rejects_bad_arguments),
      EVR_TEST(test_async_sends_before_run_coalesce_into_one_callback),
      EVR_TEST(test_async_send_from_own_callback_runs_it_next_iteration),
      EVR_TEST(test_async_unref_does_not_keep_loop_alive),
      EVR_TEST(test_async_close_drops_a_pending_send),
      EVR_TEST(test_async_callback_may_close_another_raised_handle),
      EVR_TEST(test_async_send_from_thread_wakes_blocked_default_run),
      EVR_TEST(test_async_concurrent_senders_lose_no_wakeup),
      EVR_TEST(test_async_send_from_signal_handler),
      EVR_TEST(test_loop_stop_from_thread_ends_blocked_default_run),
      EVR_TEST(test_async_loops_release_their_descriptors),
  };
  return cmocka_run_group_tests_name("async", tests, NULL, NULL);
}
