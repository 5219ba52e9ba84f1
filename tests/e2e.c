/* tests/e2e.c: see e2e.h. */
#define _GNU_SOURCE
#include "e2e.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "helpers.h" /* test_socket, test_send: plain POSIX */

#ifndef EVR_BIN_DIR
#define EVR_BIN_DIR "."
#endif

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

const char *e2e_bin(const char *name) {
  static char path[4096];
  snprintf(path, sizeof path, "%s/%s", EVR_BIN_DIR, name);
  return path;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

/* The lowest port the system hands out for outgoing connections and
 * bind(0): Linux says it in /proc; 10000 is FreeBSD's default, and macOS's
 * is higher. */
static int ephemeral_low(void) {
  int lo = 10000, hi;
  FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (f) {
    if (fscanf(f, "%d %d", &lo, &hi) != 2) lo = 10000;
    fclose(f);
  }
  return lo;
}

static int port_bindable(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in sa = loopback(port);
  int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

/* A free port below the ephemeral range: between this check and the
 * daemon's bind, no outgoing connection of a test running alongside can
 * take it as its source port (a port from bind(0) can be, and a connection
 * bound to the port a daemon then listens on with SO_REUSEPORT was the
 * likely cause of runs where the kernel put every connection on one of the
 * daemon's listeners). Falls back to bind(0) where no such range is free. */
int e2e_free_port(void) {
  static unsigned seed;
  if (!seed) seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
  int lo = ephemeral_low();
  if (lo >= 4096) {
    int base = lo / 2, span = lo - base;
    for (int i = 0; i < 200; i++) {
      seed = seed * 1103515245u + 12345u;
      int port = base + (int)((seed >> 8) % (unsigned)span);
      if (port_bindable(port)) return port;
    }
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = loopback(0);
  socklen_t len = sizeof sa;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
    port = ntohs(sa.sin_port);
  close(fd);
  return port;
}

/* Close every descriptor from lo up: close_range() where the kernel has
 * it, else one by one up to the descriptor limit. */
static void close_from(int lo) {
#if defined(__linux__) && defined(SYS_close_range)
  if (syscall(SYS_close_range, (unsigned)lo, ~0u, 0u) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 1 << 20) max = 1 << 20;
  for (long fd = lo; fd < max; fd++) (void)close((int)fd);
}

pid_t e2e_spawn(char *const argv[], const char *log_path) {
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    abort();
  }
  if (pid == 0) {
    if (log_path) {
      int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, STDERR_FILENO);
        close(fd);
      }
    }
    /* The daemon gets stdin, stdout and stderr only: a test's socket that
     * it inherited (a listener the test closes to reset what waits in its
     * queue, say) would stay open in it. */
    close_from(3);
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  return pid;
}

int e2e_connect(int port) {
  int fd = test_socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = loopback(port);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int e2e_wait_refused(int port) {
  for (int i = 0; i < 500; i++) {
    int probe = e2e_connect(port);
    if (probe < 0) return 1;
    close(probe);
    sleep_ms(10);
  }
  return 0;
}

int e2e_wait_listening(int port, int timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  while (now_ms() < end) {
    int fd = e2e_connect(port);
    if (fd >= 0) {
      close(fd);
      return 0;
    }
    sleep_ms(10);
  }
  return -1;
}

int e2e_wait_exit(pid_t pid, int timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0 && errno != EINTR) return -1;
    if (now_ms() >= end) return -1;
    sleep_ms(5);
  }
}

