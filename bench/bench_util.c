/* bench/bench_util.c: see bench_util.h. Plain POSIX sockets only; the
 * Linux/BSD flag shortcuts (accept4, SOCK_NONBLOCK, SOCK_CLOEXEC) are used
 * where they exist, and never in an EVR_PORTABLE build. */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#if !(defined(EVR_PORTABLE) && EVR_PORTABLE) && defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
#define HAVE_SOCK_FLAGS 1 /* and accept4(), which came with them */
#else
#define HAVE_SOCK_FLAGS 0
#endif

uint64_t bench_parse_u64(const char *opt, const char *s, uint64_t min,
                         uint64_t max) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
    fprintf(stderr, "%s: expected an integer in [%llu, %llu], got '%s'\n", opt,
            (unsigned long long)min, (unsigned long long)max, s);
    exit(2);
  }
  return v;
}

double bench_parse_double(const char *opt, const char *s) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= 0)) {
    fprintf(stderr, "%s: expected a non-negative number, got '%s'\n", opt, s);
    exit(2);
  }
  return v;
}

const char *bench_optval(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "%s: missing value\n", argv[*i]);
    exit(2);
  }
  return argv[++*i];
}

uint16_t bench_server_opts(int argc, char **argv, const char *flag,
                           int *flag_on) {
  uint16_t port = 0;
  if (flag_on) *flag_on = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0) {
      port = (uint16_t)bench_parse_u64("--port", bench_optval(argc, argv, &i),
                                       0, 65535);
    } else if (flag && flag_on && strcmp(argv[i], flag) == 0) {
      *flag_on = 1;
    } else {
      fprintf(stderr,
              "usage: %s [--port P]%s%s\n"
              "Echo server on 127.0.0.1:P (0: any free port, printed on "
              "stdout). SIGTERM or SIGINT stops it.\n",
              argv[0], flag ? " " : "", flag ? flag : "");
      exit(strcmp(argv[i], "--help") == 0 ? 0 : 2);
    }
  }
  return port;
}

int bench_listen(uint16_t port, uint16_t *bound) {
  int fd = bench_socket(AF_INET, 1);
  if (fd < 0) {
    perror("socket");
    exit(1);
  }
  int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    fprintf(stderr, "bind 127.0.0.1:%u: %s\n", port, strerror(errno));
    exit(1);
  }
  if (listen(fd, SOMAXCONN) < 0) {
    perror("listen");
    exit(1);
  }
  socklen_t len = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    perror("getsockname");
    exit(1);
  }
  *bound = ntohs(sa.sin_port);
  return fd;
}

void bench_announce(uint16_t port) {
  printf("listening 127.0.0.1:%u\n", port);
  fflush(stdout);
}

int bench_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  return fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -1 : 0;
}

#if !HAVE_SOCK_FLAGS
/* FD_CLOEXEC, and O_NONBLOCK if nonblock; on failure fd is closed. */
static int set_flags(int fd, int nonblock) {
  if (fd < 0) return -1;
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || (nonblock && bench_nonblock(fd) < 0)) {
    int e = errno;
    (void)close(fd);
    errno = e;
    return -1;
  }
  return fd;
}
#endif

int bench_accept(int lfd) {
#if HAVE_SOCK_FLAGS
  return accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
  return set_flags(accept(lfd, NULL, NULL), 1);
#endif
}

int bench_socket(int domain, int nonblock) {
#if HAVE_SOCK_FLAGS
  return socket(domain, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
#else
  return set_flags(socket(domain, SOCK_STREAM, 0), nonblock);
#endif
}

int bench_socketpair(int sv[2]) {
#if HAVE_SOCK_FLAGS
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
#else
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -1;
  if (set_flags(sv[0], 1) < 0) {
    int e = errno;
    (void)close(sv[1]);
    errno = e;
    return -1;
  }
  if (set_flags(sv[1], 1) < 0) {
    int e = errno;
    (void)close(sv[0]);
    errno = e;
    return -1;
  }
  return 0;
#endif
}

void bench_nodelay(int fd) {
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

uint64_t bench_raise_nofile(uint64_t want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return 0;
  if (rl.rlim_cur >= want) return rl.rlim_cur;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
    /* Raising the hard limit needs privileges; try, then settle. */
    struct rlimit more = {want, want};
    if (setrlimit(RLIMIT_NOFILE, &more) == 0) return want;
  }
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want
                    ? want
                    : rl.rlim_max;
  (void)setrlimit(RLIMIT_NOFILE, &rl);
  (void)getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

void bench_ignore_sigpipe(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  (void)sigaction(SIGPIPE, &sa, NULL);
}

uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
