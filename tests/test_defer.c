/* tests/test_defer.c: deferred tasks (phase 5): order, re-deferral, cancel,
 * liveness and the non-blocking poll they imply. */
/* evr-test: backends */
#define _GNU_SOURCE
#include <unistd.h>
#include "helpers.h"

static char trace[64];
static int trace_len;
static void mark(char c) {
  if (trace_len < (int)sizeof trace - 1) trace[trace_len++] = c;
  trace[trace_len] = '\0';
}
static void reset_trace(void) {
  trace_len = 0;
  trace[0] = '\0';
}

static void mark_cb(evr_defer_t *t) { mark(*(const char *)t->data); }

static void test_defer_runs_in_fifo_order(void **state) {
  (void)state;
  static const char names[] = "abcdefgh";
  evr_defer_t t[8];
  reset_trace();
  for (int i = 0; i < 8; i++) {
    evr_defer_init(&t[i]);
    t[i].data = (void *)&names[i];
    assert_int_equal(evr_defer_pending(&t[i]), 0);
    assert_evr_ok(evr_defer(test_loop, &t[i], mark_cb));
    assert_int_equal(evr_defer_pending(&t[i]), 1);
  }
  assert_int_equal(trace_len, 0); /* never synchronous */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_string_equal(trace, "abcdefgh");
  for (int i = 0; i < 8; i++) assert_int_equal(evr_defer_pending(&t[i]), 0);
}

/* A task that defers itself runs once per iteration, and I/O keeps flowing
 * between its runs: deferring never starves the poll phase. */
static int self_runs;
static int io_reads;
static int pipe_fds[2];
static void self_cb(evr_defer_t *t) {
  mark('D');
  if (++self_runs < 5) assert_evr_ok(evr_defer(t->loop, t, self_cb));
}
static void read_cb(evr_io_t *io, unsigned ev) {
  char c;
  assert_true(ev & EVR_READ);
  assert_int_equal(read(evr_io_fd(io), &c, 1), 1);
  io_reads++;
  mark('R');
  if (io_reads < 5) assert_int_equal(write(pipe_fds[1], "x", 1), 1);
}

static void test_defer_self_requeue_waits_for_next_iteration(void **state) {
  (void)state;
  evr_defer_t t;
  evr_io_t io;
  reset_trace();
  self_runs = io_reads = 0;
  make_pipe(pipe_fds);
  assert_evr_ok(evr_io_init(test_loop, &io, pipe_fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, read_cb));
  assert_int_equal(write(pipe_fds[1], "x", 1), 1);
  evr_defer_init(&t);
  assert_evr_ok(evr_defer(test_loop, &t, self_cb));
  for (int i = 0; i < 5; i++) {
    assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
    assert_int_equal(self_runs, i + 1);
  }
  /* Each iteration: I/O callback first, then the deferred task. */
  assert_string_equal(trace, "RDRDRDRDRD");
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

/* Cancel from inside the batch: a later task of the same batch does not run,
 * and its node may be re-deferred at once (it then runs next iteration). */
static evr_defer_t batch[3];
static int canceller_rc;
static void canceller_cb(evr_defer_t *t) {
  (void)t;
  mark('A');
  canceller_rc = evr_defer_cancel(&batch[1]);
  assert_int_equal(evr_defer_cancel(&batch[1]), EVR_ENOENT);
}
static void victim_cb(evr_defer_t *t) {
  (void)t;
  mark('B');
}
static void last_cb(evr_defer_t *t) {
  (void)t;
  mark('C');
  assert_evr_ok(evr_defer(t->loop, &batch[1], victim_cb));
}

static void test_defer_cancel_inside_batch(void **state) {
  (void)state;
  reset_trace();
  for (int i = 0; i < 3; i++) evr_defer_init(&batch[i]);
  assert_evr_ok(evr_defer(test_loop, &batch[0], canceller_cb));
  assert_evr_ok(evr_defer(test_loop, &batch[1], victim_cb));
  assert_evr_ok(evr_defer(test_loop, &batch[2], last_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(canceller_rc, 0);
  assert_string_equal(trace, "AC");
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_string_equal(trace, "ACB");
}

static void test_defer_error_paths(void **state) {
  (void)state;
  evr_defer_t t;
  evr_defer_init(&t);
  assert_int_equal(evr_defer(NULL, &t, mark_cb), EVR_EINVAL);
  assert_int_equal(evr_defer(test_loop, NULL, mark_cb), EVR_EINVAL);
  assert_int_equal(evr_defer(test_loop, &t, NULL), EVR_EINVAL);
  assert_int_equal(evr_defer_cancel(NULL), EVR_EINVAL);
  assert_int_equal(evr_defer_cancel(&t), EVR_ENOENT);
  t.data = (void *)"x";
  reset_trace();
  assert_evr_ok(evr_defer(test_loop, &t, mark_cb));
  assert_int_equal(evr_defer(test_loop, &t, victim_cb), EVR_EALREADY);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_string_equal(trace, "x"); /* queued once, with its first fn */
  assert_int_equal(evr_defer_cancel(&t), EVR_ENOENT); /* already ran */
}

/* A pending task keeps the loop alive and makes poll non-blocking even while
 * an idle fd would otherwise block forever. */
static void test_defer_pending_task_keeps_loop_alive_without_blocking(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  evr_defer_t t;
  make_pipe(fds);
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, read_cb));
  evr_unref(&io.base);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  evr_defer_init(&t);
  t.data = (void *)"t";
  reset_trace();
  assert_evr_ok(evr_defer(test_loop, &t, mark_cb));
  assert_int_equal(evr_loop_alive(test_loop), 1);
  evr_ref(&io.base); /* now the idle pipe alone would block ONCE */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_string_equal(trace, "t");
  evr_unref(&io.base);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

/* A cancelled task no longer keeps the loop alive: evr_loop_free succeeds. */
static void test_defer_cancel_releases_loop(void **state) {
  (void)state;
  evr_defer_t t;
  evr_defer_init(&t);
  assert_evr_ok(evr_defer(test_loop, &t, mark_cb));
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_evr_ok(evr_defer_cancel(&t));
  assert_int_equal(evr_defer_pending(&t), 0);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_defer_runs_in_fifo_order),
      EVR_TEST(test_defer_self_requeue_waits_for_next_iteration),
      EVR_TEST(test_defer_cancel_inside_batch),
      EVR_TEST(test_defer_error_paths),
      EVR_TEST(test_defer_pending_task_keeps_loop_alive_without_blocking),
      EVR_TEST(test_defer_cancel_releases_loop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
