/* tests/test_threads.c: one loop per thread. Eight loops on eight threads
 * exchange posted messages (all to all, each answered by an acknowledgement
 * posted back), and wake each other with async handles and evr_loop_stop():
 * no hidden global state between loops, nothing lost or doubled, every
 * callback on its own loop's thread. */
/* evr-test: backends threads timeout=600 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "helpers.h"

enum { NLOOPS = 8 };

static atomic_int thread_failures;
static void thread_check(int ok) {
  if (!ok) atomic_fetch_add(&thread_failures, 1);
}

static unsigned per_pair; /* messages from each loop to each other loop */

struct node {
  evr_loop_t *loop;
  pthread_t handle;            /* from pthread_create(), for the join */
  pthread_t thread;            /* written by the thread itself */
  evr_async_t keep;            /* referenced until everything arrived */
  unsigned next_seq[NLOOPS];   /* next expected message from each sender */
  unsigned acks[NLOOPS];       /* acknowledgements from each receiver */
  unsigned received, acked;
  int wrong_thread, out_of_order;
};

static struct node nodes[NLOOPS];

/* A reusable barrier made of a mutex and a condition variable: macOS has
 * no pthread_barrier_t. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned count, waiting, generation;
} ready = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};

static void ready_init(unsigned count) {
  ready.count = count;
  ready.waiting = 0;
}

static void ready_wait(void) {
  thread_check(pthread_mutex_lock(&ready.mu) == 0);
  unsigned gen = ready.generation;
  if (++ready.waiting == ready.count) {
    ready.waiting = 0;
    ready.generation++;
    thread_check(pthread_cond_broadcast(&ready.cv) == 0);
  } else {
    while (gen == ready.generation) thread_check(pthread_cond_wait(&ready.cv, &ready.mu) == 0);
  }
  thread_check(pthread_mutex_unlock(&ready.mu) == 0);
}

/* A message or an acknowledgement, packed in the argument: kind (1 bit),
 * sender (7 bits), sequence number. */
static void *pack(unsigned ack, unsigned from, unsigned seq) {
  return (void *)(((uintptr_t)seq << 8) | ((uintptr_t)from << 1) | ack);
}

static void maybe_done(struct node *n) {
  unsigned want = (NLOOPS - 1) * per_pair;
  if (n->received == want && n->acked == want && !evr_is_closing(&n->keep.base))
    thread_check(evr_close(&n->keep.base, NULL) == 0);
}

static void on_message(void *arg);

static void deliver(struct node *n, uintptr_t v) {
  unsigned ack = (unsigned)(v & 1), from = (unsigned)((v >> 1) & 0x7f);
  unsigned seq = (unsigned)(v >> 8);
  if (!pthread_equal(pthread_self(), n->thread)) n->wrong_thread++;
  if (from >= NLOOPS || &nodes[from] == n) {
    n->out_of_order++;
    return;
  }
  if (ack) {
    /* Acks of one receiver come back in its processing order, which is
     * this loop's sending order. */
    if (seq != n->acks[from]) n->out_of_order++;
    n->acks[from]++;
    n->acked++;
  } else {
    if (seq != n->next_seq[from]) n->out_of_order++;
    n->next_seq[from]++;
    n->received++;
    unsigned me = (unsigned)(n - nodes);
    thread_check(evr_post(nodes[from].loop, on_message, pack(1, me, seq)) == 0);
  }
  maybe_done(n);
}

/* The receiving loop is found from the thread: each thread runs one loop. */
static _Thread_local struct node *self;
static void on_message(void *arg) { deliver(self, (uintptr_t)arg); }

static void never(evr_async_t *a) { (void)a; }

static void *node_main(void *arg) {
  struct node *n = arg;
  unsigned me = (unsigned)(n - nodes);
  self = n;
  n->thread = pthread_self();
  thread_check(evr_loop_new(&n->loop, NULL) == 0);
  thread_check(evr_async_init(n->loop, &n->keep, never) == 0);
  /* Every loop exists before anyone posts. */
  ready_wait();
  /* Interleave destinations so that all queues fill at once. */
  for (unsigned seq = 0; seq < per_pair; seq++)
    for (unsigned to = 0; to < NLOOPS; to++)
      if (to != me) thread_check(evr_post(nodes[to].loop, on_message, pack(0, me, seq)) == 0);
  thread_check(evr_loop_run(n->loop, EVR_RUN_DEFAULT) == 0);
  /* Every message to this loop arrived and every ack it sent ran on its
   * peer, but a peer may still be returning from evr_post() to us: free
   * only once every loop got here. */
  ready_wait();
  thread_check(evr_loop_free(n->loop) == 0);
  return NULL;
}

