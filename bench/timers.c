/* bench/timers.c: timer costs and precision of evr against libuv and libev,
 * in one process.
 *
 * For 1e3..1e6 active timers it measures ns per start, per restart in the
 * idle-timeout pattern (every timer pushed to a new, later timeout, in random
 * order), per restart to a random timeout (timers started with timeouts
 * uniform in [1 ms, 60 s], each restarted in random order to a new timeout
 * uniform in [1 ms, 60 s], so about half move earlier), per stop (random
 * order) and per expiry (all timers due, one NOWAIT run). Starts, restarts
 * and stops run inside a loop callback and are timed with the two iterations
 * around it. Every implementation gets the same inputs in a round; rounds
 * alternate the order of the implementations (A/B/C, B/C/A, ...) and the
 * table reports medians and peer/evr ratios (> 1 means evr is faster).
 *
 * A second table checks expiry precision: 100,000 timers due over 1 s and
 * over 100 ms, started from one callback, each library told the time
 * before each start; lateness against the real clock
 * read just before each start (mean, p50, p99, max) and how many fired
 * early. Prints markdown to stdout.
 *
 * Usage: bench_timers [max_n] (default 1000000, at least 100000).
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "evr/evr.h"
#ifdef BENCH_HAVE_UV
#include <uv.h>
#endif
#ifdef BENCH_HAVE_EV
#include <ev.h>
#endif

#define MAX_IMPLS 3
#define MAX_ROUNDS 31
#define EXPIRE_SPREAD_MS 100
#define RANDOM_MAX_MS 60000 /* random timeouts: uniform in [1 ms, 60 s] */
#define PROBES 100000       /* timers per precision run */
#define NS_PER_MS 1000000u

enum {
  OP_START,
  OP_RESTART,
  OP_RESTART_RANDOM,
  OP_STOP,
  OP_EXPIRE,
  OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "start", "restart (idle)", "restart (random)", "stop", "expire"};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(uint64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Every library's timers in one zeroed array aligned to a cache line (as
 * calloc() does not promise), so that no run depends on where the
 * allocator happened to put the array. */
static void *line_array(size_t n, size_t size) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n * size) != 0) abort();
  memset(p, 0, n * size);
  return p;
}

