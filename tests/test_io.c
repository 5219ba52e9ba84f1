/* tests/test_io.c: I/O watchers on real pipes and socket pairs, under every
 * backend: readiness, level triggering, interest changes from callbacks,
 * EOF and hang-up, stale events of reused descriptors, error paths and a
 * many-descriptor random workload. */
/* evr-test: backends timeout=300 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fault.h"
#include "helpers.h"

static unsigned last_ev;
static int calls;
static void count_cb(evr_io_t *io, unsigned ev) {
  (void)io;
  last_ev = ev;
  calls++;
}

static void test_io_readable_only_when_data(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  make_pipe(fds);
  calls = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_int_equal(evr_is_active(&io.base), 0);
  assert_evr_ok(evr_io_start(&io, EVR_READ, count_cb));
  assert_int_equal(evr_is_active(&io.base), 1);
  assert_int_equal(evr_io_events(&io), EVR_READ);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 0);
  assert_int_equal(write(fds[1], "abc", 3), 3);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls, 1);
  assert_int_equal(last_ev & (EVR_READ | EVR_WRITE), EVR_READ);
  /* Level-triggered: unread data reports again on every iteration. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 2);
  char buf[8];
  assert_int_equal(read(fds[0], buf, sizeof buf), 3);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 2);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

static void test_io_writable_and_both(void **state) {
  (void)state;
  int sv[2];
  evr_io_t io;
  make_socketpair(sv);
  calls = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, sv[0]));
  assert_evr_ok(evr_io_start(&io, EVR_WRITE, count_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls, 1);
  assert_int_equal(last_ev, EVR_WRITE);
  assert_int_equal(write(sv[1], "z", 1), 1);
  assert_evr_ok(evr_io_set(&io, EVR_READ | EVR_WRITE));
  assert_int_equal(evr_io_events(&io), EVR_READ | EVR_WRITE);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls, 2);
  assert_int_equal(last_ev, EVR_READ | EVR_WRITE);
  /* Narrowing the interest narrows the events. */
  assert_evr_ok(evr_io_set(&io, EVR_READ));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls, 3);
  assert_int_equal(last_ev, EVR_READ);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(sv[0]);
  close(sv[1]);
}

/* A full socket buffer is not writable; draining the peer makes it so. */
static void test_io_write_interest_follows_buffer_space(void **state) {
  (void)state;
  int sv[2];
  evr_io_t io;
  char chunk[4096];
  memset(chunk, 'q', sizeof chunk);
  make_socketpair(sv);
  while (write(sv[0], chunk, sizeof chunk) > 0) {
  }
  calls = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, sv[0]));
  assert_evr_ok(evr_io_start(&io, EVR_WRITE, count_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 0);
  ssize_t n;
  while ((n = read(sv[1], chunk, sizeof chunk)) > 0) {
  }
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(calls, 1);
  assert_true(last_ev & EVR_WRITE);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(sv[0]);
  close(sv[1]);
}

/* Interest changes made from inside callbacks take effect at once. */
static int flip_reads, flip_writes;
static void flip_cb(evr_io_t *io, unsigned ev) {
  if (ev & EVR_READ) {
    char c;
    assert_int_equal(read(evr_io_fd(io), &c, 1), 1);
    flip_reads++;
    assert_evr_ok(evr_io_set(io, EVR_WRITE));
  } else if (ev & EVR_WRITE) {
    flip_writes++;
    assert_evr_ok(evr_io_stop(io));
    assert_int_equal(evr_is_active(&io->base), 0);
  }
}

