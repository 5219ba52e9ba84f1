/* bench/srclimit.c: what the per-source limits of the sample daemons
 * (samples/srclimit.c) cost per connection: one admit plus one release,
 * on a table of 65,536 entries with 10,000 sources,
 *   - one thread, a table without a mutex (one table per loop);
 *   - one thread, a table with its mutex (SRCLIMIT_SHARED), uncontended;
 *   - N threads (one per CPU) on one shared table: contended;
 *   - N threads with a table each;
 * and, for scale, one getpeername() on a connected TCP socket (a daemon
 * makes that call for each connection it limits) and one loopback
 * connection made, accepted and closed (connect, accept, two closes; the
 * client resets it, so that no TIME_WAIT is left behind).
 * Usage: bench-srclimit [operations per thread, default 5000000] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "srclimit.h"

#define SOURCES 10000

static long ops = 5000000;

static uint64_t now_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
    perror("clock_gettime");
    exit(1);
  }
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct run {
  srclimit_t *t;
  unsigned seed;
  double ns_per_op;
};

static void *work(void *p) {
  struct run *r = p;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  unsigned x = r->seed;
  uint64_t start = now_ns();
  for (long i = 0; i < ops; i++) {
    x = x * 1103515245u + 12345u;
    sa.sin_addr.s_addr = htonl(0x0a000000u + (x >> 8) % SOURCES);
    srclimit_key_t k;
    if (srclimit_admit(r->t, (struct sockaddr *)&sa, start + (uint64_t)i, &k) == SRCLIMIT_OK)
      srclimit_release(r->t, &k);
  }
  r->ns_per_op = (double)(now_ns() - start) / (double)ops;
  return NULL;
}

static srclimit_t *table(unsigned flags) {
  srclimit_t *t = srclimit_new(65536, 64, 1000000, flags);
  if (!t) {
    perror("srclimit_new");
    exit(1);
  }
  return t;
}

static double threads(int n, int shared) {
  struct run r[64];
  pthread_t th[64];
  srclimit_t *one = shared ? table(SRCLIMIT_SHARED) : NULL;
  for (int i = 0; i < n; i++) {
    r[i] = (struct run){shared ? one : table(0), (unsigned)i * 7919u + 1, 0};
    int rc = pthread_create(&th[i], NULL, work, &r[i]);
    if (rc) {
      fprintf(stderr, "pthread_create: %s\n", strerror(rc));
      exit(1);
    }
  }
  double sum = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    sum += r[i].ns_per_op;
    if (!shared) srclimit_free(r[i].t);
  }
  srclimit_free(one);
  return sum / n;
}

static double getpeername_ns(void) {
  int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 1) != 0 ||
      getsockname(l, (struct sockaddr *)&sa, &len) != 0 ||
      connect(c, (struct sockaddr *)&sa, sizeof sa) != 0) {
    perror("socket set-up");
    exit(1);
  }
  int a = accept(l, NULL, NULL);
  if (a < 0) {
    perror("accept");
    exit(1);
  }
  enum { N = 1000000 };
  uint64_t start = now_ns();
  for (int i = 0; i < N; i++) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getpeername(a, (struct sockaddr *)&peer, &plen) != 0) {
      perror("getpeername");
      exit(1);
    }
  }
  double ns = (double)(now_ns() - start) / N;
  close(a);
  close(c);
  close(l);
  return ns;
}

static double connection_ns(void) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 16) != 0 ||
      getsockname(l, (struct sockaddr *)&sa, &len) != 0) {
    perror("listen");
    exit(1);
  }
  enum { N = 5000 };
  struct linger reset = {1, 0};
  uint64_t start = now_ns();
  for (int i = 0; i < N; i++) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof reset) != 0 ||
        connect(c, (struct sockaddr *)&sa, sizeof sa) != 0) {
      perror("connect");
      exit(1);
    }
    int a = accept(l, NULL, NULL);
    if (a < 0) {
      perror("accept");
      exit(1);
    }
    close(c);
    close(a);
  }
  double ns = (double)(now_ns() - start) / N;
  close(l);
  return ns;
}

int main(int argc, char **argv) {
  if (argc > 1) ops = atol(argv[1]);
  if (ops <= 0) {
    fprintf(stderr, "usage: bench-srclimit [operations per thread]\n");
    return 2;
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int n = cpus < 2 ? 2 : cpus > 64 ? 64 : (int)cpus;
  srclimit_t *t = table(0);
  struct run r = {t, 1, 0};
  work(&r);
  printf("admit+release, 1 thread, no mutex:        %6.1f ns\n", r.ns_per_op);
  srclimit_free(t);
  t = table(SRCLIMIT_SHARED);
  r = (struct run){t, 1, 0};
  work(&r);
  printf("admit+release, 1 thread, mutex:           %6.1f ns\n", r.ns_per_op);
  srclimit_free(t);
  printf("admit+release, %d threads, one table:     %6.1f ns per thread\n", n, threads(n, 1));
  printf("admit+release, %d threads, a table each:  %6.1f ns per thread\n", n, threads(n, 0));
  printf("getpeername() on a TCP socket:            %6.1f ns\n", getpeername_ns());
  printf("loopback connect+accept+close:            %6.1f ns\n", connection_ns());
  return 0;
}