static uint64_t rng = 88172645463325252u;
static uint64_t rnd(void) { /* xorshift64 */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* Shared per-round inputs, identical for every implementation. */
static size_t n_timers;
static uint64_t *timeout1;    /* first timeouts, ms */
static uint64_t *timeout2;    /* later timeouts for the idle restart pass */
static uint64_t *rand_start;  /* [1 ms, 60 s]: starts of the random pass */
static uint64_t *rand_again;  /* [1 ms, 60 s]: its restarts */
static uint64_t *expire_to;   /* timeouts within EXPIRE_SPREAD_MS */
static size_t *perm;          /* random order */
static size_t fired;

/* Precision runs: each timeout (ns), the real clock before each start and
 * the lateness. */
static uint64_t *probe_ns;
static uint64_t *start_real;
static int64_t *lateness_ns;

struct impl {
  const char *name;
  void (*setup)(size_t n);
  void (*teardown)(void);
  void (*start)(size_t i, uint64_t timeout_ms);
  void (*restart)(size_t i, uint64_t timeout_ms);
  void (*stop)(size_t i);
  void (*run_nowait)(void);
  void (*run_default)(void);
  void (*clock_sync)(void); /* refresh the loop's time (before each
                               precision start) */
  void (*start_probe)(size_t i, uint64_t timeout_ns); /* precision run */
  void (*in_loop)(void (*fn)(void)); /* run fn from a callback */
};

/* Phases run from inside a loop callback, as a server's would. */
static void (*phase_fn)(void);

static void record_lateness(size_t i) {
  lateness_ns[i] = (int64_t)(now_ns() - start_real[i]) - (int64_t)probe_ns[i];
  fired++;
}

/* ---- evr ---- */

static evr_loop_t *evr_loop;
static evr_timer_t *evr_t;

static void evr_cb(evr_timer_t *t) {
  (void)t;
  fired++;
}
static void evr_probe_cb(evr_timer_t *t) {
  record_lateness((size_t)(t - evr_t));
}
static void evr_setup(size_t n) {
  if (!evr_loop && evr_loop_new(&evr_loop, NULL) != 0) abort();
  evr_t = line_array(n, sizeof *evr_t);
  if (!evr_t) abort();
  for (size_t i = 0; i < n; i++) evr_timer_init(evr_loop, &evr_t[i]);
}
/* A stopped timer holds nothing: its memory can go at once. */
static void evr_teardown(void) {
  for (size_t i = 0; i < n_timers; i++) evr_timer_stop(&evr_t[i]);
  free(evr_t);
  evr_t = NULL;
}
static void evr_start(size_t i, uint64_t ms) {
  evr_timer_start(&evr_t[i], evr_cb, ms, 0);
}
static void evr_stop(size_t i) { evr_timer_stop(&evr_t[i]); }
static void evr_nowait(void) { evr_loop_run(evr_loop, EVR_RUN_NOWAIT); }
static void evr_default(void) { evr_loop_run(evr_loop, EVR_RUN_DEFAULT); }
static void evr_clock_sync(void) { evr_update_time(evr_loop); }
static void evr_probe(size_t i, uint64_t ns) {
  evr_timer_start_ns(&evr_t[i], evr_probe_cb, ns, 0);
}

static evr_timer_t evr_driver;
static void evr_driver_cb(evr_timer_t *t) {
  (void)t;
  phase_fn();
}
static void evr_in_loop(void (*fn)(void)) {
  phase_fn = fn;
  evr_timer_init(evr_loop, &evr_driver);
  evr_timer_start(&evr_driver, evr_driver_cb, 0, 0);
  evr_loop_run(evr_loop, EVR_RUN_NOWAIT);
  evr_loop_run(evr_loop, EVR_RUN_NOWAIT);
  evr_timer_stop(&evr_driver);
}

static const struct impl impl_evr = {
    "evr",      evr_setup,  evr_teardown, evr_start, evr_start,  evr_stop,
    evr_nowait, evr_default, evr_clock_sync, evr_probe, evr_in_loop};

/* ---- libuv ---- */
#ifdef BENCH_HAVE_UV
static uv_loop_t uv_loop;
static int uv_ready;
static uv_timer_t *uv_t;

static void uvb_cb(uv_timer_t *t) {
  (void)t;
  fired++;
}
static void uvb_probe_cb(uv_timer_t *t) { record_lateness((size_t)(t - uv_t)); }
static void uvb_setup(size_t n) {
  if (!uv_ready && uv_loop_init(&uv_loop) != 0) abort();
  uv_ready = 1;
  uv_t = line_array(n, sizeof *uv_t);
  if (!uv_t) abort();
  for (size_t i = 0; i < n; i++) uv_timer_init(&uv_loop, &uv_t[i]);
}
static void uvb_teardown(void) {
  for (size_t i = 0; i < n_timers; i++) uv_close((uv_handle_t *)&uv_t[i], NULL);
  uv_run(&uv_loop, UV_RUN_NOWAIT);
  free(uv_t);
  uv_t = NULL;
}
static void uvb_start(size_t i, uint64_t ms) {
  uv_timer_start(&uv_t[i], uvb_cb, ms, 0);
}
static void uvb_stop(size_t i) { uv_timer_stop(&uv_t[i]); }
static void uvb_nowait(void) { uv_run(&uv_loop, UV_RUN_NOWAIT); }
static void uvb_default(void) {
  uv_update_time(&uv_loop);
  uv_run(&uv_loop, UV_RUN_DEFAULT);
}
static void uvb_clock_sync(void) { uv_update_time(&uv_loop); }
/* libuv takes whole milliseconds: round up, never early by construction. */
static void uvb_probe(size_t i, uint64_t ns) {
  uv_timer_start(&uv_t[i], uvb_probe_cb, (ns + NS_PER_MS - 1) / NS_PER_MS, 0);
}
static uv_timer_t uv_driver;
static void uvb_driver_cb(uv_timer_t *t) {
  (void)t;
  phase_fn();
}
static void uvb_in_loop(void (*fn)(void)) {
  phase_fn = fn;
  uv_timer_init(&uv_loop, &uv_driver);
  uv_timer_start(&uv_driver, uvb_driver_cb, 0, 0);
  uv_run(&uv_loop, UV_RUN_NOWAIT);
  uv_run(&uv_loop, UV_RUN_NOWAIT);
  uv_close((uv_handle_t *)&uv_driver, NULL);
  uv_run(&uv_loop, UV_RUN_NOWAIT);
}
static const struct impl impl_uv = {
    "libuv",    uvb_setup,   uvb_teardown, uvb_start, uvb_start,  uvb_stop,
    uvb_nowait, uvb_default, uvb_clock_sync, uvb_probe, uvb_in_loop};
#endif

/* ---- libev ---- */
#ifdef BENCH_HAVE_EV
static struct ev_loop *ev_l;
static ev_timer *ev_t;

static void evb_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  fired++;
}
static void evb_probe_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)revents;
  record_lateness((size_t)(w - ev_t));
}
static void evb_setup(size_t n) {
  if (!ev_l) ev_l = ev_loop_new(EVFLAG_AUTO);
  if (!ev_l) abort();
  ev_t = line_array(n, sizeof *ev_t);
  if (!ev_t) abort();
  for (size_t i = 0; i < n; i++) ev_timer_init(&ev_t[i], evb_cb, 0., 0.);
}
static void evb_teardown(void) {
  for (size_t i = 0; i < n_timers; i++) ev_timer_stop(ev_l, &ev_t[i]);
  free(ev_t);
  ev_t = NULL;
}
static void evb_start(size_t i, uint64_t ms) {
  ev_timer_set(&ev_t[i], (double)ms / 1e3, 0.);
  ev_timer_start(ev_l, &ev_t[i]);
}
/* libev's documented way to change an active timer's timeout: set repeat,
 * then ev_timer_again (an in-place heap adjustment, either direction). */
