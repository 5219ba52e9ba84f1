/* tests/test_resolve.c: getaddrinfo() on the thread pool: results, errors,
 * cancellation (queued and already running), liveness and reuse of a
 * request from its own callback. */
/* evr-test: backends threads timeout=300 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "fault.h"
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
  evr_resolve_t req = {0};
  assert_int_equal(evr_resolve(NULL, &req, "a", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, NULL, "a", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, NULL, 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "a", 1, AF_UNIX, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "a", 1, AF_UNSPEC, NULL), EVR_EINVAL);
  assert_int_equal(evr_resolve(test_loop, &req, "[::1", 1, AF_UNSPEC, on_resolved), EVR_EINVAL);
  assert_int_equal(evr_resolve_cancel(NULL), EVR_EINVAL);
  assert_int_equal(evr_resolve_cancel(&req), EVR_EINVAL); /* never submitted */
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

/* ---- a pending request cannot be submitted again ---- */

static void start_on(evr_loop_t *loop, res_t *r, const char *host,
                     uint16_t port, int family) {
  memset(r, 0, sizeof *r);
  r->req.data = r;
  assert_evr_ok(evr_resolve(loop, &r->req, host, port, family, on_resolved));
}

static int other_calls;
static void on_other(evr_resolve_t *req, int status, const evr_addr_t *addrs) {
  (void)req;
  (void)status;
  (void)addrs;
  other_calls++;
}

/* With one pool thread, first in first out: r1 has been resolved and waits
 * for its callback while the blocker runs, and r2 is queued behind it. A
 * new submission of either, to the same loop or another, is refused and
 * changes nothing: each callback runs once with its own answer. */
static void test_resolve_submit_of_pending_request_is_refused(void **state) {
  (void)state;
  static evr_work_t blocker;
  static res_t r1, r2;
  evr_loop_t *l, *l2;
  int rc[2][3];
  memset(&blocker, 0, sizeof blocker);
  atomic_store(&release_blockers, 0);
  atomic_store(&blockers_running, 0);
  blockers_done = 0;
  other_calls = 0;
  assert_evr_ok(evr_threadpool_set_size(1));
  assert_evr_ok(evr_loop_new(&l, NULL));
  assert_evr_ok(evr_loop_new(&l2, NULL));
  start_on(l, &r1, "127.0.0.1", 1, AF_INET);
  assert_evr_ok(evr_work_submit(l, &blocker, block_work, block_done));
  start_on(l, &r2, "localhost", 2, AF_UNSPEC);
  for (int i = 0; i < 60000 && atomic_load(&blockers_running) < 1; i++) sleep_ms(1);
  const char *host1 = r1.req.host, *host2 = r2.req.host;
  res_t *both[2] = {&r1, &r2};
  for (int k = 0; k < 2; k++) {
    evr_resolve_t *q = &both[k]->req;
    rc[k][0] = evr_resolve(l, q, "::1", 9, AF_INET6, on_other);
    rc[k][1] = evr_resolve(l2, q, "127.0.0.2", 9, AF_INET, on_other);
    rc[k][2] = evr_resolve(l, q, "[::1]", 9, AF_UNSPEC, on_resolved);
  }
  int l2_alive = evr_loop_alive(l2);
  int host_kept = r1.req.host == host1 && r2.req.host == host2;
  atomic_store(&release_blockers, 1);
  /* Bounded, never blocking: a request counted twice would keep l alive
   * for ever. */
  for (int i = 0; i < 20000; i++) {
    evr_loop_run(l, EVR_RUN_NOWAIT);
    if (r1.calls + r2.calls + blockers_done >= 3 && !evr_loop_alive(l)) break;
    sleep_ms(1);
  }
  for (int k = 0; k < 2; k++)
    for (int j = 0; j < 3; j++) assert_int_equal(rc[k][j], EVR_EBUSY);
  assert_int_equal(l2_alive, 0);
  assert_true(host_kept);
  assert_int_equal(blockers_done, 1);
  assert_int_equal(other_calls, 0);
  assert_int_equal(r1.calls, 1);
  assert_int_equal(r1.status, 1);
  assert_string_equal(r1.first, "127.0.0.1:1");
  assert_int_equal(r2.calls, 1);
  assert_true(r2.status >= 1);
  assert_int_equal(r2.n_loopback, r2.status);
  assert_int_equal(r2.port, 2);
  assert_int_equal(evr_loop_alive(l), 0);
  assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
  /* Finished: cancelling is refused, submitting again is accepted. */
  assert_int_equal(evr_resolve_cancel(&r1.req), EVR_EINVAL);
  r1.calls = 0;
  assert_evr_ok(evr_resolve(l2, &r1.req, "127.0.0.1", 3, AF_INET, on_resolved));
  assert_int_equal(evr_loop_run(l2, EVR_RUN_DEFAULT), 0);
  assert_int_equal(r1.calls, 1);
  assert_int_equal(r1.port, 3);
  assert_int_equal(evr_loop_free(l), 0);
  assert_int_equal(evr_loop_free(l2), 0);
  assert_evr_ok(evr_threadpool_set_size(0));
}

