/* tests/test_resolve.c: getaddrinfo() on the thread pool: results, errors,
 * cancellation (queued and already running), liveness and reuse of a
 * request from its own callback. */
/* evr-test: backends threads timeout=300 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include "helpers.h"

typedef struct {
  evr_resolve_t req;
  int calls;
  int status;
  int inside_call; /* set while evr_resolve() runs: the cb must not see it */
  int cb_inside;
  int n_loopback;
  int n_v4, n_v6;
  uint16_t port;
  char first[EVR_ADDR_STRLEN];
} res_t;

static void on_resolved(evr_resolve_t *req, int status, const evr_addr_t *addrs) {
  res_t *r = req->data;
  r->calls++;
  r->status = status;
  r->cb_inside = r->inside_call;
  if (status < 0) {
    assert_null(addrs);
    return;
  }
  assert_non_null(addrs);
  assert_true(status >= 1);
  r->port = evr_addr_port(&addrs[0]);
  assert_true(evr_addr_format(&addrs[0], r->first, sizeof r->first) > 0);
  for (int i = 0; i < status; i++) {
    const evr_addr_t *a = &addrs[i];
    assert_int_equal(evr_addr_port(a), r->port);
    if (evr_addr_family(a) == AF_INET) {
      r->n_v4++;
      assert_int_equal(a->len, sizeof(struct sockaddr_in));
      if ((ntohl(a->u.in.sin_addr.s_addr) >> 24) == 127) r->n_loopback++;
    } else {
      assert_int_equal(evr_addr_family(a), AF_INET6);
      r->n_v6++;
      if (IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr)) r->n_loopback++;
    }
  }
}

static void start(res_t *r, const char *host, uint16_t port, int family) {
  memset(r, 0, sizeof *r);
  r->req.data = r;
  r->inside_call = 1;
  assert_evr_ok(evr_resolve(test_loop, &r->req, host, port, family, on_resolved));
  r->inside_call = 0;
}

static void finish(res_t *r) {
  run_until(test_loop, &r->calls, 100000);
  assert_int_equal(r->calls, 1);
  assert_int_equal(r->cb_inside, 0);
  /* Nothing more arrives. */
  for (int i = 0; i < 5; i++) evr_loop_run(test_loop, EVR_RUN_NOWAIT);
  assert_int_equal(r->calls, 1);
}

static void test_resolve_localhost_gives_loopback_addresses(void **state) {
  (void)state;
  res_t r;
  start(&r, "localhost", 8080, AF_UNSPEC);
  finish(&r);
  assert_true(r.status >= 1);
  assert_int_equal(r.n_loopback, r.status);
  assert_int_equal(r.port, 8080);

  start(&r, "localhost", 1, AF_INET);
  finish(&r);
  assert_true(r.status >= 1);
  assert_int_equal(r.n_v4, r.status);
  assert_int_equal(r.n_loopback, r.status);
}

static int is_eai(int rc) {
  return rc == EVR_EAI_NONAME || rc == EVR_EAI_AGAIN || rc == EVR_EAI_FAIL ||
         rc == EVR_EAI_FAMILY || rc == EVR_EAI_SERVICE || rc == EVR_EAI_MEMORY;
}

static void test_resolve_numeric_hosts(void **state) {
  (void)state;
  res_t r;
  start(&r, "127.0.0.1", 443, AF_UNSPEC);
  finish(&r);
  assert_int_equal(r.status, 1);
  assert_string_equal(r.first, "127.0.0.1:443");

  start(&r, "::1", 22, AF_UNSPEC);
  finish(&r);
  assert_int_equal(r.status, 1);
  assert_string_equal(r.first, "[::1]:22");

  start(&r, "[::1]", 0, AF_INET6);
  finish(&r);
  assert_int_equal(r.status, 1);
  assert_string_equal(r.first, "[::1]:0");

  /* A literal of the other family is not an address of the asked one. */
  start(&r, "127.0.0.1", 1, AF_INET6);
  finish(&r);
  if (!is_eai(r.status)) fail_msg("got %s", evr_err_name(r.status));
}

static void test_resolve_invalid_name_gives_eai_error(void **state) {
  (void)state;
  res_t r;
  /* .invalid never resolves (RFC 6761); without a network the resolver may
   * say EAI_AGAIN instead of EAI_NONAME. */
  start(&r, "no-such-host.invalid", 80, AF_UNSPEC);
  finish(&r);
  if (!is_eai(r.status)) fail_msg("got %s", evr_err_name(r.status));
}

