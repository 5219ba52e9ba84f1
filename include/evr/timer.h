/** @file evr/timer.h
 *  One-shot and repeating timers.
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
 *    visible in evr_loop_metrics().timer_lateness_max_ns.
 *  - A timeout of 0 runs in the next timer phase, never inside
 *    evr_timer_start() and never in the timer phase that is running now.
 *  - Due times are kept in nanoseconds, and the loop sleeps until the
 *    earliest one with sub-millisecond resolution where the system has it.
 *  - Timers run in due-time order; timers with the same due time (the same
 *    timeout started from the same callback) run in the order they were
 *    started (a restart counts as a new start).
 *  - A repeating timer is scheduled from its previous due time, so it does not
 *    drift. If the loop was blocked past several periods, it runs once and
 *    skips the missed periods instead of running in a burst.
 *  - Starting, restarting and stopping cost O(1) and never allocate.
 *  - A timer is not a handle (evr_close() does not apply): a stopped timer
 *    holds nothing, and its memory is the caller's again at once.
 */
#ifndef EVR_TIMER_H
#define EVR_TIMER_H

#include <stdint.h>
#include "evr/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A node of the loop's timer wheel, embedded in each timer (and inside
 * streams and listeners). Private: do not touch. Where the node is filed (a
 * wheel slot, the overflow list, one of the short sorted lists) is in
 * `where` (EVR__WN_* in timers/wheel.h). */
struct evr__tnode {
  evr__qnode_t link;
  uint64_t due;      /* absolute due time, ns of the monotonic clock */
  uint32_t seq;      /* start order: tiebreak for equal due times */
  uint16_t where;
  uint8_t flags;
  uint8_t kind;      /* EVR__TK_* in reactor/internal.h: whose node it is */
};

/** A timer: see struct evr_timer. */
typedef struct evr_timer evr_timer_t;
/** A timer's callback, run in the timer phase when the timer is due. A
 *  one-shot timer is inactive when it runs; a repeating one is already
 *  re-armed. The callback may start, stop or free its timer (a repeating
 *  one is stopped first).
 *  @param timer  the timer. */
typedef void (*evr_timer_cb)(evr_timer_t *timer);

/** A timer is a watcher, not a handle: it holds nothing while stopped, so
 *  there is nothing to close. Its memory may be reused or freed as soon as
 *  evr_timer_stop() returns (also from its own callback), or when a
 *  one-shot timer's callback runs. 64 bytes. */
struct evr_timer {
  void *data;          /**< For the user; evr never reads it. */
  evr_loop_t *loop;    /**< The timer's loop (read-only). */
  /** @cond PRIVATE */
  struct evr__tnode node;
  evr_timer_cb cb;
  uint64_t repeat;     /* ns; 0 for a one-shot timer */
  /** @endcond */
};

/** Initialise a timer (inactive, referenced). Do not call it on an active
 *  timer. Loop thread only.
 *  @param loop   the loop.
 *  @param timer  the timer.
 *  @return 0; EVR_EINVAL (NULL loop or timer). */
EVR_API int evr_timer_init(evr_loop_t *loop, evr_timer_t *timer);

/** Start the timer: cb runs once timeout_ms milliseconds have passed, then
 *  every repeat_ms milliseconds if repeat_ms is not 0. Starting an active
 *  timer restarts it with the new callback, timeout and repeat (it keeps a
 *  single pending expiry). A timeout of 0 runs cb in the next timer phase,
 *  never synchronously. Pushing an active timer's due time later (the
 *  idle-timeout pattern) is a constant-time write. Timeouts too large to
 *  represent are clamped; such a timer never runs in practice. Loop thread
 *  only. An active, referenced timer keeps the loop alive.
 *  @param timer       an initialised timer.
 *  @param cb          the callback.
 *  @param timeout_ms  milliseconds until the first run.
 *  @param repeat_ms   the period afterwards; 0 for a one-shot timer.
 *  @return 0; EVR_EINVAL (NULL timer or cb, uninitialised timer). On error
 *          the timer is unchanged. */
