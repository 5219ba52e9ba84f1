/* samples/sd.c: see sd.h. With EVR_HAVE_LIBSYSTEMD, a thin layer over
 * libsystemd; otherwise the same protocols in plain POSIX: decimal
 * environment variables, fcntl(), and one AF_UNIX datagram per
 * notification (an abstract "@name" NOTIFY_SOCKET works on Linux only). */
#define _GNU_SOURCE
#include "sd.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#if EVR_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* Set in a forked worker before it starts any thread. */
static int detached;

void sysd_detach(void) { detached = 1; }

#if EVR_HAVE_LIBSYSTEMD

const char *sysd_impl(void) { return "libsystemd"; }

int sysd_listen_fds(char ***names) {
  *names = NULL;
  return sd_listen_fds_with_names(1, names);
}

int sysd_notify(const char *state) {
  if (detached) return 0;
  return sd_notify(0, state);
}

uint64_t sysd_watchdog_usec(void) {
  uint64_t usec = 0;
  if (detached || sd_watchdog_enabled(0, &usec) <= 0) return 0;
  return usec;
}

#else /* built in */

const char *sysd_impl(void) { return "built-in"; }

/* A decimal number, digits only. */
static int parse_dec(const char *s, unsigned long long max, unsigned long long *out) {
  if (!s || !*s) return -EINVAL;
  unsigned long long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -EINVAL;
    unsigned d = (unsigned)(*s - '0');
    if (v > (max - d) / 10) return -ERANGE;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static void free_names(char **names) {
  if (!names) return;
  for (char **p = names; *p; p++) free(*p);
  free(names);
}

/* LISTEN_FDNAMES split at ':' (empty names kept), or n times "unknown"
 * when it is not set; NULL-terminated. -EINVAL if there are not n names. */
static int split_names(const char *e, unsigned long long n, char ***out) {
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) return -ENOMEM;
  const char *p = e;
  for (unsigned long long i = 0; i < n; i++) {
    if (!e) {
      v[i] = strdup("unknown");
    } else if (p) {
      const char *end = strchr(p, ':');
      v[i] = strndup(p, end ? (size_t)(end - p) : strlen(p));
      p = end ? end + 1 : NULL;
    } else {
      free_names(v);
      return -EINVAL; /* fewer names than descriptors */
    }
    if (!v[i]) {
      free_names(v);
      return -ENOMEM;
    }
  }
  if (e && p) {
    free_names(v);
    return -EINVAL; /* more names than descriptors */
  }
  *out = v;
  return 0;
}

int sysd_listen_fds(char ***names) {
  *names = NULL;
  unsigned long long pid, n;
  const char *e = getenv("LISTEN_PID");
  int r = 0;
  if (!e) goto done;
  if ((r = parse_dec(e, LLONG_MAX, &pid)) < 0) goto done;
  if (pid != (unsigned long long)getpid()) goto done; /* not for us */
  if (!(e = getenv("LISTEN_FDS"))) goto done;
  if ((r = parse_dec(e, INT_MAX - SD_FIRST_FD, &n)) < 0) goto done;
  if (n == 0) {
    r = -EINVAL;
    goto done;
  }
  for (int fd = SD_FIRST_FD; fd < SD_FIRST_FD + (int)n; fd++) {
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || (!(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)) {
      r = -errno;
      goto done;
    }
  }
  if ((r = split_names(getenv("LISTEN_FDNAMES"), n, names)) < 0) goto done;
  r = (int)n;
done:
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  return r;
}

int sysd_notify(const char *state) {
  const char *e = getenv("NOTIFY_SOCKET");
  if (detached || !e || !*e) return 0;
  /* "/path" or "@abstract"; systemd's other forms (vsock:) need libsystemd. */
  if (e[0] != '/' && e[0] != '@') return -EAFNOSUPPORT;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t len = strlen(e);
  if (len >= sizeof sa.sun_path) return -ENAMETOOLONG;
  memcpy(sa.sun_path, e, len);
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  if (e[0] == '@') sa.sun_path[0] = '\0'; /* abstract: exactly len bytes */
  else salen++;                           /* a path: with its NUL */
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd < 0) return -errno;
  (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
  ssize_t w;
  do w = sendto(fd, state, strlen(state), 0, (struct sockaddr *)&sa, salen);
  while (w < 0 && errno == EINTR);
  int r = w < 0 ? -errno : 1;
  close(fd);
  return r;
}

uint64_t sysd_watchdog_usec(void) {
  unsigned long long usec, pid;
  if (detached || parse_dec(getenv("WATCHDOG_USEC"), UINT64_MAX, &usec) < 0 || usec == 0)
    return 0;
  const char *e = getenv("WATCHDOG_PID");
  if (e && (parse_dec(e, LLONG_MAX, &pid) < 0 || pid != (unsigned long long)getpid())) return 0;
  return usec;
}

#endif
