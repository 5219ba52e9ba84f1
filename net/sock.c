/* net/sock.c: socket creation and accept with the platform fallbacks.
 *
 * Invariant: every descriptor these functions hand out is non-blocking and
 * close-on-exec before any other code sees it. Where the kernel can do that
 * atomically (SOCK_NONBLOCK|SOCK_CLOEXEC, accept4) it does; otherwise fcntl
 * follows at once, leaving a window in which a concurrent fork+exec in
 * another thread could inherit the descriptor (nothing better exists there).
 * Which path is compiled is decided by CMake (EVR_HAVE_* in evr_config.h);
 * an EVR_PORTABLE build takes the fallbacks everywhere.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 in glibc */
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "net/sock.h"
#include "reactor/internal.h"

static int no_sigpipe(int fd) {
#if EVR_HAVE_SO_NOSIGPIPE
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on) < 0)
    return -errno;
#else
  (void)fd;
#endif
  return 0;
}

#if EVR__SIGPIPE_MASK
/* SIGPIPE from a write is sent to the writing thread (POSIX write(),
 * send()), so a thread-local mask is enough. While blocked it stays
 * pending, even when its disposition is SIG_IGN on Linux; other systems may
 * discard an ignored signal at once, hence the second sigpending() before
 * sigwait(), which would otherwise block. A SIGPIPE that was pending before
 * the write stays pending (the two merge) and is delivered on unmasking, as
 * it would have been without evr. */
static void sigpipe_set(sigset_t *set) {
  (void)sigemptyset(set);
  (void)sigaddset(set, SIGPIPE);
}

static int sigpipe_pending(void) {
  sigset_t pend;
  if (sigpending(&pend) < 0) return 0;
  return sigismember(&pend, SIGPIPE) == 1;
}

void evr__sigpipe_hold(evr__sigpipe_t *st) {
  sigset_t set;
  sigpipe_set(&set);
  /* Fails only for an invalid `how`. */
  (void)pthread_sigmask(SIG_BLOCK, &set, &st->old);
  st->was_pending = sigpipe_pending();
}

void evr__sigpipe_release(evr__sigpipe_t *st, int epipe) {
  int saved = errno;
  if (epipe && !st->was_pending && sigpipe_pending()) {
    sigset_t set;
    int sig;
    sigpipe_set(&set);
    (void)sigwait(&set, &sig);
  }
  (void)pthread_sigmask(SIG_SETMASK, &st->old, NULL);
  errno = saved;
}
#endif

/* Make fd non-blocking, close-on-exec and SIGPIPE-free; closes it on error. */
static int finish_fd(int fd, int set_flags) {
  int rc = 0;
  if (set_flags) {
    rc = evr__cloexec(fd);
    if (rc == 0) rc = evr__nonblock(fd, 1);
  }
  if (rc == 0) rc = no_sigpipe(fd);
  if (rc < 0) {
    evr__close_fd(fd);
    return rc;
  }
  return fd;
}

int evr__socket(int family, int type) {
  int fd;
#if EVR_HAVE_SOCK_FLAGS
  fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) return finish_fd(fd, 0);
  /* Kernels before 2.6.27 say EINVAL to the flags: try the plain call. */
  if (errno != EINVAL) return -errno;
#endif
  fd = socket(family, type, 0);
  if (fd < 0) return -errno;
  return finish_fd(fd, 1);
}

int evr__accept(int fd) {
  int cfd;
  for (;;) {
#if EVR_HAVE_ACCEPT4
    cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd >= 0) return finish_fd(cfd, 0);
    if (errno == EINTR) continue;
    if (errno != ENOSYS) return -errno;
    /* ENOSYS: an old kernel or emulator without accept4. */
#endif
    cfd = accept(fd, NULL, NULL);
    if (cfd >= 0) return finish_fd(cfd, 1);
    if (errno == EINTR) continue;
    return -errno;
  }
}

/* The descriptor belongs to the caller until this succeeds: a failure part
 * way puts its flags back as they were. */
int evr__sock_prepare(int fd) {
  int old_fd = fcntl(fd, F_GETFD);
  if (old_fd < 0) return -errno;
  int old_fl = fcntl(fd, F_GETFL);
  if (old_fl < 0) return -errno;
  /* A descriptor from accept4() or SOCK_CLOEXEC | SOCK_NONBLOCK needs
   * neither change: two calls, not four. */
  int rc = 0;
  if (!(old_fd & FD_CLOEXEC) && fcntl(fd, F_SETFD, old_fd | FD_CLOEXEC) < 0) rc = -errno;
  if (rc == 0 && !(old_fl & O_NONBLOCK) && fcntl(fd, F_SETFL, old_fl | O_NONBLOCK) < 0)
    rc = -errno;
#if EVR_HAVE_SO_NOSIGPIPE
  if (rc == 0) {
    int type;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0)
      rc = no_sigpipe(fd);
    else if (errno != ENOTSOCK)
      rc = -errno;
  }
#endif
  if (rc < 0) {
    (void)fcntl(fd, F_SETFL, old_fl);
    (void)fcntl(fd, F_SETFD, old_fd);
  }
  return rc;
}

int evr__sock_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  return evr__errno_code(err);
}

static int name_of(int fd, evr_addr_t *out, int peer) {
  if (!out) return EVR_EINVAL;
  memset(out, 0, sizeof *out);
  socklen_t len = sizeof out->u;
  int rc = peer ? getpeername(fd, &out->u.sa, &len)
                : getsockname(fd, &out->u.sa, &len);
  if (rc < 0) return -errno;
  if (len > sizeof out->u) len = sizeof out->u;
  out->len = len;
  return 0;
}

int evr__sockname(int fd, evr_addr_t *out) { return name_of(fd, out, 0); }
int evr__peername(int fd, evr_addr_t *out) { return name_of(fd, out, 1); }

void evr__close_fd(int fd) {
  if (fd < 0) return;
  int saved = errno;
  (void)close(fd);
  errno = saved;
}
