/* tests/test_fork.c: evr_loop_fork(): after fork() the child's loop works
 * (timers, I/O, async, posts, signals, the pool) on its own backend state,
 * and the parent's loop is unaffected by what the child does. */
/* evr-test: backends novalgrind timeout=300 */
/* Not run under valgrind: a forked child that starts threads does not make
 * progress there (the ASan, UBSan and TSan runs cover fork). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "evr_config.h"
#include "helpers.h"

/* ---- handles used on both sides ---- */

static int timer_fired, io_fired, async_fired, posted_ran, sig_fired, work_done;
static int work_status;

static void reset(void) {
  timer_fired = io_fired = async_fired = posted_ran = sig_fired = work_done = 0;
  work_status = 999;
}

static void on_timer(evr_timer_t *t) {
  (void)t;
  timer_fired++;
}

static void on_io(evr_io_t *io, unsigned events) {
  char buf[16];
  if (events & EVR_READ) {
    ssize_t n = read(evr_io_fd(io), buf, sizeof buf);
    if (n > 0) io_fired++;
  }
}

static void on_async(evr_async_t *a) {
  (void)a;
  async_fired++;
}

static void on_post(void *arg) {
  (void)arg;
  posted_ran++;
}

static void on_signal(evr_signal_t *s, int signum) {
  (void)s;
  if (signum == SIGUSR1) sig_fired++;
}

static void nop_work(evr_work_t *req) { (void)req; }
static void on_work_done(evr_work_t *req, int status) {
  (void)req;
  work_done++;
  work_status = status;
}

static void close_all(evr_handle_t *h, void *arg) {
  (void)arg;
  (void)evr_close(h, NULL);
}

/* How many more descriptors than its parent a child has once it made one
 * kqueue, as evr_loop_fork() makes: 0, except under libkqueue. Its atfork
 * child handler closes each inherited kqueue's epoll set and pipe and its
 * process-wide descriptors, all of which the child's first kqueue() opens
 * again; but some versions leave one more descriptor per inherited kqueue
 * open, which nobody can close (libkqueue at commit f966089 leaves the
 * eventfd of the signal filter; 2.6.1 leaves none). Measured here with
 * libkqueue alone, in a child of the same parent, so that the check of
 * evr's own descriptors after evr_loop_fork() stays exact. A real kqueue is
 * not inherited at all, and the BSDs and macOS need no such measure. */
#if EVR_KQUEUE_EMULATED
int kqueue(void); /* libkqueue's <sys/event.h> is not on the tests' path */
static int libkqueue_child_surplus(void) {
  if (strcmp(requested_backend(), "kqueue") != 0) return 0;
  int parent = count_open_fds();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (kqueue() < 0) _exit(255);
    int d = count_open_fds() - parent;
    _exit(d >= -100 && d < 100 ? 100 + d : 254);
  }
  int st;
  pid_t r;
  do
    r = waitpid(pid, &st, 0);
  while (r < 0 && errno == EINTR);
  assert_int_equal(r, pid);
  assert_true(WIFEXITED(st));
  assert_true(WEXITSTATUS(st) < 200);
  return WEXITSTATUS(st) - 100;
}
#else
static int libkqueue_child_surplus(void) { return 0; }
#endif

/* Run until cond holds or the bound; returns the cond. */
#define RUN_UNTIL(loop, cond)                                            \
  do {                                                                   \
    for (int i_ = 0; i_ < 1000 && !(cond); i_++)                         \
      if (evr_loop_run((loop), EVR_RUN_ONCE) < 0) break;                 \
  } while (0)

