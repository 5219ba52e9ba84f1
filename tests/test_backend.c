/* tests/test_backend.c: properties every backend must have, run under each:
 * no descriptor leaks, close-on-exec kernel objects, large descriptor
 * numbers, independent loops on one fd, interest churn, and waits that
 * never end before their timeout, below a millisecond too. */
/* evr-test: backends timeout=300 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "helpers.h"
#include "reactor/internal.h"

static int calls_a, calls_b;
static void cb_a(evr_io_t *io, unsigned ev) { (void)io; (void)ev; calls_a++; }
static void cb_b(evr_io_t *io, unsigned ev) { (void)io; (void)ev; calls_b++; }

/* Creating and freeing loops leaves no descriptor behind, and every
 * descriptor a loop opens is close-on-exec. */
static void test_backend_loops_leak_nothing_and_are_cloexec(void **state) {
  (void)state;
  /* A user-space kqueue keeps process-wide helper descriptors once first
   * used; create one loop first so they are counted in the baseline. */
  evr_loop_t *warm;
  assert_evr_ok(evr_loop_new(&warm, NULL));
  assert_int_equal(evr_loop_free(warm), 0);
  int before = count_open_fds();
  static unsigned char was_open[1024];
  for (int fd = 0; fd < 1024; fd++) was_open[fd] = fcntl(fd, F_GETFD) >= 0;
  evr_loop_t *l;
  assert_evr_ok(evr_loop_new(&l, NULL));
  int fds[2];
  evr_io_t io;
  make_pipe(fds);
  assert_evr_ok(evr_io_init(l, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, cb_a));
  assert_int_equal(evr_loop_run(l, EVR_RUN_NOWAIT), 1);
  /* Every descriptor that is not ours and not stdio must be CLOEXEC. */
  for (int fd = 3; fd < 1024; fd++) {
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0) continue;
    if (was_open[fd] || fd == fds[0] || fd == fds[1]) continue;
    assert_true(fl & FD_CLOEXEC);
  }
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(l, EVR_RUN_NOWAIT), 0);
  assert_int_equal(evr_loop_free(l), 0);
  close(fds[0]);
  close(fds[1]);
  for (int i = 0; i < 200; i++) {
    assert_evr_ok(evr_loop_new(&l, NULL));
    assert_int_equal(evr_loop_free(l), 0);
  }
  assert_fds_back_to(before);
}

/* A watcher on a descriptor number far above the others works (the fd map
 * and the backend's tables grow on demand). */
static void test_backend_large_fd_number(void **state) {
  (void)state;
  /* Descriptor 19999 where the limit allows it (macOS caps the soft limit
   * at OPEN_MAX, 10240); the highest one allowed otherwise, which is still
   * far above the others. */
  long lim = raise_nofile(20000);
  assert_true(lim > 64);
  int high = lim > 20000 ? 19999 : (int)lim - 1;
  if (high < 19999) print_message("note: descriptor %d instead of 19999\n", high);
  int fds[2];
  make_pipe(fds);
  assert_int_equal(dup2(fds[0], high), high);
  evr_io_t io;
  calls_a = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, high));
  assert_evr_ok(evr_io_start(&io, EVR_READ, cb_a));
  assert_int_equal(write(fds[1], "x", 1), 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls_a, 1);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(high);
  close(fds[0]);
  close(fds[1]);
}

/* Two loops watch the same fd independently: stopping one leaves the
 * other's registration intact. */
