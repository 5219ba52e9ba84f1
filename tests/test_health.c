/* tests/test_health.c: evr-proxy's active health checker (samples/health.c)
 * on its own, under every backend, against real listeners on 127.0.0.1: a
 * live target stays up; a closed listener takes it down after exactly
 * `fall` failed checks and a restarted one up after exactly `rise` passes;
 * send/expect against a small evr responder (the right reply passes, a
 * wrong one fails with its reason); a listener that accepts but never
 * answers fails with a reply timeout, a black-holed connect (a full accept
 * queue) with a connect timeout; passive reports count toward `fall`;
 * checks are spread over the interval; freeing mid-check closes everything.
 * Assertions are on counts and states, never on elapsed time. */
/* evr-test: backends */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "e2e.h"
#include "health.h"
#include "helpers.h"

/* ---- what the checker reports ---- */

struct change {
  int up;
  char reason[96];
  health_stats_t st; /* the target's counters at the change */
};
static struct change changes[64];
static int nchanges;

static void on_change(health_target_t *t, int up, const char *reason, void *arg) {
  (void)arg;
  assert_true(nchanges < 64);
  struct change *c = &changes[nchanges++];
  c->up = up;
  snprintf(c->reason, sizeof c->reason, "%s", reason);
  health_target_stats(t, &c->st);
}

static int freed;
static void on_freed(void *arg) {
  (void)arg;
  freed = 1;
}

static void free_checker(health_checker_t *hc) {
  freed = 0;
  assert_evr_ok(health_free(hc, on_freed, NULL));
  assert_int_equal(freed, 0); /* never inside the call */
  run_until(test_loop, &freed, 10000);
}

/* Run until the target has completed `n` checks in all. */
static void run_checks(health_target_t *t, uint64_t n) {
  health_stats_t st;
  for (int i = 0; i < 100000; i++) {
    health_target_stats(t, &st);
    if (st.checks >= n) return;
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  }
  fail_msg("no %llu checks", (unsigned long long)n);
}

/* Run until nchanges reaches n. */
static void run_changes(int n) {
  for (int i = 0; i < 100000 && nchanges < n; i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(nchanges, n);
}

static health_checker_t *checker(const health_options_t *base, const evr_addr_t *addrs,
                                 size_t n) {
  health_options_t o = *base;
  o.on_change = on_change;
  nchanges = 0;
  health_checker_t *hc;
  assert_evr_ok(health_new(&hc, test_loop, &o, addrs, n));
  assert_evr_ok(health_start(hc));
  return hc;
}

/* ---- targets ---- */

/* An evr listener that accepts and closes at once. */
static void accept_close(evr_listener_t *l, int fd) {
  (void)l;
  if (fd >= 0) close(fd);
}

static void listen_at(evr_listener_t *l, evr_addr_t *at, evr_accept_cb cb) {
  assert_evr_ok(evr_listener_init(test_loop, l));
  assert_evr_ok(evr_listen(l, at, NULL, cb));
  assert_evr_ok(evr_listener_sockname(l, at));
}

static int listener_closed;
static void on_listener_closed(evr_handle_t *h) {
  (void)h;
  listener_closed = 1;
}
static void close_listener(evr_listener_t *l) {
  listener_closed = 0;
  assert_evr_ok(evr_close(&l->base, on_listener_closed));
  run_until(test_loop, &listener_closed, 1000);
}

/* A responder: reads a request, answers `reply`, ends. */
static const char *reply;
struct resp {
  evr_stream_t s;
  int answered;
};
static int nresp;
static void resp_closed(evr_handle_t *h) {
  free(h);
  nresp--;
}
static void resp_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  (void)buf;
  struct resp *r = (struct resp *)s;
  if (nread > 0 && !r->answered) {
    r->answered = 1;
    if (evr_stream_write_copy(s, reply, strlen(reply)) == 0 && evr_stream_end(s, resp_closed) == 0)
      return;
  }
  if (nread > 0) return;
  if (!evr_is_closing(&s->base)) evr_close(&s->base, resp_closed);
}
static void resp_accept(evr_listener_t *l, int fd) {
  (void)l;
  if (fd < 0) return;
  struct resp *r = calloc(1, sizeof *r);
  assert_non_null(r);
  assert_evr_ok(evr_stream_init(test_loop, &r->s));
  nresp++;
  assert_evr_ok(evr_stream_open(&r->s, fd));
  assert_evr_ok(evr_stream_read_start(&r->s, resp_read));
}

