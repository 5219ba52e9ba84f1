/* reactor/clock.c: the monotonic clock. The loop caches one reading per
 * iteration; timers compare against that cached value. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>
#include "reactor/internal.h"

uint64_t evr__hrtime(void) {
  struct timespec ts;
  /* CLOCK_MONOTONIC cannot fail with a valid clock id and pointer. */
  (void)clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t evr_hrtime(void) { return evr__hrtime(); }

void evr_update_time(evr_loop_t *loop) {
  if (!loop) return;
  uint64_t now = evr__hrtime();
  /* Timers started at the old cached time count from this reading. */
  evr__timers_settle(loop, now);
  loop->now_ns = now;
  loop->now_ms = now / 1000000u;
}

uint64_t evr_now(const evr_loop_t *loop) { return loop ? loop->now_ms : 0; }

uint64_t evr_now_ns(const evr_loop_t *loop) { return loop ? loop->now_ns : 0; }