static void test_backend_two_loops_one_fd(void **state) {
  (void)state;
  evr_loop_t *other;
  assert_evr_ok(evr_loop_new(&other, NULL));
  int fds[2];
  make_pipe(fds);
  evr_io_t a, b;
  calls_a = calls_b = 0;
  assert_evr_ok(evr_io_init(test_loop, &a, fds[0]));
  assert_evr_ok(evr_io_init(other, &b, fds[0]));
  assert_evr_ok(evr_io_start(&a, EVR_READ, cb_a));
  assert_evr_ok(evr_io_start(&b, EVR_READ, cb_b));
  assert_int_equal(write(fds[1], "x", 1), 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(evr_loop_run(other, EVR_RUN_ONCE), 1);
  assert_int_equal(calls_a, 1);
  assert_int_equal(calls_b, 1);
  assert_evr_ok(evr_io_stop(&a));
  assert_int_equal(evr_loop_run(other, EVR_RUN_ONCE), 1);
  assert_int_equal(calls_b, 2);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(calls_a, 1);
  assert_evr_ok(evr_close(&a.base, NULL));
  assert_evr_ok(evr_close(&b.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(evr_loop_run(other, EVR_RUN_NOWAIT), 0);
  assert_int_equal(evr_loop_free(other), 0);
  close(fds[0]);
  close(fds[1]);
}

/* Interest churn: every transition between {R, W, RW} and stopped, checked
 * against what the fd really is (readable and writable socket). */
static unsigned churn_seen;
static void churn_cb(evr_io_t *io, unsigned ev) {
  (void)io;
  churn_seen = ev;
}

static void test_backend_interest_transitions(void **state) {
  (void)state;
  static const unsigned masks[] = {EVR_READ, EVR_WRITE, EVR_READ | EVR_WRITE};
  int sv[2];
  make_socketpair(sv);
  assert_int_equal(write(sv[1], "r", 1), 1); /* sv[0] readable and writable */
  evr_io_t io;
  assert_evr_ok(evr_io_init(test_loop, &io, sv[0]));
  for (unsigned from = 0; from < 3; from++) {
    for (unsigned to = 0; to < 4; to++) {
      assert_evr_ok(evr_io_start(&io, masks[from], churn_cb));
      churn_seen = 0;
      assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
      assert_int_equal(churn_seen, masks[from]);
      if (to == 3) {
        assert_evr_ok(evr_io_stop(&io));
        churn_seen = 0;
        assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
        assert_int_equal(churn_seen, 0);
      } else {
        assert_evr_ok(evr_io_set(&io, masks[to]));
        churn_seen = 0;
        assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
        assert_int_equal(churn_seen, masks[to]);
        assert_evr_ok(evr_io_stop(&io));
      }
    }
  }
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(sv[0]);
  close(sv[1]);
}

/* Start/stop churn on many descriptors in random order; at every step the
 * set of callbacks equals the set of started watchers on readable fds. */
#define CHURN_N 300
static evr_io_t churn_io[CHURN_N];
static int churn_hits[CHURN_N];
static void churn_hit_cb(evr_io_t *io, unsigned ev) {
  (void)ev;
  churn_hits[io - churn_io]++;
}

static void test_backend_random_start_stop_churn(void **state) {
  (void)state;
  int rd[CHURN_N], wr[CHURN_N];
  for (int i = 0; i < CHURN_N; i++) {
    int p[2];
    make_pipe(p);
    rd[i] = p[0];
    wr[i] = p[1];
    assert_int_equal(write(wr[i], "x", 1), 1); /* all readable, level */
    assert_evr_ok(evr_io_init(test_loop, &churn_io[i], rd[i]));
  }
  srand(0x5eed0003u);
  for (int step = 0; step < 400; step++) {
    for (int k = 0; k < 25; k++) {
      int i = rand() % CHURN_N;
      if (evr_is_active(&churn_io[i].base))
        assert_evr_ok(evr_io_stop(&churn_io[i]));
      else
        assert_evr_ok(evr_io_start(&churn_io[i], EVR_READ, churn_hit_cb));
    }
    memset(churn_hits, 0, sizeof churn_hits);
    int active = 0;
    for (int i = 0; i < CHURN_N; i++) active += evr_is_active(&churn_io[i].base);
    assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), active > 0);
    for (int i = 0; i < CHURN_N; i++)
      assert_int_equal(churn_hits[i], evr_is_active(&churn_io[i].base) ? 1 : 0);
  }
  for (int i = 0; i < CHURN_N; i++) assert_evr_ok(evr_close(&churn_io[i].base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  for (int i = 0; i < CHURN_N; i++) {
    close(rd[i]);
    close(wr[i]);
  }
}

/* The backend's wait, called directly with nothing ready: it returns no
 * earlier than asked, whatever unit its system call counts in (a wait that
 * rounded 250 us down to 0 ms would return at once). */
static void test_backend_wait_never_ends_before_its_timeout(void **state) {
  (void)state;
  static const int64_t waits[] = {1, 1000, 250000, 999999, 1000001, 2500000};
  for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++) {
    for (int round = 0; round < 3; round++) {
      uint64_t t0 = evr_hrtime();
      int n = test_loop->backend->poll(test_loop, waits[i]);
      uint64_t t1 = evr_hrtime();
      assert_true(n >= 0);
      if (n > 0) continue; /* something was ready: the wait may end early */
      assert_true(t1 - t0 >= (uint64_t)waits[i]);
    }
  }
}

static int sub_ms_fired;
static uint64_t sub_ms_at;
static void sub_ms_cb(evr_timer_t *t) {
  (void)t;
  sub_ms_fired++;
  sub_ms_at = evr_hrtime();
}

/* Through the loop: a 300 us timer makes the poll phase wait below a
 * millisecond, and its callback runs no earlier than 300 us. */
static void test_backend_sub_ms_timer_wait_is_not_early(void **state) {
  (void)state;
  evr_timer_t t;
  for (int round = 0; round < 5; round++) {
    assert_evr_ok(evr_timer_init(test_loop, &t));
    sub_ms_fired = 0;
    uint64_t t0 = evr_hrtime();
    assert_evr_ok(evr_timer_start_ns(&t, sub_ms_cb, 300000, 0));
    while (!sub_ms_fired) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
    assert_true(sub_ms_at - t0 >= 300000);
  }
}

/* Level-triggered under load: descriptors that stay ready are all
 * reported in every iteration, not some of them a few iterations late
 * (io_uring: completions the kernel defers must all be taken). */
#define BUSY_N 100
static struct busy {
  evr_io_t io;
  int peer;
  unsigned calls;
} busy[BUSY_N];
static void busy_cb(evr_io_t *io, unsigned ev) {
  struct busy *b = (struct busy *)io;
  char c;
  (void)ev;
  b->calls++;
  /* Read the byte and send it back to ourselves: ready again. */
  assert_int_equal(read(evr_io_fd(io), &c, 1), 1);
  assert_int_equal(write(b->peer, &c, 1), 1);
}

static void test_backend_busy_descriptors_reported_every_iteration(void **state) {
  (void)state;
  int rd[BUSY_N];
  for (int i = 0; i < BUSY_N; i++) {
    int sv[2];
    make_socketpair(sv);
    rd[i] = sv[1];
    busy[i].peer = sv[0];
    busy[i].calls = 0;
    assert_int_equal(write(sv[0], "x", 1), 1);
    assert_evr_ok(evr_io_init(test_loop, &busy[i].io, sv[1]));
    assert_evr_ok(evr_io_start(&busy[i].io, EVR_READ, busy_cb));
  }
  for (unsigned it = 1; it <= 50; it++) {
    assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
    for (int i = 0; i < BUSY_N; i++)
      if (busy[i].calls != it)
        fail_msg("iteration %u: descriptor %d reported %u times", it, i, busy[i].calls);
  }
  for (int i = 0; i < BUSY_N; i++) assert_evr_ok(evr_close(&busy[i].io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  for (int i = 0; i < BUSY_N; i++) {
    close(rd[i]);
    close(busy[i].peer);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_backend_busy_descriptors_reported_every_iteration),
      EVR_TEST(test_backend_wait_never_ends_before_its_timeout),
      EVR_TEST(test_backend_sub_ms_timer_wait_is_not_early),
      EVR_TEST(test_backend_loops_leak_nothing_and_are_cloexec),
      EVR_TEST(test_backend_large_fd_number),
      EVR_TEST(test_backend_two_loops_one_fd),
      EVR_TEST(test_backend_interest_transitions),
      EVR_TEST(test_backend_random_start_stop_churn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
