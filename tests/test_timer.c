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
    due[i] = tm[i].node.due;
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
  assert_true(evr_timer_is_active(&tm[0]));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(fired, 1);
  assert_false(evr_timer_is_active(&tm[0]));
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
  return evr_now_ns(t->loop) + evr_timer_due_in_ns(t);
}

static void repeat_cb(evr_timer_t *t) {
  assert_true(evr_timer_due_in(t) > 0); /* re-armed into the future */
  next_due[fired] = absolute_due(t);
  if (fired > 0)
    assert_true(evr_hrtime() >= next_due[fired - 1]);
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
    assert_int_equal((next_due[i] - next_due[i - 1]) % (4 * NS_PER_MS), 0);
  }
}

static uint64_t blocked_at;

static void blocking_repeat_cb(evr_timer_t *t) {
  uint64_t real = evr_hrtime();
  next_due[fired] = absolute_due(t);
  if (fired > 0) assert_true(real >= next_due[fired - 1]); /* not early */
  switch (fired++) {
  case 0:
    blocked_at = real;
    busy_wait_ms(55); /* misses five periods of 10 ms */
    break;
  case 1:
    /* Runs once, late; the next due time skips what was missed and lies in
     * the future, on the original grid. */
    assert_true(next_due[1] > real);
    assert_true(next_due[1] >= blocked_at + 55 * NS_PER_MS);
    assert_int_equal((next_due[1] - next_due[0]) % (10 * NS_PER_MS), 0);
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
  assert_true(m.timer_lateness_max_ns >= 45 * NS_PER_MS);
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
  assert_true(evr_timer_is_active(&tm[0])); /* repeating now */
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_true(evr_timer_due_in(&tm[0]) == 0);
  /* again() also starts a stopped timer that has a callback. */
  assert_evr_ok(evr_timer_again(&tm[0]));
  assert_true(evr_timer_is_active(&tm[0]));
  /* An active timer keeps evr_loop_free() busy: the teardown checks it. */
  assert_int_equal(evr_loop_free(test_loop), EVR_EBUSY);
  assert_evr_ok(evr_timer_stop(&tm[0]));
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

static void meddling_cb(evr_timer_t *t) {
  int i = index_of(t);
  order[fired++] = i;
  switch (i) {
  case 0: /* stop 1 (due in the same phase), restart 2 to now */
    assert_evr_ok(evr_timer_stop(&tm[1]));
    assert_evr_ok(evr_timer_start(&tm[2], meddling_cb, 0, 0));
    break;
  case 3: /* a repeating timer stopping itself: its memory is free again */
    assert_evr_ok(evr_timer_stop(t));
    memset(t, 0xa5, sizeof *t);
    assert_evr_ok(evr_timer_init(test_loop, t));
    break;
  default:
    break;
  }
}

static void test_timer_stop_restart_and_reuse_inside_callbacks(void **state) {
  (void)state;
  reset();
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
  assert_false(evr_timer_is_active(&tm[3]));
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
  evr_timer_unref(&tm[0]);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_true(evr_timer_is_active(&tm[0]));
  evr_timer_ref(&tm[0]);
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

static void test_timer_lateness_is_recorded_in_metrics(void **state) {
  (void)state;
  reset();
  evr_loop_metrics_t m;
  assert_evr_ok(evr_loop_metrics(test_loop, &m));
  assert_true(m.timer_lateness_max_ns < 1000 * NS_PER_MS);
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], busy_then_start_cb, 1, 0));
  start_recorded(5, 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  /* tm[5] was due at most 1 ms after tm[0] and waited for its 20 ms. */
  assert_evr_ok(evr_loop_metrics(test_loop, &m));
  assert_true(m.timer_lateness_max_ns >= 19 * NS_PER_MS);
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
  assert_false(evr_timer_is_active(&tm[0]));
  evr_timer_set_repeat(&tm[0], 5);
  assert_int_equal(evr_timer_again(&tm[0]), EVR_EINVAL); /* never started */
  assert_evr_ok(evr_timer_start(&tm[0], record_cb, 10, 0));
  assert_int_equal(evr_timer_again(&tm[0]), EVR_EINVAL); /* repeat reset */
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_evr_ok(evr_timer_stop(&tm[0])); /* idempotent */
  assert_true(evr_timer_due_in(&tm[0]) == 0);

  assert_evr_ok(evr_timer_start(&tm[0], record_cb, 10, 3));
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_false(evr_timer_is_active(&tm[0]));
  assert_evr_ok(evr_timer_again(&tm[0])); /* its repeat, from now */
  assert_true(evr_timer_is_active(&tm[0]));
  assert_true(evr_timer_due_in(&tm[0]) >= 3);
  assert_evr_ok(evr_timer_stop(&tm[0]));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
}

/* ---- sub-millisecond due times ---- */

static uint64_t ns_started[8], ns_timeout[8], ns_due[8];

static void ns_record_cb(evr_timer_t *t) {
  int i = index_of(t);
  assert_true(evr_hrtime() >= ns_started[i] + ns_timeout[i]); /* never early */
  order[fired++] = i;
}

static void ns_start(int i, uint64_t timeout_ns) {
  ns_timeout[i] = timeout_ns;
  ns_started[i] = evr_hrtime();
  assert_evr_ok(evr_timer_start_ns(&tm[i], ns_record_cb, timeout_ns, 0));
  ns_due[i] = evr_now_ns(test_loop) + evr_timer_due_in_ns(&tm[i]);
}

/* Sub-millisecond timeouts keep their order and are never early, whether
 * started outside the loop (the clock is read) or from a callback (the
 * start is settled against a later reading). */
static void ns_starter_cb(evr_timer_t *t) {
  (void)t;
  ns_start(4, 900000);
  ns_start(5, 150000);
  ns_start(6, 400000);
}

static void test_timer_sub_millisecond_timeouts_are_exact_in_order(
    void **state) {
  (void)state;
  reset();
  for (int i = 0; i < 8; i++) assert_evr_ok(evr_timer_init(test_loop, &tm[i]));
  ns_start(0, 700000); /* 0.7 ms */
  ns_start(1, 200000);
  ns_start(2, 450000);
  ns_start(3, 1);
  assert_evr_ok(evr_timer_start(&tm[7], ns_starter_cb, 0, 0));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(fired, 7);
  /* The four started outside the loop (each counting from its own clock
   * reading) run in the order of their due times, whatever the time
   * between the starts; the three started from the callback share a clock
   * reading and run in timeout order: 5, 6, 4. Each was checked against
   * the clock. */
  int pos[8];
  for (int k = 0; k < 7; k++) pos[order[k]] = k;
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++)
      if (ns_due[a] < ns_due[b]) assert_true(pos[a] < pos[b]);
  assert_true(pos[5] < pos[6] && pos[6] < pos[4]);
  assert_int_equal(evr_timer_get_repeat(&tm[0]), 0);
}

