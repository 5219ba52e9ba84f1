/* tests/helpers.c: fixture and helpers shared by every test file. */
#define _GNU_SOURCE
#include "helpers.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#include <unistd.h>
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__DragonFly__) || defined(__NetBSD__)
#include <sys/sysctl.h>
#define HAVE_SYSCTLBYNAME 1
#endif

evr_loop_t *test_loop;

const char *requested_backend(void) {
  const char *b = getenv("EVR_BACKEND");
  return (b && *b) ? b : evr_backends()[0];
}

void evr__assert_ok(int rc, const char *expr, const char *file, int line) {
  if (rc != 0) {
    print_error("%s returned %d (%s: %s)\n", expr, rc, evr_err_name(rc),
                evr_strerror(rc));
    _fail(file, line);
  }
}

/* Why the kernel refuses io_uring here, or NULL if it does not: the
 * sysctl, or io_uring_setup() failing with ENOSYS or EPERM (seccomp, a
 * container). Asked of the kernel directly, not of evr: a refusal evr
 * invents is a bug, not a reason to skip. */
static const char *io_uring_refused(void) {
#if defined(__linux__) && defined(SYS_io_uring_setup)
  FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
  int v = 0;
  if (f) {
    if (fscanf(f, "%d", &v) != 1) v = 0;
    fclose(f);
  }
  if (v == 2) return "kernel.io_uring_disabled is 2";
  unsigned char params[120]; /* struct io_uring_params */
  memset(params, 0, sizeof params);
  long fd = syscall(SYS_io_uring_setup, 1u, params);
  if (fd >= 0) {
    close((int)fd);
    return NULL;
  }
  if (errno == ENOSYS) return "io_uring_setup: ENOSYS (kernel without io_uring)";
  if (errno == EPERM) return "io_uring_setup: EPERM (io_uring_disabled, seccomp or a container)";
  return NULL;
#else
  return "not Linux";
#endif
}

const char *evr_test_kernel_refuses(const char *backend) {
  return strcmp(backend, "io_uring") == 0 ? io_uring_refused() : NULL;
}

void evr_test_skip_if_backend_refused(void) {
  const char *why = evr_test_kernel_refuses(requested_backend());
  if (why) {
    /* ctest's SKIP_RETURN_CODE (cmake/EvrTest.cmake). */
    printf("SKIP: the kernel refuses io_uring: %s\n", why);
    fflush(stdout);
    _exit(77);
  }
}

int evr_test_setup(void **state) {
  (void)state;
  test_loop = NULL;
  int rc = evr_loop_new(&test_loop, NULL);
  if (rc == EVR_ENOTSUP) evr_test_skip_if_backend_refused();
  assert_evr_ok(rc);
  assert_non_null(test_loop);
  assert_string_equal(evr_loop_backend(test_loop), requested_backend());
  return 0;
}

static void close_any(evr_handle_t *h, void *arg) {
  (void)arg;
  assert_evr_ok(evr_close(h, NULL));
}

int evr_test_teardown(void **state) {
  (void)state;
  if (!test_loop) return 0;
  evr_loop_walk(test_loop, close_any, NULL);
  /* Close callbacks run within a couple of iterations; the bound catches a
   * loop that never settles. */
  for (int i = 0; i < 100 && evr_loop_run(test_loop, EVR_RUN_NOWAIT) > 0; i++) {
  }
  assert_int_equal(evr_loop_free(test_loop), 0);
  test_loop = NULL;
  return 0;
}

int run_until(evr_loop_t *loop, const volatile int *flag, int max_iter) {
  int i;
  for (i = 0; i < max_iter && !*flag; i++) {
    int rc = evr_loop_run(loop, EVR_RUN_ONCE);
    assert_true(rc >= 0);
  }
  if (!*flag) fail_msg("condition not reached after %d iterations", max_iter);
  return i;
}

void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  assert_true(fl >= 0);
  assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* pipe()/socketpair() plus fcntl(): portable where pipe2() and
 * SOCK_NONBLOCK are not (macOS). */
static void nonblock_cloexec(int fd) {
  set_nonblock(fd);
  int fl = fcntl(fd, F_GETFD);
  assert_true(fl >= 0);
  assert_int_equal(fcntl(fd, F_SETFD, fl | FD_CLOEXEC), 0);
}

void make_socketpair(int fds[2]) {
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  nonblock_cloexec(fds[0]);
  nonblock_cloexec(fds[1]);
}

void make_pipe(int fds[2]) {
  assert_int_equal(pipe(fds), 0);
  nonblock_cloexec(fds[0]);
  nonblock_cloexec(fds[1]);
}

int test_socket(int family, int type, int nonblock) {
  int fd = socket(family, type, 0);
  if (fd < 0) return -1;
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) != 0) goto fail;
  if (nonblock) {
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) goto fail;
  }
  return fd;
fail:;
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

ssize_t test_send(int fd, const void *buf, size_t len) {
#if defined(MSG_NOSIGNAL)
  return send(fd, buf, len, MSG_NOSIGNAL);
#elif defined(SO_NOSIGPIPE)
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) != 0) return -1;
  return send(fd, buf, len, 0);
#else
#error "no way to send() without SIGPIPE on this system"
#endif
}

long raise_nofile(long want) {
  struct rlimit rl;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rlim_t target = (rlim_t)want;
  if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) target = rl.rlim_max;
