/* tests/test_tcp.c: streams and listeners together over real loopback
 * connections, under every backend: a byte-exact bulk transfer in both
 * directions at once through tiny kernel buffers, thousands of concurrent
 * connections, connect refused, connect timeout against a listener whose
 * accept queue is full, connect_host("localhost"), IPv6 and Unix sockets,
 * a second connect while one is pending, and closing during a pending
 * connect. */
/* evr-test: backends workers timeout=600 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "helpers.h"

static int under_valgrind(void) {
  const char *v = getenv("EVR_TEST_UNDER_VALGRIND");
  return v && *v && strcmp(v, "0") != 0;
}

static int flag;
static void set_flag_close_cb(evr_handle_t *h) {
  (void)h;
  flag = 1;
}

static void listen_on(evr_listener_t *l, const char *text, evr_accept_cb cb,
                      evr_addr_t *bound) {
  evr_addr_t a;
  assert_evr_ok(evr_addr_parse(&a, text));
  assert_evr_ok(evr_listener_init(test_loop, l));
  assert_evr_ok(evr_listen(l, &a, NULL, cb));
  assert_evr_ok(evr_listener_sockname(l, bound));
}

static void close_and_wait(evr_handle_t *h) {
  flag = 0;
  assert_evr_ok(evr_close(h, set_flag_close_cb));
  run_until(test_loop, &flag, 100);
}

/* ---- the bulk transfer ---- */

/* Byte p of the stream with this seed: stateless, so sender and receiver
 * agree whatever the chunking. */
static inline uint64_t mix64(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static void gen(uint64_t seed, uint64_t pos, unsigned char *out, size_t n) {
  while (n) {
    uint64_t w = mix64(seed ^ (pos >> 3));
    unsigned char b[8];
    memcpy(b, &w, 8);
    size_t k = (size_t)(pos & 7), take = 8 - k;
    if (take > n) take = n;
    memcpy(out, b + k, take);
    out += take;
    pos += take;
    n -= take;
  }
}

#define CHUNK 65536
#define NSLOT 4

struct slot {
  evr_write_t req;
  int busy;
  unsigned char buf[CHUNK];
};

struct ep {
  evr_stream_t s; /* first: a stream pointer is an endpoint pointer */
  uint64_t seed_tx, seed_rx, total;
  uint64_t generated, received;
  unsigned chunkno;
  int above, eof, shut_req, shut_done, ready;
  struct slot slots[NSLOT];
  unsigned char scratch[CHUNK], check[CHUNK];
};

static struct ep *bulk[2];
static int bulk_accepts;

static void ep_produce(struct ep *e);

static void ep_wcb(evr_write_t *req, int status) {
  struct slot *sl = (struct slot *)(void *)((char *)req - offsetof(struct slot, req));
  struct ep *e = req->data;
  assert_evr_ok(status);
  sl->busy = 0;
  ep_produce(e);
}

static void ep_water(evr_stream_t *s, int above) {
  struct ep *e = (struct ep *)s;
  assert_int_equal(e->above, !above);
  e->above = above;
  if (!above) ep_produce(e);
}

static void ep_shut(evr_stream_t *s, int status) {
  assert_evr_ok(status);
  ((struct ep *)s)->shut_done = 1;
}

static void ep_produce(struct ep *e) {
  while (!e->above && e->generated < e->total) {
    uint64_t left = e->total - e->generated;
    size_t n = 1 + (size_t)(mix64(e->seed_tx + e->chunkno) % CHUNK);
    if (n > left) n = (size_t)left;
    if (e->chunkno % 4 == 3) {
      gen(e->seed_tx, e->generated, e->scratch, n);
      assert_evr_ok(evr_stream_write_copy(&e->s, e->scratch, n));
    } else {
      struct slot *sl = NULL;
      for (int i = 0; i < NSLOT && !sl; i++)
        if (!e->slots[i].busy) sl = &e->slots[i];
      if (!sl) return; /* a write callback resumes */
      gen(e->seed_tx, e->generated, sl->buf, n);
      sl->busy = 1;
      sl->req.data = e;
      /* Split into three buffers now and then (the array is a local). */
      evr_buf_t b[3] = {{sl->buf, n / 3}, {sl->buf + n / 3, n / 3},
                        {sl->buf + 2 * (n / 3), n - 2 * (n / 3)}};
      if (e->chunkno % 4 == 1) {
        assert_evr_ok(evr_stream_write(&sl->req, &e->s, b, 3, ep_wcb));
      } else {
        b[0].len = n;
        assert_evr_ok(evr_stream_write(&sl->req, &e->s, b, 1, ep_wcb));
      }
    }
    e->generated += n;
    e->chunkno++;
  }
  if (e->generated == e->total && !e->shut_req) {
    e->shut_req = 1;
    assert_evr_ok(evr_stream_shutdown(&e->s, ep_shut));
  }
}

static void ep_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct ep *e = (struct ep *)s;
  if (nread == EVR_EOF) {
    assert_true(e->received == e->total);
    e->eof = 1;
    return;
  }
  if (nread < 0) fail_msg("read error: %s", evr_strerror((int)nread));
  assert_true(e->received + (uint64_t)nread <= e->total);
  gen(e->seed_rx, e->received, e->check, (size_t)nread);
  if (memcmp(e->check, buf, (size_t)nread) != 0)
    fail_msg("data mismatch near byte %" PRIu64, e->received);
  e->received += (uint64_t)nread;
}