/* Cancelling from inside the callback: the request is no longer pending. */
static int cancel_in_cb_rc;
static void on_resolved_cancel(evr_resolve_t *req, int status,
                               const evr_addr_t *addrs) {
  on_resolved(req, status, addrs);
  cancel_in_cb_rc = evr_resolve_cancel(req);
}

static void test_resolve_cancel_needs_a_pending_request(void **state) {
  (void)state;
  res_t r;
  memset(&r, 0, sizeof r);
  r.req.data = &r;
  assert_int_equal(evr_resolve_cancel(&r.req), EVR_EINVAL); /* zeroed */
  cancel_in_cb_rc = 12345;
  assert_evr_ok(evr_resolve(test_loop, &r.req, "127.0.0.1", 7, AF_INET,
                            on_resolved_cancel));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 1);
  assert_int_equal(cancel_in_cb_rc, EVR_EINVAL);
  assert_int_equal(evr_resolve_cancel(&r.req), EVR_EINVAL); /* finished */
}

/* evr_stream_connect_host() cannot be started again while its resolution is
 * queued, nor while the answer waits for its callback: one connect, one
 * callback, and nothing left behind. */
static int conn_calls, conn_status, closed;
static void on_conn(evr_stream_t *s, int status) {
  (void)s;
  conn_calls++;
  conn_status = status;
}
static void on_closed(evr_handle_t *h) {
  (void)h;
  closed = 1;
}

