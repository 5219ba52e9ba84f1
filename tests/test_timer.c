/* evr-test: backends */
/* tests/test_timer.c: evr_timer_* on a real loop, once per backend.
 *
 * Assertions are about order and "not before the due time"; no test asserts
 * that anything happens within some wall-clock bound. Timers live in static
 * storage because the fixture's teardown closes every handle of the loop
 * after the test function has returned.
 */
#include <stdlib.h>
#include <string.h>
#include "helpers.h"
#include "timers/wheel.h"

#define NS_PER_MS UINT64_C(1000000)
#define MAX_TIMERS 5000

static evr_timer_t tm[MAX_TIMERS];
static uint64_t started_ns[MAX_TIMERS];
static uint64_t timeout_of[MAX_TIMERS];
static int order[MAX_TIMERS * 4];
static int fired;
static int done;

static int index_of(const evr_timer_t *t) { return (int)(t - tm); }

static void busy_wait_ms(uint64_t ms) {
  uint64_t end = evr_hrtime() + ms * NS_PER_MS;
  while (evr_hrtime() < end) {
  }
}

static void reset(void) {
  memset(order, 0, sizeof order);
  fired = 0;
  done = 0;
}

/* Records the order and checks the never-early promise against the clock
 * reading taken just before evr_timer_start(). */
static void record_cb(evr_timer_t *t) {
  int i = index_of(t);
  assert_true(evr_hrtime() >= started_ns[i] + timeout_of[i] * NS_PER_MS);
  order[fired++] = i;
}

static void start_recorded(int i, uint64_t timeout) {
  assert_evr_ok(evr_timer_init(test_loop, &tm[i]));
  timeout_of[i] = timeout;
  started_ns[i] = evr_hrtime();
  assert_evr_ok(evr_timer_start(&tm[i], record_cb, timeout, 0));
}

static void test_timer_never_fires_before_its_timeout(void **state) {
  (void)state;
  reset();
  uint64_t timeouts[] = {1, 2, 3, 5, 8, 13, 21, 34};
  for (int i = 0; i < 8; i++) start_recorded(i, timeouts[i]);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 8);
  for (int i = 0; i < 8; i++) assert_int_equal(order[i], i);
}

/* A callback that has kept the loop busy leaves the cached time stale; a
 * timer started then must still count from the real clock. */
static void busy_then_start_cb(evr_timer_t *t) {
  (void)t;
  busy_wait_ms(20);
  start_recorded(1, 5);
  start_recorded(2, 1);
}

static void test_timer_started_after_a_busy_callback_is_not_early(void **state) {
  (void)state;
  reset();
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], busy_then_start_cb, 1, 0));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 2);
  assert_int_equal(order[0], 2);
  assert_int_equal(order[1], 1);
}

/* More starts in one callback than the table of unsettled starts holds:
 * the overflow is settled early, and nothing fires before its time. */
static void start_many_cb(evr_timer_t *t) {
  (void)t;
  for (int i = 1; i < MAX_TIMERS; i++) {
    start_recorded(i, (uint64_t)(1 + i % 3));
    if (i % 1000 == 0) busy_wait_ms(2);
  }
}

static void test_timer_thousands_of_starts_in_one_callback_are_never_early(
    void **state) {
  (void)state;
  reset();
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], start_many_cb, 0, 0));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, MAX_TIMERS - 1);
}

static void test_timer_equal_deadlines_fire_in_start_order(void **state) {
  (void)state;
  reset();
  for (int i = 0; i < 50; i++) start_recorded(i, i < 25 ? 3 : 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 50);
  /* The zero timeouts first, each group in start order. */
  for (int i = 0; i < 25; i++) assert_int_equal(order[i], 25 + i);
  for (int i = 0; i < 25; i++) assert_int_equal(order[25 + i], i);
}

static void test_timer_many_timers_fire_in_due_then_start_order(void **state) {
  (void)state;
  reset();
  uint64_t due[MAX_TIMERS];
  srand(7);
  for (int i = 0; i < MAX_TIMERS; i++) {
    start_recorded(i, (uint64_t)(rand() % 30));
    due[i] = tm[i].wnode.due;
  }
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, MAX_TIMERS);
  for (int k = 1; k < MAX_TIMERS; k++) {
    int a = order[k - 1], b = order[k];
    assert_true(due[a] < due[b] || (due[a] == due[b] && a < b));
  }
}