/* A kernel listener nobody accepts from: connects complete, nothing is
 * ever read or written. */
static int silent_listener(evr_addr_t *at) {
  int l = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(l >= 0);
  assert_evr_ok(evr_addr_parse(at, "127.0.0.1:0"));
  assert_int_equal(bind(l, &at->u.sa, at->len), 0);
  socklen_t len = sizeof at->u;
  assert_int_equal(getsockname(l, &at->u.sa, &len), 0);
  at->len = len;
  assert_int_equal(listen(l, 64), 0);
  return l;
}

/* A listener whose accept queue is full and who never accepts: Linux drops
 * further SYNs, so a connect stays pending (helpers.h). Returns the
 * listener, or -1 where this system does not drop them. */
static int full_listener_or_none(evr_addr_t *at, int *fillers, int *nfill) {
  int dropped, l = full_listener(at, fillers, nfill, &dropped);
  if (!dropped) {
    for (int i = 0; i < *nfill; i++) close(fillers[i]);
    close(l);
    return -1;
  }
  return l;
}

/* Short intervals; a generous timeout, so that a check that should pass
 * does even on a loaded machine (tests that want a timeout set a short
 * one). */
static const health_options_t fast = {.interval_ms = 20, .timeout_ms = 5000, .rise = 2, .fall = 3};

/* ---- tests ---- */

static void test_health_live_target_stays_up(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_listener_t l;
  evr_addr_t at;
  assert_evr_ok(evr_addr_parse(&at, "127.0.0.1:0"));
  listen_at(&l, &at, accept_close);
  health_checker_t *hc = checker(&fast, &at, 1);
  health_target_t *t = health_target(hc, 0);
  assert_true(health_is_up(t)); /* up from the start */
  run_checks(t, 6);
  health_stats_t st;
  health_target_stats(t, &st);
  assert_true(st.up);
  assert_int_equal(st.failures, 0);
  assert_int_equal(st.state_changes, 0);
  assert_int_equal(nchanges, 0);
  assert_true(st.last_duration_ns > 0);
  free_checker(hc);
  close_listener(&l);
  assert_fds_back_to(base);
}

static void test_health_down_after_fall_failures_up_after_rise_passes(void **state) {
  (void)state;
  evr_listener_t l;
  evr_addr_t at;
  /* Listened on again later: a port below the ephemeral range, so that no
   * connection of a test running alongside takes it meanwhile. */
  int port = e2e_free_port();
  assert_true(port > 0);
  assert_evr_ok(evr_addr_from_ip(&at, "127.0.0.1", (uint16_t)port));
  listen_at(&l, &at, accept_close);
  health_checker_t *hc = checker(&fast, &at, 1);
  health_target_t *t = health_target(hc, 0);
  run_checks(t, 2); /* confirmed up */
  close_listener(&l);
  run_changes(1);
  assert_int_equal(changes[0].up, 0);
  assert_string_equal(changes[0].reason, "connect: connection refused");
  assert_int_equal(changes[0].st.failures, 3); /* exactly `fall` */
  assert_true(changes[0].st.checks >= 5);
  assert_false(health_is_up(t));
  assert_string_equal(health_target_reason(t), "connect: connection refused");
  /* A few more failures keep it down, without a change. */
  health_stats_t st;
  health_target_stats(t, &st);
  run_checks(t, st.checks + 2);
  assert_int_equal(nchanges, 1);
  /* Restarted on the same port: up after exactly `rise` passes. */
  health_target_stats(t, &st);
  listen_at(&l, &at, accept_close);
  run_changes(2);
  assert_int_equal(changes[1].up, 1);
  assert_string_equal(changes[1].reason, "check passed");
  uint64_t passes = (changes[1].st.checks - st.checks) - (changes[1].st.failures - st.failures);
  assert_int_equal(passes, 2);
  assert_int_equal(changes[1].st.state_changes, 2);
  free_checker(hc);
  close_listener(&l);
}