EVR_API int evr_timer_start(evr_timer_t *timer, evr_timer_cb cb,
                            uint64_t timeout_ms, uint64_t repeat_ms);

/** evr_timer_start() in nanoseconds. Due times are kept in nanoseconds and
 *  the loop waits with sub-millisecond resolution where the system allows
 *  (docs/timers.md), so a timeout of 250 us means what it says: no earlier,
 *  and late only by the wake-up latency of the system and a busy loop.
 *  @param timer       an initialised timer.
 *  @param cb          the callback.
 *  @param timeout_ns  nanoseconds until the first run.
 *  @param repeat_ns   the period afterwards; 0 for a one-shot timer.
 *  @return as evr_timer_start(). */
EVR_API int evr_timer_start_ns(evr_timer_t *timer, evr_timer_cb cb,
                               uint64_t timeout_ns, uint64_t repeat_ns);

/** Stop the timer; its callback will not run until it is started again,
 *  and its memory may be reused at once. Idempotent. Loop thread only.
 *  @param timer  the timer.
 *  @return 0; EVR_EINVAL (NULL or uninitialised timer). */
EVR_API int evr_timer_stop(evr_timer_t *timer);

/** Restart the timer with timeout = repeat = its repeat value, counted from
 *  now. Starts an inactive timer that has been started before (it reuses
 *  the last callback). Loop thread only.
 *  @param timer  the timer.
 *  @return 0; EVR_EINVAL (NULL or uninitialised timer, a repeat of 0, or a
 *          timer that was never started and so has no callback). */
EVR_API int evr_timer_again(evr_timer_t *timer);

/** Whether the timer is started and has not expired (a repeating timer
 *  stays active).
 *  @param timer  the timer.
 *  @return 1 if active, else 0 (also for NULL or an uninitialised timer). */
EVR_API int evr_timer_is_active(const evr_timer_t *timer);

/** Make an unreferenced timer keep the loop alive again while it is
 *  active. Timers start referenced. Idempotent. Loop thread only.
 *  @param timer  an initialised timer; NULL is ignored. */
EVR_API void evr_timer_ref(evr_timer_t *timer);
/** Unreference a timer: an unreferenced active timer does not keep the loop
 *  alive (but evr_loop_free() still refuses while it is active).
 *  Idempotent. Loop thread only.
 *  @param timer  an initialised timer; NULL is ignored. */
EVR_API void evr_timer_unref(evr_timer_t *timer);
/** Whether the timer is referenced (see evr_timer_unref()).
 *  @param timer  the timer.
 *  @return 1 if referenced, else 0 (also for NULL or an uninitialised
 *          timer). */
EVR_API int evr_timer_has_ref(const evr_timer_t *timer);

/** Milliseconds from the loop's cached time (evr_now_ns()) until the timer
 *  is due, rounded up. Loop thread only.
 *  @param timer  the timer.
 *  @return the time left in ms; 0 if it is already due, inactive or
 *          NULL. */
EVR_API uint64_t evr_timer_due_in(const evr_timer_t *timer);
/** evr_timer_due_in() in nanoseconds. Loop thread only.
 *  @param timer  the timer.
 *  @return the time left in ns; 0 if it is already due, inactive or
 *          NULL. */
EVR_API uint64_t evr_timer_due_in_ns(const evr_timer_t *timer);

/** The repeat interval in ms, rounded down.
 *  @param timer  the timer.
 *  @return the interval; 0 for a one-shot timer or NULL. */
EVR_API uint64_t evr_timer_get_repeat(const evr_timer_t *timer);

/** Set the repeat interval. It takes effect when the timer next expires (or
 *  at evr_timer_again()); an active one-shot timer given a repeat repeats
 *  after its pending expiry. Loop thread only.
 *  @param timer      the timer; NULL is ignored.
 *  @param repeat_ms  the new interval in ms; 0 makes the timer one-shot. */
EVR_API void evr_timer_set_repeat(evr_timer_t *timer, uint64_t repeat_ms);

#ifdef __cplusplus
}
#endif
#endif
