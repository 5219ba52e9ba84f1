/* bench/timers.c: timer costs of evr against libuv and libev, in one process.
 *
 * For 1e3..1e6 active timers it measures ns per start, per restart in the
 * idle-timeout pattern (every timer pushed to a new, later timeout, in random
 * order), per stop (random order) and per expiry (all timers due, one
 * NOWAIT run). Start, restart and stop run inside a loop callback and are
 * timed with the two iterations around it. Rounds alternate the order of the implementations (A/B/C,
 * B/C/A, ...) and the table reports medians and peer/evr ratios (> 1 means
 * evr is faster). A second table checks expiry accuracy: 100,000 timers due
 * over 100 ms, lateness against the real clock read just before each start,
 * and how many fired early. Prints markdown to stdout.
 *
 * Usage: bench_timers [max_n] (default 1000000).
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

enum { OP_START, OP_RESTART, OP_STOP, OP_EXPIRE, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"start", "restart (idle)",
                                               "stop", "expire"};

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

static uint64_t rng = 88172645463325252u;
static uint64_t rnd(void) { /* xorshift64 */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* Shared per-round inputs, identical for every implementation. */
static size_t n_timers;
static uint64_t *timeout1;  /* first timeouts, ms */
static uint64_t *timeout2;  /* later timeouts for the restart pass */
static uint64_t *expire_to; /* timeouts within EXPIRE_SPREAD_MS */
static size_t *perm;        /* random order */
static size_t fired;

/* Accuracy run: the real clock before each start and the lateness. */
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
  void (*start_probe)(size_t i, uint64_t timeout_ms); /* accuracy run */
  void (*in_loop)(void (*fn)(void)); /* run fn from a callback */
};

/* Phases run from inside a loop callback, as a server's would. */
static void (*phase_fn)(void);

static void record_lateness(size_t i, uint64_t timeout_ms) {
  lateness_ns[i] =
      (int64_t)(now_ns() - start_real[i]) - (int64_t)(timeout_ms * 1000000u);
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
  size_t i = (size_t)(t - evr_t);
  record_lateness(i, expire_to[i]);
}
static void evr_setup(size_t n) {
  if (!evr_loop && evr_loop_new(&evr_loop, NULL) != 0) abort();
  evr_t = calloc(n, sizeof *evr_t);
  if (!evr_t) abort();
  for (size_t i = 0; i < n; i++) evr_timer_init(evr_loop, &evr_t[i]);
}
static void evr_teardown(void) {
  for (size_t i = 0; i < n_timers; i++) evr_close(&evr_t[i].base, NULL);
  while (evr_loop_run(evr_loop, EVR_RUN_NOWAIT) > 0) {
  }
  free(evr_t);
  evr_t = NULL;
}
static void evr_start(size_t i, uint64_t ms) {
  evr_timer_start(&evr_t[i], evr_cb, ms, 0);
}
static void evr_stop(size_t i) { evr_timer_stop(&evr_t[i]); }
static void evr_nowait(void) { evr_loop_run(evr_loop, EVR_RUN_NOWAIT); }
static void evr_default(void) { evr_loop_run(evr_loop, EVR_RUN_DEFAULT); }
static void evr_probe(size_t i, uint64_t ms) {
  evr_timer_start(&evr_t[i], evr_probe_cb, ms, 0);
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
  evr_close(&evr_driver.base, NULL);
  evr_loop_run(evr_loop, EVR_RUN_NOWAIT);
}

static const struct impl impl_evr = {"evr", evr_setup, evr_teardown,
                                     evr_start, evr_start, evr_stop,
                                     evr_nowait, evr_default, evr_probe,
                                     evr_in_loop};

/* ---- libuv ---- */
#ifdef BENCH_HAVE_UV
static uv_loop_t uv_loop;
static int uv_ready;
static uv_timer_t *uv_t;