static void test_health_send_expect_pass_and_wrong_reply_fails(void **state) {
  (void)state;
  evr_listener_t l;
  evr_addr_t at;
  assert_evr_ok(evr_addr_parse(&at, "127.0.0.1:0"));
  listen_at(&l, &at, resp_accept);
  reply = "+PONG\r\n";
  health_options_t o = fast;
  o.send = "PING\r\n";
  o.expect = "PONG";
  health_checker_t *hc = checker(&o, &at, 1);
  health_target_t *t = health_target(hc, 0);
  run_checks(t, 4);
  health_stats_t st;
  health_target_stats(t, &st);
  assert_true(st.up);
  assert_int_equal(st.failures, 0);
  /* A wrong reply: a failure with its reason, down after `fall`. */
  reply = "-ERR nope\r\n";
  run_changes(1);
  assert_int_equal(changes[0].up, 0);
  assert_string_equal(changes[0].reason, "unexpected reply");
  assert_int_equal(changes[0].st.failures, 3);
  free_checker(hc);
  close_listener(&l);
  for (int i = 0; i < 1000 && nresp; i++) evr_loop_run(test_loop, EVR_RUN_ONCE);
  assert_int_equal(nresp, 0);
}

static void test_health_silent_server_is_a_reply_timeout(void **state) {
  (void)state;
  evr_addr_t at;
  int l = silent_listener(&at);
  health_options_t o = fast;
  o.timeout_ms = 30;
  o.send = "PING\r\n";
  o.expect = "PONG";
  health_checker_t *hc = checker(&o, &at, 1);
  health_target_t *t = health_target(hc, 0);
  /* Unconfirmed (no check passed yet): the first failure takes it down. */
  run_changes(1);
  assert_int_equal(changes[0].up, 0);
  assert_string_equal(changes[0].reason, "reply timeout");
  assert_int_equal(changes[0].st.checks, 1);
  assert_int_equal(changes[0].st.failures, 1);
  free_checker(hc);
  /* Without expect, the same listener passes: the kernel accepts. */
  o.expect = NULL;
  o.send = NULL;
  o.start_down = 1;
  hc = checker(&o, &at, 1);
  t = health_target(hc, 0);
  assert_false(health_is_up(t));
  run_changes(1);
  assert_int_equal(changes[0].up, 1);
  assert_int_equal(changes[0].st.checks, 2); /* rise from down */
  free_checker(hc);
  close(l);
}

static void test_health_black_holed_connect_is_a_connect_timeout(void **state) {
  (void)state;
  evr_addr_t at;
  int fillers[8], nfill;
  int l = full_listener_or_none(&at, fillers, &nfill);
  if (l < 0) {
    printf("note: this system does not drop SYNs to a full accept queue\n");
    skip();
  }
  health_options_t o = fast;
  o.timeout_ms = 30;
  o.fall = 2;
  health_checker_t *hc = checker(&o, &at, 1);
  run_changes(1);
  assert_int_equal(changes[0].up, 0);
  assert_string_equal(changes[0].reason, "connect timeout");
  assert_int_equal(changes[0].st.failures, 1);
  free_checker(hc);
  for (int i = 0; i < nfill; i++) close(fillers[i]);
  close(l);
}

static void test_health_passive_reports_count_toward_fall(void **state) {
  (void)state;
  evr_listener_t l;
  evr_addr_t at;
  assert_evr_ok(evr_addr_parse(&at, "127.0.0.1:0"));
  listen_at(&l, &at, accept_close);
  health_checker_t *hc = checker(&fast, &at, 1);
  health_target_t *t = health_target(hc, 0);
  run_checks(t, 2);
  for (int i = 0; i < 3; i++) health_report_failure(t);
  run_changes(2); /* down at the next check's start, up after `rise` */
  assert_int_equal(changes[0].up, 0);
  assert_string_equal(changes[0].reason, "failure reported");
  assert_int_equal(changes[0].st.failures, 3);
  assert_int_equal(changes[1].up, 1);
  assert_int_equal(changes[1].st.checks, changes[0].st.checks + 2);
  free_checker(hc);
  close_listener(&l);
}

static void test_health_checks_are_spread_over_the_interval(void **state) {
  (void)state;
  evr_addr_t at[4];
  int l = silent_listener(&at[0]);
  at[1] = at[2] = at[3] = at[0];
  health_options_t o = {.interval_ms = 4000, .timeout_ms = 4000};
  health_checker_t *hc = checker(&o, at, 4);
  assert_int_equal(health_count(hc), 4);
  assert_null(health_target(hc, 4));
  /* The first timer phase starts target 0 only (its check may be over
   * already): the others are due at 1000, 2000 and 3000 ms. */
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  health_stats_t st;
  health_target_stats(health_target(hc, 0), &st);
  assert_true(health_target_checking(health_target(hc, 0)) || st.checks == 1);
  for (size_t i = 1; i < 4; i++) {
    health_target_stats(health_target(hc, i), &st);
    assert_false(health_target_checking(health_target(hc, i)));
    assert_int_equal(st.checks, 0);
  }
  free_checker(hc);
  close(l);
}