/* Small kernel buffers, set before the handshake (so the window and its
 * scale are small too): every 64 KiB write is cut into many partial ones. */
static void tiny_buffers(int fd) {
  /* Linux doubles these. At its minimum receive buffer (below one loopback
   * MSS) the sender waits for the persist timer and 256 MiB would take
   * minutes: what is tested here is the partial writes, not TCP. */
  int snd = 4096, rcv = 8192;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd), 0);
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv), 0);
}

static void ep_start(struct ep *e) {
  assert_evr_ok(evr_stream_set_water_marks(&e->s, 32 * 1024, 128 * 1024, ep_water));
  assert_evr_ok(evr_stream_read_start(&e->s, ep_read));
  e->ready = 1;
  ep_produce(e);
}

static void bulk_accept(evr_listener_t *l, int fd) {
  (void)l;
  assert_true(fd >= 0);
  assert_int_equal(bulk_accepts++, 0);
  struct ep *e = bulk[1];
  assert_evr_ok(evr_stream_init(test_loop, &e->s));
  assert_evr_ok(evr_stream_open(&e->s, fd));
  ep_start(e);
}

static void test_tcp_bulk_transfer_both_ways_tiny_buffers(void **state) {
  (void)state;
  int base = count_open_fds();
  uint64_t total = under_valgrind() ? (UINT64_C(8) << 20) : (UINT64_C(256) << 20);
  const char *size = getenv("EVR_TEST_BULK_BYTES"); /* for experiments */
  if (size && *size) total = strtoull(size, NULL, 0);
  uint64_t seed = (uint64_t)time(NULL) * 2654435761u;
  const char *env = getenv("EVR_TEST_SEED");
  if (env && *env) seed = strtoull(env, NULL, 0);
  printf("bulk: %" PRIu64 " MiB each way, seed: EVR_TEST_SEED=0x%" PRIx64 "\n",
         total >> 20, seed);
  for (int i = 0; i < 2; i++) {
    bulk[i] = calloc(1, sizeof *bulk[i]);
    assert_non_null(bulk[i]);
    bulk[i]->total = total;
  }
  bulk[0]->seed_tx = bulk[1]->seed_rx = mix64(seed);
  bulk[1]->seed_tx = bulk[0]->seed_rx = mix64(seed + 1);
  bulk_accepts = 0;
  evr_listener_t l;
  evr_addr_t at;
  listen_on(&l, "127.0.0.1:0", bulk_accept, &at);
  tiny_buffers(l.fd); /* inherited by the accepted socket */
  /* The client socket is made here, to shrink its buffers before connect;
   * the kernel completes the handshake before anyone accepts. */
  int c = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(c >= 0);
  tiny_buffers(c);
  assert_int_equal(connect(c, &at.u.sa, at.len), 0);
  assert_evr_ok(evr_stream_init(test_loop, &bulk[0]->s));
  assert_evr_ok(evr_stream_open(&bulk[0]->s, c));
  ep_start(bulk[0]);
  while (!(bulk[0]->eof && bulk[1]->eof && bulk[0]->shut_done && bulk[1]->shut_done))
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  for (int i = 0; i < 2; i++) {
    assert_true(bulk[i]->received == total);
    assert_true(bulk[i]->generated == total);
    assert_int_equal(evr_stream_write_queue_size(&bulk[i]->s), 0);
  }
  close_and_wait(&bulk[0]->s.base);
  close_and_wait(&bulk[1]->s.base);
  close_and_wait(&l.base);
  free(bulk[0]);
  free(bulk[1]);
  assert_fds_back_to(base);
}