static void test_timer_zero_timeout_runs_in_next_timer_phase_not_synchronously(
    void **state) {
  (void)state;
  reset();
  start_recorded(0, 0);
  assert_int_equal(fired, 0);
  assert_true(evr_is_active(&tm[0].base));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(fired, 1);
  assert_false(evr_is_active(&tm[0].base));
}

/* The prepare hook runs once per iteration, between two timer phases. */
static evr_prepare_t prep;
static int prepare_runs;
static int phase_of_call[8];

static void count_prepare(evr_prepare_t *h) {
  (void)h;
  prepare_runs++;
}

static void restart_zero_cb(evr_timer_t *t) {
  phase_of_call[fired++] = prepare_runs;
  if (fired < 5) assert_evr_ok(evr_timer_start(t, restart_zero_cb, 0, 0));
}

static void test_timer_restarted_with_zero_in_its_callback_runs_next_iteration(
    void **state) {
  (void)state;
  reset();
  prepare_runs = 0;
  assert_evr_ok(evr_prepare_init(test_loop, &prep));
  assert_evr_ok(evr_prepare_start(&prep, count_prepare));
  evr_unref(&prep.base);
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], restart_zero_cb, 0, 0));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 5);
  for (int i = 1; i < 5; i++)
    assert_true(phase_of_call[i] > phase_of_call[i - 1]);
}

/* ---- repeating timers ---- */

static uint64_t next_due[16];

static uint64_t absolute_due(const evr_timer_t *t) {
  return evr_now(t->base.loop) + evr_timer_due_in(t);
}

static void repeat_cb(evr_timer_t *t) {
  assert_true(evr_timer_due_in(t) > 0); /* re-armed into the future */
  next_due[fired] = absolute_due(t);
  if (fired > 0)
    assert_true(evr_hrtime() / NS_PER_MS >= next_due[fired - 1]);
  if (++fired == 10) assert_evr_ok(evr_timer_stop(t));
}

static void test_timer_repeat_is_scheduled_from_due_time_without_drift(
    void **state) {
  (void)state;
  reset();
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], repeat_cb, 3, 4));
  assert_true(evr_timer_get_repeat(&tm[0]) == 4);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 10);
  /* Every due time is on the grid of the first one (a busy machine may skip
   * grid points, never shift the grid). */
  for (int i = 1; i < 10; i++) {
    assert_true(next_due[i] > next_due[i - 1]);
    assert_int_equal((next_due[i] - next_due[i - 1]) % 4, 0);
  }
}

static uint64_t blocked_at_ms;

static void blocking_repeat_cb(evr_timer_t *t) {
  uint64_t real_ms = evr_hrtime() / NS_PER_MS;
  next_due[fired] = absolute_due(t);
  if (fired > 0) assert_true(real_ms >= next_due[fired - 1]); /* not early */
  switch (fired++) {
  case 0:
    blocked_at_ms = real_ms;
    busy_wait_ms(55); /* misses five periods of 10 ms */
    break;
  case 1:
    /* Runs once, late; the next due time skips what was missed and lies in
     * the future, on the original grid. */
    assert_true(next_due[1] > real_ms);
    assert_true(next_due[1] >= blocked_at_ms + 55);
    assert_int_equal((next_due[1] - next_due[0]) % 10, 0);
    break;
  default:
    assert_evr_ok(evr_timer_stop(t));
    break;
  }
}

static void test_timer_repeat_after_blocked_loop_fires_once_and_skips_missed(
    void **state) {
  (void)state;
  reset();
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], blocking_repeat_cb, 10, 10));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 3);
  /* The third run waited for the skipped-to due time: no burst. */
  evr_loop_metrics_t m;
  assert_evr_ok(evr_loop_metrics(test_loop, &m));
  assert_true(m.timer_lateness_max_ms >= 45);
}