static void test_fork_child_and_parent_loops_both_work(void **state) {
  (void)state;
  static evr_timer_t t;
  static evr_io_t io;
  static evr_async_t a;
  static evr_signal_t s;
  int p[2];
  reset();
  make_pipe(p);
  assert_evr_ok(evr_timer_init(test_loop, &t));
  assert_evr_ok(evr_io_init(test_loop, &io, p[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, on_io));
  assert_evr_ok(evr_async_init(test_loop, &a, on_async));
  assert_evr_ok(evr_signal_init(test_loop, &s));
  assert_evr_ok(evr_signal_start(&s, SIGUSR1, on_signal));
  /* Queued before the fork, not yet run: it runs on both sides. */
  assert_evr_ok(evr_post(test_loop, on_post, NULL));
  int fds = count_open_fds();
  int surplus = libkqueue_child_surplus();

  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    CHILD_CHECK(evr_loop_fork(test_loop) == 0);
    /* The shared wake-up descriptor and epoll or kqueue set were
     * replaced, not added to. */
    CHILD_CHECK(count_open_fds() == fds + surplus);
    /* Stopping the watcher here must not touch the parent's registration
     * (with epoll it would, through a shared set); the child watches a
     * pipe of its own instead. */
    CHILD_CHECK(evr_io_stop(&io) == 0);
    int q[2];
    CHILD_CHECK(pipe(q) == 0);
    static evr_io_t io2;
    CHILD_CHECK(evr_io_init(test_loop, &io2, q[0]) == 0);
    CHILD_CHECK(evr_io_start(&io2, EVR_READ, on_io) == 0);
    RUN_UNTIL(test_loop, posted_ran == 1);
    CHILD_CHECK(posted_ran == 1);
    CHILD_CHECK(evr_timer_start(&t, on_timer, 1, 0) == 0);
    RUN_UNTIL(test_loop, timer_fired == 1);
    CHILD_CHECK(timer_fired == 1);
    CHILD_CHECK(write(q[1], "c", 1) == 1);
    RUN_UNTIL(test_loop, io_fired == 1);
    CHILD_CHECK(io_fired == 1);
    CHILD_CHECK(evr_async_send(&a) == 0);
    RUN_UNTIL(test_loop, async_fired == 1);
    CHILD_CHECK(async_fired == 1);
    CHILD_CHECK(raise(SIGUSR1) == 0);
    RUN_UNTIL(test_loop, sig_fired == 1);
    CHILD_CHECK(sig_fired == 1);
    /* The pool starts afresh in the child. */
    static evr_work_t w;
    CHILD_CHECK(evr_work_submit(test_loop, &w, nop_work, on_work_done) == 0);
    RUN_UNTIL(test_loop, work_done == 1);
    CHILD_CHECK(work_done == 1 && work_status == 0);
    evr_loop_walk(test_loop, close_all, NULL);
    CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_DEFAULT) == 0);
    CHILD_CHECK(evr_loop_free(test_loop) == 0);
    _exit(0);
  }
  /* Let the child finish first: with a shared epoll set, anything it did
   * through the inherited set would now show here. */
  assert_child_ok(pid);
  RUN_UNTIL(test_loop, posted_ran == 1);
  assert_int_equal(posted_ran, 1);
  assert_evr_ok(evr_timer_start(&t, on_timer, 1, 0));
  RUN_UNTIL(test_loop, timer_fired == 1);
  assert_int_equal(timer_fired, 1);
  assert_int_equal(write(p[1], "p", 1), 1);
  RUN_UNTIL(test_loop, io_fired == 1);
  assert_int_equal(io_fired, 1);
  assert_evr_ok(evr_async_send(&a));
  RUN_UNTIL(test_loop, async_fired == 1);
  assert_int_equal(async_fired, 1);
  assert_int_equal(raise(SIGUSR1), 0);
  RUN_UNTIL(test_loop, sig_fired == 1);
  assert_int_equal(sig_fired, 1);
  assert_fds_back_to(fds);
  evr_loop_walk(test_loop, close_all, NULL);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  close(p[0]);
  close(p[1]);
}

/* ---- work pending at the fork ---- */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered;

static void gated_work(evr_work_t *req) {
  (void)req;
  pthread_mutex_lock(&gate_lock);
  gate_entered = 1;
  pthread_cond_broadcast(&gate_cond);
  while (!gate_open) pthread_cond_wait(&gate_cond, &gate_lock);
  pthread_mutex_unlock(&gate_lock);
}

