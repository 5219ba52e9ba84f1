/* timers/timer.c: evr_timer_* handles on top of the wheel, and the four calls
 * the loop makes into the timer module (reactor/internal.h).
 *
 * Time: the wheel runs on the loop's cached milliseconds (loop->now_ms),
 * which may lag behind the clock by however long the current iteration has
 * been busy. A start with a timeout T > 0 must not count from that stale
 * time, and reading the clock on every start (a serialising instruction on
 * the idle-timeout hot path) costs more than the rest of a restart. So a
 * start files a provisional due time, cached now + T (a lower bound that
 * orders the wheel correctly), and records the timer in the `fresh` table. The
 * next clock reading R, taken before the loop blocks in poll
 * (evr__timers_next_timeout) or at the next timer phase, settles every fresh
 * timer to ceil(R) + T >= start + T: a later due time, which the wheel takes
 * as a plain write. Invariant: no fresh timer is ever expired or slept on.
 * Outside evr_loop_run() a start reads the clock itself: nothing bounds the
 * time until the loop's next reading there.
 * Timeout 0 has nothing to be early for: cached now, next timer phase.
 */
#include "reactor/internal.h"
#include "timers/wheel.h"
#include <stdlib.h>

#define NS_PER_MS UINT64_C(1000000)
/* Keeps due times below the wheel's 2^63 limit; unreachable in practice. */
#define DUE_MAX (UINT64_C(1) << 62)

/* Capacity of the table of unsettled starts. When it fills up, the starts
 * so far are settled with a clock reading of their own: one read per this
 * many starts. */
#define FRESH_MAX 4096

struct evr__timers {
  struct evr__wheel wheel;
  uint32_t nfresh;
  /* Timers started since the last clock reading, whose due time is still
   * provisional; NULL where one was stopped since. A table rather than a
   * list: settling then loads independent pointers, which the CPU overlaps,
   * instead of chasing links through memory. */
  evr_timer_t *fresh[FRESH_MAX];
};

static inline int is_fresh(const struct evr__timers *ts, const evr_timer_t *t) {
  return t->fresh_idx < ts->nfresh && ts->fresh[t->fresh_idx] == t;
}

static inline void fresh_forget(struct evr__timers *ts, evr_timer_t *t) {
  if (is_fresh(ts, t)) ts->fresh[t->fresh_idx] = NULL;
}

static void timer_close(evr_handle_t *h) {
  evr_timer_t *t = EVR_CONTAINER_OF(h, evr_timer_t, base);
  evr__wheel_del(&h->loop->timers->wheel, &t->wnode);
  fresh_forget(h->loop->timers, t);
  evr__handle_stop(h);
}

static const evr__handle_vt_t timer_vt = {"timer", timer_close};

static inline int timer_valid(const evr_timer_t *t) {
  return t && (t->base.flags & EVR__H_INIT) && t->base.vt == &timer_vt;
}

static inline uint64_t add_sat(uint64_t a, uint64_t b) {
  return b > DUE_MAX - a ? DUE_MAX : a + b;
}

int evr_timer_init(evr_loop_t *loop, evr_timer_t *t) {
  if (!loop || !t) return EVR_EINVAL;
  evr__handle_init(loop, &t->base, &timer_vt);
  evr__wnode_init(&t->wnode);
  t->fresh_idx = UINT32_MAX;
  t->cb = NULL;
  t->repeat = 0;
  t->timeout = 0;
  return 0;
}

/* Settle the due times of the fresh timers against a clock reading taken
 * after all of them were started. Each new due time is later than the
 * provisional one and keeps the start's seq, so start order survives. */
static void settle_fresh(struct evr__timers *ts, uint64_t clock_ns) {
  uint64_t base = clock_ns / NS_PER_MS + (clock_ns % NS_PER_MS != 0);
  uint32_t n = ts->nfresh;
  for (uint32_t i = 0; i < n; i++) {
    evr_timer_t *t = ts->fresh[i];
    if (i + 8 < n && ts->fresh[i + 8])
      __builtin_prefetch(&ts->fresh[i + 8]->wnode.due);
    if (t)
      evr__wheel_push_later(&ts->wheel, &t->wnode, add_sat(base, t->timeout));
  }
  ts->nfresh = 0;
}

static void timer_arm(evr_timer_t *t, uint64_t timeout) {
  evr_loop_t *loop = t->base.loop;
  struct evr__timers *ts = loop->timers;
  uint64_t due = add_sat(loop->now_ms, timeout);
  t->timeout = timeout;
  if (timeout == 0) {
    fresh_forget(ts, t);
  } else if (!loop->running) {
    /* Outside evr_loop_run() nothing bounds the time until the next clock
     * reading (the caller may block before running the loop): read it now. */
    uint64_t ns = evr__hrtime();
    due = add_sat(ns / NS_PER_MS + (ns % NS_PER_MS != 0), timeout);
    fresh_forget(ts, t);
  } else if (!is_fresh(ts, t)) {
    if (ts->nfresh == FRESH_MAX) settle_fresh(ts, evr__hrtime());
    t->fresh_idx = ts->nfresh;
    ts->fresh[ts->nfresh++] = t;
  }
  evr__wheel_add(&ts->wheel, &t->wnode, due);
  evr__handle_start(&t->base);
}