#if defined(__APPLE__) && defined(OPEN_MAX)
  /* setrlimit(2) on macOS: EINVAL for a soft limit above OPEN_MAX, even
   * when the hard limit is RLIM_INFINITY. */
  if (target > OPEN_MAX) target = OPEN_MAX;
#endif
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < target) {
    struct rlimit nl = {target, rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &nl) != 0)
      print_message("note: setrlimit(RLIMIT_NOFILE, %ld) refused (%s)\n", (long)target,
                    strerror(errno));
    /* Read back: the kernel may also have clamped it (kern.maxfilesperproc). */
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)LONG_MAX) return LONG_MAX;
  if ((long)rl.rlim_cur < want)
    print_message("note: RLIMIT_NOFILE is %ld, below the %ld wanted\n", (long)rl.rlim_cur, want);
  return (long)rl.rlim_cur;
}

int accept_queue_limit(void) {
  long v = -1;
#if defined(__linux__)
  FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
  if (f) {
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
  }
#elif defined(HAVE_SYSCTLBYNAME)
  /* FreeBSD 10+ names it soacceptqueue (somaxconn stays as an alias);
   * NetBSD has kern.somaxconn. An int either way; read by its length. */
  static const char *const names[] = {"kern.ipc.soacceptqueue", "kern.ipc.somaxconn",
                                      "kern.somaxconn"};
  for (size_t i = 0; i < sizeof names / sizeof names[0] && v < 0; i++) {
    union {
      int i;
      long l;
    } u;
    size_t len = sizeof u;
    memset(&u, 0, sizeof u);
    if (sysctlbyname(names[i], &u, &len, NULL, 0) != 0) continue;
    if (len == sizeof u.i) v = u.i;
    else if (len == sizeof u.l) v = u.l;
  }
#endif
  if (v <= 0) v = SOMAXCONN;
  return v > INT_MAX ? INT_MAX : (int)v;
}

int count_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) {
    /* No procfs: probe every possible descriptor. */
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    int max = rl.rlim_cur > 65536 ? 65536 : (int)rl.rlim_cur;
    int n = 0;
    for (int fd = 0; fd < max; fd++) n += fcntl(fd, F_GETFD) >= 0;
    return n;
  }
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

/* For EVR_KQUEUE_EMULATED: only assert_fds_back_to() needs it. */
#include "evr_config.h"

void assert_fds_back_to(int baseline) {
  int n = count_open_fds();
#if EVR_KQUEUE_EMULATED
  /* libkqueue releases the descriptors of a closed kqueue from a background
   * thread. Where it exports libkqueue_drain_pending_close() (2.7.0 and
   * later), evr waits for that when it frees a loop, and the count is exact
   * as everywhere else. Older versions give no way to know when the thread
   * is done: the loop freed by the previous test (or just before the
   * baseline) may still have been counted in the baseline, and the one freed
   * just now may not be released yet. So there, and only there, wait for the
   * count to come down to the baseline, and accept it below. The bound only
   * guards against a hang: the release takes microseconds. */
  extern void libkqueue_drain_pending_close(void) __attribute__((weak));
  if (!libkqueue_drain_pending_close && strcmp(requested_backend(), "kqueue") == 0) {
    for (int i = 0; i < 1000 && n > baseline; i++) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
      n = count_open_fds();
    }
    if (n > baseline)
      fail_msg("%d descriptor(s) still open after 10 s (libkqueue without a drain)", n - baseline);
    return;
  }
#endif
  if (n != baseline)
    fail_msg("%d descriptor(s) open, %d at the baseline (%+d)", n, baseline, n - baseline);
}

void assert_child_ok(int pid) {
  int st;
  pid_t r;
  do
    r = waitpid((pid_t)pid, &st, 0);
  while (r < 0 && errno == EINTR);
  assert_int_equal(r, pid);
  assert_true(WIFEXITED(st));
  if (WEXITSTATUS(st) != 0)
    fail_msg("child failed at a check on line %d (mod 200)", WEXITSTATUS(st) - 20);
}

int sends_at_once(evr_loop_t *loop) {
  return strcmp(evr_loop_backend(loop), "io_uring") != 0;
}

void flush_writes(evr_loop_t *loop, evr_stream_t *s, int max_iter) {
  for (int i = 0; i < max_iter && evr_stream_write_queue_size(s) > 0; i++)
    assert_true(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(evr_stream_write_queue_size(s), 0);
}

int full_listener(evr_addr_t *at, int *fillers, int *nfill, int *dropped) {
  int l = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(l >= 0);
  assert_evr_ok(evr_addr_parse(at, "127.0.0.1:0"));
  assert_int_equal(bind(l, &at->u.sa, at->len), 0);
  socklen_t len = sizeof at->u;
  assert_int_equal(getsockname(l, &at->u.sa, &len), 0);
  at->len = len;
  assert_int_equal(listen(l, 0), 0);
  *nfill = 0;
  *dropped = 0;
  while (*nfill < 8 && !*dropped) {
    int c = test_socket(AF_INET, SOCK_STREAM, 1);
    assert_true(c >= 0);
    int r = connect(c, &at->u.sa, at->len);
    assert_true(r == 0 || errno == EINPROGRESS);
    fillers[(*nfill)++] = c;
    struct pollfd p = {c, POLLOUT, 0};
    int n = poll(&p, 1, 500);
    assert_true(n >= 0);
    if (n == 0) *dropped = 1; /* its SYN was dropped: the queue is full */
  }
  return l;
}