static void test_fork_pending_work_is_cancelled_in_child_only(void **state) {
  (void)state;
  static evr_work_t running, queued;
  reset();
  gate_open = gate_entered = 0;
  assert_evr_ok(evr_threadpool_set_size(1));
  assert_evr_ok(evr_work_submit(test_loop, &running, gated_work, on_work_done));
  assert_evr_ok(evr_work_submit(test_loop, &queued, nop_work, on_work_done));
  pthread_mutex_lock(&gate_lock);
  while (!gate_entered) pthread_cond_wait(&gate_cond, &gate_lock);
  pthread_mutex_unlock(&gate_lock);

  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* No new thread is started here: the child of a multi-threaded process
     * only sees both requests cancelled. */
    CHILD_CHECK(evr_loop_fork(test_loop) == 0);
    CHILD_CHECK(evr_loop_alive(test_loop) == 1);
    CHILD_CHECK(evr_work_cancel(&queued) == EVR_EBUSY); /* already done */
    RUN_UNTIL(test_loop, work_done == 2);
    CHILD_CHECK(work_done == 2);
    CHILD_CHECK(work_status == EVR_ECANCELED);
    CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_DEFAULT) == 0);
    CHILD_CHECK(evr_loop_free(test_loop) == 0);
    _exit(0);
  }
  assert_child_ok(pid);
  /* The parent's requests are untouched: both complete normally. */
  assert_int_equal(work_done, 0);
  pthread_mutex_lock(&gate_lock);
  gate_open = 1;
  pthread_cond_broadcast(&gate_cond);
  pthread_mutex_unlock(&gate_lock);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(work_done, 2);
  assert_int_equal(work_status, 0);
}

static void test_fork_rejects_null(void **state) {
  (void)state;
  assert_int_equal(evr_loop_fork(NULL), EVR_EINVAL);
}

/* Forking a loop with nothing in it, twice in a row (a grandchild), keeps
 * working: each evr_loop_fork() builds state for its own process. */
static void test_fork_grandchild_loop_works(void **state) {
  (void)state;
  static evr_timer_t t;
  reset();
  assert_evr_ok(evr_timer_init(test_loop, &t));
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    CHILD_CHECK(evr_loop_fork(test_loop) == 0);
    pid_t gpid = fork();
    CHILD_CHECK(gpid >= 0);
    if (gpid == 0) {
      CHILD_CHECK(evr_loop_fork(test_loop) == 0);
      CHILD_CHECK(evr_timer_start(&t, on_timer, 1, 0) == 0);
      CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_DEFAULT) == 0);
      CHILD_CHECK(timer_fired == 1);
      _exit(0);
    }
    int st;
    pid_t r;
    do
      r = waitpid(gpid, &st, 0);
    while (r < 0 && errno == EINTR);
    CHILD_CHECK(r == gpid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHILD_CHECK(evr_timer_start(&t, on_timer, 1, 0) == 0);
    CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_DEFAULT) == 0);
    CHILD_CHECK(timer_fired == 1);
    _exit(0);
  }
  assert_child_ok(pid);
  assert_evr_ok(evr_timer_start(&t, on_timer, 1, 0));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(timer_fired, 1);
}

/* ---- the parent keeps hearing its watchers whatever the child does ---- */

static int accepted;
static void on_accept(evr_listener_t *l, int fd) {
  (void)l;
  if (fd >= 0) {
    accepted++;
    (void)close(fd);
  }
}

static int iterations;
static void count_iteration(struct evr_hook *h) {
  (void)h;
  iterations++;
}

static void on_guard(evr_timer_t *t) {
  (void)t;
  evr_loop_stop(t->loop);
}

/* Connect a blocking client to l and run the parent's loop until the
 * accept callback ran or a 10 s guard timer fired (a deafened listener). */
static void assert_parent_accepts(evr_listener_t *l) {
  evr_addr_t a;
  static evr_timer_t guard;
  assert_evr_ok(evr_listener_sockname(l, &a));
  int c = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(c >= 0);
  assert_int_equal(connect(c, (const struct sockaddr *)&a, sizeof(struct sockaddr_in)), 0);
  assert_evr_ok(evr_timer_init(test_loop, &guard));
  assert_evr_ok(evr_timer_start(&guard, on_guard, 10000, 0));
  accepted = 0;
  while (!accepted && evr_timer_is_active(&guard))
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  int got = accepted;
  assert_evr_ok(evr_timer_stop(&guard));
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  (void)close(c);
  assert_int_equal(got, 1);
}

