/* tests/test_signal.c: signal handles: delivery of kill()/raise() to self as
 * loop callbacks, several handles per signal, several loops in several
 * threads, coalescing, stop and close, and the previous disposition being
 * restored when the last handle stops. */
/* evr-test: backends threads timeout=300 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include "helpers.h"

static pthread_t loop_thread;
static atomic_int thread_failures;
static void thread_check(int ok) {
  if (!ok) atomic_fetch_add(&thread_failures, 1);
}

static int calls[4];
static int last_signum;
static int wrong_thread;

static void reset(void) {
  memset(calls, 0, sizeof calls);
  last_signum = 0;
  wrong_thread = 0;
  loop_thread = pthread_self();
  atomic_store(&thread_failures, 0);
}

/* sig->data holds the index into calls[]. */
static void count_cb(evr_signal_t *sig, int signum) {
  calls[(int)(intptr_t)sig->base.data]++;
  last_signum = signum;
  if (!pthread_equal(pthread_self(), loop_thread)) wrong_thread++;
}

static void close_self_cb(evr_signal_t *sig, int signum) {
  count_cb(sig, signum);
  assert_evr_ok(evr_close(&sig->base, NULL));
}

/* The current handler of signum. */
static void (*current_handler(int signum))(int) {
  struct sigaction sa;
  assert_int_equal(sigaction(signum, NULL, &sa), 0);
  return sa.sa_handler;
}

static void test_signal_rejects_bad_arguments(void **state) {
  (void)state;
  static evr_signal_t s;
  assert_int_equal(evr_signal_init(NULL, &s), EVR_EINVAL);
  assert_int_equal(evr_signal_init(test_loop, NULL), EVR_EINVAL);
  assert_evr_ok(evr_signal_init(test_loop, &s));
  assert_string_equal(evr_handle_type_name(&s.base), "signal");
  assert_int_equal(evr_is_active(&s.base), 0);
  assert_int_equal(evr_signal_start(NULL, SIGUSR1, count_cb), EVR_EINVAL);
  assert_int_equal(evr_signal_start(&s, SIGUSR1, NULL), EVR_EINVAL);
  assert_int_equal(evr_signal_start(&s, 0, count_cb), EVR_EINVAL);
  assert_int_equal(evr_signal_start(&s, -1, count_cb), EVR_EINVAL);
  assert_int_equal(evr_signal_start(&s, NSIG, count_cb), EVR_EINVAL);
  assert_int_equal(evr_signal_start(&s, SIGKILL, count_cb), EVR_EINVAL);
  assert_int_equal(evr_signal_start(&s, SIGSTOP, count_cb), EVR_EINVAL);
  /* Failed starts leave the handle inactive and the loop not alive. */
  assert_int_equal(evr_is_active(&s.base), 0);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_int_equal(evr_signal_stop(NULL), EVR_EINVAL);
  /* Another handle type is not a signal handle. */
  static evr_check_t c;
  assert_evr_ok(evr_check_init(test_loop, &c));
  assert_int_equal(evr_signal_start((evr_signal_t *)(void *)&c, SIGUSR1, count_cb),
                   EVR_EINVAL);
  assert_evr_ok(evr_signal_stop(&s)); /* stopping an idle handle: no-op */
}

static void test_signal_raise_runs_callback_on_loop_thread(void **state) {
  (void)state;
  static evr_signal_t s;
  reset();
  assert_evr_ok(evr_signal_init(test_loop, &s));
  s.base.data = (void *)0;
  assert_evr_ok(evr_signal_start(&s, SIGUSR1, close_self_cb));
  assert_int_equal(s.signum, SIGUSR1);
  assert_int_equal(evr_is_active(&s.base), 1);
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(calls[0], 0); /* never inside the handler */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls[0], 1);
  assert_int_equal(last_signum, SIGUSR1);
  assert_int_equal(wrong_thread, 0);
}

static void test_signal_kill_to_self_is_delivered(void **state) {
  (void)state;
  static evr_signal_t s;
  reset();
  assert_evr_ok(evr_signal_init(test_loop, &s));
  s.base.data = (void *)0;
  assert_evr_ok(evr_signal_start(&s, SIGUSR2, close_self_cb));
  assert_int_equal(kill(getpid(), SIGUSR2), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls[0], 1);
  assert_int_equal(last_signum, SIGUSR2);
}

static void test_signal_raised_twice_before_run_coalesces(void **state) {
  (void)state;
  static evr_signal_t s;
  reset();
  assert_evr_ok(evr_signal_init(test_loop, &s));
  s.base.data = (void *)0;
  assert_evr_ok(evr_signal_start(&s, SIGUSR1, count_cb));
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls[0], 1);
  /* A later signal is a new call. */
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls[0], 2);
  assert_evr_ok(evr_signal_stop(&s));
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