static void evb_restart(size_t i, uint64_t ms) {
  ev_t[i].repeat = (double)ms / 1e3;
  ev_timer_again(ev_l, &ev_t[i]);
}
static void evb_stop(size_t i) { ev_timer_stop(ev_l, &ev_t[i]); }
static void evb_nowait(void) { ev_run(ev_l, EVRUN_NOWAIT); }
static void evb_default(void) {
  ev_now_update(ev_l);
  ev_run(ev_l, 0);
}
/* libev counts a start from its cached loop time: refresh it before the
 * batch (the batch itself still makes it stale). */
static void evb_clock_sync(void) { ev_now_update(ev_l); }
static void evb_probe(size_t i, uint64_t ns) {
  ev_timer_init(&ev_t[i], evb_probe_cb, (double)ns / 1e9, 0.);
  ev_timer_start(ev_l, &ev_t[i]);
}
static ev_timer ev_driver;
static void evb_driver_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  phase_fn();
}
static void evb_in_loop(void (*fn)(void)) {
  phase_fn = fn;
  ev_timer_init(&ev_driver, evb_driver_cb, 0., 0.);
  ev_timer_start(ev_l, &ev_driver);
  ev_run(ev_l, EVRUN_NOWAIT);
  ev_run(ev_l, EVRUN_NOWAIT);
  ev_timer_stop(ev_l, &ev_driver);
}
static const struct impl impl_ev = {
    "libev",    evb_setup,   evb_teardown,  evb_start, evb_restart, evb_stop,
    evb_nowait, evb_default, evb_clock_sync, evb_probe, evb_in_loop};
#endif

static const struct impl *impls[MAX_IMPLS];
static int n_impls;

/* ---- measurement ---- */

static const struct impl *cur;

static void phase_start(void) {
  for (size_t i = 0; i < n_timers; i++) cur->start(i, timeout1[i]);
}
static void phase_restart(void) {
  for (size_t k = 0; k < n_timers; k++) {
    size_t i = perm[k];
    cur->restart(i, timeout2[i]);
  }
}
static void phase_stop(void) {
  for (size_t k = 0; k < n_timers; k++) cur->stop(perm[k]);
}
static void phase_start_random(void) {
  for (size_t i = 0; i < n_timers; i++) cur->start(i, rand_start[i]);
}
static void phase_restart_random(void) {
  for (size_t k = 0; k < n_timers; k++) {
    size_t i = perm[k];
    cur->restart(i, rand_again[i]);
  }
}
static void phase_start_expiring(void) {
  for (size_t i = 0; i < n_timers; i++) cur->start(i, expire_to[i]);
}

/* Each phase runs inside a callback and is timed together with the loop
 * iterations around it (evr settles the due times of fresh starts there;
 * that work belongs to the operation). */
