/* timers/timer.c: evr_timer_t on top of the wheel, internal timeouts, and
 * the calls the loop makes into the timer module (reactor/internal.h).
 *
 * Time: due times are nanoseconds of the monotonic clock, and the wheel
 * runs on the loop's cached reading (loop->now_ns), which may lag behind
 * the clock by however long the current iteration has been busy. A start
 * with a timeout T > 0 must not count from that stale time, and reading
 * the clock on every start (a serialising instruction on the idle-timeout
 * hot path) costs more than the rest of a restart. So a start inside
 * evr_loop_run() files a provisional due time, cached now + T, as a fresh
 * start of the wheel. Before the cached time moves (evr_update_time: each
 * iteration's start, after a wait) and before the loop sleeps, the fresh
 * starts are settled by the distance from the cached time to a new clock
 * reading R: due = R + T >= start + T. Invariant: every fresh start was
 * made at the current cached time, and none is ever expired or slept on.
 * Outside evr_loop_run() a start reads the clock itself: nothing bounds
 * the time until the loop's next reading there.
 * Timeout 0 has nothing to be early for: cached now, next timer phase.
 */
#include "reactor/internal.h"
#include "timers/wheel.h"
#include <stdlib.h>

#define NS_PER_MS UINT64_C(1000000)
/* Keeps due times below the wheel's 2^63 limit; unreachable in practice. */
#define DUE_MAX (UINT64_C(1) << 62)

/* evr__tnode.flags of a public timer (the wheel owns EVR__TN_FRESH). */
#define TN_INIT 0x01u /* evr_timer_init() ran */
#define TN_REF 0x02u

struct evr__timers {
  struct evr__wheel wheel;
};

static inline uint64_t add_sat(uint64_t a, uint64_t b) {
  return b > DUE_MAX - a ? DUE_MAX : a + b;
}

static inline uint64_t ms_to_ns(uint64_t ms) {
  return ms > DUE_MAX / NS_PER_MS ? DUE_MAX : ms * NS_PER_MS;
}

/* File n to run timeout_ns from now (see the top of the file). */
static void arm(evr_loop_t *loop, struct evr__tnode *n, uint64_t timeout_ns) {
  struct evr__wheel *w = &loop->timers->wheel;
  if (timeout_ns == 0) {
    evr__wheel_add(w, n, loop->now_ns);
  } else if (!loop->running) {
    uint64_t clock = evr__hrtime();
    evr__timers_settle(loop, clock);
    evr__wheel_add(w, n, add_sat(clock, timeout_ns));
  } else {
    uint64_t due = add_sat(loop->now_ns, timeout_ns);
    if (evr__wheel_add_fresh(w, n, due) != 0) {
      /* The table is full: settle what it holds (one clock reading per
       * EVR__WHEEL_FRESH_MAX starts), then this start counts from there. */
      uint64_t clock = evr__hrtime();
      evr__wheel_settle(w, clock - loop->now_ns);
      evr__wheel_add(w, n, add_sat(clock, timeout_ns));
    }
  }
}

/* ---- evr_timer_t ---- */

static inline int timer_valid(const evr_timer_t *t) {
  return t && t->loop && (t->node.flags & TN_INIT) &&
         t->node.kind == EVR__TK_TIMER;
}

static inline void count_start(evr_timer_t *t) {
  if (!evr__tnode_pending(&t->node) && (t->node.flags & TN_REF))
    t->loop->active_refs++;
}

static inline void count_stop(evr_timer_t *t) {
  if (t->node.flags & TN_REF) {
    assert(t->loop->active_refs > 0);
    t->loop->active_refs--;
  }
}

int evr_timer_init(evr_loop_t *loop, evr_timer_t *t) {
  if (!loop || !t) return EVR_EINVAL;
  t->loop = loop;
  evr__tnode_init(&t->node, EVR__TK_TIMER);
  t->node.flags = TN_INIT | TN_REF;
  t->cb = NULL;
  t->repeat = 0;
  return 0;
}

static int timer_start(evr_timer_t *t, evr_timer_cb cb, uint64_t timeout_ns,
                       uint64_t repeat_ns) {
  if (!cb || !timer_valid(t)) return EVR_EINVAL;
  t->cb = cb;
  t->repeat = repeat_ns;
  count_start(t);
  arm(t->loop, &t->node, timeout_ns);
  return 0;
}

int evr_timer_start(evr_timer_t *t, evr_timer_cb cb, uint64_t timeout_ms,
                    uint64_t repeat_ms) {
  return timer_start(t, cb, ms_to_ns(timeout_ms), ms_to_ns(repeat_ms));
}

int evr_timer_start_ns(evr_timer_t *t, evr_timer_cb cb, uint64_t timeout_ns,
                       uint64_t repeat_ns) {
  return timer_start(t, cb, timeout_ns, repeat_ns);
}

int evr_timer_stop(evr_timer_t *t) {
  if (!timer_valid(t)) return EVR_EINVAL;
  if (!evr__tnode_pending(&t->node)) return 0;
  evr__wheel_del(&t->loop->timers->wheel, &t->node);
  count_stop(t);
  return 0;
}

