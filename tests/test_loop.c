/* tests/test_loop.c: loop creation, backend choice, run modes, phase order,
 * stop, ref/unref, hooks, close callbacks, walk, metrics and error paths. */
/* evr-test: backends */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fault.h"
#include "helpers.h"

/* ---- a trace of phases ---- */
static char trace[64];
static size_t trace_len;
static void mark(char c) {
  if (trace_len + 1 < sizeof trace) trace[trace_len++] = c;
  trace[trace_len] = 0;
}

static void test_loop_new_rejects_bad_arguments(void **state) {
  (void)state;
  evr_loop_t *l = (evr_loop_t *)0x1;
  assert_int_equal(evr_loop_new(NULL, NULL), EVR_EINVAL);
  evr_loop_options_t o = {.flags = 0x80};
  assert_int_equal(evr_loop_new(&l, &o), EVR_EINVAL);
  /* The receive ring: a power of two up to 32768 buffers of 1 KiB to
   * 16 MiB each (0: the defaults). */
  evr_loop_options_t r = {.io_buffers = 3};
  assert_int_equal(evr_loop_new(&l, &r), EVR_EINVAL);
  r.io_buffers = 65536;
  assert_int_equal(evr_loop_new(&l, &r), EVR_EINVAL);
  r.io_buffers = 0;
  r.io_buffer_size = 1023;
  assert_int_equal(evr_loop_new(&l, &r), EVR_EINVAL);
  r.io_buffer_size = (1u << 24) + 1;
  assert_int_equal(evr_loop_new(&l, &r), EVR_EINVAL);
  assert_ptr_equal(l, (evr_loop_t *)0x1); /* untouched by a refusal */
  r.io_buffers = 32768;
  r.io_buffer_size = 1024;
  evr_loop_t *ok;
  assert_evr_ok(evr_loop_new(&ok, &r));
  assert_evr_ok(evr_loop_free(ok));
  assert_int_equal(evr_loop_free(NULL), EVR_EINVAL);
  assert_int_equal(evr_loop_run(NULL, EVR_RUN_DEFAULT), EVR_EINVAL);
  assert_int_equal(evr_loop_run(test_loop, (evr_run_mode_t)7), EVR_EINVAL);
  evr_loop_metrics_t m;
  assert_int_equal(evr_loop_metrics(NULL, &m), EVR_EINVAL);
  assert_int_equal(evr_loop_metrics(test_loop, NULL), EVR_EINVAL);
}

static void test_loop_unknown_backend_is_enotsup_without_fallback(void **state) {
  (void)state;
  evr_loop_t *l = NULL;
  evr_loop_options_t o = {.backend = "no-such-backend"};
  assert_int_equal(evr_loop_new(&l, &o), EVR_ENOTSUP);
  assert_null(l);

  char *saved = getenv("EVR_BACKEND") ? strdup(getenv("EVR_BACKEND")) : NULL;
  char want[32];
  snprintf(want, sizeof want, "%s", requested_backend());
  assert_int_equal(setenv("EVR_BACKEND", "no-such-backend", 1), 0);
  int rc_env = evr_loop_new(&l, NULL);
  /* Options beat the environment, and IGNORE_ENV skips it. */
  o.backend = want;
  int rc_opt = evr_loop_new(&l, &o);
  if (saved) {
    setenv("EVR_BACKEND", saved, 1);
    free(saved);
  } else {
    unsetenv("EVR_BACKEND");
  }
  assert_int_equal(rc_env, EVR_ENOTSUP);
  assert_evr_ok(rc_opt);
  assert_string_equal(evr_loop_backend(l), want);
  assert_int_equal(evr_loop_free(l), 0);
  evr_loop_options_t ig = {.flags = EVR_LOOP_IGNORE_ENV};
  assert_evr_ok(evr_loop_new(&l, &ig));
  assert_string_equal(evr_loop_backend(l), evr_backends()[0]);
  assert_int_equal(evr_loop_free(l), 0);
}