static void test_signal_several_handles_of_one_signal_all_run(void **state) {
  (void)state;
  static evr_signal_t s[3];
  reset();
  for (int i = 0; i < 3; i++) {
    assert_evr_ok(evr_signal_init(test_loop, &s[i]));
    s[i].base.data = (void *)(intptr_t)i;
    assert_evr_ok(evr_signal_start(&s[i], SIGUSR1, count_cb));
  }
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  for (int i = 0; i < 3; i++) assert_int_equal(calls[i], 1);
  /* Stopping one leaves the others watching. */
  assert_evr_ok(evr_signal_stop(&s[1]));
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls[0], 2);
  assert_int_equal(calls[1], 1);
  assert_int_equal(calls[2], 2);
  /* Closing one (not stopped first) does too. */
  assert_evr_ok(evr_close(&s[0].base, NULL));
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls[0], 2);
  assert_int_equal(calls[2], 3);
  assert_int_equal(wrong_thread, 0);
}

static void test_signal_stop_drops_a_caught_signal(void **state) {
  (void)state;
  static evr_signal_t s, keep;
  reset();
  assert_evr_ok(evr_signal_init(test_loop, &s));
  assert_evr_ok(evr_signal_init(test_loop, &keep));
  s.base.data = (void *)0;
  keep.base.data = (void *)1;
  /* keep holds the handler installed, so the raise after the stop of s
   * is caught and dropped rather than acting by default. */
  assert_evr_ok(evr_signal_start(&keep, SIGUSR1, count_cb));
  assert_evr_ok(evr_signal_start(&s, SIGUSR1, count_cb));
  assert_int_equal(raise(SIGUSR1), 0);
  assert_evr_ok(evr_signal_stop(&s));
  assert_int_equal(evr_is_active(&s.base), 0);
  assert_int_equal(s.signum, 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls[0], 0);
  assert_int_equal(calls[1], 1);
}

static void test_signal_unref_handle_does_not_keep_loop_alive(void **state) {
  (void)state;
  static evr_signal_t s;
  reset();
  assert_evr_ok(evr_signal_init(test_loop, &s));
  s.base.data = (void *)0;
  assert_evr_ok(evr_signal_start(&s, SIGUSR1, count_cb));
  evr_unref(&s.base);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  /* Still watching while unreferenced: a signal caught then is reported
   * by the next run that has something else keeping the loop alive. */
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(calls[0], 0);
  evr_ref(&s.base);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls[0], 1);
}

/* ---- dispositions ---- */

static volatile sig_atomic_t own_handler_calls;
static void own_handler(int signum) {
  (void)signum;
  own_handler_calls++;
}

static void test_signal_last_stop_restores_previous_handler(void **state) {
  (void)state;
  static evr_signal_t a, b;
  struct sigaction sa, saved;
  reset();
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = own_handler;
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGUSR1, &sa, &saved), 0);
  own_handler_calls = 0;

  assert_evr_ok(evr_signal_init(test_loop, &a));
  assert_evr_ok(evr_signal_init(test_loop, &b));
  a.base.data = (void *)0;
  b.base.data = (void *)1;
  assert_evr_ok(evr_signal_start(&a, SIGUSR1, count_cb));
  assert_true(current_handler(SIGUSR1) != own_handler);
  assert_evr_ok(evr_signal_start(&b, SIGUSR1, count_cb));
  assert_evr_ok(evr_signal_stop(&a));
  /* b still watches: evr's handler stays. */
  assert_true(current_handler(SIGUSR1) != own_handler);
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(own_handler_calls, 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls[1], 1);
  /* The last stop puts the old handler back, and it gets the signal. */
  assert_evr_ok(evr_signal_stop(&b));
  assert_true(current_handler(SIGUSR1) == own_handler);
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(own_handler_calls, 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(calls[1], 1);
  /* Starting again after that installs evr's handler again. */
  assert_evr_ok(evr_signal_start(&a, SIGUSR1, count_cb));
  assert_true(current_handler(SIGUSR1) != own_handler);
  assert_evr_ok(evr_close(&a.base, NULL)); /* close stops too */
  assert_true(current_handler(SIGUSR1) == own_handler);
  assert_int_equal(sigaction(SIGUSR1, &saved, NULL), 0);
}

static void test_signal_default_and_ignore_dispositions_restored(void **state) {
  (void)state;
  static evr_signal_t s;
  struct sigaction dfl, saved_usr2, saved_winch;
  reset();
  memset(&dfl, 0, sizeof dfl);
  sigemptyset(&dfl.sa_mask);
  dfl.sa_handler = SIG_IGN;
  assert_int_equal(sigaction(SIGUSR2, &dfl, &saved_usr2), 0);
  dfl.sa_handler = SIG_DFL;
  assert_int_equal(sigaction(SIGWINCH, &dfl, &saved_winch), 0);

  assert_evr_ok(evr_signal_init(test_loop, &s));
  s.base.data = (void *)0;
  assert_evr_ok(evr_signal_start(&s, SIGUSR2, count_cb));
  assert_true(current_handler(SIGUSR2) != SIG_IGN);
  /* Moving the handle to another signal gives the first one back. */
  assert_evr_ok(evr_signal_start(&s, SIGWINCH, count_cb));
  assert_int_equal(s.signum, SIGWINCH);
  assert_true(current_handler(SIGUSR2) == SIG_IGN);
  assert_true(current_handler(SIGWINCH) != SIG_DFL);
  assert_int_equal(raise(SIGUSR2), 0); /* ignored: no callback */
  assert_int_equal(raise(SIGWINCH), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls[0], 1);
  assert_int_equal(last_signum, SIGWINCH);
  assert_evr_ok(evr_signal_stop(&s));
  assert_true(current_handler(SIGWINCH) == SIG_DFL);
  assert_true(current_handler(SIGUSR2) == SIG_IGN);
  assert_int_equal(sigaction(SIGUSR2, &saved_usr2, NULL), 0);
  assert_int_equal(sigaction(SIGWINCH, &saved_winch, NULL), 0);
}