int e2e_stop(pid_t pid, int sig, int timeout_ms) {
  kill(pid, sig);
  int st = e2e_wait_exit(pid, timeout_ms);
  if (st == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  return st;
}

/* xorshift64*: the byte stream of one connection. */
static uint8_t stream_byte(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return (uint8_t)((x * 0x2545F4914F6CDD1DULL) >> 56);
}

struct conn {
  int fd;
  uint64_t tx_state, rx_state;
  size_t sent, received;
  int shut, eof, failed;
};

int e2e_echo_traffic(int port, int conns, size_t bytes, int half_close, int timeout_ms) {
  struct conn *c = calloc((size_t)conns, sizeof *c);
  struct pollfd *pf = calloc((size_t)conns, sizeof *pf);
  if (!c || !pf) abort();
  int failed = 0, reported = 0;
  for (int i = 0; i < conns; i++) {
    c[i].fd = e2e_connect(port);
    c[i].tx_state = c[i].rx_state = UINT64_C(0x9e3779b97f4a7c15) * ((uint64_t)i + 1);
    if (c[i].fd < 0) {
      c[i].failed = 1;
      if (reported++ < 5) fprintf(stderr, "conn %d: connect: %s\n", i, strerror(errno));
      continue;
    }
    int fl = fcntl(c[i].fd, F_GETFL);
    fcntl(c[i].fd, F_SETFL, fl | O_NONBLOCK);
  }
  uint8_t buf[65536];
  int64_t end = now_ms() + timeout_ms;
  for (;;) {
    int active = 0;
    for (int i = 0; i < conns; i++) {
      struct conn *k = &c[i];
      pf[i].fd = -1;
      pf[i].events = 0;
      if (k->failed || k->fd < 0) continue;
      int done_rx = half_close ? k->eof : k->received == bytes;
      if (done_rx && (k->sent == bytes)) continue;
      active++;
      pf[i].fd = k->fd;
      pf[i].events = POLLIN;
      /* Keep at most 1 MiB in flight so a bounded echo never deadlocks. */
      if (k->sent < bytes && k->sent - k->received < (1u << 20)) pf[i].events |= POLLOUT;
    }
    if (!active) break;
    if (now_ms() >= end) {
      for (int i = 0; i < conns; i++)
        if (pf[i].fd >= 0) {
          c[i].failed = 1;
          if (reported++ < 5)
            fprintf(stderr, "conn %d: timeout (sent %zu, received %zu of %zu)\n", i, c[i].sent,
                    c[i].received, bytes);
        }
      break;
    }
    int n = poll(pf, (nfds_t)conns, 200);
    if (n < 0 && errno != EINTR) abort();
    for (int i = 0; i < conns && n > 0; i++) {
      struct conn *k = &c[i];
      if (pf[i].fd < 0 || !pf[i].revents) continue;
      if (pf[i].revents & POLLOUT) {
        size_t want = bytes - k->sent;
        if (want > sizeof buf) want = sizeof buf;
        uint64_t st = k->tx_state;
        for (size_t j = 0; j < want; j++) buf[j] = stream_byte(&st);
        ssize_t w = test_send(k->fd, buf, want);
        if (w > 0) {
          /* Advance the generator by what was actually sent. */
          for (ssize_t j = 0; j < w; j++) stream_byte(&k->tx_state);
          k->sent += (size_t)w;
          if (half_close && k->sent == bytes && !k->shut) {
            shutdown(k->fd, SHUT_WR);
            k->shut = 1;
          }
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
          k->failed = 1;
          if (reported++ < 5) fprintf(stderr, "conn %d: send: %s\n", i, strerror(errno));
          continue;
        }
      }
      if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = recv(k->fd, buf, sizeof buf, 0);
        if (r > 0) {
          for (ssize_t j = 0; j < r; j++) {
            if (buf[j] != stream_byte(&k->rx_state)) {
              k->failed = 1;
              if (reported++ < 5)
                fprintf(stderr, "conn %d: byte %zu differs\n", i, k->received + (size_t)j);
              break;
            }
          }
          k->received += (size_t)r;
          if (k->received > bytes) {
            k->failed = 1;
            if (reported++ < 5) fprintf(stderr, "conn %d: more bytes than sent\n", i);
          }
        } else if (r == 0) {
          k->eof = 1;
          if (k->received != bytes || !half_close) {
            k->failed = 1;
            if (reported++ < 5)
              fprintf(stderr, "conn %d: EOF after %zu of %zu bytes\n", i, k->received, bytes);
          }
        } else if (errno != EAGAIN && errno != EINTR) {
          k->failed = 1;
          if (reported++ < 5) fprintf(stderr, "conn %d: recv: %s\n", i, strerror(errno));
        }
      }
    }
  }
  for (int i = 0; i < conns; i++) {
    if (c[i].failed) failed++;
    if (c[i].fd >= 0) close(c[i].fd);
  }
  free(c);
  free(pf);
  return failed;
}

char *e2e_read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, len = 0;
  char *s = malloc(cap);
  size_t n;
  while (s && (n = fread(s + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 2) {
      char *t = realloc(s, cap *= 2);
      if (!t) {
        free(s);
        s = NULL;
      } else {
        s = t;
      }
    }
  }
  fclose(f);
  if (s) s[len] = '\0';
  return s;
}

char *e2e_http_get(int port, const char *path) {
  int fd = e2e_connect(port);
  if (fd < 0) return NULL;
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
  if (test_send(fd, req, (size_t)n) != n) {
    close(fd);
    return NULL;
  }
  size_t cap = 65536, len = 0;
  char *s = malloc(cap);
  ssize_t r;
  while (s && (r = recv(fd, s + len, cap - len - 1, 0)) > 0) {
    len += (size_t)r;
    if (cap - len < 2) {
      char *t = realloc(s, cap *= 2);
      if (!t) {
        free(s);
        s = NULL;
      } else {
        s = t;
      }
    }
  }
  close(fd);
  if (s) s[len] = '\0';
  return s;
}

int e2e_count_listeners(pid_t pid, int port) {
  /* The inodes of 127.0.0.1:port sockets in state LISTEN (0A). */
  FILE *f = fopen("/proc/net/tcp", "r");
  if (!f) return -1;
  unsigned long inodes[64];
  int n = 0;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    unsigned la, lp, ra, rp, st;
    unsigned long ino;
    if (sscanf(line, " %*d: %8X:%4X %8X:%4X %2X %*s %*s %*s %*d %*d %lu", &la, &lp, &ra, &rp, &st,
               &ino) != 6)
      continue; /* the header */
    if (st == 0x0A && (int)lp == port && la == htonl(INADDR_LOOPBACK) && n < 64)
      inodes[n++] = ino;
  }
  fclose(f);
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
  DIR *d = opendir(dir);
  if (!d) return -1;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char path[320], target[64];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    ssize_t len = readlink(path, target, sizeof target - 1);
    if (len <= 0) continue;
    target[len] = '\0';
    unsigned long ino;
    if (sscanf(target, "socket:[%lu]", &ino) != 1) continue;
    for (int i = 0; i < n; i++)
      if (inodes[i] == ino) count++;
  }
  closedir(d);
  return count;
}