/* ---- many connections ---- */

struct mconn {
  evr_stream_t s;
  int idx;
  char msg[24];
  size_t len, got;
  char in[24];
};

static struct mconn *mcli, *msrv;
static int mn, macc, mconnected, mdone, mstarted, minflight, mclosed;
static evr_addr_t maddr;

static void msrv_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  if (nread > 0) {
    assert_evr_ok(evr_stream_write_copy(s, buf, (size_t)nread));
    return;
  }
  /* The client went away (EOF or reset): nothing to do until teardown. */
  (void)evr_stream_read_stop(s);
}

static void m_accept(evr_listener_t *l, int fd) {
  (void)l;
  if (fd < 0) fail_msg("accept: %s", evr_strerror(fd));
  assert_true(macc < mn);
  struct mconn *c = &msrv[macc++];
  assert_evr_ok(evr_stream_init(test_loop, &c->s));
  assert_evr_ok(evr_stream_open(&c->s, fd));
  assert_evr_ok(evr_stream_read_start(&c->s, msrv_read));
}

static void mcli_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct mconn *c = (struct mconn *)s;
  if (nread < 0) fail_msg("client %d: %s", c->idx, evr_strerror((int)nread));
  assert_true(c->got + (size_t)nread <= c->len);
  memcpy(c->in + c->got, buf, (size_t)nread);
  c->got += (size_t)nread;
  if (c->got == c->len) {
    assert_memory_equal(c->in, c->msg, c->len);
    mdone++;
  }
}

static void m_connect_more(void);

static void mcli_connected(evr_stream_t *s, int status) {
  struct mconn *c = (struct mconn *)s;
  if (status) fail_msg("connect %d: %s", c->idx, evr_strerror(status));
  minflight--;
  mconnected++;
  c->len = (size_t)snprintf(c->msg, sizeof c->msg, "hello %05d\n", c->idx);
  assert_evr_ok(evr_stream_read_start(s, mcli_read));
  assert_evr_ok(evr_stream_write_copy(s, c->msg, c->len));
  m_connect_more();
}

/* Keep the connects in flight below the listen backlog, so no SYN is
 * dropped (which would cost a retransmission second): at most 128, and at
 * most what the system's accept queue holds (the listener asks SOMAXCONN). */
static int m_max_inflight;
static void m_connect_more(void) {
  while (mstarted < mn && minflight < m_max_inflight) {
    struct mconn *c = &mcli[mstarted];
    c->idx = mstarted++;
    assert_evr_ok(evr_stream_init(test_loop, &c->s));
    int rc = evr_stream_connect(&c->s, &maddr, 30000, mcli_connected);
    if (rc) fail_msg("connect %d: %s", c->idx, evr_strerror(rc));
    minflight++;
  }
}

static void m_closed(evr_handle_t *h) {
  (void)h;
  mclosed++;
}