/* ---- several loops ---- */

static void test_signal_two_loops_in_one_thread_both_get_it(void **state) {
  (void)state;
  static evr_signal_t a, b;
  evr_loop_t *other;
  reset();
  assert_evr_ok(evr_loop_new(&other, NULL));
  assert_evr_ok(evr_signal_init(test_loop, &a));
  assert_evr_ok(evr_signal_init(other, &b));
  a.base.data = (void *)0;
  b.base.data = (void *)1;
  assert_evr_ok(evr_signal_start(&a, SIGUSR1, close_self_cb));
  assert_evr_ok(evr_signal_start(&b, SIGUSR1, close_self_cb));
  assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(evr_loop_run(other, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls[1], 1);
  assert_int_equal(calls[0], 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls[0], 1);
  assert_evr_ok(evr_loop_free(other));
}

/* A second loop on its own thread; each loop's callback must run on its own
 * thread, whichever thread the kernel picked for the handler. */
static evr_loop_t *thread_loop;
static evr_signal_t thread_sig;
static pthread_t other_thread;
static atomic_int other_ready;
static atomic_int other_calls;

static void other_cb(evr_signal_t *sig, int signum) {
  thread_check(signum == SIGUSR1);
  thread_check(pthread_equal(pthread_self(), other_thread));
  atomic_fetch_add(&other_calls, 1);
  thread_check(evr_close(&sig->base, NULL) == 0);
}

static void *other_main(void *arg) {
  (void)arg;
  thread_check(evr_signal_init(thread_loop, &thread_sig) == 0);
  thread_check(evr_signal_start(&thread_sig, SIGUSR1, other_cb) == 0);
  atomic_store(&other_ready, 1);
  thread_check(evr_loop_run(thread_loop, EVR_RUN_DEFAULT) == 0);
  return NULL;
}

static void test_signal_two_loops_in_two_threads_both_get_kill(void **state) {
  (void)state;
  static evr_signal_t s;
  reset();
  atomic_store(&other_ready, 0);
  atomic_store(&other_calls, 0);
  assert_evr_ok(evr_loop_new(&thread_loop, NULL));
  assert_evr_ok(evr_signal_init(test_loop, &s));
  s.base.data = (void *)0;
  assert_evr_ok(evr_signal_start(&s, SIGUSR1, close_self_cb));
  assert_int_equal(pthread_create(&other_thread, NULL, other_main, NULL), 0);
  while (!atomic_load(&other_ready)) sched_yield(); /* bounded by ctest */
  assert_int_equal(kill(getpid(), SIGUSR1), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(pthread_join(other_thread, NULL), 0);
  assert_int_equal(atomic_load(&thread_failures), 0);
  assert_int_equal(calls[0], 1);
  assert_int_equal(atomic_load(&other_calls), 1);
  assert_int_equal(wrong_thread, 0);
  assert_evr_ok(evr_loop_free(thread_loop));
}

/* ---- descriptors ---- */

static void test_signal_handles_leave_no_descriptor_behind(void **state) {
  (void)state;
  reset();
  int fds = count_open_fds();
  for (int round = 0; round < 10; round++) {
    evr_loop_t *l;
    static evr_signal_t s;
    assert_evr_ok(evr_loop_new(&l, NULL));
    assert_evr_ok(evr_signal_init(l, &s));
    s.base.data = (void *)0;
    assert_evr_ok(evr_signal_start(&s, SIGUSR1, close_self_cb));
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
    assert_evr_ok(evr_loop_free(l));
  }
  assert_int_equal(calls[0], 10);
  assert_fds_back_to(fds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_signal_rejects_bad_arguments),
      EVR_TEST(test_signal_raise_runs_callback_on_loop_thread),
      EVR_TEST(test_signal_kill_to_self_is_delivered),
      EVR_TEST(test_signal_raised_twice_before_run_coalesces),
      EVR_TEST(test_signal_several_handles_of_one_signal_all_run),
      EVR_TEST(test_signal_stop_drops_a_caught_signal),
      EVR_TEST(test_signal_unref_handle_does_not_keep_loop_alive),
      EVR_TEST(test_signal_last_stop_restores_previous_handler),
      EVR_TEST(test_signal_default_and_ignore_dispositions_restored),
      EVR_TEST(test_signal_two_loops_in_one_thread_both_get_it),
      EVR_TEST(test_signal_two_loops_in_two_threads_both_get_kill),
      EVR_TEST(test_signal_handles_leave_no_descriptor_behind),
  };
  return cmocka_run_group_tests_name("signal", tests, NULL, NULL);
}