/* The due time is kept in nanoseconds: a timer's due_in_ns is what was
 * asked for, not rounded to milliseconds. */
static void test_timer_due_time_is_kept_in_nanoseconds(void **state) {
  (void)state;
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start_ns(&tm[0], never_cb, 2500000, 0));
  /* Started outside the loop: due = a clock reading + 2.5 ms. Seen from
   * any later reading, at most 2.5 ms are left (a due time rounded to whole
   * milliseconds could leave more). */
  evr_update_time(test_loop);
  uint64_t left = evr_timer_due_in_ns(&tm[0]);
  assert_true(left > 0 && left <= 2500000);
  assert_true(evr_timer_due_in(&tm[0]) == (left + NS_PER_MS - 1) / NS_PER_MS);
  assert_evr_ok(evr_timer_stop(&tm[0]));
}

static int walked;
static void count_walk(evr_handle_t *h, void *arg) {
  (void)h;
  (void)arg;
  walked++;
}

/* A timer is not a handle: 64 bytes (on LP64), not walked, nothing to
 * close. */
static void test_timer_is_a_64_byte_watcher_not_a_handle(void **state) {
  (void)state;
  assert_true(sizeof(evr_timer_t) <= 64);
  if (sizeof(void *) == 8) assert_int_equal(sizeof(evr_timer_t), 64);
  walked = 0;
  evr_loop_walk(test_loop, count_walk, NULL);
  int handles = walked;
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], never_cb, 60000, 0));
  walked = 0;
  evr_loop_walk(test_loop, count_walk, NULL);
  assert_int_equal(walked, handles);
  assert_evr_ok(evr_timer_stop(&tm[0]));
  /* Stopped, it holds nothing: its memory may be reused at once. */
  memset(&tm[0], 0, sizeof tm[0]);
  assert_evr_ok(evr_loop_free(test_loop));
  test_loop = NULL;
}

static void test_timer_huge_timeout_is_clamped_and_does_not_fire(void **state) {
  (void)state;
  assert_evr_ok(evr_timer_init(test_loop, &tm[0]));
  assert_evr_ok(evr_timer_start(&tm[0], never_cb, UINT64_MAX, UINT64_MAX));
  assert_true(evr_timer_due_in_ns(&tm[0]) > (UINT64_C(1) << 61));
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
      EVR_TEST(test_timer_stop_restart_and_reuse_inside_callbacks),
      EVR_TEST(test_timer_unreferenced_timer_does_not_keep_loop_alive),
      EVR_TEST(test_timer_lateness_is_recorded_in_metrics),
      EVR_TEST(test_timer_error_paths),
      EVR_TEST(test_timer_huge_timeout_is_clamped_and_does_not_fire),
      EVR_TEST(test_timer_sub_millisecond_timeouts_are_exact_in_order),
      EVR_TEST(test_timer_due_time_is_kept_in_nanoseconds),
      EVR_TEST(test_timer_is_a_64_byte_watcher_not_a_handle),
  };
  return cmocka_run_group_tests_name("timer", tests, NULL, NULL);
}
