/* tests/helpers.h: the shared fixture and helpers of the evr test suite.
 *
 * The fixture creates a loop with evr_loop_new(NULL) (so EVR_BACKEND picks the
 * backend) and checks that the loop really runs on the requested backend. Its
 * teardown closes every handle, runs the loop until the close callbacks are
 * done and asserts evr_loop_free() == 0: every test is a lifetime check too.
 */
#ifndef EVR_TESTS_HELPERS_H
#define EVR_TESTS_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>
#include "evr/evr.h"

/* The loop of the current test (set by evr_test_setup). */
extern evr_loop_t *test_loop;

int evr_test_setup(void **state);
/* For a run under EVR_BACKEND=io_uring on a kernel that refuses io_uring
 * (ENOSYS, EPERM, the sysctl): print why and exit with ctest's skip code
 * (77). Tests whose daemons pick the backend up from the environment call
 * it in their setup; evr_test_setup() calls it when the loop is refused. */
void evr_test_skip_if_backend_refused(void);
/* Why the kernel refuses the named backend here (io_uring only: ENOSYS,
 * EPERM, the sysctl), or NULL: asked of the kernel, not of evr. */
const char *evr_test_kernel_refuses(const char *backend);
int evr_test_teardown(void **state);

#define EVR_TEST(fn) cmocka_unit_test_setup_teardown(fn, evr_test_setup, evr_test_teardown)

/* Assert rc == 0, printing the error's name otherwise. */
#define assert_evr_ok(rc) evr__assert_ok((rc), #rc, __FILE__, __LINE__)
void evr__assert_ok(int rc, const char *expr, const char *file, int line);

/* Run EVR_RUN_ONCE until *flag becomes nonzero, at most max_iter times.
 * Returns the number of iterations used; fails the test on the bound. */
int run_until(evr_loop_t *loop, const volatile int *flag, int max_iter);

/* Socket pair / pipe makers: non-blocking, close-on-exec. */
void make_socketpair(int fds[2]);
void make_pipe(int fds[2]);
void set_nonblock(int fd);

/* socket(family, type, 0), close-on-exec, and non-blocking when nonblock
 * is set: socket() then fcntl(), as macOS has neither SOCK_CLOEXEC nor
 * SOCK_NONBLOCK. Returns the descriptor, or -1 with errno set (no check:
 * callers assert, or probe whether a family exists). Needs neither cmocka
 * nor the library, so e2e.c uses it too. */
int test_socket(int family, int type, int nonblock);

/* send() that never raises SIGPIPE: MSG_NOSIGNAL where the system has it;
 * elsewhere (macOS) the socket is given SO_NOSIGPIPE first, and keeps it.
 * Only for sockets the test itself writes to, never for one handed to the
 * library: that would hide a library that lets SIGPIPE through. */
ssize_t test_send(int fd, const void *buf, size_t len);

/* Raise the soft RLIMIT_NOFILE to want if it is lower: never above the
 * hard limit, nor (macOS) above OPEN_MAX, the most setrlimit() accepts
 * there whatever the hard limit says. A refused raise is no failure: a
 * note is printed and the test adapts its counts to the result. Returns
 * the soft limit then in force (LONG_MAX for RLIM_INFINITY). */
long raise_nofile(long want);

/* The largest accept queue a listen() gets on this system: Linux's
 * net.core.somaxconn, the BSDs' and macOS's kern.ipc.somaxconn (FreeBSD:
 * kern.ipc.soacceptqueue), else SOMAXCONN. A test that opens connections
 * nobody accepts yet opens at most this many: past it the kernel drops
 * SYNs and a blocking connect() waits for retransmissions. */
int accept_queue_limit(void);

/* Count of open descriptors of this process (/proc/self/fd). */
/* A TCP listener on 127.0.0.1 (its address in *at) whose accept queue is
 * full and which never accepts: Linux drops further SYNs, so a connect to
 * it stays pending. The queue is filled with up to 8 raw clients (their
 * descriptors in fillers[0..*nfill), for the caller to close) until one
 * does not complete its handshake; *dropped says whether one did not.
 * Returns the listener (the caller closes it). */
int full_listener(evr_addr_t *at, int *fillers, int *nfill, int *dropped);

int count_open_fds(void);

/* Assert that the count of open descriptors is back to `baseline` (a
 * count_open_fds() value): exactly, and at once. One exception: under a
 * libkqueue too old to export libkqueue_drain_pending_close() (before
 * 2.7.0), whose background thread releases a freed loop's descriptors at a
 * time nobody can wait for, the check waits (bounded) for the count to come
 * down to the baseline and accepts it below (see helpers.c). */
void assert_fds_back_to(int baseline);

/* A forked child cannot use cmocka: a failed check exits with 20 plus the
 * line number modulo 200, and the parent's assert_child_ok() fails with
 * that line. */
#define CHILD_CHECK(c)                    \
  do {                                    \
    if (!(c)) _exit(20 + __LINE__ % 200); \
  } while (0)
/* Wait for child pid and assert that it exited with 0. */
void assert_child_ok(int pid);

/* The backend the fixture requested (EVR_BACKEND or the default). */
const char *requested_backend(void);

/* 1 if a stream's write sends what the kernel takes at once (readiness
 * backends); 0 on io_uring, whose streams send from the queue before the
 * next wait (docs/net.md, "The completion path"). */
int sends_at_once(evr_loop_t *loop);
/* Run the loop until the stream's write queue is empty (its bytes are in
 * the kernel), at most max_iter iterations. */
void flush_writes(evr_loop_t *loop, evr_stream_t *s, int max_iter);

#endif