static void test_resolve_connect_host_while_resolving_is_refused(void **state) {
  (void)state;
  static evr_work_t blocker;
  static evr_stream_t s;
  evr_loop_t *l;
  int lfd = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(lfd >= 0);
  evr_addr_t at;
  assert_evr_ok(evr_addr_parse(&at, "127.0.0.1:0"));
  assert_int_equal(bind(lfd, &at.u.sa, at.len), 0);
  socklen_t len = sizeof at.u;
  assert_int_equal(getsockname(lfd, &at.u.sa, &len), 0);
  at.len = len;
  assert_int_equal(listen(lfd, 8), 0);
  uint16_t port = evr_addr_port(&at);
  assert_evr_ok(evr_threadpool_set_size(1));
  assert_evr_ok(evr_loop_new(&l, NULL));

  for (int round = 0; round < 2; round++) {
    atomic_store(&release_blockers, 0);
    atomic_store(&blockers_running, 0);
    blockers_done = 0;
    conn_calls = 0;
    conn_status = 12345;
    closed = 0;
    memset(&blocker, 0, sizeof blocker);
    assert_evr_ok(evr_stream_init(l, &s));
    if (round == 0) {
      /* The resolution is queued behind the blocker. */
      assert_evr_ok(evr_work_submit(l, &blocker, block_work, block_done));
      for (int i = 0; i < 60000 && atomic_load(&blockers_running) < 1; i++) sleep_ms(1);
      assert_evr_ok(evr_stream_connect_host(&s, "127.0.0.1", port, 0, on_conn));
    } else {
      /* The resolution is over, its callback due, while the blocker runs. */
      assert_evr_ok(evr_stream_connect_host(&s, "127.0.0.1", port, 0, on_conn));
      assert_evr_ok(evr_work_submit(l, &blocker, block_work, block_done));
      for (int i = 0; i < 60000 && atomic_load(&blockers_running) < 1; i++) sleep_ms(1);
    }
    int rc1 = evr_stream_connect_host(&s, "127.0.0.1", port, 0, on_conn);
    int rc2 = evr_stream_connect_host(&s, "localhost", port, 0, on_conn);
    int rc3 = evr_stream_connect(&s, &at, 0, on_conn);
    atomic_store(&release_blockers, 1);
    for (int i = 0; i < 20000 && (conn_calls < 1 || blockers_done < 1); i++) {
      evr_loop_run(l, EVR_RUN_NOWAIT);
      sleep_ms(1);
    }
    assert_int_equal(rc1, EVR_EBUSY);
    assert_int_equal(rc2, EVR_EBUSY);
    assert_int_equal(rc3, EVR_EBUSY);
    assert_int_equal(conn_calls, 1);
    assert_int_equal(conn_status, 0);
    assert_int_equal(blockers_done, 1);
    assert_evr_ok(evr_close(&s.base, on_closed));
    run_until(l, &closed, 1000);
    assert_int_equal(conn_calls, 1);
    assert_int_equal(evr_loop_alive(l), 0);
    assert_int_equal(evr_loop_run(l, EVR_RUN_DEFAULT), 0);
  }
  assert_int_equal(evr_loop_free(l), 0);
  assert_evr_ok(evr_threadpool_set_size(0));
  close(lfd);
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

/* Out of descriptors, getaddrinfo() cannot open /etc/hosts or a socket:
 * that is a local error (EVR_EMFILE), not "name not known", which a
 * daemon would hold against the host. Once its modules are loaded, glibc
 * says EAI_SYSTEM with errno EMFILE (this test); in a process whose first
 * lookup meets the limit it says EAI_NONAME with errno EMFILE (the next
 * one, by fault injection). */
static void test_resolve_out_of_descriptors_is_emfile(void **state) {
  (void)state;
  res_t r;
  /* Start the pool's threads first: they need no descriptor later. */
  start(&r, "127.0.0.1", 1, AF_UNSPEC);
  finish(&r);
  struct rlimit old, low;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  int next = dup(0); /* the lowest free number */
  assert_true(next >= 0);
  assert_int_equal(close(next), 0);
  low = old;
  low.rlim_cur = (rlim_t)next;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  start(&r, "localhost", 80, AF_UNSPEC);
  run_until(test_loop, &r.calls, 100000);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
  assert_int_equal(r.calls, 1);
  if (r.status != EVR_EMFILE)
    fail_msg("resolve with no descriptor left: %s, want EMFILE", evr_err_name(r.status));
}

static void test_resolve_eai_noname_for_lack_of_resources_is_local(void **state) {
  (void)state;
  if (!FAULT_AVAILABLE) skip(); /* no -Wl,--wrap on this linker */
  const int errs[] = {EMFILE, ENFILE, ENOMEM, ENOBUFS};
  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
    res_t r;
    fault_arm("getaddrinfo", 1, errs[i], 1);
    start(&r, "localhost", 80, AF_UNSPEC);
    finish(&r);
    fault_disarm();
    if (r.status != -errs[i])
      fail_msg("getaddrinfo: EAI_NONAME with errno %s gave %s", evr_err_name(-errs[i]),
               evr_err_name(r.status));
  }
  /* A name that is not known, with any other errno, stays EAI_NONAME. */
  res_t r;
  fault_arm("getaddrinfo", 1, ENOENT, 1);
  start(&r, "localhost", 80, AF_UNSPEC);
  finish(&r);
  fault_disarm();
  assert_int_equal(r.status, EVR_EAI_NONAME);
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
      EVR_TEST(test_resolve_submit_of_pending_request_is_refused),
      EVR_TEST(test_resolve_cancel_needs_a_pending_request),
      EVR_TEST(test_resolve_connect_host_while_resolving_is_refused),
      EVR_TEST(test_resolve_many_at_once),
      EVR_TEST(test_resolve_out_of_descriptors_is_emfile),
      EVR_TEST(test_resolve_eai_noname_for_lack_of_resources_is_local),
  };
  return cmocka_run_group_tests_name("resolve", tests, NULL, NULL);
}