int evr_timer_again(evr_timer_t *t) {
  if (!timer_valid(t) || !t->cb || t->repeat == 0) return EVR_EINVAL;
  count_start(t);
  arm(t->loop, &t->node, t->repeat);
  return 0;
}

int evr_timer_is_active(const evr_timer_t *t) {
  return timer_valid(t) && evr__tnode_pending(&t->node);
}

void evr_timer_ref(evr_timer_t *t) {
  if (!timer_valid(t) || (t->node.flags & TN_REF)) return;
  t->node.flags |= TN_REF;
  if (evr__tnode_pending(&t->node)) t->loop->active_refs++;
}

void evr_timer_unref(evr_timer_t *t) {
  if (!timer_valid(t) || !(t->node.flags & TN_REF)) return;
  if (evr__tnode_pending(&t->node)) count_stop(t);
  t->node.flags &= (uint8_t)~TN_REF;
}

int evr_timer_has_ref(const evr_timer_t *t) {
  return timer_valid(t) && (t->node.flags & TN_REF) ? 1 : 0;
}

uint64_t evr_timer_due_in_ns(const evr_timer_t *t) {
  if (!timer_valid(t) || !evr__tnode_pending(&t->node)) return 0;
  uint64_t now = t->loop->now_ns;
  return t->node.due > now ? t->node.due - now : 0;
}

uint64_t evr_timer_due_in(const evr_timer_t *t) {
  uint64_t ns = evr_timer_due_in_ns(t);
  return ns / NS_PER_MS + (ns % NS_PER_MS != 0);
}

uint64_t evr_timer_get_repeat(const evr_timer_t *t) {
  return t ? t->repeat / NS_PER_MS : 0;
}

void evr_timer_set_repeat(evr_timer_t *t, uint64_t repeat_ms) {
  if (t) t->repeat = ms_to_ns(repeat_ms);
}

/* ---- internal timeouts ---- */

void evr__tnode_start(evr_loop_t *loop, struct evr__tnode *n,
                      uint64_t timeout_ns) {
  arm(loop, n, timeout_ns);
}

void evr__tnode_stop(evr_loop_t *loop, struct evr__tnode *n) {
  evr__wheel_del(&loop->timers->wheel, n);
}

/* ---- the loop's side ---- */

int evr__timers_init(evr_loop_t *loop) {
  struct evr__timers *ts = malloc(sizeof *ts);
  if (!ts) return -ENOMEM;
  evr__wheel_init(&ts->wheel, loop->now_ns, EVR__WHEEL_LOOP_SHIFT);
  loop->timers = ts;
  return 0;
}

void evr__timers_destroy(evr_loop_t *loop) {
  free(loop->timers);
  loop->timers = NULL;
}

int evr__timers_pending(const evr_loop_t *loop) {
  return loop->timers && loop->timers->wheel.count > 0;
}

void evr__timers_settle(evr_loop_t *loop, uint64_t clock_ns) {
  if (!loop->timers || !loop->timers->wheel.nfresh) return;
  evr__wheel_settle(&loop->timers->wheel,
                    clock_ns > loop->now_ns ? clock_ns - loop->now_ns : 0);
}

int64_t evr__timers_next_timeout(evr_loop_t *loop) {
  struct evr__wheel *w = &loop->timers->wheel;
  if (w->count == 0) return -1;
  /* The loop is about to sleep: count the sleep from a fresh clock reading
   * rather than the iteration's cached time, which the callbacks so far
   * made old (and settle the starts made since). */
  evr_update_time(loop);
  uint64_t now = loop->now_ns, next = evr__wheel_next(w);
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

static void run_timer(evr_loop_t *loop, evr_timer_t *t, uint64_t real) {
  uint64_t due = t->node.due;
  if (t->repeat) {
    /* Re-arm before the callback so that it may stop or restart the timer.
     * The next due time counts from this one (no drift); periods that
     * passed while the loop was busy are skipped (no burst). */
    uint64_t next = add_sat(due, t->repeat);
    if (next <= real && next < DUE_MAX)
      next = add_sat(due, t->repeat * ((real - due) / t->repeat + 1));
    evr__wheel_add(&loop->timers->wheel, &t->node, next);
  } else {
    count_stop(t);
  }
  t->cb(t);
}

void evr__timers_run(evr_loop_t *loop) {
  struct evr__wheel *w = &loop->timers->wheel;
  /* The loop refreshed its time just before this phase (and settled). */
  evr__wheel_advance(w, loop->now_ns);
  uint64_t real = loop->now_ns;
  unsigned k = 0;
  struct evr__tnode *n;
  while ((n = evr__wheel_pop(w)) != NULL) {
    if (++k % LATENESS_SAMPLE == 0 || (k > 1 && !evr__wheel_has_ready(w)))
      real = evr__hrtime();
    if (real > n->due && real - n->due > loop->metrics.timer_lateness_max_ns)
      loop->metrics.timer_lateness_max_ns = real - n->due;
    switch (n->kind) {
    case EVR__TK_TIMER:
      run_timer(loop, EVR_CONTAINER_OF(n, evr_timer_t, node), real);
      break;
    case EVR__TK_STREAM:
      evr__stream_timeout(n);
      break;
    case EVR__TK_LISTENER:
      evr__listener_timeout(n);
      break;
    default:
      assert(0 && "unknown wheel node kind");
    }
  }
}