static void test_threads_eight_loops_exchange_posts(void **state) {
  (void)state;
  const char *vg = getenv("EVR_TEST_UNDER_VALGRIND");
  per_pair = vg && *vg && *vg != '0' ? 500 : 5000;
  memset(nodes, 0, sizeof nodes);
  atomic_store(&thread_failures, 0);
  ready_init(NLOOPS);
  for (int i = 0; i < NLOOPS; i++)
    assert_int_equal(pthread_create(&nodes[i].handle, NULL, node_main, &nodes[i]), 0);
  for (int i = 0; i < NLOOPS; i++) assert_int_equal(pthread_join(nodes[i].handle, NULL), 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  for (int i = 0; i < NLOOPS; i++) {
    struct node *n = &nodes[i];
    assert_int_equal(n->wrong_thread, 0);
    assert_int_equal(n->out_of_order, 0);
    assert_int_equal(n->received, (NLOOPS - 1) * per_pair);
    assert_int_equal(n->acked, (NLOOPS - 1) * per_pair);
    for (int j = 0; j < NLOOPS; j++) {
      if (j == i) continue;
      assert_int_equal(n->next_seq[j], per_pair);
      assert_int_equal(n->acks[j], per_pair);
    }
  }
}

/* ---- async ring: each loop's callback sends to the next loop ---- */

struct ring_node {
  evr_loop_t *loop;
  pthread_t handle;
  pthread_t thread;
  evr_async_t a;
  int calls;
  int wrong_thread;
};

static struct ring_node ring[NLOOPS];
static atomic_int ring_hops;
static int ring_target;

static void ring_cb(evr_async_t *a) {
  struct ring_node *r = a->base.data;
  if (!pthread_equal(pthread_self(), r->thread)) r->wrong_thread++;
  r->calls++;
  int hop = atomic_fetch_add(&ring_hops, 1) + 1;
  unsigned next = (unsigned)(r - ring + 1) % NLOOPS;
  if (hop < ring_target) {
    thread_check(evr_async_send(&ring[next].a) == 0);
  } else {
    /* The token has gone round enough: stop every loop from here. */
    for (int i = 0; i < NLOOPS; i++) evr_loop_stop(ring[i].loop);
  }
}

static void *ring_main(void *arg) {
  struct ring_node *r = arg;
  r->thread = pthread_self();
  /* evr_loop_stop() may come before this run starts: it then returns at
   * once, which is also fine; run again until the target was reached. */
  while (atomic_load(&ring_hops) < ring_target)
    thread_check(evr_loop_run(r->loop, EVR_RUN_DEFAULT) >= 0);
  return NULL;
}

static void test_threads_async_token_ring_and_cross_thread_stop(void **state) {
  (void)state;
  ring_target = 1000;
  atomic_store(&ring_hops, 0);
  atomic_store(&thread_failures, 0);
  for (int i = 0; i < NLOOPS; i++) {
    memset(&ring[i], 0, sizeof ring[i]);
    assert_evr_ok(evr_loop_new(&ring[i].loop, NULL));
    assert_evr_ok(evr_async_init(ring[i].loop, &ring[i].a, ring_cb));
    ring[i].a.base.data = &ring[i];
  }
  for (int i = 0; i < NLOOPS; i++)
    assert_int_equal(pthread_create(&ring[i].handle, NULL, ring_main, &ring[i]), 0);
  assert_evr_ok(evr_async_send(&ring[0].a));
  for (int i = 0; i < NLOOPS; i++) assert_int_equal(pthread_join(ring[i].handle, NULL), 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  assert_int_equal(atomic_load(&ring_hops), ring_target);
  int total = 0;
  for (int i = 0; i < NLOOPS; i++) {
    assert_int_equal(ring[i].wrong_thread, 0);
    /* The token visits the loops in turn. */
    assert_int_equal(ring[i].calls, ring_target / NLOOPS + (i < ring_target % NLOOPS));
    total += ring[i].calls;
  }
  assert_int_equal(total, ring_target);
  for (int i = 0; i < NLOOPS; i++) {
    assert_evr_ok(evr_close(&ring[i].a.base, NULL));
    assert_int_equal(evr_loop_run(ring[i].loop, EVR_RUN_DEFAULT), 0);
    assert_evr_ok(evr_loop_free(ring[i].loop));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_threads_eight_loops_exchange_posts),
      EVR_TEST(test_threads_async_token_ring_and_cross_thread_stop),
  };
  return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
