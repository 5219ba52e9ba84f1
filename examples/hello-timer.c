/* examples/hello-timer.c: a one-shot timer and a repeating one.
 *
 * The one-shot timer fires once after 20 ms and starts a repeating timer
 * with a 10 ms period; the repeating timer stops itself after five ticks.
 * Nothing else keeps the loop alive, so evr_loop_run() then returns. Timers
 * never fire early but may fire late: the loop's metrics tell how late the
 * latest one was.
 */
#include <evr/evr.h>
#include <stdio.h>
#include <stdlib.h>

#define TICKS 5

static evr_timer_t once, ticker;
static int ticks;
static uint64_t started_ns;

/* Print what failed and why, then give up: every evr call returns 0 or a
 * negative EVR_E* code, which evr_strerror() turns into a message. */
static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

static void on_tick(evr_timer_t *t) {
  printf("tick %d\n", ++ticks);
  if (ticks == TICKS)
    check(evr_timer_stop(t), "evr_timer_stop"); /* nothing left: the run ends */
}

static void on_once(evr_timer_t *t) {
  /* A one-shot timer is already inactive when its callback runs. */
  uint64_t waited_ms = (evr_hrtime() - started_ns) / 1000000;
  printf("one-shot fired after at least 20 ms: %s\n", waited_ms >= 20 ? "yes" : "no");
  check(evr_timer_start(&ticker, on_tick, 10, 10), "evr_timer_start");
  (void)t;
}

int main(void) {
  evr_loop_t *loop;
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  /* Timers are caller-owned watchers: init once, start and stop at will. */
  check(evr_timer_init(loop, &once), "evr_timer_init");
  check(evr_timer_init(loop, &ticker), "evr_timer_init");
  started_ns = evr_hrtime();
  check(evr_timer_start(&once, on_once, 20, 0), "evr_timer_start");

  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");

  evr_loop_metrics_t m;
  check(evr_loop_metrics(loop, &m), "evr_loop_metrics");
  printf("loop ran %llu iterations; the latest timer was %llu us late\n",
         (unsigned long long)m.iterations,
         (unsigned long long)(m.timer_lateness_max_ns / 1000));
  check(evr_loop_free(loop), "evr_loop_free");
  puts("done");
  return 0;
}