static void test_timer_again_restarts_with_repeat_from_now(void **state) {
  (void)state;
  reset();
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  timeout_of[0] = 0;
  started_ns[0] = evr_hrtime();
  assert_evr_ok(evr_timer_start(&tm[0], record_cb, 100000, 0));
  assert_int_equal(evr_timer_again(&tm[0]), EVR_EINVAL); /* no repeat */
  evr_timer_set_repeat(&tm[0], 5);
  assert_true(evr_timer_get_repeat(&tm[0]) == 5);
  timeout_of[0] = 5;
  started_ns[0] = evr_hrtime();
  assert_evr_ok(evr_timer_again(&tm[0]));
  assert_true(evr_timer_due_in(&tm[0]) >= 5);
  assert_true(evr_timer_due_in(&tm[0]) < 100000);
  run_until(test_loop, &fired, 1000);
  assert_true(evr_is_active(&tm[0].base)); /* repeating now */
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_true(evr_timer_due_in(&tm[0]) == 0);
  /* again() also starts a stopped timer that has a callback. */
  assert_evr_ok(evr_timer_again(&tm[0]));
  assert_true(evr_is_active(&tm[0].base));
}

static void test_timer_starting_an_active_timer_restarts_it(void **state) {
  (void)state;
  reset();
  start_recorded(0, 100000);
  timeout_of[0] = 2;
  started_ns[0] = evr_hrtime();
  assert_evr_ok(evr_timer_start(&tm[0], record_cb, 2, 0)); /* earlier */
  start_recorded(1, 3);
  timeout_of[1] = 6;
  started_ns[1] = evr_hrtime();
  assert_evr_ok(evr_timer_start(&tm[1], record_cb, 6, 0)); /* later */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 2); /* each once */
  assert_int_equal(order[0], 0);
  assert_int_equal(order[1], 1);
}

/* ---- callbacks that stop, restart and close timers ---- */

static int closed;

static void on_close(evr_handle_t *h) {
  assert_ptr_equal(h, &tm[3].base);
  closed++;
}

static void meddling_cb(evr_timer_t *t) {
  int i = index_of(t);
  order[fired++] = i;
  switch (i) {
  case 0: /* stop 1 (due in the same phase), restart 2 to now */
    assert_evr_ok(evr_timer_stop(&tm[1]));
    assert_evr_ok(evr_timer_start(&tm[2], meddling_cb, 0, 0));
    break;
  case 3: /* a repeating timer closing itself */
    assert_evr_ok(evr_close(&t->base, on_close));
    assert_int_equal(evr_timer_start(t, meddling_cb, 1, 0), EVR_EINVAL);
    assert_evr_ok(evr_timer_stop(t));
    break;
  default:
    break;
  }
}

static void test_timer_stop_restart_and_close_inside_callbacks(void **state) {
  (void)state;
  reset();
  closed = 0;
  for (int i = 0; i < 4; i++) assert_evr_ok(evr_timer_init(test_loop, &tm[i]));
  assert_evr_ok(evr_timer_start(&tm[0], meddling_cb, 0, 0));
  assert_evr_ok(evr_timer_start(&tm[1], meddling_cb, 0, 0));
  assert_evr_ok(evr_timer_start(&tm[2], meddling_cb, 0, 0));
  assert_evr_ok(evr_timer_start(&tm[3], meddling_cb, 0, 1));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  /* 1 never runs; 2 runs once, after 3 (its restart is younger); 3 once. */
  assert_int_equal(fired, 3);
  assert_int_equal(order[0], 0);
  assert_int_equal(order[1], 3);
  assert_int_equal(order[2], 2);
  assert_int_equal(closed, 1);
  assert_true(evr_is_closing(&tm[3].base));
}

static void never_cb(evr_timer_t *t) {
  (void)t;
  fail_msg("an unreferenced timer kept the loop alive");
}

static void test_timer_unreferenced_timer_does_not_keep_loop_alive(
    void **state) {
  (void)state;
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], never_cb, 60000, 0));
  evr_unref(&tm[0].base);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_true(evr_is_active(&tm[0].base));
  evr_ref(&tm[0].base);
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

static void test_timer_lateness_is_recorded_in_metrics(void **state) {
  (void)state;
  reset();
  evr_loop_metrics_t m;
  assert_evr_ok(evr_loop_metrics(test_loop, &m));
  assert_true(m.timer_lateness_max_ms == 0 || m.timer_lateness_max_ms < 1000);
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], busy_then_start_cb, 1, 0));
  start_recorded(5, 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  /* tm[5] was due at most 1 ms after tm[0] and waited for its 20 ms. */
  assert_evr_ok(evr_loop_metrics(test_loop, &m));
  assert_true(m.timer_lateness_max_ms >= 19);
}