static void test_health_free_mid_check_closes_everything(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_addr_t at[2];
  int fillers[8], nfill;
  int full = full_listener_or_none(&at[0], fillers, &nfill);
  int silent = silent_listener(&at[1]);
  if (full < 0) at[0] = at[1];
  health_options_t o = {.interval_ms = 20, .timeout_ms = 60000, .send = "x", .expect = "y"};
  health_checker_t *hc = checker(&o, at, 2);
  health_target_t *t0 = health_target(hc, 0), *t1 = health_target(hc, 1);
  health_target_set_data(t1, &o);
  assert_ptr_equal(health_target_data(t1), &o);
  assert_int_equal(health_target_index(t1), 1);
  for (int i = 0; i < 10000 && !(health_target_checking(t0) && health_target_checking(t1)); i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_true(health_target_checking(t0) && health_target_checking(t1));
  /* Let the silent one connect and send. */
  for (int i = 0; i < 5; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  free_checker(hc);
  assert_int_equal(nchanges, 0); /* nothing recorded for cancelled checks */
  if (full >= 0) {
    for (int i = 0; i < nfill; i++) close(fillers[i]);
    close(full);
  }
  close(silent);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_fds_back_to(base);
}

/* The change callback may free the checker. */
static health_checker_t *self_hc;
static void free_on_change(health_target_t *t, int up, const char *reason, void *arg) {
  on_change(t, up, reason, arg);
  freed = 0;
  assert_evr_ok(health_free(self_hc, on_freed, NULL));
  assert_int_equal(health_free(self_hc, NULL, NULL), EVR_EALREADY);
}

static void test_health_change_callback_may_free_the_checker(void **state) {
  (void)state;
  evr_addr_t at[3];
  int l = silent_listener(&at[0]);
  assert_evr_ok(evr_addr_parse(&at[1], "127.0.0.1:1")); /* refused */
  at[2] = at[1];
  health_options_t o = {.interval_ms = 20, .timeout_ms = 1000, .on_change = free_on_change};
  nchanges = 0;
  freed = 0;
  assert_evr_ok(health_new(&self_hc, test_loop, &o, at, 3));
  assert_evr_ok(health_start(self_hc));
  run_until(test_loop, &freed, 10000);
  assert_int_equal(nchanges, 1);
  close(l);
}

static void test_health_rejects_bad_options(void **state) {
  (void)state;
  evr_addr_t at;
  assert_evr_ok(evr_addr_parse(&at, "127.0.0.1:1"));
  health_checker_t *hc = NULL;
  health_options_t o = {0};
  assert_int_equal(health_new(&hc, test_loop, &o, &at, 0), EVR_EINVAL);
  assert_int_equal(health_new(NULL, test_loop, &o, &at, 1), EVR_EINVAL);
  o.expect = "";
  assert_int_equal(health_new(&hc, test_loop, &o, &at, 1), EVR_EINVAL);
  o.expect = NULL;
  o.interval_ms = 30u * 24 * 3600 * 1000;
  assert_int_equal(health_new(&hc, test_loop, &o, &at, 1), EVR_EINVAL);
  o.interval_ms = 0;
  assert_evr_ok(health_new(&hc, test_loop, &o, &at, 1));
  assert_evr_ok(health_start(hc));
  assert_int_equal(health_start(hc), EVR_EALREADY);
  free_checker(hc);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_health_live_target_stays_up),
      EVR_TEST(test_health_down_after_fall_failures_up_after_rise_passes),
      EVR_TEST(test_health_send_expect_pass_and_wrong_reply_fails),
      EVR_TEST(test_health_silent_server_is_a_reply_timeout),
      EVR_TEST(test_health_black_holed_connect_is_a_connect_timeout),
      EVR_TEST(test_health_passive_reports_count_toward_fall),
      EVR_TEST(test_health_checks_are_spread_over_the_interval),
      EVR_TEST(test_health_free_mid_check_closes_everything),
      EVR_TEST(test_health_change_callback_may_free_the_checker),
      EVR_TEST(test_health_rejects_bad_options),
  };
  return cmocka_run_group_tests_name("health", tests, NULL, NULL);
}
