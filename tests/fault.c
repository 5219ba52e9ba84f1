/* tests/fault.c: the wrappers behind tests/fault.h.
 *
 * Linked into every test program with -Wl,--wrap=<fn> for each function
 * below (cmake/EvrTest.cmake); __real_<fn> is the C library's. The state is
 * a handful of atomics, so pool threads may allocate while a test arms. */
#include "fault.h"

#ifdef EVR_TEST_FAULT
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif
#include "evr_config.h"
#if EVR_HAVE_IO_URING
#include <liburing.h>
#endif

enum {
  F_MALLOC, F_CALLOC, F_REALLOC, F_PIPE, F_PIPE2, F_GETADDRINFO,
#ifdef __linux__
  F_EPOLL_CREATE1, F_EPOLL_CTL, F_EVENTFD,
#endif
#if EVR_HAVE_IO_URING
  F_IO_URING_QUEUE_INIT_PARAMS,
#endif
  F_COUNT
};

static const char *const fault_names[F_COUNT] = {
    "malloc", "calloc", "realloc", "pipe", "pipe2", "getaddrinfo",
#ifdef __linux__
    "epoll_create1", "epoll_ctl", "eventfd",
#endif
#if EVR_HAVE_IO_URING
    "io_uring_queue_init_params",
#endif
};

static atomic_int armed;              /* 0: off; 1: armed */
static atomic_int target;             /* index, or -1 for any */
static atomic_ulong first, last;      /* calls [first, last] fail; last 0: no end */
static atomic_ulong seen, injected;
static atomic_int fault_errno;
static atomic_long live;
static atomic_int also_target = -1, also_errno; /* fault_fail_always */


void fault_arm(const char *fn, unsigned long nth, int err, unsigned long count) {
  int t = -1;
  if (fn) {
    for (int i = 0; i < F_COUNT; i++)
      if (!strcmp(fn, fault_names[i])) t = i;
    if (t < 0) abort(); /* a test names a function that is not wrapped */
  }
  atomic_store(&armed, 0);
  atomic_store(&target, t);
  atomic_store(&seen, 0);
  atomic_store(&injected, 0);
  atomic_store(&first, nth ? nth : 1);
  atomic_store(&last, count ? (nth ? nth : 1) + count - 1 : 0);
  atomic_store(&fault_errno, err);
  atomic_store(&armed, 1);
}

void fault_disarm(void) {
  atomic_store(&armed, 0);
  atomic_store(&also_target, -1);
}
unsigned long fault_calls(void) { return atomic_load(&seen); }
unsigned long fault_injected(void) { return atomic_load(&injected); }
long fault_live_blocks(void) { return atomic_load(&live); }

void fault_fail_always(const char *fn, int err) {
  int t = -1;
  if (fn) {
    for (int i = 0; i < F_COUNT; i++)
      if (!strcmp(fn, fault_names[i])) t = i;
    if (t < 0) abort();
  }
  atomic_store(&also_errno, err);
  atomic_store(&also_target, t);
}

/* 1 if this call of function f is to fail (errno is then set). */
static int fail_now(int f) {
  if (atomic_load(&also_target) == f && f > F_REALLOC) {
    errno = atomic_load(&also_errno);
    return 1;
  }
  if (!atomic_load(&armed)) return 0;
  int t = atomic_load(&target);
  if (t >= 0 && t != f) return 0;
  unsigned long n = atomic_fetch_add(&seen, 1) + 1;
  unsigned long l = atomic_load(&last);
  if (n < atomic_load(&first) || (l && n > l)) return 0;
  atomic_fetch_add(&injected, 1);
  errno = f <= F_REALLOC ? ENOMEM : atomic_load(&fault_errno);
  return 1;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

void *__wrap_malloc(size_t n) {
  if (fail_now(F_MALLOC)) return NULL;
  void *p = __real_malloc(n);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

void *__wrap_calloc(size_t n, size_t size) {
  if (fail_now(F_CALLOC)) return NULL;
  void *p = __real_calloc(n, size);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

void *__wrap_realloc(void *p, size_t n) {
  if (fail_now(F_REALLOC)) return NULL;
  void *q = __real_realloc(p, n);
  if (q && !p) atomic_fetch_add(&live, 1);
  return q;
}

void __wrap_free(void *p) {
  if (p) atomic_fetch_sub(&live, 1);
  __real_free(p);
}

int __real_pipe(int fds[2]);
int __wrap_pipe(int fds[2]);
int __wrap_pipe(int fds[2]) {
  if (fail_now(F_PIPE)) return -1;
  return __real_pipe(fds);
}

int __real_pipe2(int fds[2], int flags);
int __wrap_pipe2(int fds[2], int flags);
int __wrap_pipe2(int fds[2], int flags) {
  if (fail_now(F_PIPE2)) return -1;
  return __real_pipe2(fds, flags);
}

/* Fails the way glibc's does when it cannot open its files or sockets: "name
 * not known" (EAI_NONAME) with errno telling the real cause. */
int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res) {
  if (fail_now(F_GETADDRINFO)) return EAI_NONAME;
  return __real_getaddrinfo(node, service, hints, res);
}

#ifdef __linux__
int __real_epoll_create1(int flags);
int __wrap_epoll_create1(int flags);
int __wrap_epoll_create1(int flags) {
  if (fail_now(F_EPOLL_CREATE1)) return -1;
  return __real_epoll_create1(flags);
}

int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
  if (fail_now(F_EPOLL_CTL)) return -1;
  return __real_epoll_ctl(epfd, op, fd, ev);
}

int __real_eventfd(unsigned int initval, int flags);
int __wrap_eventfd(unsigned int initval, int flags);
int __wrap_eventfd(unsigned int initval, int flags) {
  if (fail_now(F_EVENTFD)) return -1;
  return __real_eventfd(initval, flags);
}
#endif

#if EVR_HAVE_IO_URING
/* liburing returns -errno instead of setting errno. */
int __real_io_uring_queue_init_params(unsigned entries, struct io_uring *ring,
                                      struct io_uring_params *p);
int __wrap_io_uring_queue_init_params(unsigned entries, struct io_uring *ring,
                                      struct io_uring_params *p);
int __wrap_io_uring_queue_init_params(unsigned entries, struct io_uring *ring,
                                      struct io_uring_params *p) {
  if (fail_now(F_IO_URING_QUEUE_INIT_PARAMS)) return -errno;
  return __real_io_uring_queue_init_params(entries, ring, p);
}
#endif

#else /* no --wrap */

void fault_arm(const char *fn, unsigned long nth, int err, unsigned long count) {
  (void)fn, (void)nth, (void)err, (void)count;
}
void fault_disarm(void) {}
void fault_fail_always(const char *fn, int err) { (void)fn, (void)err; }
unsigned long fault_calls(void) { return 0; }
unsigned long fault_injected(void) { return 0; }
long fault_live_blocks(void) { return 0; }

#endif