int evr_timer_start(evr_timer_t *t, evr_timer_cb cb, uint64_t timeout,
                    uint64_t repeat) {
  if (!cb || !timer_valid(t) || !evr__handle_usable(&t->base))
    return EVR_EINVAL;
  t->cb = cb;
  t->repeat = repeat;
  timer_arm(t, timeout);
  return 0;
}

int evr_timer_stop(evr_timer_t *t) {
  if (!timer_valid(t)) return EVR_EINVAL;
  evr__wheel_del(&t->base.loop->timers->wheel, &t->wnode);
  fresh_forget(t->base.loop->timers, t);
  evr__handle_stop(&t->base);
  return 0;
}

int evr_timer_again(evr_timer_t *t) {
  if (!timer_valid(t) || !evr__handle_usable(&t->base) || !t->cb ||
      t->repeat == 0)
    return EVR_EINVAL;
  timer_arm(t, t->repeat);
  return 0;
}

uint64_t evr_timer_due_in(const evr_timer_t *t) {
  if (!timer_valid(t) || !evr__wnode_pending(&t->wnode)) return 0;
  uint64_t now = t->base.loop->now_ms;
  return t->wnode.due > now ? t->wnode.due - now : 0;
}

uint64_t evr_timer_get_repeat(const evr_timer_t *t) {
  return t ? t->repeat : 0;
}

void evr_timer_set_repeat(evr_timer_t *t, uint64_t repeat) {
  if (t) t->repeat = repeat;
}

/* ---- the loop's side ---- */

int evr__timers_init(evr_loop_t *loop) {
  struct evr__timers *ts = malloc(sizeof *ts);
  if (!ts) return -ENOMEM;
  evr__wheel_init(&ts->wheel, loop->now_ms);
  ts->nfresh = 0;
  loop->timers = ts;
  return 0;
}

void evr__timers_destroy(evr_loop_t *loop) {
  free(loop->timers);
  loop->timers = NULL;
}

int64_t evr__timers_next_timeout(evr_loop_t *loop) {
  struct evr__timers *ts = loop->timers;
  uint64_t now = loop->now_ms;
  if (ts->nfresh) {
    /* The loop is about to sleep: settle against the clock, and count the
     * sleep from that reading rather than the older cached time. */
    uint64_t clock_ns = evr__hrtime();
    settle_fresh(ts, clock_ns);
    if (clock_ns / NS_PER_MS > now) now = clock_ns / NS_PER_MS;
  }
  uint64_t next = evr__wheel_next(&ts->wheel);
  if (next == UINT64_MAX) return -1;
  if (next <= now) return 0;
  uint64_t d = next - now;
  return d > INT64_MAX ? INT64_MAX : (int64_t)d;
}

/* The lateness metric needs the clock at each callback; reading it costs as
 * much as running a small callback, so it is read before every 32nd callback
 * of a phase and before the last one, and carried forward in between (an
 * underestimate by at most the run time of 31 callbacks). */
#define LATENESS_SAMPLE 32

void evr__timers_run(evr_loop_t *loop) {
  struct evr__timers *ts = loop->timers;
  struct evr__wheel *w = &ts->wheel;
  /* The loop refreshed its time just before this phase. */
  if (ts->nfresh) settle_fresh(ts, loop->now_ns);
  evr__wheel_advance(w, loop->now_ms);
  uint64_t real = loop->now_ms;
  unsigned k = 0;
  struct evr__wnode *n;
  while ((n = evr__wheel_pop(w)) != NULL) {
    evr_timer_t *t = EVR_CONTAINER_OF(n, evr_timer_t, wnode);
    uint64_t due = n->due;
    if (++k % LATENESS_SAMPLE == 0 || (k > 1 && !evr__wheel_has_ready(w)))
      real = evr__hrtime() / NS_PER_MS;
    if (real > due && real - due > loop->metrics.timer_lateness_max_ms)
      loop->metrics.timer_lateness_max_ms = real - due;
    if (t->repeat) {
      /* Re-arm before the callback so that it may stop or restart the timer.
       * The next due time counts from this one (no drift); periods that
       * passed while the loop was busy are skipped (no burst). */
      uint64_t next = add_sat(due, t->repeat);
      if (next <= real && next < DUE_MAX)
        next = add_sat(due, t->repeat * ((real - due) / t->repeat + 1));
      evr__wheel_add(w, n, next);
    } else {
      evr__handle_stop(&t->base);
    }
    t->cb(t);
  }
}