static void listen_loopback(evr_listener_t *l) {
  evr_addr_t a;
  assert_evr_ok(evr_addr_parse(&a, "127.0.0.1:0"));
  assert_evr_ok(evr_listener_init(test_loop, l));
  assert_evr_ok(evr_listen(l, &a, NULL, on_accept));
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
}

/* The parent pauses its listener, forks, and resumes it with the same
 * interest in the same iteration (no system call under epoll's lazy
 * removal) after the child called evr_loop_fork(): the child must not
 * have applied the pending removal to the epoll set it shares with the
 * parent, or the parent never hears of a connection again. */
static void test_fork_child_never_changes_parents_watchers(void **state) {
  (void)state;
  static evr_listener_t l;
  listen_loopback(&l);
  assert_evr_ok(evr_listener_pause(&l));
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    CHILD_CHECK(evr_loop_fork(test_loop) == 0);
    _exit(0);
  }
  assert_child_ok(pid);
  assert_evr_ok(evr_listener_resume(&l));
  assert_parent_accepts(&l);
}

/* In a child that did not call evr_loop_fork(): close every inherited
 * handle, then go on with the loop as if it were new. */
static void child_closes_all_and_goes_on(void) {
  evr_loop_walk(test_loop, close_all, NULL);
  CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_NOWAIT) == 0);
  /* The child's loop still works: a new watcher, likely on the number
   * the listener had. */
  static evr_io_t io;
  int p[2];
  CHILD_CHECK(pipe(p) == 0);
  CHILD_CHECK(evr_io_init(test_loop, &io, p[0]) == 0);
  CHILD_CHECK(evr_io_start(&io, EVR_READ, on_io) == 0);
  CHILD_CHECK(write(p[1], "x", 1) == 1);
  RUN_UNTIL(test_loop, io_fired == 1);
  CHILD_CHECK(io_fired == 1);
  CHILD_CHECK(evr_close(&io.base, NULL) == 0);
  CHILD_CHECK(close(p[0]) == 0 && close(p[1]) == 0);
  /* Nothing is left registered: the loop sleeps until its timer, it
   * does not spin on a descriptor that is gone. */
  static evr_timer_t t;
  static evr_check_t chk;
  CHILD_CHECK(evr_timer_init(test_loop, &t) == 0);
  CHILD_CHECK(evr_timer_start(&t, on_timer, 20, 0) == 0);
  CHILD_CHECK(evr_check_init(test_loop, &chk) == 0);
  CHILD_CHECK(evr_check_start(&chk, count_iteration) == 0);
  evr_unref(&chk.base);
  CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_DEFAULT) == 0);
  CHILD_CHECK(timer_fired == 1 && iterations < 100);
  CHILD_CHECK(evr_close(&chk.base, NULL) == 0 && evr_timer_stop(&t) == 0);
  CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_DEFAULT) == 0);
  CHILD_CHECK(evr_loop_free(test_loop) == 0);
  _exit(0);
}

/* The same when the child does not call evr_loop_fork() and closes every
 * handle it inherited (what a child about to exec or exit may do): closing
 * touches no kernel object of the parent. */
static void test_fork_child_closing_inherited_handles_leaves_parent_alone(void **state) {
  (void)state;
  static evr_listener_t l;
  reset();
  listen_loopback(&l);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) child_closes_all_and_goes_on();
  assert_child_ok(pid);
  assert_parent_accepts(&l);
  /* Pause in the parent, the child closes everything, resume. */
  assert_evr_ok(evr_listener_pause(&l));
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) child_closes_all_and_goes_on();
  assert_child_ok(pid);
  assert_evr_ok(evr_listener_resume(&l));
  assert_parent_accepts(&l);
}

