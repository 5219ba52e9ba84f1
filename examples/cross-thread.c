/* examples/cross-thread.c: other threads hand work to a loop.
 *
 * A loop and its handles belong to one thread; other threads talk to it
 * through the few thread-safe calls (docs/threads.md):
 *   - evr_post(loop, fn, arg) runs fn(arg) on the loop thread, exactly once
 *     per call, in the order each thread made its calls;
 *   - evr_async_send(&async) makes the async handle's callback run on the
 *     loop thread; sends that arrive before it runs coalesce into one call,
 *     so it suits "something changed, look again" (here: progress).
 * Three producer threads post numbered messages and nudge an async handle
 * after each; the loop checks that each thread's messages arrive complete
 * and in order. The async handle also keeps the loop alive while the
 * producers still have posts to make: a loop does not wait for posts that
 * have not been made yet.
 */
#include <evr/evr.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRODUCERS 3
#define MESSAGES 1000

struct msg {
  int producer;
  int seq;
};

static evr_loop_t *loop;
static evr_async_t progress;
static atomic_int produced;          /* written by producers, read by the loop */
static int next_seq[PRODUCERS];      /* loop thread only */
static int out_of_order, finished, async_calls;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

/* ---- on the loop thread ---- */

static void on_message(void *arg) {
  struct msg *m = arg;
  if (m->seq != next_seq[m->producer]) out_of_order++;
  next_seq[m->producer] = m->seq + 1;
  free(m); /* allocated by the producer, owned by whoever runs last */
}

static void on_producer_done(void *arg) {
  int id = (int)(intptr_t)arg;
  printf("producer %d: %d messages, %s\n", id, next_seq[id],
         next_seq[id] == MESSAGES ? "all in order" : "MISSING SOME");
  if (++finished == PRODUCERS) {
    /* Every producer has made its last send before this post (program order
     * in its thread), so no send can start after this close. */
    check(evr_close(&progress.base, NULL), "evr_close");
  }
}

static void on_progress(evr_async_t *a) {
  (void)a;
  async_calls++;
  (void)atomic_load(&produced); /* e.g. update a progress display */
}

/* ---- on the producer threads ---- */

static void *producer(void *arg) {
  int id = (int)(intptr_t)arg;
  for (int i = 0; i < MESSAGES; i++) {
    struct msg *m = malloc(sizeof *m);
    if (!m) abort();
    m->producer = id;
    m->seq = i;
    if (evr_post(loop, on_message, m) != 0) abort();
    atomic_fetch_add(&produced, 1);
    if (evr_async_send(&progress) != 0) abort();
  }
  if (evr_post(loop, on_producer_done, (void *)(intptr_t)id) != 0) abort();
  return NULL;
}

int main(void) {
  pthread_t threads[PRODUCERS];
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  /* Active from init on: keeps the loop alive until closed. */
  check(evr_async_init(loop, &progress, on_progress), "evr_async_init");
  for (int i = 0; i < PRODUCERS; i++) {
    int rc = pthread_create(&threads[i], NULL, producer, (void *)(intptr_t)i);
    if (rc != 0) {
      fprintf(stderr, "pthread_create: %s\n", strerror(rc));
      return 1;
    }
  }
  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");
  for (int i = 0; i < PRODUCERS; i++) {
    int rc = pthread_join(threads[i], NULL);
    if (rc != 0) {
      fprintf(stderr, "pthread_join: %s\n", strerror(rc));
      return 1;
    }
  }
  int sends = PRODUCERS * MESSAGES;
  printf("%d sends ran the async callback %d times\n", sends, async_calls);
  printf("sends coalesced (at most one call per send, at least one): %s\n",
         async_calls >= 1 && async_calls <= sends ? "yes" : "no");
  printf("out of order: %d\n", out_of_order);
  check(evr_loop_free(loop), "evr_loop_free");
  return out_of_order ? 1 : 0;
}