static double timed_phase(void (*fn)(void)) {
  uint64_t t0 = now_ns();
  cur->in_loop(fn);
  return (double)(now_ns() - t0) / (double)n_timers;
}

static void one_round(const struct impl *im, size_t n, double out[OP_COUNT]) {
  n_timers = n;
  cur = im;
  im->setup(n);
  out[OP_START] = timed_phase(phase_start);
  out[OP_RESTART] = timed_phase(phase_restart);
  out[OP_STOP] = timed_phase(phase_stop);
  /* Random restarts: a fresh set of timeouts in [1 ms, 60 s], then each
   * timer moved to another one. The few timers due within the pass fire in
   * its loop iterations, alike for every implementation. */
  im->in_loop(phase_start_random);
  out[OP_RESTART_RANDOM] = timed_phase(phase_restart_random);
  im->in_loop(phase_stop);
  /* Expiry: everything due, one NOWAIT run (the loop's time update, the
   * timer phase and a non-blocking poll). */
  /* Started outside the loop: libuv and libev would count from a cached
   * time that the start phase itself makes stale, and fire timers before
   * the measured run. */
  im->run_nowait();
  phase_start_expiring();
  fired = 0;
  sleep_ms(EXPIRE_SPREAD_MS + 5);
  uint64_t t0 = now_ns();
  im->run_nowait();
  out[OP_EXPIRE] = (double)(now_ns() - t0) / (double)n;
  if (fired != n) {
    fprintf(stderr, "%s: %zu of %zu timers expired\n", im->name, fired, n);
    exit(1);
  }
  im->teardown();
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void prepare_inputs(size_t n) {
  for (size_t i = 0; i < n; i++) {
    timeout1[i] = 10000 + rnd() % 60000;           /* idle timeouts: 10-70 s */
    timeout2[i] = timeout1[i] + 1 + rnd() % 1000;  /* pushed later */
    rand_start[i] = 1 + rnd() % RANDOM_MAX_MS;
    rand_again[i] = 1 + rnd() % RANDOM_MAX_MS;
    expire_to[i] = 1 + rnd() % EXPIRE_SPREAD_MS;
    perm[i] = i;
  }
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)(rnd() % i);
    size_t t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
}

static void bench_costs(size_t max_n) {
  printf("## Timer operation cost (ns per operation, median of rounds)\n\n");
  printf("| op | timers | rounds |");
  for (int k = 0; k < n_impls; k++) printf(" %s ns |", impls[k]->name);
  for (int k = 1; k < n_impls; k++) printf(" %s/evr |", impls[k]->name);
  printf("\n|---|---:|---:|");
  for (int k = 0; k < 2 * n_impls - 1; k++) printf("---:|");
  printf("\n");
  for (size_t n = 1000; n <= max_n; n *= 10) {
    /* A whole run to 1e6, precision included, takes about a minute on a
     * 2-core machine. */
    int rounds = n <= 1000 ? 31 : n <= 10000 ? 15 : n <= 100000 ? 7 : 5;
    static double res[MAX_IMPLS][OP_COUNT][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
      prepare_inputs(n);
      for (int k = 0; k < n_impls; k++) {
        int which = (k + r) % n_impls; /* rotate who goes first */
        double out[OP_COUNT];
        one_round(impls[which], n, out);
        for (int op = 0; op < OP_COUNT; op++) res[which][op][r] = out[op];
      }
    }
    for (int op = 0; op < OP_COUNT; op++) {
      double med[MAX_IMPLS];
      for (int k = 0; k < n_impls; k++) med[k] = median(res[k][op], rounds);
      printf("| %s | %zu | %d |", op_names[op], n, rounds);
      for (int k = 0; k < n_impls; k++) printf(" %.1f |", med[k]);
      for (int k = 1; k < n_impls; k++) printf(" %.2fx |", med[k] / med[0]);
      printf("\n");
    }
    fflush(stdout);
  }
}

/* Started from one callback; each library is told the time before each
 * start (evr_update_time, uv_update_time, ev_now_update), so every timeout
 * counts from the moment of its start and the lateness measures how
 * closely the loop wakes up and runs what is due, not how long the batch
 * took. */
static void phase_start_probes(void) {
  for (size_t i = 0; i < n_timers; i++) {
    cur->clock_sync();
    start_real[i] = now_ns();
    cur->start_probe(i, probe_ns[i]);
  }
}