static void uvb_cb(uv_timer_t *t) {
  (void)t;
  fired++;
}
static void uvb_probe_cb(uv_timer_t *t) {
  size_t i = (size_t)(t - uv_t);
  record_lateness(i, expire_to[i]);
}
static void uvb_setup(size_t n) {
  if (!uv_ready && uv_loop_init(&uv_loop) != 0) abort();
  uv_ready = 1;
  uv_t = calloc(n, sizeof *uv_t);
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
static void uvb_probe(size_t i, uint64_t ms) {
  uv_timer_start(&uv_t[i], uvb_probe_cb, ms, 0);
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
static const struct impl impl_uv = {"libuv", uvb_setup, uvb_teardown,
                                    uvb_start, uvb_start, uvb_stop,
                                    uvb_nowait, uvb_default, uvb_probe,
                                    uvb_in_loop};
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
  size_t i = (size_t)(w - ev_t);
  record_lateness(i, expire_to[i]);
}
static void evb_setup(size_t n) {
  if (!ev_l) ev_l = ev_loop_new(EVFLAG_AUTO);
  if (!ev_l) abort();
  ev_t = calloc(n, sizeof *ev_t);
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
/* libev's documented idle-timeout idiom: set repeat, then ev_timer_again. */
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
static void evb_probe(size_t i, uint64_t ms) {
  ev_timer_init(&ev_t[i], evb_probe_cb, (double)ms / 1e3, 0.);
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
static const struct impl impl_ev = {"libev", evb_setup, evb_teardown,
                                    evb_start, evb_restart, evb_stop,
                                    evb_nowait, evb_default, evb_probe,
                                    evb_in_loop};
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

/* Started from a callback that runs for a while, so a loop that counts from
 * its cached time would fire the last ones early. */
static void phase_start_probes(void) {
  for (size_t i = 0; i < n_timers; i++) {
    start_real[i] = now_ns();
    cur->start_probe(i, expire_to[i]);
  }
}

static void bench_accuracy(void) {
  const size_t n = 100000;
  printf("\n## Expiry accuracy (%zu timers due within %d ms)\n\n", n,
         EXPIRE_SPREAD_MS);
  printf("Started from one callback. Lateness = callback time - (real clock "
         "just before the start + timeout).\n\n");
  printf("| impl | p50 ms | p99 ms | max ms | fired early |\n");
  printf("|---|---:|---:|---:|---:|\n");
  for (int k = 0; k < n_impls; k++) {
    const struct impl *im = impls[k];
    n_timers = n;
    for (size_t i = 0; i < n; i++) expire_to[i] = rnd() % (EXPIRE_SPREAD_MS + 1);
    im->setup(n);
    cur = im;
    fired = 0;
    im->in_loop(phase_start_probes);
    im->run_default();
    if (fired != n) {
      fprintf(stderr, "%s: %zu of %zu probes fired\n", im->name, fired, n);
      exit(1);
    }
    size_t early = 0;
    for (size_t i = 0; i < n; i++) early += lateness_ns[i] < 0;
    qsort(lateness_ns, n, sizeof *lateness_ns, cmp_i64);
    printf("| %s | %.3f | %.3f | %.3f | %zu |\n", im->name,
           (double)lateness_ns[n / 2] / 1e6,
           (double)lateness_ns[n * 99 / 100] / 1e6,
           (double)lateness_ns[n - 1] / 1e6, early);
    im->teardown();
  }
}

int main(int argc, char **argv) {
  size_t max_n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
  if (max_n < 100000) max_n = 100000;
  impls[n_impls++] = &impl_evr;
#ifdef BENCH_HAVE_UV
  impls[n_impls++] = &impl_uv;
#endif
#ifdef BENCH_HAVE_EV
  impls[n_impls++] = &impl_ev;
#endif
  timeout1 = malloc(max_n * sizeof *timeout1);
  timeout2 = malloc(max_n * sizeof *timeout2);
  expire_to = malloc(max_n * sizeof *expire_to);
  perm = malloc(max_n * sizeof *perm);
  start_real = malloc(max_n * sizeof *start_real);
  lateness_ns = malloc(max_n * sizeof *lateness_ns);
  if (!timeout1 || !timeout2 || !expire_to || !perm || !start_real ||
      !lateness_ns)
    return 1;
  printf("# evr timer benchmark\n\nImplementations:");
  for (int k = 0; k < n_impls; k++) printf(" %s", impls[k]->name);
  printf(". Ratios are peer/evr: above 1 means evr is faster.\n\n");
  bench_costs(max_n);
  bench_accuracy();
  if (evr_loop) evr_loop_free(evr_loop);
#ifdef BENCH_HAVE_UV
  if (uv_ready) uv_loop_close(&uv_loop);
#endif
#ifdef BENCH_HAVE_EV
  if (ev_l) ev_loop_destroy(ev_l);
#endif
  free(timeout1);
  free(timeout2);
  free(expire_to);
  free(perm);
  free(start_real);
  free(lateness_ns);
  return 0;
}