static void test_io_set_and_stop_from_callback(void **state) {
  (void)state;
  int sv[2];
  evr_io_t io;
  make_socketpair(sv);
  flip_reads = flip_writes = 0;
  assert_int_equal(write(sv[1], "ab", 2), 2);
  assert_evr_ok(evr_io_init(test_loop, &io, sv[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, flip_cb));
  /* Runs until the watcher stops itself: nothing else keeps the loop. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(flip_reads, 1);
  assert_int_equal(flip_writes, 1);
  /* Restart after stop; one byte is still unread. */
  assert_evr_ok(evr_io_start(&io, EVR_READ, flip_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(flip_reads, 2);
  assert_int_equal(flip_writes, 2);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(sv[0]);
  close(sv[1]);
}

/* End of stream: read() returns 0 in the callback, for pipes and sockets. */
static ssize_t eof_read_rc;
static void eof_cb(evr_io_t *io, unsigned ev) {
  char c;
  assert_true(ev & EVR_READ);
  eof_read_rc = read(evr_io_fd(io), &c, 1);
  calls++;
  assert_evr_ok(evr_io_stop(io));
}

/* Watch rfd, check it is quiet, then end the stream with end(peer). */
static void check_eof(int rfd, int peer, int (*end)(int)) {
  evr_io_t io;
  calls = 0;
  eof_read_rc = -2;
  assert_evr_ok(evr_io_init(test_loop, &io, rfd));
  assert_evr_ok(evr_io_start(&io, EVR_READ, eof_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(calls, 0);
  assert_int_equal(end(peer), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls, 1);
  assert_int_equal(eof_read_rc, 0);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(rfd);
}

static int shut_wr(int fd) { return shutdown(fd, SHUT_WR); }

static void test_io_eof_on_pipe_and_socketpair(void **state) {
  (void)state;
  int fds[2];
  make_pipe(fds);
  check_eof(fds[0], fds[1], close);
  make_socketpair(fds);
  check_eof(fds[0], fds[1], close);
  /* Half-close: shutdown(SHUT_WR) on the peer is an EOF too. */
  make_socketpair(fds);
  check_eof(fds[0], fds[1], shut_wr);
  close(fds[1]);
}

/* A write end whose reader is gone reports an error or hang-up together
 * with the watcher's interest, so write() meets EPIPE in the callback. */
static int epipe_seen;
static void epipe_cb(evr_io_t *io, unsigned ev) {
  assert_true(ev & EVR_WRITE);
  ssize_t n = test_send(evr_io_fd(io), "x", 1);
  if (n < 0 && errno == EPIPE) epipe_seen = 1;
  assert_evr_ok(evr_io_stop(io));
}

static void test_io_peer_gone_reaches_writer(void **state) {
  (void)state;
  int sv[2];
  evr_io_t io;
  make_socketpair(sv);
  epipe_seen = 0;
  assert_int_equal(close(sv[1]), 0);
  assert_evr_ok(evr_io_init(test_loop, &io, sv[0]));
  assert_evr_ok(evr_io_start(&io, EVR_WRITE, epipe_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(epipe_seen, 1);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(sv[0]);
}

static void test_io_error_paths(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io, other;
  make_pipe(fds);
  assert_int_equal(evr_io_init(NULL, &io, fds[0]), EVR_EINVAL);
  assert_int_equal(evr_io_init(test_loop, NULL, fds[0]), EVR_EINVAL);
  assert_int_equal(evr_io_init(test_loop, &io, -1), EVR_EBADF);
  int closed = dup(fds[0]);
  assert_true(closed >= 0);
  close(closed);
  assert_int_equal(evr_io_init(test_loop, &io, closed), EVR_EBADF);

  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_int_equal(evr_io_start(&io, 0, count_cb), EVR_EINVAL);
  assert_int_equal(evr_io_start(&io, EVR_HUP, count_cb), EVR_EINVAL);
  assert_int_equal(evr_io_start(&io, 0x40, count_cb), EVR_EINVAL);
  assert_int_equal(evr_io_start(&io, EVR_READ, NULL), EVR_EINVAL);
  assert_int_equal(evr_io_start(NULL, EVR_READ, count_cb), EVR_EINVAL);
  assert_int_equal(evr_io_set(&io, EVR_READ), EVR_EINVAL); /* not active */
  assert_int_equal(evr_io_stop(&io), 0);                   /* idempotent */
  assert_evr_ok(evr_io_start(&io, EVR_READ, count_cb));
  assert_int_equal(evr_io_start(&io, EVR_READ, count_cb), EVR_EALREADY);
  assert_int_equal(evr_io_set(&io, 0), EVR_EINVAL);
  assert_int_equal(evr_io_set(&io, EVR_ERR), EVR_EINVAL);
  /* One active watcher per fd and loop. */
  assert_evr_ok(evr_io_init(test_loop, &other, fds[0]));
  assert_int_equal(evr_io_start(&other, EVR_WRITE, count_cb), EVR_EEXIST);
  assert_int_equal(evr_is_active(&other.base), 0);
  assert_evr_ok(evr_io_stop(&io));
  assert_evr_ok(evr_io_start(&other, EVR_READ, count_cb));
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_evr_ok(evr_close(&other.base, NULL));
  assert_int_equal(evr_io_start(&io, EVR_READ, count_cb), EVR_EINVAL);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

/* Regular files: epoll refuses them (EPERM); poll reports them always
 * readable and kqueue readable while the offset is before the end, as the
 * kernels do. */
static void test_io_regular_file(void **state) {
  (void)state;
  char path[] = "/tmp/evr-test-io-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  assert_int_equal(write(fd, "data", 4), 4);
  assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
  evr_io_t io;
  calls = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, fd));
  int rc = evr_io_start(&io, EVR_READ, count_cb);
  if (strcmp(evr_loop_backend(test_loop), "epoll") == 0) {
    assert_int_equal(rc, EVR_EPERM);
    assert_int_equal(evr_is_active(&io.base), 0);
    assert_int_equal(evr_loop_alive(test_loop), 0);
  } else {
    assert_evr_ok(rc);
    assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
    assert_int_equal(calls, 1);
    assert_true(last_ev & EVR_READ);
  }
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fd);
}

/* Stale events: two ready fds in one batch; whichever callback runs first
 * stops the other watcher, closes its fd, puts a new ready descriptor on the
 * same number and starts a fresh watcher there. Nothing harvested for the
 * old descriptor may reach either watcher in this iteration. */
static int st_a[2], st_b[2], st_spare[2];
static evr_io_t st_io_a, st_io_b, st_fresh;
static int st_first, st_old_calls, st_fresh_calls;
static void st_fresh_cb(evr_io_t *io, unsigned ev) {
  (void)io;
  (void)ev;
  st_fresh_calls++;
}
static void st_cb(evr_io_t *io, unsigned ev) {
  (void)ev;
  st_old_calls++;
  if (st_first) return;
  st_first = 1;
  evr_io_t *victim = io == &st_io_a ? &st_io_b : &st_io_a;
  int vfd = evr_io_fd(victim);
  assert_evr_ok(evr_io_stop(victim));
  assert_int_equal(close(vfd), 0);
  assert_int_equal(dup2(st_spare[0], vfd), vfd);
  assert_evr_ok(evr_io_init(io->base.loop, &st_fresh, vfd));
  assert_evr_ok(evr_io_start(&st_fresh, EVR_READ, st_fresh_cb));
}

static void test_io_stale_event_of_reused_fd_is_dropped(void **state) {
  (void)state;
  make_pipe(st_a);
  make_pipe(st_b);
  make_pipe(st_spare);
  st_first = st_old_calls = st_fresh_calls = 0;
  assert_int_equal(write(st_a[1], "a", 1), 1);
  assert_int_equal(write(st_b[1], "b", 1), 1);
  assert_int_equal(write(st_spare[1], "s", 1), 1);
  assert_evr_ok(evr_io_init(test_loop, &st_io_a, st_a[0]));
  assert_evr_ok(evr_io_init(test_loop, &st_io_b, st_b[0]));
  assert_evr_ok(evr_io_start(&st_io_a, EVR_READ, st_cb));
  assert_evr_ok(evr_io_start(&st_io_b, EVR_READ, st_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(st_first, 1);
  assert_int_equal(st_old_calls, 1);
  assert_int_equal(st_fresh_calls, 0);
  /* Next iteration: the fresh watcher sees its own (level) readiness. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(st_fresh_calls, 1);
  assert_int_equal(st_old_calls, 2); /* the survivor, level-triggered */
  assert_evr_ok(evr_close(&st_io_a.base, NULL));
  assert_evr_ok(evr_close(&st_io_b.base, NULL));
  assert_evr_ok(evr_close(&st_fresh.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  int all[] = {st_a[0], st_a[1], st_b[0], st_b[1], st_spare[0], st_spare[1]};
  for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) close(all[i]);
}

/* Closing a watcher from inside its own callback ends its events. */
static void self_close_cb(evr_io_t *io, unsigned ev) {
  (void)ev;
  calls++;
  assert_evr_ok(evr_close(&io->base, NULL));
  assert_int_equal(evr_is_active(&io->base), 0);
}

static void test_io_close_from_own_callback(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  make_pipe(fds);
  calls = 0;
  assert_int_equal(write(fds[1], "x", 1), 1);
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, self_close_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(calls, 1);
  close(fds[0]);
  close(fds[1]);
}

/* Stopping a watcher whose fd the user already closed is harmless. */
static void test_io_stop_after_fd_closed(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  make_pipe(fds);
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, count_cb));
  assert_int_equal(close(fds[0]), 0);
  assert_evr_ok(evr_io_stop(&io));
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[1]);
}

/* Stop and restart in one iteration (one-shot re-arming): the watcher keeps
 * working, a stopped one hears nothing, and a different watcher can take
 * the fd of a stopped one at once. */
static void test_io_stop_restart_and_takeover(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io, other;
  make_socketpair(fds);
  calls = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, count_cb));
  assert_int_equal(write(fds[1], "x", 1), 1);
  for (int i = 0; i < 3; i++) {
    assert_evr_ok(evr_io_stop(&io));
    assert_evr_ok(evr_io_start(&io, EVR_READ, count_cb));
  }
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(calls, 1);
  /* Restart with another interest. */
  assert_evr_ok(evr_io_stop(&io));
  assert_evr_ok(evr_io_start(&io, EVR_WRITE, count_cb));
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(calls, 2);
  assert_int_equal(last_ev & (EVR_READ | EVR_WRITE), EVR_WRITE);
  /* Stopped (still readable): nothing, over several iterations. */
  assert_evr_ok(evr_io_stop(&io));
  for (int i = 0; i < 3; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(calls, 2);
  /* Another watcher on the same fd, in the iteration io stopped in. */
  assert_evr_ok(evr_io_start(&io, EVR_READ, count_cb));
  assert_evr_ok(evr_io_stop(&io));
  assert_evr_ok(evr_io_init(test_loop, &other, fds[0]));
  assert_evr_ok(evr_io_start(&other, EVR_READ, count_cb));
  assert_int_equal(evr_io_start(&io, EVR_READ, count_cb), EVR_EEXIST);
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(calls, 3);
  assert_evr_ok(evr_close(&other.base, NULL));
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

/* Leave a stale epoll registration: a watcher on old[0] is stopped, its
 * descriptor closed while the file stays open elsewhere (a dup, returned),
 * and the watcher closed, all in one iteration; then the old file becomes
 * readable for good. Returns the descriptor number that was closed in
 * *num. */
static int leave_closed_file_open_elsewhere(evr_io_t *io, int old[2], int *num) {
  make_socketpair(old);
  assert_evr_ok(evr_io_init(test_loop, io, old[0]));
  assert_evr_ok(evr_io_start(io, EVR_READ, count_cb));
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  int keep = dup(old[0]);
  assert_true(keep >= 0);
  *num = old[0];
  assert_evr_ok(evr_io_stop(io));
  assert_int_equal(close(*num), 0);
  assert_evr_ok(evr_close(&io->base, NULL));
  assert_int_equal(write(old[1], "old", 3), 3);
  return keep;
}

/* A watcher stopped and its fd closed at once while the file stays open
 * elsewhere (a dup here; a forked child in real life), then a new file on
 * the same fd number: the new watcher hears only its own file, and the
 * loop does not keep waking up for the old one. */
/* The timer may fire in the timer phase of the ONCE run that would then
 * block in poll with nothing else to wake it (a slow or loaded machine):
 * stopping the loop makes that iteration's poll return at once. */
static void iter_count_timer_cb(evr_timer_t *t) {
  calls += 1000;
  evr_loop_stop(t->loop);
}

static void test_io_closed_file_open_elsewhere(void **state) {
  (void)state;
  int old[2], fresh[2];
  evr_io_t io, io2;
  evr_timer_t t;
  calls = 0;
  int num, keep = leave_closed_file_open_elsewhere(&io, old, &num);
  /* A new file on the same number, watched. */
  make_socketpair(fresh);
  if (fresh[1] == num) { /* keep the watched end on num */
    int t2 = fresh[0];
    fresh[0] = fresh[1];
    fresh[1] = t2;
  }
  if (fresh[0] != num) {
    assert_int_equal(dup2(fresh[0], num), num);
    assert_int_equal(close(fresh[0]), 0);
  }
  assert_evr_ok(evr_io_init(test_loop, &io2, num));
  assert_evr_ok(evr_io_start(&io2, EVR_READ, count_cb));
  /* Until a 100 ms timer fires, the loop may wake a few times, not spin. */
  assert_evr_ok(evr_timer_init(test_loop, &t));
  assert_evr_ok(evr_timer_start(&t, iter_count_timer_cb, 100, 0));
  int iterations = 0;
  while (calls < 1000) {
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
    iterations++;
    assert_true(iterations < 20);
  }
  assert_int_equal(calls, 1000); /* io2's file was never readable */
  assert_int_equal(write(fresh[1], "new", 3), 3);
  while (calls == 1000) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(calls, 1001);
  char buf[8];
  assert_int_equal(read(num, buf, sizeof buf), 3);
  assert_memory_equal(buf, "new", 3);
  assert_evr_ok(evr_close(&io2.base, NULL));
  assert_evr_ok(evr_timer_stop(&t));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(num);
  close(keep);
  close(old[1]);
  close(fresh[1]);
}

/* Many descriptors, random activity: every byte written is read exactly
 * once by the right watcher, with watchers stopped and restarted at random.
 * Seeded; EVR_TEST_SEED overrides and the seed is printed. */
#define MANY 5000
struct many {
  evr_io_t io;
  int peer;
  unsigned written, read;
};
static struct many *many;
static unsigned many_reads;
static void many_cb(evr_io_t *io, unsigned ev) {
  struct many *m = (struct many *)(void *)io; /* io is the first member */
  assert_true(ev & EVR_READ);
  unsigned char buf[64];
  ssize_t n = read(evr_io_fd(io), buf, sizeof buf);
  assert_true(n > 0);
  for (ssize_t i = 0; i < n; i++)
    assert_int_equal(buf[i], (unsigned char)(m->read + (unsigned)i));
  m->read += (unsigned)n;
  many_reads += (unsigned)n;
}

static void test_io_many_descriptors_random_activity(void **state) {
  (void)state;
  long need = 2 * MANY + 64;
  long lim = raise_nofile(need);
  unsigned n = lim < need ? (unsigned)(lim - 64) / 2 : MANY; /* refusal: fewer pairs */
  assert_true(lim >= 2 * 256 + 64);
  const char *env = getenv("EVR_TEST_SEED");
  unsigned seed = env ? (unsigned)strtoul(env, NULL, 0) : 0x5eed0002u;
  print_message("many-fd test: %u socket pairs, seed 0x%x\n", n, seed);
  srand(seed);
  int fds0 = count_open_fds();
  many = calloc(n, sizeof *many);
  assert_non_null(many);
  many_reads = 0;
  for (unsigned i = 0; i < n; i++) {
    int sv[2];
    make_socketpair(sv);
    many[i].peer = sv[1];
    assert_evr_ok(evr_io_init(test_loop, &many[i].io, sv[0]));
    assert_evr_ok(evr_io_start(&many[i].io, EVR_READ, many_cb));
  }
  /* Fewer pairs get proportionally fewer writes and toggles per round:
   * the same bytes per pair as with MANY, so that one iteration still
   * drains what a restarted watcher has pending (each read takes 64). */
  unsigned writes = 50u * n / MANY, toggles = 20u * n / MANY;
  if (!writes) writes = 1;
  if (!toggles) toggles = 1;
  unsigned total_written = 0;
  for (int round = 0; round < 200; round++) {
    for (unsigned k = 0; k < writes; k++) {
      struct many *m = &many[(unsigned)rand() % n];
      unsigned char buf[8];
      unsigned len = 1 + (unsigned)rand() % sizeof buf;
      for (unsigned j = 0; j < sizeof buf; j++) buf[j] = (unsigned char)(m->written + j);
      assert_int_equal(write(m->peer, buf, len), (ssize_t)len);
      m->written += len;
      total_written += len;
    }
    for (unsigned k = 0; k < toggles; k++) {
      struct many *m = &many[(unsigned)rand() % n];
      if (evr_is_active(&m->io.base))
        assert_evr_ok(evr_io_stop(&m->io));
      else
        assert_evr_ok(evr_io_start(&m->io, EVR_READ, many_cb));
    }
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    for (unsigned i = 0; i < n; i++)
      if (evr_is_active(&many[i].io.base)) assert_int_equal(many[i].read, many[i].written);
  }
  /* Restart everything: the stopped ones catch up (a backend may harvest
   * a bounded batch per poll, so give it a few iterations). */
  for (unsigned i = 0; i < n; i++)
    if (!evr_is_active(&many[i].io.base))
      assert_evr_ok(evr_io_start(&many[i].io, EVR_READ, many_cb));
  for (int i = 0; i < 100 && many_reads != total_written; i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(many_reads, total_written);
  for (unsigned i = 0; i < n; i++) {
    assert_int_equal(many[i].read, many[i].written);
    assert_evr_ok(evr_close(&many[i].io.base, NULL));
  }
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  for (unsigned i = 0; i < n; i++) {
    close(evr_io_fd(&many[i].io));
    close(many[i].peer);
  }
  free(many);
  many = NULL;
  assert_fds_back_to(fds0);
}

/* The epoll set cannot be rebuilt (epoll_create1 fails with EMFILE while
 * the backend repairs a stale registration, as in the test above): the
 * loop must return the error, not spin on the stale file's events. Under
 * the other backends nothing is stale and the loop just waits for its
 * timer. A check hook counts iterations and stops a spinning loop. */
static int spin_iterations;
static void spin_check_cb(struct evr_hook *h) {
  if (++spin_iterations >= 1000) evr_loop_stop(h->base.loop);
}
static void stop_timer_cb(evr_timer_t *t) { evr_loop_stop(t->loop); }

static void test_io_failed_repair_is_an_error_not_a_spin(void **state) {
  (void)state;
  if (!FAULT_AVAILABLE) skip(); /* no -Wl,--wrap on this linker */
  int old[2];
  /* static: a failed check leaves them open for the fixture's teardown */
  static evr_io_t io;
  static evr_timer_t t;
  static evr_check_t chk;
  int num, keep = leave_closed_file_open_elsewhere(&io, old, &num);
  (void)num;
  assert_evr_ok(evr_timer_init(test_loop, &t));
  assert_evr_ok(evr_timer_start(&t, stop_timer_cb, 200, 0));
  assert_evr_ok(evr_check_init(test_loop, &chk));
  assert_evr_ok(evr_check_start(&chk, spin_check_cb));
  spin_iterations = 0;
  fault_arm("epoll_create1", 1, EMFILE, 0);
  int rc = evr_loop_run(test_loop, EVR_RUN_DEFAULT);
  unsigned long failed = fault_injected();
  fault_disarm();
  assert_true(spin_iterations < 1000);
  if (!strcmp(evr_loop_backend(test_loop), "epoll")) {
    assert_true(failed >= 1);
    assert_int_equal(rc, EVR_EMFILE);
    /* With descriptors back, the next run repairs the set and sleeps until
     * the timer. */
    spin_iterations = 0;
    assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 1);
    assert_true(spin_iterations < 1000);
  } else {
    assert_int_equal(failed, 0);
    assert_int_equal(rc, 1);
  }
  assert_false(evr_timer_is_active(&t)); /* it stopped the loop */
  assert_evr_ok(evr_timer_stop(&t));
  assert_evr_ok(evr_close(&chk.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(keep);
  close(old[1]);
}

/* Counts and consumes what is readable. */
static void drain_cb(evr_io_t *io, unsigned ev) {
  char buf[16];
  calls++;
  last_ev = ev;
  if (ev & EVR_READ) assert_true(read(evr_io_fd(io), buf, sizeof buf) > 0);
}

/* Put a new socket pair's first end on descriptor number num (closed by
 * the caller just before); returns its peer. */
static int socketpair_on(int num) {
  int fresh[2];
  make_socketpair(fresh);
  if (fresh[1] == num) {
    int t = fresh[0];
    fresh[0] = fresh[1];
    fresh[1] = t;
  }
  if (fresh[0] != num) {
    assert_int_equal(dup2(fresh[0], num), num);
    assert_int_equal(close(fresh[0]), 0);
  }
  return fresh[1];
}

/* Run ONCE iterations until calls reaches want, with a 10 s guard timer
 * that stops the loop (a watcher that never fires). */
static void run_until_calls(int want) {
  static evr_timer_t guard;
  assert_evr_ok(evr_timer_init(test_loop, &guard));
  assert_evr_ok(evr_timer_start(&guard, stop_timer_cb, 10000, 0));
  while (calls < want && evr_timer_is_active(&guard))
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_evr_ok(evr_timer_stop(&guard));
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(calls, want);
}

/* A watcher stopped, its descriptor closed and the number reused by a new
 * file, then restarted with the same interest: it watches the new file,
 * whether the restart comes in the iteration of the stop or later. */
static void test_io_restart_after_fd_closed_and_reused(void **state) {
  (void)state;
  for (int later = 0; later < 2; later++) {
    int fds[2];
    static evr_io_t io;
    make_socketpair(fds);
    calls = 0;
    assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
    assert_evr_ok(evr_io_start(&io, EVR_READ, drain_cb));
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    assert_evr_ok(evr_io_stop(&io));
    if (later) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    int num = fds[0];
    assert_int_equal(close(num), 0);
    close(fds[1]);
    int peer = socketpair_on(num);
    assert_evr_ok(evr_io_start(&io, EVR_READ, drain_cb));
    assert_int_equal(write(peer, "x", 1), 1);
    run_until_calls(1);
    assert_evr_ok(evr_close(&io.base, NULL));
    assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
    close(num);
    close(peer);
  }
}

static int walk_count;
static void count_walk(evr_handle_t *h, void *arg) {
  (void)h;
  (void)arg;
  walk_count++;
}

static int handles_open(void) {
  walk_count = 0;
  evr_loop_walk(test_loop, count_walk, NULL);
  return walk_count;
}

/* evr_io_init() on a watcher that is open but stopped (in this iteration,
 * or earlier) re-initialises it in place: the handle list stays whole and
 * the watcher works, on a new file that got the same number too. On an
 * active watcher it is EVR_EBUSY and changes nothing. */
static void test_io_reinit_of_stopped_watcher(void **state) {
  (void)state;
  int a[2], b[2];
  static evr_io_t ia, ib;
  make_socketpair(a);
  make_socketpair(b);
  int base = handles_open();
  assert_evr_ok(evr_io_init(test_loop, &ia, a[0]));
  assert_evr_ok(evr_io_init(test_loop, &ib, b[0]));
  assert_evr_ok(evr_io_start(&ia, EVR_READ, drain_cb));
  assert_evr_ok(evr_io_start(&ib, EVR_READ, drain_cb));
  assert_int_equal(handles_open(), base + 2);
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  calls = 0;
  for (int later = 0; later < 2; later++) {
    assert_evr_ok(evr_io_stop(&ia));
    if (later) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    /* The documented way to watch a new file on the same number. */
    int num = a[0];
    assert_int_equal(close(num), 0);
    close(a[1]);
    a[1] = socketpair_on(num);
    assert_evr_ok(evr_io_init(test_loop, &ia, num));
    assert_int_equal(handles_open(), base + 2);
    assert_evr_ok(evr_io_start(&ia, EVR_READ, drain_cb));
    assert_int_equal(write(a[1], "x", 1), 1);
    run_until_calls(later + 1);
  }
  /* ia is active again: re-init is refused and changes nothing. */
  assert_int_equal(evr_io_init(test_loop, &ia, a[0]), EVR_EBUSY);
  assert_int_equal(handles_open(), base + 2);
  assert_true(evr_is_active(&ia.base));
  /* Both still close cleanly: the fixture's teardown checks the rest. */
  assert_evr_ok(evr_close(&ia.base, NULL));
  assert_evr_ok(evr_close(&ib.base, NULL));
  assert_int_equal(handles_open(), base);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(a[0]);
  close(a[1]);
  close(b[0]);
  close(b[1]);
}

/* evr_io_resume(): the caller vouches that the descriptor stayed open, so
 * re-arming in the iteration of the stop costs no system call under epoll,
 * where evr_io_start() makes one to check the descriptor. Both keep working
 * (fault injection only counts the epoll_ctl calls here). */
static void test_io_resume_rearms_without_a_system_call(void **state) {
  (void)state;
  int fds[2];
  static evr_io_t io;
  make_socketpair(fds);
  calls = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_resume(&io, EVR_READ, drain_cb)); /* never started: a start */
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  int epoll = !strcmp(evr_loop_backend(test_loop), "epoll");
  for (int round = 0; round < 3; round++) {
    fault_arm("epoll_ctl", ~0ul, 0, 0); /* count, never fail */
    for (int i = 0; i < 10; i++) {
      assert_evr_ok(evr_io_stop(&io));
      assert_evr_ok(evr_io_resume(&io, EVR_READ, drain_cb));
    }
    unsigned long resumed = fault_calls();
    fault_arm("epoll_ctl", ~0ul, 0, 0);
    for (int i = 0; i < 10; i++) {
      assert_evr_ok(evr_io_stop(&io));
      assert_evr_ok(evr_io_start(&io, EVR_READ, drain_cb));
    }
    unsigned long started = fault_calls();
    fault_disarm();
    if (FAULT_AVAILABLE && epoll) {
      assert_int_equal(resumed, 0);
      assert_int_equal(started, 10);
    }
    assert_int_equal(write(fds[1], "x", 1), 1);
    run_until_calls(round + 1);
  }
  /* Another interest is applied either way. */
  assert_evr_ok(evr_io_stop(&io));
  assert_evr_ok(evr_io_resume(&io, EVR_WRITE, drain_cb));
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0); /* writable at once */
  assert_int_equal(calls, 4);
  assert_int_equal(last_ev & (EVR_READ | EVR_WRITE), EVR_WRITE);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_io_readable_only_when_data),
      EVR_TEST(test_io_writable_and_both),
      EVR_TEST(test_io_write_interest_follows_buffer_space),
      EVR_TEST(test_io_set_and_stop_from_callback),
      EVR_TEST(test_io_eof_on_pipe_and_socketpair),
      EVR_TEST(test_io_peer_gone_reaches_writer),
      EVR_TEST(test_io_error_paths),
      EVR_TEST(test_io_regular_file),
      EVR_TEST(test_io_stale_event_of_reused_fd_is_dropped),
      EVR_TEST(test_io_close_from_own_callback),
      EVR_TEST(test_io_stop_after_fd_closed),
      EVR_TEST(test_io_stop_restart_and_takeover),
      EVR_TEST(test_io_closed_file_open_elsewhere),
      EVR_TEST(test_io_failed_repair_is_an_error_not_a_spin),
      EVR_TEST(test_io_restart_after_fd_closed_and_reused),
      EVR_TEST(test_io_reinit_of_stopped_watcher),
      EVR_TEST(test_io_resume_rearms_without_a_system_call),
      EVR_TEST(test_io_many_descriptors_random_activity),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