static void precision_run(const struct impl *im, uint64_t window_ms) {
  const size_t n = PROBES;
  n_timers = n;
  cur = im;
  im->setup(n);
  fired = 0;
  im->in_loop(phase_start_probes);
  im->run_default();
  if (fired != n) {
    fprintf(stderr, "%s: %zu of %zu probes fired\n", im->name, fired, n);
    exit(1);
  }
  size_t early = 0;
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    early += lateness_ns[i] < 0;
    sum += (double)lateness_ns[i];
  }
  qsort(lateness_ns, n, sizeof *lateness_ns, cmp_i64);
  printf("| %" PRIu64 " %s | %s | %.3f | %.3f | %.3f | %.3f | %zu |\n",
         window_ms % 1000 ? window_ms : window_ms / 1000,
         window_ms % 1000 ? "ms" : "s", im->name, sum / (double)n / 1e6,
         (double)lateness_ns[n / 2] / 1e6,
         (double)lateness_ns[n * 99 / 100] / 1e6,
         (double)lateness_ns[n - 1] / 1e6, early);
  fflush(stdout);
  im->teardown();
}

static void bench_precision(void) {
  static const uint64_t windows_ms[] = {1000, 100};
  printf("\n## Expiry precision (%d timers due over 1 s and over 100 ms)\n\n",
         PROBES);
  printf("Timeouts uniform over the window in nanoseconds (evr: "
         "evr_timer_start_ns(); libev: the same value in seconds, as a "
         "double; libuv takes whole milliseconds: rounded up), all "
         "started from one callback. Lateness = callback time - (monotonic "
         "clock read just before that timer's start + its timeout); figures "
         "in ms. Before each start the library's cached time is refreshed "
         "(evr_update_time(), uv_update_time(), ev_now_update()), so every "
         "timeout counts from its own start and the lateness is that of the "
         "loop's wake-up and dispatch.\n\n");
  printf("| window | impl | mean ms | p50 ms | p99 ms | max ms "
         "| fired early |\n");
  printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (size_t w = 0; w < sizeof windows_ms / sizeof *windows_ms; w++) {
    /* The same timeouts for every implementation. */
    for (size_t i = 0; i < PROBES; i++)
      probe_ns[i] = rnd() % (windows_ms[w] * NS_PER_MS + 1);
    for (int k = 0; k < n_impls; k++) precision_run(impls[k], windows_ms[w]);
  }
}

int main(int argc, char **argv) {
  size_t max_n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
  if (max_n < PROBES) max_n = PROBES;
  impls[n_impls++] = &impl_evr;
#ifdef BENCH_HAVE_UV
  impls[n_impls++] = &impl_uv;
#endif
#ifdef BENCH_HAVE_EV
  impls[n_impls++] = &impl_ev;
#endif
  timeout1 = malloc(max_n * sizeof *timeout1);
  timeout2 = malloc(max_n * sizeof *timeout2);
  rand_start = malloc(max_n * sizeof *rand_start);
  rand_again = malloc(max_n * sizeof *rand_again);
  expire_to = malloc(max_n * sizeof *expire_to);
  perm = malloc(max_n * sizeof *perm);
  probe_ns = malloc(PROBES * sizeof *probe_ns);
  start_real = malloc(PROBES * sizeof *start_real);
  lateness_ns = malloc(PROBES * sizeof *lateness_ns);
  if (!timeout1 || !timeout2 || !rand_start || !rand_again || !expire_to ||
      !perm || !probe_ns || !start_real || !lateness_ns)
    return 1;
  printf("# evr timer benchmark\n\nImplementations:");
  for (int k = 0; k < n_impls; k++) printf(" %s", impls[k]->name);
  printf(". Ratios are peer/evr: above 1 means evr is faster.\n\n");
  bench_costs(max_n);
  bench_precision();
  if (evr_loop && evr_loop_free(evr_loop) != 0)
    fprintf(stderr, "evr_loop_free: the loop is still busy\n");
#ifdef BENCH_HAVE_UV
  if (uv_ready) uv_loop_close(&uv_loop);
#endif
#ifdef BENCH_HAVE_EV
  if (ev_l) ev_loop_destroy(ev_l);
#endif
  free(timeout1);
  free(timeout2);
  free(rand_start);
  free(rand_again);
  free(expire_to);
  free(perm);
  free(probe_ns);
  free(start_real);
  free(lateness_ns);
  return 0;
}
