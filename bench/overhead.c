/* bench/overhead.c: the loop-overhead driver, the workload of libevent's
 * classic bench.c (also used for libev's published comparison).
 *
 * N socketpairs, one read watcher on each. A run re-arms all N watchers
 * (stop + start) and runs one non-blocking iteration so libraries that apply
 * changes lazily apply them: that is the "setup" time. Then A bytes are
 * written to A pipes spread evenly over the N, and the loop runs
 * non-blocking iterations until every byte written has been read; each read
 * callback reads its byte and, while fewer than W writes have been made,
 * writes one byte to the next pipe: that is the "run" time. The same work
 * in every library; only the loop calls differ.
 *
 * Prints one line per process:
 *   RESULT lib=evr pipes=N active=A writes=W runs=R setup_us=... run_us=...
 *   total_us=...
 * (medians over R runs, after one unmeasured run).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "bench_util.h"
#include "overhead.h"

static int npipes = 1000, nactive = 1, nwrites = 1000, nruns = 25;
static int *rfd, *wfd;
static long count, fired, writes_left, failures;

void ovh_on_read(int i) {
  unsigned char ch;
  ssize_t n = recv(rfd[i], &ch, 1, 0);
  if (n >= 0)
    count += n;
  else
    failures++;
  if (writes_left > 0) {
    int w = i + 1 < npipes ? i + 1 : 0;
    if (send(wfd[w], "e", 1, 0) != 1) failures++;
    writes_left--;
    fired++;
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double median_us(uint64_t *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_u64);
  double m = n % 2 ? (double)v[n / 2] : ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2;
  return m / 1000.0;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--pipes") == 0)
      npipes = (int)bench_parse_u64(a, bench_optval(argc, argv, &i), 1, 1000000);
    else if (strcmp(a, "--active") == 0)
      nactive = (int)bench_parse_u64(a, bench_optval(argc, argv, &i), 1, 1000000);
    else if (strcmp(a, "--writes") == 0)
      nwrites = (int)bench_parse_u64(a, bench_optval(argc, argv, &i), 0, 100000000);
    else if (strcmp(a, "--runs") == 0)
      nruns = (int)bench_parse_u64(a, bench_optval(argc, argv, &i), 1, 100000);
    else {
      fprintf(strcmp(a, "--help") == 0 ? stdout : stderr,
              "usage: %s [--pipes N] [--active A] [--writes W] [--runs R]\n"
              "Loop overhead (libevent's bench.c workload) on %s. Defaults:\n"
              "N=1000 A=1 W=1000 R=25.\n",
              argv[0], ovh_lib.name);
      return strcmp(a, "--help") == 0 ? 0 : 2;
    }
  }
  /* Two descriptors per pipe plus a few for the loop itself. */
  uint64_t lim = bench_raise_nofile(2 * (uint64_t)npipes + 64);
  if (2 * (uint64_t)npipes + 64 > lim) {
    int fit = (int)((lim - 64) / 2);
    fprintf(stderr, "%s: RLIMIT_NOFILE is %" PRIu64 ": %d pipes instead of %d\n",
            argv[0], lim, fit, npipes);
    npipes = fit;
  }
  if (nactive > npipes) nactive = npipes;

  rfd = malloc(sizeof *rfd * (size_t)npipes);
  wfd = malloc(sizeof *wfd * (size_t)npipes);
  uint64_t *setup = malloc(sizeof *setup * (size_t)nruns);
  uint64_t *run = malloc(sizeof *run * (size_t)nruns);
  uint64_t *total = malloc(sizeof *total * (size_t)nruns);
  if (!rfd || !wfd || !setup || !run || !total) return 1;
  for (int i = 0; i < npipes; i++) {
    int sv[2];
    if (bench_socketpair(sv)) {
      perror("socketpair");
      return 1;
    }
    rfd[i] = sv[0];
    wfd[i] = sv[1];
  }
  if (ovh_lib.init(npipes) < 0) {
    fprintf(stderr, "%s: loop init failed\n", argv[0]);
    return 1;
  }

  int space = npipes / nactive;
  for (int r = -1; r < nruns; r++) { /* run -1 warms up, unmeasured */
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < npipes; i++) ovh_lib.arm(i, rfd[i]);
    ovh_lib.run_nowait();
    uint64_t t1 = bench_now_ns();
    count = fired = 0;
    writes_left = nwrites;
    for (int i = 0; i < nactive; i++, fired++)
      if (send(wfd[i * space], "e", 1, 0) != 1) failures++;
    do {
      ovh_lib.run_nowait();
    } while (count != fired);
    uint64_t t2 = bench_now_ns();
    if (r >= 0) {
      setup[r] = t1 - t0;
      run[r] = t2 - t1;
      total[r] = t2 - t0;
    }
  }
  if (failures) {
    fprintf(stderr, "%s: %ld failed reads or writes\n", argv[0], failures);
    return 1;
  }
  printf("RESULT lib=%s pipes=%d active=%d writes=%d runs=%d setup_us=%.2f "
         "run_us=%.2f total_us=%.2f\n",
         ovh_lib.name, npipes, nactive, nwrites, nruns,
         median_us(setup, nruns), median_us(run, nruns),
         median_us(total, nruns));
  ovh_lib.fini(npipes);
  for (int i = 0; i < npipes; i++) {
    (void)close(rfd[i]);
    (void)close(wfd[i]);
  }
  free(rfd);
  free(wfd);
  free(setup);
  free(run);
  free(total);
  return 0;
}