/* A stream that reads (on io_uring: a receive in flight on the parent's
 * ring) across a fork. The child's evr_loop_fork() gives it a ring of its
 * own on which the stream writes; the parent's stream goes on reading and
 * writing as if nothing happened. */
struct fstream {
  evr_stream_t s;
  char buf[64];
  size_t len;
};
static void fstream_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct fstream *f = (struct fstream *)s;
  if (nread <= 0) return;
  if (f->len + (size_t)nread > sizeof f->buf) nread = (ssize_t)(sizeof f->buf - f->len);
  memcpy(f->buf + f->len, buf, (size_t)nread);
  f->len += (size_t)nread;
}

static void test_fork_reading_stream_serves_parent_and_child(void **state) {
  (void)state;
  reset();
  int sv[2];
  make_socketpair(sv);
  static struct fstream f;
  memset(&f, 0, sizeof f);
  assert_evr_ok(evr_stream_init(test_loop, &f.s));
  assert_evr_ok(evr_stream_open(&f.s, sv[0]));
  assert_evr_ok(evr_stream_read_start(&f.s, fstream_read));
  assert_int_equal(write(sv[1], "one", 3), 3);
  RUN_UNTIL(test_loop, f.len == 3);
  assert_int_equal(f.len, 3);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    CHILD_CHECK(evr_loop_fork(test_loop) == 0);
    CHILD_CHECK(evr_stream_write_copy(&f.s, "kid", 3) == 0);
    RUN_UNTIL(test_loop, evr_stream_write_queue_size(&f.s) == 0);
    CHILD_CHECK(evr_stream_write_queue_size(&f.s) == 0);
    _exit(0);
  }
  assert_child_ok(pid);
  char got[8];
  assert_int_equal(read(sv[1], got, sizeof got), 3);
  assert_memory_equal(got, "kid", 3);
  /* The parent still hears its peer, and still writes. */
  assert_int_equal(write(sv[1], "two", 3), 3);
  RUN_UNTIL(test_loop, f.len == 6);
  assert_int_equal(f.len, 6);
  assert_memory_equal(f.buf, "onetwo", 6);
  assert_evr_ok(evr_stream_write_copy(&f.s, "mom", 3));
  RUN_UNTIL(test_loop, evr_stream_write_queue_size(&f.s) == 0);
  assert_int_equal(read(sv[1], got, sizeof got), 3);
  assert_memory_equal(got, "mom", 3);
  assert_evr_ok(evr_close(&f.s.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  close(sv[1]);
}

/* A child that does not call evr_loop_fork() closes a reading stream it
 * inherited and starts reading on another (on io_uring: the parent's
 * receive in flight, the socket's slot in the parent's file table, and a
 * new receive would all be the parent's ring's), then exits: the parent's
 * streams go on reading and writing as if nothing happened. */
static void test_fork_child_closing_inherited_streams_leaves_parent_alone(void **state) {
  (void)state;
  reset();
  int sv[2], sw[2];
  make_socketpair(sv);
  make_socketpair(sw);
  static struct fstream f, g;
  memset(&f, 0, sizeof f);
  memset(&g, 0, sizeof g);
  assert_evr_ok(evr_stream_init(test_loop, &f.s));
  assert_evr_ok(evr_stream_open(&f.s, sv[0]));
  assert_evr_ok(evr_stream_init(test_loop, &g.s));
  assert_evr_ok(evr_stream_open(&g.s, sw[0]));
  assert_evr_ok(evr_stream_read_start(&f.s, fstream_read));
  assert_evr_ok(evr_stream_write_copy(&f.s, "hi", 2)); /* a send made */
  assert_int_equal(write(sv[1], "one", 3), 3);
  RUN_UNTIL(test_loop, f.len == 3 && evr_stream_write_queue_size(&f.s) == 0);
  assert_int_equal(f.len, 3);
  char got[8];
  assert_int_equal(read(sv[1], got, sizeof got), 2);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    CHILD_CHECK(evr_close(&f.s.base, NULL) == 0);
    CHILD_CHECK(evr_stream_read_start(&g.s, fstream_read) == 0);
    _exit(0);
  }
  assert_child_ok(pid);
  /* The parent's reader still hears its peer, and its writes go out. */
  assert_int_equal(write(sv[1], "two", 3), 3);
  RUN_UNTIL(test_loop, f.len == 6);
  assert_int_equal(f.len, 6);
  assert_memory_equal(f.buf, "onetwo", 6);
  assert_evr_ok(evr_stream_write_copy(&f.s, "mom", 3));
  RUN_UNTIL(test_loop, evr_stream_write_queue_size(&f.s) == 0);
  assert_int_equal(evr_stream_write_queue_size(&f.s), 0);
  assert_int_equal(read(sv[1], got, sizeof got), 3);
  assert_memory_equal(got, "mom", 3);
  /* And the other stream starts reading in the parent as usual. */
  assert_evr_ok(evr_stream_read_start(&g.s, fstream_read));
  assert_int_equal(write(sw[1], "abc", 3), 3);
  RUN_UNTIL(test_loop, g.len == 3);
  assert_int_equal(g.len, 3);
  assert_memory_equal(g.buf, "abc", 3);
  assert_evr_ok(evr_close(&f.s.base, NULL));
  assert_evr_ok(evr_close(&g.s.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  close(sv[1]);
  close(sw[1]);
}

/* A child that closed the descriptor of a watcher it inherited active,
 * without stopping the watcher (a child that leaves a socket to the
 * parent may do that), still gets a working loop from evr_loop_fork():
 * that watcher stays deaf, the others work, and it closes cleanly. The
 * descriptor is moved above the others so that the child's new backend
 * state cannot take its number. */
static void test_fork_child_that_closed_a_watched_fd_keeps_its_loop(void **state) {
  (void)state;
  static evr_io_t gone, kept;
  int p[2], q[2];
  reset();
  make_pipe(p);
  make_pipe(q);
  int high = fcntl(p[0], F_DUPFD_CLOEXEC, 200);
  assert_true(high >= 200);
  assert_evr_ok(evr_io_init(test_loop, &gone, high));
  assert_evr_ok(evr_io_start(&gone, EVR_READ, on_io));
  assert_evr_ok(evr_io_init(test_loop, &kept, q[0]));
  assert_evr_ok(evr_io_start(&kept, EVR_READ, on_io));
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    CHILD_CHECK(close(high) == 0);
    CHILD_CHECK(evr_loop_fork(test_loop) == 0);
    CHILD_CHECK(write(q[1], "k", 1) == 1);
    RUN_UNTIL(test_loop, io_fired == 1);
    CHILD_CHECK(io_fired == 1);
    CHILD_CHECK(evr_close(&gone.base, NULL) == 0);
    evr_loop_walk(test_loop, close_all, NULL);
    CHILD_CHECK(evr_loop_run(test_loop, EVR_RUN_DEFAULT) == 0);
    CHILD_CHECK(evr_loop_free(test_loop) == 0);
    _exit(0);
  }
  assert_child_ok(pid);
  /* The parent's watchers are untouched. */
  assert_int_equal(write(p[1], "p", 1), 1);
  RUN_UNTIL(test_loop, io_fired == 1);
  assert_int_equal(io_fired, 1);
  evr_loop_walk(test_loop, close_all, NULL);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  close(high);
  close(p[0]);
  close(p[1]);
  close(q[0]);
  close(q[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_fork_rejects_null),
      EVR_TEST(test_fork_child_and_parent_loops_both_work),
      EVR_TEST(test_fork_grandchild_loop_works),
      EVR_TEST(test_fork_pending_work_is_cancelled_in_child_only),
      EVR_TEST(test_fork_child_never_changes_parents_watchers),
      EVR_TEST(test_fork_child_closing_inherited_handles_leaves_parent_alone),
      EVR_TEST(test_fork_child_that_closed_a_watched_fd_keeps_its_loop),
      EVR_TEST(test_fork_reading_stream_serves_parent_and_child),
      EVR_TEST(test_fork_child_closing_inherited_streams_leaves_parent_alone),
  };
  return cmocka_run_group_tests_name("fork", tests, NULL, NULL);
}