static void test_loop_backend_list_names_every_built_backend(void **state) {
  (void)state;
  const char *const *b = evr_backends();
  int found_req = 0, n = 0;
  for (; b[n]; n++) {
    evr_loop_t *l;
    evr_loop_options_t o = {.backend = b[n]};
    int rc = evr_loop_new(&l, &o);
    const char *why = evr_test_kernel_refuses(b[n]);
    if (why && rc == EVR_ENOTSUP) {
      /* Built, but this kernel refuses it: refused is the right answer. */
      print_message("note: %s not opened: %s\n", b[n], why);
      continue;
    }
    assert_evr_ok(rc);
    assert_string_equal(evr_loop_backend(l), b[n]);
    assert_int_equal(evr_loop_free(l), 0);
    if (strcmp(b[n], requested_backend()) == 0) found_req = 1;
  }
  assert_true(n >= 1);
  assert_true(found_req);
}

static void test_loop_run_without_handles_returns_zero_in_every_mode(void **state) {
  (void)state;
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

/* Phase order: one iteration with a ready fd, a prepare hook, a deferred
 * task, a check hook and a closing handle. */
static evr_io_t po_io;
static evr_prepare_t po_prep;
static evr_check_t po_check;
static evr_defer_t po_task;
static evr_prepare_t po_closer;
static int po_fds[2];

static void po_io_cb(evr_io_t *io, unsigned ev) {
  (void)ev;
  char c;
  assert_int_equal(read(evr_io_fd(io), &c, 1), 1);
  mark('I');
}
static void po_prep_cb(evr_prepare_t *h) { (void)h; mark('P'); }
static void po_check_cb(evr_check_t *h) { (void)h; mark('C'); }
static void po_task_cb(evr_defer_t *t) { (void)t; mark('D'); }
static void po_close_cb(evr_handle_t *h) { (void)h; mark('X'); }

static void test_loop_phases_run_in_documented_order(void **state) {
  (void)state;
  trace_len = 0;
  make_pipe(po_fds);
  assert_int_equal(write(po_fds[1], "x", 1), 1);
  assert_evr_ok(evr_io_init(test_loop, &po_io, po_fds[0]));
  assert_evr_ok(evr_io_start(&po_io, EVR_READ, po_io_cb));
  assert_evr_ok(evr_prepare_init(test_loop, &po_prep));
  assert_evr_ok(evr_prepare_start(&po_prep, po_prep_cb));
  assert_evr_ok(evr_check_init(test_loop, &po_check));
  assert_evr_ok(evr_check_start(&po_check, po_check_cb));
  evr_defer_init(&po_task);
  assert_evr_ok(evr_defer(test_loop, &po_task, po_task_cb));
  assert_evr_ok(evr_prepare_init(test_loop, &po_closer));
  assert_evr_ok(evr_close(&po_closer.base, po_close_cb));
  assert_int_equal(trace_len, 0); /* close_cb never runs inside evr_close */

  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_string_equal(trace, "PIDCX");
  /* Next iteration: nothing readable, no task, no closing handle. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_string_equal(trace, "PIDCXPC");
  assert_evr_ok(evr_close(&po_io.base, NULL));
  close(po_fds[0]);
  close(po_fds[1]);
}

/* ---- stop ---- */
static void never_cb(evr_io_t *io, unsigned ev) {
  (void)io;
  (void)ev;
  fail_msg("callback of an idle fd ran");
}

static int stop_count;
static void stop_task_cb(evr_defer_t *t) {
  /* Re-queued forever: only stop ends a DEFAULT run. A pending task also
   * keeps every poll non-blocking, so the run never sleeps. */
  assert_evr_ok(evr_defer(t->loop, t, stop_task_cb));
  if (++stop_count == 3) evr_loop_stop(t->loop);
}

static void test_loop_stop_inside_callback_ends_default_run(void **state) {
  (void)state;
  evr_defer_t t;
  stop_count = 0;
  evr_defer_init(&t);
  assert_evr_ok(evr_defer(test_loop, &t, stop_task_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 1);
  assert_int_equal(stop_count, 3);
  /* The stop request is consumed: the next run goes on. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(stop_count, 4);
  assert_evr_ok(evr_defer_cancel(&t));
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

static void test_loop_stop_before_run_returns_without_blocking(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  make_pipe(fds);
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, never_cb));
  evr_loop_stop(test_loop);
  /* The idle pipe would block DEFAULT forever; the pending stop does not. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 1);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

/* ---- ref / unref and run modes ---- */

static void test_loop_unref_handle_does_not_keep_loop_alive(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  make_pipe(fds);
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_int_equal(evr_has_ref(&io.base), 1);
  assert_evr_ok(evr_io_start(&io, EVR_READ, never_cb));
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  evr_unref(&io.base);
  evr_unref(&io.base); /* idempotent */
  assert_int_equal(evr_has_ref(&io.base), 0);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  /* DEFAULT and ONCE return at once instead of blocking on the idle pipe. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 0);
  evr_ref(&io.base);
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_int_equal(evr_io_stop(&io), 0);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  assert_int_equal(evr_is_active(&io.base), 0);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

static int once_reads;
static void once_cb(evr_io_t *io, unsigned ev) {
  assert_true(ev & EVR_READ);
  char buf[8];
  assert_true(read(evr_io_fd(io), buf, sizeof buf) > 0);
  once_reads++;
}

static void test_loop_run_once_blocks_until_io_and_nowait_does_not(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  make_pipe(fds);
  once_reads = 0;
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, once_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(once_reads, 0);
  assert_int_equal(write(fds[1], "a", 1), 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  assert_int_equal(once_reads, 1);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

/* ---- close ---- */
static int closed_count;
static evr_handle_t *closed_last;
static void count_close_cb(evr_handle_t *h) {
  closed_count++;
  closed_last = h;
}

static void self_close_prep_cb(evr_prepare_t *h) {
  assert_evr_ok(evr_close(&h->base, count_close_cb));
  assert_int_equal(evr_close(&h->base, count_close_cb), EVR_EALREADY);
  assert_int_equal(closed_count, 0);
}

static void test_loop_close_from_own_callback_runs_close_cb_once_later(void **state) {
  (void)state;
  evr_prepare_t p;
  closed_count = 0;
  assert_evr_ok(evr_prepare_init(test_loop, &p));
  assert_evr_ok(evr_prepare_start(&p, self_close_prep_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(closed_count, 1);
  assert_ptr_equal(closed_last, &p.base);
  assert_int_equal(evr_is_closing(&p.base), 1);
  assert_int_equal(evr_close(&p.base, NULL), EVR_EALREADY);
  assert_int_equal(evr_prepare_start(&p, self_close_prep_cb), EVR_EINVAL);
  /* A closed handle may be initialised again. */
  assert_evr_ok(evr_prepare_init(test_loop, &p));
  assert_int_equal(evr_is_closing(&p.base), 0);
  assert_evr_ok(evr_close(&p.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
}

static void test_loop_close_rejects_null_and_uninitialised(void **state) {
  (void)state;
  evr_prepare_t p;
  memset(&p, 0, sizeof p);
  assert_int_equal(evr_close(NULL, NULL), EVR_EINVAL);
  assert_int_equal(evr_close(&p.base, NULL), EVR_EINVAL);
}

static void test_loop_free_busy_while_handle_open(void **state) {
  (void)state;
  evr_loop_t *l;
  evr_prepare_t p;
  evr_defer_t t;
  assert_evr_ok(evr_loop_new(&l, NULL));
  assert_evr_ok(evr_prepare_init(l, &p));
  assert_int_equal(evr_loop_free(l), EVR_EBUSY);
  assert_evr_ok(evr_close(&p.base, NULL));
  /* Still busy until the close callback phase has run. */
  assert_int_equal(evr_loop_free(l), EVR_EBUSY);
  assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
  evr_defer_init(&t);
  assert_evr_ok(evr_defer(l, &t, (evr_defer_cb)abort));
  assert_int_equal(evr_loop_free(l), EVR_EBUSY);
  assert_evr_ok(evr_defer_cancel(&t));
  assert_int_equal(evr_loop_free(l), 0);
}

static int reentry_rc;
static void reenter_prep_cb(evr_prepare_t *h) {
  reentry_rc = evr_loop_run(h->base.loop, EVR_RUN_NOWAIT);
  assert_int_equal(evr_loop_free(h->base.loop), EVR_EBUSY);
  assert_evr_ok(evr_close(&h->base, NULL));
}

static void test_loop_run_is_not_reentrant(void **state) {
  (void)state;
  evr_prepare_t p;
  reentry_rc = 0;
  assert_evr_ok(evr_prepare_init(test_loop, &p));
  assert_evr_ok(evr_prepare_start(&p, reenter_prep_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(reentry_rc, EVR_EBUSY);
}

/* ---- hooks ---- */
static evr_check_t hk_a, hk_b;
static int hk_a_runs, hk_b_runs;
static void hk_b_cb(evr_check_t *h) { (void)h; hk_b_runs++; }
static void hk_a_cb(evr_check_t *h) {
  (void)h;
  if (hk_a_runs++ == 0) {
    /* Started during the check phase: first runs next iteration. */
    assert_evr_ok(evr_check_start(&hk_b, hk_b_cb));
    assert_int_equal(evr_check_start(&hk_b, hk_b_cb), EVR_EALREADY);
  } else {
    assert_evr_ok(evr_check_stop(&hk_a));
    assert_evr_ok(evr_check_stop(&hk_b)); /* stopped before its turn */
  }
}

static void test_loop_hooks_started_or_stopped_in_phase_affect_next_round(void **state) {
  (void)state;
  hk_a_runs = hk_b_runs = 0;
  assert_evr_ok(evr_check_init(test_loop, &hk_a));
  assert_evr_ok(evr_check_init(test_loop, &hk_b));
  assert_int_equal(evr_check_start(&hk_a, NULL), EVR_EINVAL);
  assert_int_equal(evr_check_start(NULL, hk_a_cb), EVR_EINVAL);
  assert_int_equal(evr_prepare_init(NULL, &hk_a), EVR_EINVAL);
  /* A check handle is not a prepare handle. */
  assert_int_equal(evr_prepare_start(&hk_a, hk_a_cb), EVR_EINVAL);
  assert_evr_ok(evr_check_start(&hk_a, hk_a_cb));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 1);
  assert_int_equal(hk_a_runs, 1);
  assert_int_equal(hk_b_runs, 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  assert_int_equal(hk_a_runs, 2);
  assert_int_equal(hk_b_runs, 0);
  assert_int_equal(evr_check_stop(&hk_a), 0); /* idempotent */
  assert_evr_ok(evr_close(&hk_a.base, NULL));
  assert_evr_ok(evr_close(&hk_b.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
}

/* ---- walk and metrics ---- */
static int walked;
static void walk_cb(evr_handle_t *h, void *arg) {
  assert_ptr_equal(arg, &walked);
  assert_string_equal(evr_handle_type_name(h), walked == 0 ? "prepare" : "check");
  walked++;
  assert_evr_ok(evr_close(h, NULL));
}

static void test_loop_walk_visits_open_handles_and_allows_close(void **state) {
  (void)state;
  evr_prepare_t p;
  evr_check_t c, gone;
  walked = 0;
  assert_evr_ok(evr_prepare_init(test_loop, &p));
  assert_evr_ok(evr_check_init(test_loop, &c));
  assert_evr_ok(evr_check_init(test_loop, &gone));
  assert_evr_ok(evr_close(&gone.base, NULL)); /* closing: not walked */
  evr_loop_walk(test_loop, walk_cb, &walked);
  assert_int_equal(walked, 2);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
}

static void test_loop_metrics_count_iterations_and_events(void **state) {
  (void)state;
  int fds[2];
  evr_io_t io;
  evr_loop_metrics_t m0, m1;
  make_pipe(fds);
  once_reads = 0;
  assert_evr_ok(evr_loop_metrics(test_loop, &m0));
  assert_evr_ok(evr_io_init(test_loop, &io, fds[0]));
  assert_evr_ok(evr_io_start(&io, EVR_READ, once_cb));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(write(fds[1], "a", 1), 1);
    assert_int_equal(evr_loop_run(test_loop, EVR_RUN_ONCE), 1);
  }
  assert_evr_ok(evr_loop_metrics(test_loop, &m1));
  assert_int_equal(m1.iterations - m0.iterations, 3);
  assert_int_equal(m1.events - m0.events, 3);
  assert_int_equal(once_reads, 3);
  assert_evr_ok(evr_close(&io.base, NULL));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_NOWAIT), 0);
  close(fds[0]);
  close(fds[1]);
}

static void test_loop_time_is_cached_and_monotonic(void **state) {
  (void)state;
  uint64_t t0 = evr_now(test_loop);
  uint64_t h0 = evr_hrtime();
  assert_true(h0 / 1000000u >= t0);
  evr_update_time(test_loop);
  assert_true(evr_now(test_loop) >= t0);
  assert_true(evr_hrtime() >= h0);
}

/* Every error path of evr_loop_new() frees what it allocated and closes
 * what it opened: the nth wrapped call (allocation, epoll_create1,
 * epoll_ctl, eventfd, pipe) is made to fail, for n = 1, 2, ... until
 * evr_loop_new() gets through; each failure must leave the allocation and
 * descriptor counts where they were, and report the injected error. */
static void test_loop_new_error_paths_free_everything(void **state) {
  (void)state;
  if (!FAULT_AVAILABLE) skip(); /* no -Wl,--wrap on this linker */
  const int errs[] = {EMFILE, ENFILE, ENOMEM};
  for (size_t e = 0; e < sizeof errs / sizeof errs[0]; e++) {
    unsigned long n;
    int failures = 0;
    for (n = 1; n < 200; n++) {
      int fds = count_open_fds();
      long blocks = fault_live_blocks();
      evr_loop_t *l = NULL;
      fault_arm(NULL, n, errs[e], 1);
      int rc = evr_loop_new(&l, NULL);
      unsigned long injected = fault_injected();
      fault_disarm();
      if (rc == 0) {
        /* Past the last wrapped call, or a failure evr recovered from
         * (eventfd falls back to a pipe). */
        assert_evr_ok(evr_loop_free(l));
        assert_int_equal(fault_live_blocks(), blocks);
        assert_fds_back_to(fds);
        if (injected == 0) break;
        continue;
      }
      failures++;
      assert_int_equal(injected, 1);
      assert_true(rc == -errs[e] || rc == EVR_ENOMEM || rc == EVR_ENOTSUP);
      if (fault_live_blocks() != blocks)
        fail_msg("call %lu failing with %s: %ld block(s) leaked", n, evr_err_name(-errs[e]),
                 fault_live_blocks() - blocks);
      if (count_open_fds() != fds) {
        print_message("call %lu failing with %s: %d descriptor(s) left\n", n,
                      evr_err_name(-errs[e]), count_open_fds() - fds);
        assert_fds_back_to(fds); /* exact; waits only where libkqueue must settle */
      }
    }
    assert_true(n < 200);
    assert_true(failures >= 3); /* the loop, the backend, the wake-up channel */
  }
}

static int backend_built(const char *name) {
  for (const char *const *b = evr_backends(); *b; b++)
    if (!strcmp(*b, name)) return 1;
  return 0;
}

/* A kernel that refuses io_uring (ENOSYS; EPERM from seccomp or the
 * io_uring_disabled sysctl; simulated by failing the ring's creation):
 * naming io_uring is EVR_ENOTSUP, never a silent fallback, and nothing is
 * leaked; the default order moves on to the next backend without a word. */
static void test_loop_io_uring_refused_by_the_kernel(void **state) {
  (void)state;
  if (!backend_built("io_uring")) skip();
  if (!FAULT_AVAILABLE) skip();
  const int errs[] = {ENOSYS, EPERM};
  for (size_t e = 0; e < sizeof errs / sizeof errs[0]; e++) {
    int fds = count_open_fds();
    long blocks = fault_live_blocks();
    evr_loop_options_t o = {0};
    o.backend = "io_uring";
    evr_loop_t *l = NULL;
    fault_fail_always("io_uring_queue_init_params", errs[e]);
    assert_int_equal(evr_loop_new(&l, &o), EVR_ENOTSUP);
    assert_null(l);
    assert_int_equal(fault_live_blocks(), blocks);
    assert_fds_back_to(fds);
    /* Default order with epoll gone too: io_uring is passed over. */
    fault_fail_always("io_uring_queue_init_params", errs[e]);
    fault_arm("epoll_create1", 1, ENOSYS, 0);
    o.backend = NULL;
    o.flags = EVR_LOOP_IGNORE_ENV;
    int rc = evr_loop_new(&l, &o);
    fault_disarm();
    assert_evr_ok(rc);
    assert_string_not_equal(evr_loop_backend(l), "io_uring");
    assert_string_not_equal(evr_loop_backend(l), "epoll");
    assert_int_equal(evr_loop_free(l), 0);
    assert_int_equal(fault_live_blocks(), blocks);
    assert_fds_back_to(fds);
  }
  /* Without the fault, naming it works (where the fixture runs on it:
   * elsewhere the kernel may refuse it for real). */
  if (strcmp(requested_backend(), "io_uring") != 0) return;
  evr_loop_options_t o = {0};
  o.backend = "io_uring";
  evr_loop_t *l = NULL;
  assert_evr_ok(evr_loop_new(&l, &o));
  assert_string_equal(evr_loop_backend(l), "io_uring");
  assert_int_equal(evr_loop_free(l), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_loop_io_uring_refused_by_the_kernel),
      EVR_TEST(test_loop_new_rejects_bad_arguments),
      EVR_TEST(test_loop_new_error_paths_free_everything),
      EVR_TEST(test_loop_unknown_backend_is_enotsup_without_fallback),
      EVR_TEST(test_loop_backend_list_names_every_built_backend),
      EVR_TEST(test_loop_run_without_handles_returns_zero_in_every_mode),
      EVR_TEST(test_loop_phases_run_in_documented_order),
      EVR_TEST(test_loop_stop_inside_callback_ends_default_run),
      EVR_TEST(test_loop_stop_before_run_returns_without_blocking),
      EVR_TEST(test_loop_unref_handle_does_not_keep_loop_alive),
      EVR_TEST(test_loop_run_once_blocks_until_io_and_nowait_does_not),
      EVR_TEST(test_loop_close_from_own_callback_runs_close_cb_once_later),
      EVR_TEST(test_loop_close_rejects_null_and_uninitialised),
      EVR_TEST(test_loop_free_busy_while_handle_open),
      EVR_TEST(test_loop_run_is_not_reentrant),
      EVR_TEST(test_loop_hooks_started_or_stopped_in_phase_affect_next_round),
      EVR_TEST(test_loop_walk_visits_open_handles_and_allows_close),
      EVR_TEST(test_loop_metrics_count_iterations_and_events),
      EVR_TEST(test_loop_time_is_cached_and_monotonic),
  };
  return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