static void test_resolve_bad_arguments(void **state) {
  (void)state;
  evr_resolve_t req;
  assert_int_equal(evr_resolve(NULL, &req, "a", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, NULL, "a", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, NULL, 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "a", 1, AF_UNIX, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "a", 1, AF_UNSPEC, NULL), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "[::1", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve_cancel(NULL), EVR_EINVAL);
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

/* Pool blockers: hold every pool thread so a resolve stays queued. */
static atomic_int release_blockers;
static atomic_int blockers_running;

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static void block_work(evr_work_t *w) {
  (void)w;
  atomic_fetch_add(&blockers_running, 1);
  /* Bounded: 60 s at most, far beyond what the test needs. */
  for (int i = 0; i < 60000 && !atomic_load(&release_blockers); i++) sleep_ms(1);
}

static int blockers_done;
static void block_done(evr_work_t *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
  blockers_done++;
}

static void test_resolve_cancel_queued_gives_ecanceled_once(void **state) {
  (void)state;
  static evr_work_t blockers[1024];
  atomic_store(&release_blockers, 0);
  atomic_store(&blockers_running, 0);
  blockers_done = 0;
  assert_evr_ok(evr_work_submit(test_loop, &blockers[0], block_work, block_done));
  unsigned n = evr_threadpool_threads();
  assert_true(n >= 1 && n <= 1024);
  for (unsigned i = 1; i < n; i++)
    assert_evr_ok(evr_work_submit(test_loop, &blockers[i], block_work, block_done));

  res_t r;
  start(&r, "localhost", 80, AF_UNSPEC);
  assert_int_equal(evr_loop_alive(test_loop), 1);
  assert_evr_ok(evr_resolve_cancel(&r.req));
  assert_evr_ok(evr_resolve_cancel(&r.req)); /* still pending: harmless */
  assert_int_equal(r.calls, 0);              /* never inside cancel */
  finish(&r);
  assert_int_equal(r.status, EVR_ECANCELED);
  assert_int_equal(evr_resolve_cancel(&r.req), EVR_EINVAL); /* not pending */

  atomic_store(&release_blockers, 1);
  for (int i = 0; i < 100000 && blockers_done < (int)n; i++)
    evr_loop_run(test_loop, EVR_RUN_ONCE);
  assert_int_equal(blockers_done, (int)n);
}

static void test_resolve_cancel_while_running_discards_result(void **state) {
  (void)state;
  /* getaddrinfo() may already run on a pool thread when cancel comes: the
   * result is thrown away and the callback still gets EVR_ECANCELED. */
  for (int round = 0; round < 20; round++) {
    res_t r;
    start(&r, round % 2 ? "127.0.0.1" : "localhost", 80, AF_UNSPEC);
    if (round >= 10) {
      /* Let a pool thread pick it up first. */
      for (int i = 0; i < 3; i++) evr_loop_run(test_loop, EVR_RUN_NOWAIT);
    }
    if (r.calls == 0) {
      assert_evr_ok(evr_resolve_cancel(&r.req));
      finish(&r);
      assert_int_equal(r.status, EVR_ECANCELED);
    } else {
      assert_int_equal(r.calls, 1);
    }
  }
}

static void test_resolve_keeps_loop_alive_until_callback(void **state) {
  (void)state;
  res_t r;
  assert_int_equal(evr_loop_alive(test_loop), 0);
  start(&r, "127.0.0.1", 5, AF_INET);
  assert_int_equal(evr_loop_alive(test_loop), 1);
  /* A default run returns only once nothing is pending: after the cb. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 1);
  assert_int_equal(evr_loop_alive(test_loop), 0);
}

/* The callback starts the next resolution with the same request. */
typedef struct {
  evr_resolve_t req;
  int rounds;
  int last;
} chain_t;

static void on_chain(evr_resolve_t *req, int status, const evr_addr_t *addrs) {
  chain_t *c = req->data;
  assert_int_equal(status, 1);
  assert_non_null(addrs);
  assert_int_equal(evr_addr_port(&addrs[0]), (uint16_t)(1000 + c->rounds));
  c->rounds++;
  if (c->rounds < 5) {
    assert_evr_ok(evr_resolve(req->work.loop, req, "127.0.0.1",
                              (uint16_t)(1000 + c->rounds), AF_INET, on_chain));
  } else {
    c->last = 1;
  }
}

static void test_resolve_request_reused_from_its_callback(void **state) {
  (void)state;
  chain_t c;
  memset(&c, 0, sizeof c);
  c.req.data = &c;
  assert_evr_ok(evr_resolve(test_loop, &c.req, "127.0.0.1", 1000, AF_INET, on_chain));
  run_until(test_loop, &c.last, 100000);
  assert_int_equal(c.rounds, 5);
}

static void test_resolve_many_at_once(void **state) {
  (void)state;
  enum { N = 32 };
  static res_t r[N];
  for (int i = 0; i < N; i++)
    start(&r[i], i % 3 ? "127.0.0.1" : "localhost", (uint16_t)(i + 1), AF_INET);
  for (int i = 5; i < N; i += 7) assert_evr_ok(evr_resolve_cancel(&r[i].req));
  for (int i = 0; i < N; i++) {
    finish(&r[i]);
    if (i >= 5 && (i - 5) % 7 == 0) {
      assert_int_equal(r[i].status, EVR_ECANCELED);
    } else {
      assert_true(r[i].status >= 1);
      assert_int_equal(r[i].port, i + 1);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_resolve_localhost_gives_loopback_addresses),
      EVR_TEST(test_resolve_numeric_hosts),
      EVR_TEST(test_resolve_invalid_name_gives_eai_error),
      EVR_TEST(test_resolve_bad_arguments),
      EVR_TEST(test_resolve_cancel_queued_gives_ecanceled_once),
      EVR_TEST(test_resolve_cancel_while_running_discards_result),
      EVR_TEST(test_resolve_keeps_loop_alive_until_callback),
      EVR_TEST(test_resolve_request_reused_from_its_callback),
      EVR_TEST(test_resolve_many_at_once),
  };
  return cmocka_run_group_tests_name("resolve", tests, NULL, NULL);
}
