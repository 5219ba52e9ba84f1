/* tests/test_post.c: evr_post() and evr_post_node(): exactly-once delivery
 * in each producer's order, loop-thread execution, batching, liveness. */
/* evr-test: backends threads timeout=600 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "helpers.h"

/* Under valgrind (scripts/test.sh sets this) the big runs are 10x smaller. */
static unsigned scaled(unsigned n) {
  const char *v = getenv("EVR_TEST_UNDER_VALGRIND");
  return v && *v && *v != '0' ? n / 10 : n;
}

static pthread_t loop_thread;
static atomic_int thread_failures;
static void thread_check(int ok) {
  if (!ok) atomic_fetch_add(&thread_failures, 1);
}

static int ran;
static int wrong_thread;
static void count_fn(void *arg) {
  (void)arg;
  ran++;
  if (!pthread_equal(pthread_self(), loop_thread)) wrong_thread++;
}

static void test_post_rejects_bad_arguments(void **state) {
  (void)state;
  evr_post_t n;
  assert_int_equal(evr_post(NULL, count_fn, NULL), EVR_EINVAL);
  assert_int_equal(evr_post(test_loop, NULL, NULL), EVR_EINVAL);
  assert_int_equal(evr_post_node(NULL, &n, count_fn, NULL), EVR_EINVAL);
  assert_int_equal(evr_post_node(test_loop, NULL, count_fn, NULL), EVR_EINVAL);
  assert_int_equal(evr_post_node(test_loop, &n, NULL, NULL), EVR_EINVAL);
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

static void test_post_queued_callback_keeps_loop_alive_and_blocks_free(void **state) {
  (void)state;
  ran = 0;
  wrong_thread = 0;
  loop_thread = pthread_self();
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_evr_ok(evr_post(test_loop, count_fn, NULL));
  assert_int_equal(ran, 0); /* never inside evr_post() */
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_int_equal(evr_loop_free(test_loop), EVR_EBUSY);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(ran, 1);
  assert_int_equal(wrong_thread, 0);
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

/* A callback posted by a posted callback waits for a later round. */
static evr_post_t chain_node;
static int chain_left;
static void chain_fn(void *arg) {
  ran++;
  if (chain_left-- > 0) assert_evr_ok(evr_post_node(arg, &chain_node, chain_fn, arg));
}

static void test_post_from_callback_runs_in_a_later_iteration(void **state) {
  (void)state;
  ran = 0;
  chain_left = 2;
  assert_evr_ok(evr_post_node(test_loop, &chain_node, chain_fn, test_loop));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(ran, 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(ran, 2);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(ran, 3);
}

static char order[8];
static int order_len;
static void mark_fn(void *arg) { order[order_len++] = *(const char *)arg; }

static void test_post_single_thread_order_mixes_both_variants(void **state) {
  (void)state;
  static evr_post_t n1, n2;
  static const char a = 'a', b = 'b', c = 'c', d = 'd';
  order_len = 0;
  assert_evr_ok(evr_post(test_loop, mark_fn, (void *)&a));
  assert_evr_ok(evr_post_node(test_loop, &n1, mark_fn, (void *)&b));
  assert_evr_ok(evr_post(test_loop, mark_fn, (void *)&c));
  assert_evr_ok(evr_post_node(test_loop, &n2, mark_fn, (void *)&d));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  order[order_len] = 0;
  assert_string_equal(order, "abcd");
}

/* ---- 4 producers x 100,000 posts ---- */

enum { PRODUCERS = 4 };
static unsigned per_producer = 100000; /* scaled() in the test */

struct item {
  evr_post_t node;
  unsigned producer;
  unsigned seq;
};

static struct item *items;           /* caller-owned nodes of even producers */
static unsigned next_seq[PRODUCERS]; /* loop thread only */
static unsigned delivered;
static int out_of_order;
static int off_thread;
static evr_async_t keep; /* keeps the DEFAULT run alive until the end */

static void check_item(unsigned producer, unsigned seq) {
  if (!pthread_equal(pthread_self(), loop_thread)) off_thread++;
  if (producer >= PRODUCERS || seq != next_seq[producer]) {
    out_of_order++;
  } else {
    next_seq[producer]++;
  }
  if (++delivered == PRODUCERS * per_producer) assert_evr_ok(evr_close(&keep.base, NULL));
}

static void node_fn(void *arg) {
  struct item *it = arg;
  check_item(it->producer, it->seq);
}

/* Odd producers use evr_post(): producer and sequence packed in the arg. */
static void packed_fn(void *arg) {
  uintptr_t v = (uintptr_t)arg;
  check_item((unsigned)(v / per_producer), (unsigned)(v % per_producer));
}

static void *producer(void *arg) {
  unsigned p = (unsigned)(uintptr_t)arg;
  for (unsigned i = 0; i < per_producer; i++) {
    if (p % 2 == 0) {
      struct item *it = &items[(size_t)p * per_producer + i];
      it->producer = p;
      it->seq = i;
      thread_check(evr_post_node(test_loop, &it->node, node_fn, it) == 0);
    } else {
      uintptr_t v = (uintptr_t)p * per_producer + i;
      thread_check(evr_post(test_loop, packed_fn, (void *)v) == 0);
    }
  }
  return NULL;
}

static void never_async(evr_async_t *a) {
  (void)a;
}

static void test_post_four_producers_exactly_once_in_producer_order(void **state) {
  (void)state;
  pthread_t t[PRODUCERS];
  per_producer = scaled(100000);
  items = calloc((size_t)PRODUCERS * per_producer, sizeof *items);
  assert_non_null(items);
  for (int i = 0; i < PRODUCERS; i++) next_seq[i] = 0;
  delivered = 0;
  out_of_order = off_thread = 0;
  loop_thread = pthread_self();
  atomic_store(&thread_failures, 0);
  assert_evr_ok(evr_async_init(test_loop, &keep, never_async));
  for (uintptr_t p = 0; p < PRODUCERS; p++)
    assert_int_equal(pthread_create(&t[p], NULL, producer, (void *)p), 0);
  /* Runs until the last item closes `keep`; a lost item hangs it, a
   * duplicate shows up as out_of_order. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  for (int p = 0; p < PRODUCERS; p++) assert_int_equal(pthread_join(t[p], NULL), 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  assert_int_equal(out_of_order, 0);
  assert_int_equal(off_thread, 0);
  assert_int_equal(delivered, PRODUCERS * per_producer);
  for (int p = 0; p < PRODUCERS; p++) assert_int_equal(next_seq[p], per_producer);
  /* Nothing is delivered twice after the end either. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(delivered, PRODUCERS * per_producer);
  free(items);
}

/* The loop may be freed as soon as the last posted callback has run, even
 * while its poster is still returning from evr_post(). */
static evr_loop_t *side_loop;
static void *post_one(void *arg) {
  (void)arg;
  thread_check(evr_post(side_loop, count_fn, NULL) == 0);
  return NULL;
}

static void test_post_loop_freed_right_after_last_callback(void **state) {
  (void)state;
  int fds = count_open_fds();
  atomic_store(&thread_failures, 0);
  for (int round = 0; round < 200; round++) {
    pthread_t t;
    assert_evr_ok(evr_loop_new(&side_loop, NULL));
    ran = 0;
    loop_thread = pthread_self();
    assert_int_equal(pthread_create(&t, NULL, post_one, NULL), 0);
    /* Nothing else keeps it alive: poll until the post has run. */
    for (int i = 0; i < 10000000 && ran == 0; i++) {
      assert_true(evr_loop_run(side_loop, EVR_RUN_NOWAIT) >= 0);
      /* Let the poster run where threads share one CPU (valgrind). */
      if (ran == 0) sched_yield();
    }
    assert_int_equal(ran, 1);
    assert_int_equal(evr_loop_free(side_loop), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
  }
  assert_int_equal(atomic_load(&thread_failures), 0);
  assert_fds_back_to(fds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_post_rejects_bad_arguments),
      EVR_TEST(test_post_queued_callback_keeps_loop_alive_and_blocks_free),
      EVR_TEST(test_post_from_callback_runs_in_a_later_iteration),
      EVR_TEST(test_post_single_thread_order_mixes_both_variants),
      EVR_TEST(test_post_four_producers_exactly_once_in_producer_order),
      EVR_TEST(test_post_loop_freed_right_after_last_callback),
  };
  return cmocka_run_group_tests_name("post", tests, NULL, NULL);
}