static void test_timer_error_paths(void **state) {
  (void)state;
  static evr_timer_t zeroed;
  memset(&zeroed, 0, sizeof zeroed);
  assert_int_equal(evr_timer_init(NULL, &tm[0]), EVR_EINVAL);
  assert_int_equal(evr_timer_init(test_loop, NULL), EVR_EINVAL);
  assert_int_equal(evr_timer_start(NULL, record_cb, 1, 0), EVR_EINVAL);
  assert_int_equal(evr_timer_start(&zeroed, record_cb, 1, 0), EVR_EINVAL);
  assert_int_equal(evr_timer_stop(NULL), EVR_EINVAL);
  assert_int_equal(evr_timer_stop(&zeroed), EVR_EINVAL);
  assert_int_equal(evr_timer_again(NULL), EVR_EINVAL);
  assert_true(evr_timer_due_in(NULL) == 0);
  assert_true(evr_timer_get_repeat(NULL) == 0);
  evr_timer_set_repeat(NULL, 5);

  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_int_equal(evr_timer_start(&tm[0], NULL, 1, 0), EVR_EINVAL);
  assert_false(evr_is_active(&tm[0].base));
  evr_timer_set_repeat(&tm[0], 5);
  assert_int_equal(evr_timer_again(&tm[0]), EVR_EINVAL); /* never started */
  assert_evr_ok(evr_timer_start(&tm[0], record_cb, 10, 0));
  assert_int_equal(evr_timer_again(&tm[0]), EVR_EINVAL); /* repeat reset */
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_evr_ok(evr_timer_stop(&tm[0])); /* idempotent */
  assert_true(evr_timer_due_in(&tm[0]) == 0);
  assert_string_equal(evr_handle_type_name(&tm[0].base), "timer");

  assert_evr_ok(evr_timer_start(&tm[0], record_cb, 10, 3));
  assert_evr_ok(evr_close(&tm[0].base, NULL));
  assert_false(evr_is_active(&tm[0].base));
  assert_int_equal(evr_timer_start(&tm[0], record_cb, 1, 0), EVR_EINVAL);
  assert_int_equal(evr_timer_again(&tm[0]), EVR_EINVAL);
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_true(evr_is_closing(&tm[0].base));
  assert_int_equal(evr_timer_start(&tm[0], record_cb, 1, 0), EVR_EINVAL);
}

static void test_timer_huge_timeout_is_clamped_and_does_not_fire(void **state) {
  (void)state;
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], never_cb, UINT64_MAX, UINT64_MAX));
  assert_true(evr_timer_due_in(&tm[0]) > (UINT64_C(1) << 61));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_evr_ok(evr_timer_stop(&tm[0]));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_timer_never_fires_before_its_timeout),
      EVR_TEST(test_timer_started_after_a_busy_callback_is_not_early),
      EVR_TEST(
          test_timer_thousands_of_starts_in_one_callback_are_never_early),
      EVR_TEST(test_timer_equal_deadlines_fire_in_start_order),
      EVR_TEST(test_timer_many_timers_fire_in_due_then_start_order),
      EVR_TEST(
          test_timer_zero_timeout_runs_in_next_timer_phase_not_synchronously),
      EVR_TEST(
          test_timer_restarted_with_zero_in_its_callback_runs_next_iteration),
      EVR_TEST(test_timer_repeat_is_scheduled_from_due_time_without_drift),
      EVR_TEST(
          test_timer_repeat_after_blocked_loop_fires_once_and_skips_missed),
      EVR_TEST(test_timer_again_restarts_with_repeat_from_now),
      EVR_TEST(test_timer_starting_an_active_timer_restarts_it),
      EVR_TEST(test_timer_stop_restart_and_close_inside_callbacks),
      EVR_TEST(test_timer_unreferenced_timer_does_not_keep_loop_alive),
      EVR_TEST(test_timer_lateness_is_recorded_in_metrics),
      EVR_TEST(test_timer_error_paths),
      EVR_TEST(test_timer_huge_timeout_is_clamped_and_does_not_fire),
  };
  return cmocka_run_group_tests_name("timer", tests, NULL, NULL);
}
