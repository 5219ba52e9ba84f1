/* evr/timer.h: one-shot and repeating timers.
 *
 * Guarantees (docs/timers.md has the details):
 *  - Never early. A timer started with a timeout of T ms runs no earlier than
 *    T ms after the moment evr_timer_start() was called, measured on the
 *    monotonic clock (evr_hrtime()), even if the loop's cached time (evr_now())
 *    is stale because the current iteration has been busy. Starting from a
 *    callback does not read the clock: the timeout counts from the first
 *    clock reading the loop takes after the start (before it next waits for
 *    I/O, or at the start of the next iteration), so a busy iteration delays
 *    the timers started in it by the rest of its work. Starting outside
 *    evr_loop_run() reads the clock. A timer may run late: the lateness is
 *    visible in evr_loop_metrics().timer_lateness_max_ms.
 *  - A timeout of 0 runs in the next timer phase, never inside
 *    evr_timer_start() and never in the timer phase that is running now.
 *  - Timers due at the same millisecond run in the order they were started
 *    (a restart counts as a new start).
 *  - A repeating timer is scheduled from its previous due time, so it does not
 *    drift. If the loop was blocked past several periods, it runs once and
 *    skips the missed periods instead of running in a burst.
 *  - Starting, restarting and stopping cost O(1) and never allocate.
 */
#ifndef EVR_TIMER_H
#define EVR_TIMER_H

#include <stdint.h>
#include "evr/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Wheel node embedded in each timer. Private: do not touch. Where the node is
 * filed (a wheel slot, the overflow list, the expired list) is in `where`. */
struct evr__wnode {
  evr__qnode_t link;
  uint64_t due;      /* absolute due time, ms */
  uint64_t seq;      /* start order: tiebreak for equal due times */
  unsigned where;    /* EVR__WN_* in timers/wheel.h */
};

typedef struct evr_timer evr_timer_t;
typedef void (*evr_timer_cb)(evr_timer_t *timer);

struct evr_timer {
  evr_handle_t base;
  /* private */
  struct evr__wnode wnode;
  evr_timer_cb cb;
  uint64_t repeat;    /* ms; 0 for a one-shot timer */
  uint64_t timeout;   /* ms, of the last start */
  uint32_t fresh_idx; /* index in the loop's table of unsettled starts */
};

/** Initialise a timer handle (inactive, referenced). Loop thread only.
 *  @return 0; EVR_EINVAL (NULL loop or timer). */
EVR_API int evr_timer_init(evr_loop_t *loop, evr_timer_t *timer);

/** Start the timer: cb runs once timeout_ms milliseconds have passed, then
 *  every repeat_ms milliseconds if repeat_ms is not 0. Starting an active
 *  timer restarts it with the new callback, timeout and repeat (it keeps a
 *  single pending expiry). A timeout of 0 runs cb in the next timer phase,
 *  never synchronously. Pushing an active timer's due time later (the
 *  idle-timeout pattern) is a constant-time write. Timeouts too large to
 *  represent are clamped; such a timer never runs in practice. Loop thread
 *  only.
 *  @return 0; EVR_EINVAL (NULL timer or cb, uninitialised, closing or closed
 *          handle). On error the timer is unchanged. */
EVR_API int evr_timer_start(evr_timer_t *timer, evr_timer_cb cb,
                            uint64_t timeout_ms, uint64_t repeat_ms);

/** Stop the timer; its callback will not run until it is started again.
 *  Idempotent; allowed on a closing handle. Loop thread only.
 *  @return 0; EVR_EINVAL (NULL or uninitialised timer). */
EVR_API int evr_timer_stop(evr_timer_t *timer);

/** Restart the timer with timeout = repeat = its repeat value, counted from
 *  now. Starts an inactive timer that has been started before (it reuses
 *  the last callback). Loop thread only.
 *  @return 0; EVR_EINVAL (NULL, uninitialised, closing or closed timer, a
 *          repeat of 0, or a timer that was never started and so has no
 *          callback). */
EVR_API int evr_timer_again(evr_timer_t *timer);

/** Milliseconds from the loop's cached time (evr_now()) until the timer is
 *  due; 0 if it is already due, inactive or NULL. Loop thread only. */
EVR_API uint64_t evr_timer_due_in(const evr_timer_t *timer);

/** The repeat interval in ms (0: one-shot, or NULL timer). */
EVR_API uint64_t evr_timer_get_repeat(const evr_timer_t *timer);

/** Set the repeat interval. It takes effect when the timer next expires (or
 *  at evr_timer_again()); an active one-shot timer given a repeat repeats
 *  after its pending expiry. Loop thread only. NULL is ignored. */
EVR_API void evr_timer_set_repeat(evr_timer_t *timer, uint64_t repeat_ms);

#ifdef __cplusplus
}
#endif
#endif