static void test_tcp_many_concurrent_connections(void **state) {
  (void)state;
  struct rlimit old;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  int base = count_open_fds();
  int want = under_valgrind() ? 500 : 10000;
  /* Two descriptors per connection, plus the loop's and a margin. Where
   * the limit cannot be raised that far (macOS: OPEN_MAX, 10240), fewer
   * connections, as many as fit. */
  long room = raise_nofile(2L * want + base + 64);
  long fit = (room - base - 64) / 2;
  mn = want;
  if (fit < want) {
    mn = (int)fit;
    printf("note: RLIMIT_NOFILE %ld allows %d connections, not %d\n", room, mn, want);
  }
  assert_true(mn >= 100);
  mcli = calloc((size_t)mn, sizeof *mcli);
  msrv = calloc((size_t)mn, sizeof *msrv);
  assert_non_null(mcli);
  assert_non_null(msrv);
  macc = mconnected = mdone = mstarted = minflight = mclosed = 0;
  m_max_inflight = accept_queue_limit();
  if (m_max_inflight > SOMAXCONN) m_max_inflight = SOMAXCONN;
  if (m_max_inflight > 128) m_max_inflight = 128;
  evr_listener_t l;
  listen_on(&l, "127.0.0.1:0", m_accept, &maddr);
  m_connect_more();
  while (mdone < mn) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  /* Every connection is open at once here. */
  assert_int_equal(macc, mn);
  assert_int_equal(mconnected, mn);
  for (int i = 0; i < mn; i++) {
    assert_true(evr_stream_fd(&mcli[i].s) >= 0);
    assert_true(evr_stream_fd(&msrv[i].s) >= 0);
  }
  printf("%d connections open at once\n", mn);
  /* Clients reset (no TIME_WAIT left behind), servers close. */
  for (int i = 0; i < mn; i++) {
    assert_evr_ok(evr_stream_abort(&mcli[i].s, m_closed));
    assert_evr_ok(evr_close(&msrv[i].s.base, m_closed));
  }
  while (mclosed < 2 * mn) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  close_and_wait(&l.base);
  free(mcli);
  free(msrv);
  assert_fds_back_to(base);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

/* ---- connect outcomes ---- */

static int conn_status, conn_done;
static void conn_cb(evr_stream_t *s, int status) {
  (void)s;
  conn_status = status;
  conn_done++;
}

static void test_tcp_connect_refused(void **state) {
  (void)state;
  int base = count_open_fds();
  /* A port that was just free: bind, read it back, close. */
  int fd = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  evr_addr_t a;
  assert_evr_ok(evr_addr_parse(&a, "127.0.0.1:0"));
  assert_int_equal(bind(fd, &a.u.sa, a.len), 0);
  socklen_t len = sizeof a.u;
  assert_int_equal(getsockname(fd, &a.u.sa, &len), 0);
  a.len = len;
  close(fd);
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  conn_done = 0;
  assert_evr_ok(evr_stream_connect(&s, &a, 5000, conn_cb));
  run_until(test_loop, &conn_done, 100);
  assert_int_equal(conn_status, EVR_ECONNREFUSED);
  assert_int_equal(evr_stream_fd(&s), -1);
  close_and_wait(&s.base);
  assert_int_equal(conn_done, 1);
  assert_fds_back_to(base);
}

/* A connect is one request per stream: while its callback has not run,
 * another connect, connect_host or open is refused with EVR_EBUSY and the
 * pending one still ends with exactly one callback; once it has run (with
 * an error) the stream may connect again. Nothing is left behind: the loop
 * runs out of work and can be freed. */
static void test_tcp_connect_resubmitted_while_pending_is_refused(void **state) {
  (void)state;
  int base = count_open_fds();
  int fd = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  evr_addr_t refused;
  assert_evr_ok(evr_addr_parse(&refused, "127.0.0.1:0"));
  assert_int_equal(bind(fd, &refused.u.sa, refused.len), 0);
  socklen_t len = sizeof refused.u;
  assert_int_equal(getsockname(fd, &refused.u.sa, &len), 0);
  refused.len = len;
  close(fd); /* nobody listens there now */
  static evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  conn_done = 0;
  assert_evr_ok(evr_stream_connect(&s, &refused, 5000, conn_cb));
  assert_int_equal(evr_stream_connect(&s, &refused, 5000, conn_cb), EVR_EBUSY);
  assert_int_equal(evr_stream_connect_host(&s, "localhost", 9, 0, conn_cb), EVR_EBUSY);
  int sv[2];
  make_socketpair(sv);
  assert_int_equal(evr_stream_open(&s, sv[0]), EVR_EBUSY);
  run_until(test_loop, &conn_done, 100);
  assert_int_equal(conn_status, EVR_ECONNREFUSED);
  for (int i = 0; i < 5; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(conn_done, 1);
  /* Its callback ran: the stream may connect again, here to a server. */
  int l = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(l >= 0);
  evr_addr_t at;
  assert_evr_ok(evr_addr_parse(&at, "127.0.0.1:0"));
  assert_int_equal(bind(l, &at.u.sa, at.len), 0);
  len = sizeof at.u;
  assert_int_equal(getsockname(l, &at.u.sa, &len), 0);
  at.len = len;
  assert_int_equal(listen(l, 4), 0);
  assert_evr_ok(evr_stream_connect(&s, &at, 5000, conn_cb));
  assert_int_equal(evr_stream_connect(&s, &at, 5000, conn_cb), EVR_EBUSY);
  while (conn_done < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(conn_status, 0);
  assert_int_equal(evr_stream_connect(&s, &at, 5000, conn_cb), EVR_EBUSY);
  close_and_wait(&s.base);
  assert_int_equal(conn_done, 2);
  close(l);
  close(sv[0]);
  close(sv[1]);
  int rc = 1;
  for (int i = 0; i < 100 && rc > 0; i++) rc = evr_loop_run(test_loop, EVR_RUN_NOWAIT);
  assert_int_equal(rc, 0);
  assert_fds_back_to(base);
  assert_int_equal(evr_loop_free(test_loop), 0);
  test_loop = NULL;
}

static void test_tcp_connect_times_out_when_syns_are_dropped(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_addr_t at;
  int fillers[8], nfill;
  int dropped;
  int l = full_listener(&at, fillers, &nfill, &dropped);
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  conn_done = 0;
  uint64_t t0 = evr_now(test_loop);
  assert_evr_ok(evr_stream_connect(&s, &at, 200, conn_cb));
  run_until(test_loop, &conn_done, 10000);
#ifdef __linux__
  assert_true(dropped);
#endif
  if (!dropped)
    printf("note: this system does not drop SYNs to a full accept queue\n");
  if (dropped) {
    assert_int_equal(conn_status, EVR_ETIMEDOUT);
    assert_true(evr_now(test_loop) >= t0 + 200);
  } else {
    assert_true(conn_status == EVR_ETIMEDOUT || conn_status == EVR_ECONNREFUSED ||
                conn_status == 0);
  }
  if (conn_status != 0) assert_int_equal(evr_stream_fd(&s), -1);
  /* The same through connect_host: the timeout bounds the whole thing. */
  close_and_wait(&s.base);
  if (dropped) {
    assert_evr_ok(evr_stream_init(test_loop, &s));
    conn_done = 0;
    assert_evr_ok(evr_stream_connect_host(&s, "127.0.0.1", evr_addr_port(&at), 200, conn_cb));
    run_until(test_loop, &conn_done, 10000);
    assert_int_equal(conn_status, EVR_ETIMEDOUT);
    close_and_wait(&s.base);
  }
  /* Close during a connect that is really pending (SYN sent, unanswered). */
  if (dropped) {
    assert_evr_ok(evr_stream_init(test_loop, &s));
    conn_done = 0;
    assert_evr_ok(evr_stream_connect(&s, &at, 0, conn_cb));
    for (int i = 0; i < 3; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    assert_int_equal(conn_done, 0);
    close_and_wait(&s.base);
    assert_int_equal(conn_done, 1);
    assert_int_equal(conn_status, EVR_ECANCELED);
  }
  for (int i = 0; i < nfill; i++) close(fillers[i]);
  close(l);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_fds_back_to(base);
}

/* ---- echo over each family ---- */

static evr_stream_t echo_srv;
static int echo_srv_open;
static void echo_srv_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  if (nread > 0)
    assert_evr_ok(evr_stream_write_copy(s, buf, (size_t)nread));
  else
    assert_evr_ok(evr_stream_end(s, NULL));
}
static void echo_accept(evr_listener_t *l, int fd) {
  (void)l;
  assert_true(fd >= 0);
  assert_false(echo_srv_open);
  echo_srv_open = 1;
  assert_evr_ok(evr_stream_init(test_loop, &echo_srv));
  assert_evr_ok(evr_stream_open(&echo_srv, fd));
  assert_evr_ok(evr_stream_read_start(&echo_srv, echo_srv_read));
}

static char echo_in[64];
static size_t echo_got;
static int echo_eof;
static void echo_cli_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  (void)s;
  if (nread == EVR_EOF) {
    echo_eof = 1;
    return;
  }
  assert_true(nread > 0);
  assert_true(echo_got + (size_t)nread <= sizeof echo_in);
  memcpy(echo_in + echo_got, buf, (size_t)nread);
  echo_got += (size_t)nread;
}

static int shut_done;
static void echo_shut(evr_stream_t *s, int status) {
  (void)s;
  assert_evr_ok(status);
  shut_done = 1;
}

/* Connect (by address, or by host name when host != NULL) to a listener on
 * listen_text, send a line, half-close, read the echo and EOF. */
static void echo_roundtrip(const char *listen_text, const char *host, int family) {
  int base = count_open_fds();
  evr_listener_t l;
  evr_addr_t at;
  echo_srv_open = 0;
  echo_got = 0;
  echo_eof = shut_done = 0;
  listen_on(&l, listen_text, echo_accept, &at);
  assert_int_equal(evr_addr_family(&at), family);
  evr_stream_t c;
  assert_evr_ok(evr_stream_init(test_loop, &c));
  conn_done = 0;
  if (host)
    assert_evr_ok(evr_stream_connect_host(&c, host, evr_addr_port(&at), 10000, conn_cb));
  else
    assert_evr_ok(evr_stream_connect(&c, &at, 10000, conn_cb));
  run_until(test_loop, &conn_done, 1000);
  assert_evr_ok(conn_status);
  evr_addr_t peer, local;
  assert_evr_ok(evr_stream_peername(&c, &peer));
  assert_evr_ok(evr_stream_sockname(&c, &local));
  assert_int_equal(evr_addr_family(&peer), family);
  assert_int_equal(evr_addr_family(&local), family);
  if (family != AF_UNIX) {
    assert_int_equal(evr_addr_port(&peer), evr_addr_port(&at));
    assert_evr_ok(evr_stream_nodelay(&c, 1));
  } else {
    assert_int_equal(evr_stream_nodelay(&c, 1), EVR_ENOTSUP);
  }
  assert_evr_ok(evr_stream_read_start(&c, echo_cli_read));
  assert_evr_ok(evr_stream_write_copy(&c, "echo me, please\n", 16));
  assert_evr_ok(evr_stream_shutdown(&c, echo_shut));
  while (!echo_eof || !shut_done) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(echo_got, 16);
  assert_memory_equal(echo_in, "echo me, please\n", 16);
  close_and_wait(&c.base);
  /* The server's end() closed it once the echo was out. */
  assert_true(evr_is_closing(&echo_srv.base));
  close_and_wait(&l.base);
  assert_fds_back_to(base);
}

static void test_tcp_ipv4_echo(void **state) {
  (void)state;
  echo_roundtrip("127.0.0.1:0", NULL, AF_INET);
}

static void test_tcp_ipv6_echo(void **state) {
  (void)state;
  int probe = test_socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 a6;
  memset(&a6, 0, sizeof a6);
  a6.sin6_family = AF_INET6;
  a6.sin6_addr = in6addr_loopback;
  if (probe < 0 || bind(probe, (struct sockaddr *)&a6, sizeof a6) != 0) {
    if (probe >= 0) close(probe);
    printf("note: no IPv6 loopback here, [::1] not tested\n");
    skip();
  }
  close(probe);
  echo_roundtrip("[::1]:0", NULL, AF_INET6);
}

static void test_tcp_unix_socket_echo(void **state) {
  (void)state;
  char dir[] = "/tmp/evr-tcp-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char text[128];
  snprintf(text, sizeof text, "unix:%s/echo.sock", dir);
  echo_roundtrip(text, NULL, AF_UNIX);
  struct stat st;
  assert_int_equal(stat(text + 5, &st), -1); /* removed by the listener */
  assert_int_equal(rmdir(dir), 0);
}

static void test_tcp_connect_host_localhost(void **state) {
  (void)state;
  echo_roundtrip("127.0.0.1:0", "localhost", AF_INET);
}

/* Closing during the resolution: ECANCELED, and the pool's late answer is
 * dropped without touching the stream. */
static void test_tcp_close_during_connect_host_resolution(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  conn_done = 0;
  assert_evr_ok(evr_stream_connect_host(&s, "localhost", 9, 0, conn_cb));
  assert_int_equal(evr_stream_connect_host(&s, "localhost", 9, 0, conn_cb), EVR_EBUSY);
  close_and_wait(&s.base);
  assert_int_equal(conn_done, 1);
  assert_int_equal(conn_status, EVR_ECANCELED);
  /* The resolve request keeps the loop alive until the pool is done. */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(conn_done, 1);
  assert_fds_back_to(base);
}

static void test_tcp_connect_argument_errors(void **state) {
  (void)state;
  evr_stream_t s;
  evr_addr_t a;
  memset(&a, 0, sizeof a);
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_int_equal(evr_stream_connect(&s, &a, 0, conn_cb), EVR_EINVAL);
  assert_evr_ok(evr_addr_parse(&a, "127.0.0.1:9"));
  assert_int_equal(evr_stream_connect(&s, &a, 0, NULL), EVR_EINVAL);
  assert_int_equal(evr_stream_connect(NULL, &a, 0, conn_cb), EVR_EINVAL);
  assert_int_equal(evr_stream_connect_host(&s, NULL, 9, 0, conn_cb), EVR_EINVAL);
  assert_int_equal(evr_stream_connect_host(&s, "", 9, 0, conn_cb), EVR_EINVAL);
  int sv[2];
  make_socketpair(sv);
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  assert_int_equal(evr_stream_connect(&s, &a, 0, conn_cb), EVR_EBUSY);
  assert_int_equal(evr_stream_connect_host(&s, "localhost", 9, 0, conn_cb), EVR_EBUSY);
  close_and_wait(&s.base);
  close(sv[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_tcp_connect_argument_errors),
      EVR_TEST(test_tcp_ipv4_echo),
      EVR_TEST(test_tcp_ipv6_echo),
      EVR_TEST(test_tcp_unix_socket_echo),
      EVR_TEST(test_tcp_connect_host_localhost),
      EVR_TEST(test_tcp_close_during_connect_host_resolution),
      EVR_TEST(test_tcp_connect_refused),
      EVR_TEST(test_tcp_connect_resubmitted_while_pending_is_refused),
      EVR_TEST(test_tcp_connect_times_out_when_syns_are_dropped),
      EVR_TEST(test_tcp_many_concurrent_connections),
      EVR_TEST(test_tcp_bulk_transfer_both_ways_tiny_buffers),
  };
  const char *only = getenv("EVR_TEST_FILTER"); /* e.g. "*bulk*" */
  if (only && *only) cmocka_set_test_filter(only);
  return cmocka_run_group_tests_name("tcp", tests, NULL, NULL);
}
