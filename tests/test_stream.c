/* tests/test_stream.c: stream handles over socket pairs, pipes and raw
 * loopback TCP connections adopted with evr_stream_open(), under every
 * backend: partial writes through tiny kernel buffers, write ordering and
 * callbacks, water marks, write_copy, half-close both ways, peer reset and
 * EOF while data is queued, writes after shutdown, closing from inside
 * callbacks, abort, end, the idle timeout, connect outcomes and descriptor
 * hygiene. */
/* evr-test: backends timeout=300 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "fault.h"
#include "helpers.h"

/* ---- helpers ---- */

#if SIZE_MAX > UINT32_MAX
static void no_water_cb(evr_stream_t *s, int above) {
  (void)s;
  (void)above;
  fail_msg("no water mark report expected");
}
#endif

/* A connected loopback TCP pair, made with blocking calls and then switched
 * to non-blocking. tiny: minimal SO_SNDBUF/SO_RCVBUF on both ends (set
 * before connect so the window is small too). */
static void tcp_pair(int fds[2], int tiny) {
  int l = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(l >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1, small = 1;
  if (tiny) {
    assert_int_equal(setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    assert_int_equal(setsockopt(l, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  }
  assert_int_equal(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
  assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
  assert_int_equal(listen(l, 1), 0);
  int c = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(c >= 0);
  if (tiny) {
    assert_int_equal(setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    assert_int_equal(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  }
  assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
  int s = accept(l, NULL, NULL);
  assert_true(s >= 0);
  close(l);
  set_nonblock(c);
  set_nonblock(s);
  assert_int_equal(fcntl(s, F_SETFD, FD_CLOEXEC), 0);
  fds[0] = c;
  fds[1] = s;
}

/* Reset the connection from the raw end fd: SO_LINGER 0, close. */
static void raw_reset(int fd) {
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* Read what is available on a non-blocking raw fd. Returns bytes read
 * (0: nothing available), -1 at EOF, -errno on error. */
static ssize_t raw_drain(int fd, char *out, size_t max) {
  size_t got = 0;
  while (got < max) {
    ssize_t n = read(fd, out + got, max - got);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n == 0) return got ? (ssize_t)got : -1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) break;
    return got ? (ssize_t)got : -errno;
  }
  return (ssize_t)got;
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (unsigned char)x;
  }
}

/* A reading stream that collects what it gets. */
struct sink {
  evr_stream_t s;
  char *buf;
  size_t len, cap;
  int eof, err, reads, closed;
  size_t max_chunk;
  int close_on_read; /* close the stream inside the first read callback */
};

static void sink_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct sink *k = (struct sink *)s;
  assert_true(nread != 0);
  if (nread > 0) {
    assert_false(k->eof);
    if (k->len + (size_t)nread > k->cap) {
      k->cap = (k->len + (size_t)nread) * 2;
      k->buf = realloc(k->buf, k->cap);
      assert_non_null(k->buf);
    }
    memcpy(k->buf + k->len, buf, (size_t)nread);
    k->len += (size_t)nread;
    if ((size_t)nread > k->max_chunk) k->max_chunk = (size_t)nread;
    k->reads++;
    if (k->close_on_read) assert_evr_ok(evr_close(&s->base, NULL));
    return;
  }
  if (nread == EVR_EOF)
    k->eof = 1;
  else
    k->err = (int)nread;
}

static void sink_open(struct sink *k, int fd) {
  memset(k, 0, sizeof *k);
  assert_evr_ok(evr_stream_init(test_loop, &k->s));
  assert_evr_ok(evr_stream_open(&k->s, fd));
  assert_evr_ok(evr_stream_read_start(&k->s, sink_read));
}

static void sink_closed_cb(evr_handle_t *h) { ((struct sink *)h)->closed = 1; }

static void sink_close(struct sink *k) {
  if (!evr_is_closing(&k->s.base))
    assert_evr_ok(evr_close(&k->s.base, sink_closed_cb));
  else
    k->closed = 1;
  run_until(test_loop, &k->closed, 100);
  free(k->buf);
  k->buf = NULL;
}

/* Write-request bookkeeping: the order and status of completions. */
#define MAXREQ 64
static int wdone_order[MAXREQ], wdone_status[MAXREQ], nwdone;
static int in_write_call;

static void wcb(evr_write_t *req, int status) {
  assert_false(in_write_call); /* never inside evr_stream_write() */
  assert_true(nwdone < MAXREQ);
  wdone_order[nwdone] = (int)(intptr_t)req->data;
  wdone_status[nwdone] = status;
  nwdone++;
}

static int do_write(evr_write_t *req, evr_stream_t *s, const void *p, size_t n,
                    int id) {
  evr_buf_t b = {p, n};
  req->data = (void *)(intptr_t)id;
  in_write_call = 1;
  int rc = evr_stream_write(req, s, &b, 1, wcb);
  in_write_call = 0;
  return rc;
}

static int flag;
static void set_flag_close_cb(evr_handle_t *h) {
  (void)h;
  flag = 1;
}

/* ---- basics ---- */

static void test_stream_socketpair_roundtrip(void **state) {
  (void)state;
  int base = count_open_fds();
  int sv[2];
  make_socketpair(sv);
  struct sink a, b;
  sink_open(&a, sv[0]);
  sink_open(&b, sv[1]);
  assert_int_equal(evr_stream_fd(&a.s), sv[0]);
  nwdone = 0;
  evr_write_t w = {0};
  assert_evr_ok(do_write(&w, &a.s, "hello", 5, 1));
  /* Fully sent at once: nothing queued, but the callback is still due. On
   * the completion path the bytes wait in the queue for the next wait. */
  assert_int_equal(evr_stream_write_queue_size(&a.s), sends_at_once(test_loop) ? 0 : 5);
  assert_int_equal(nwdone, 0);
  assert_evr_ok(evr_stream_write_copy(&b.s, "world", 5));
  while (a.len < 5 || b.len < 5 || nwdone < 1)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_memory_equal(b.buf, "hello", 5);
  assert_memory_equal(a.buf, "world", 5);
  assert_int_equal(wdone_status[0], 0);
  assert_ptr_equal(w.stream, &a.s);
  sink_close(&a);
  sink_close(&b);
  assert_fds_back_to(base);
}

static void test_stream_api_errors(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_stream_t s;
  evr_write_t w = {0};
  evr_buf_t b = {"x", 1};
  evr_addr_t addr;
  assert_int_equal(evr_stream_init(NULL, &s), EVR_EINVAL);
  assert_int_equal(evr_stream_init(test_loop, NULL), EVR_EINVAL);
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_int_equal(evr_stream_fd(&s), -1);
  assert_int_equal(evr_stream_read_start(&s, sink_read), EVR_ENOTCONN);
  assert_int_equal(evr_stream_write(&w, &s, &b, 1, NULL), EVR_ENOTCONN);
  assert_int_equal(evr_stream_write_copy(&s, "x", 1), EVR_ENOTCONN);
  assert_int_equal(evr_stream_shutdown(&s, NULL), EVR_ENOTCONN);
  assert_int_equal(evr_stream_peername(&s, &addr), EVR_ENOTCONN);
  assert_int_equal(evr_stream_sockname(&s, &addr), EVR_ENOTCONN);
  assert_int_equal(evr_stream_nodelay(&s, 1), EVR_ENOTCONN);
  assert_int_equal(evr_stream_open(&s, -1), EVR_EINVAL);
  int sv[2];
  make_socketpair(sv);
  int dead = dup(sv[0]);
  close(dead);
  assert_int_equal(evr_stream_open(&s, dead), EVR_EBADF);
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  assert_int_equal(evr_stream_open(&s, sv[1]), EVR_EBUSY);
  assert_int_equal(evr_stream_read_start(&s, NULL), EVR_EINVAL);
  assert_evr_ok(evr_stream_read_start(&s, sink_read));
  assert_int_equal(evr_stream_read_start(&s, sink_read), EVR_EALREADY);
  assert_evr_ok(evr_stream_read_stop(&s));
  assert_evr_ok(evr_stream_read_stop(&s));
  assert_int_equal(evr_stream_write(&w, &s, &b, 0, NULL), EVR_EINVAL);
  assert_int_equal(evr_stream_write(&w, &s, NULL, 1, NULL), EVR_EINVAL);
  assert_int_equal(evr_stream_write(NULL, &s, &b, 1, NULL), EVR_EINVAL);
  assert_int_equal(evr_stream_set_water_marks(&s, 10, 5, NULL), EVR_EINVAL);
#if SIZE_MAX > UINT32_MAX
  /* Marks are kept in 32 bits: up to 4 GiB - 1. */
  assert_int_equal(evr_stream_set_water_marks(&s, 0, (size_t)UINT32_MAX + 1, no_water_cb),
                   EVR_EINVAL);
#endif
  assert_int_equal(evr_stream_set_idle_timeout(&s, 10, NULL), EVR_EINVAL);
  assert_int_equal(evr_stream_set_read_max(&s, 0), EVR_EINVAL);
  /* TCP options on a Unix socket. */
  assert_int_equal(evr_stream_nodelay(&s, 1), EVR_ENOTSUP);
  assert_int_equal(evr_stream_keepalive(&s, 1, 10), EVR_ENOTSUP);
  assert_evr_ok(evr_stream_sockname(&s, &addr));
  assert_int_equal(evr_addr_family(&addr), AF_UNIX);
  assert_evr_ok(evr_stream_shutdown(&s, NULL));
  assert_int_equal(evr_stream_shutdown(&s, NULL), EVR_EALREADY);
  assert_int_equal(evr_stream_end(&s, NULL), EVR_EALREADY);
  assert_int_equal(evr_stream_write(&w, &s, &b, 1, NULL), EVR_EPIPE);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  assert_int_equal(evr_close(&s.base, NULL), EVR_EALREADY);
  assert_int_equal(evr_stream_end(&s, NULL), EVR_EALREADY);
  assert_int_equal(evr_stream_abort(&s, NULL), EVR_EALREADY);
  assert_int_equal(evr_stream_write(&w, &s, &b, 1, NULL), EVR_EINVAL);
  assert_int_equal(evr_stream_fd(&s), -1);
  run_until(test_loop, &flag, 10);
  close(sv[1]);
  assert_fds_back_to(base);
}

/* evr_stream_open() refuses what is not a connected byte stream, and a
 * refused descriptor is left exactly as the caller had it: still blocking
 * and inheritable when it was. */
static void assert_open_refused_untouched(int fd, int expect) {
  int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
  assert_true(fl >= 0 && fdfl >= 0);
  assert_int_equal(fl & O_NONBLOCK, 0);
  assert_int_equal(fdfl & FD_CLOEXEC, 0);
  static evr_stream_t s; /* outlives a failed check: teardown closes it */
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_int_equal(evr_stream_open(&s, fd), expect);
  assert_int_equal(evr_stream_fd(&s), -1);
  assert_int_equal(fcntl(fd, F_GETFL), fl);
  assert_int_equal(fcntl(fd, F_GETFD), fdfl);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  assert_true(fcntl(fd, F_GETFD) >= 0); /* still open: still the caller's */
}

static void test_stream_open_refused_fd_keeps_its_flags(void **state) {
  (void)state;
  int base = count_open_fds();
  int udp = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(udp >= 0);
  assert_open_refused_untouched(udp, EVR_EINVAL);
  close(udp);
  int sv[2];
  /* macOS has no SOCK_SEQPACKET for Unix sockets; Linux and FreeBSD do. */
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0) {
    assert_open_refused_untouched(sv[0], EVR_EINVAL);
    close(sv[0]);
    close(sv[1]);
  } else {
#if defined(__linux__) || defined(__FreeBSD__)
    fail_msg("socketpair(AF_UNIX, SOCK_SEQPACKET): %s", strerror(errno));
#endif
    print_message("note: no SOCK_SEQPACKET Unix sockets here (%s): not checked\n",
                  strerror(errno));
  }
  /* A listening socket is no stream either. */
  int l = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(l >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(l, 1), 0);
  assert_open_refused_untouched(l, EVR_EINVAL);
  close(l);
  /* Accepted: a blocking, inheritable stream socket is made non-blocking
   * and close-on-exec. */
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  assert_true(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
  assert_true(fcntl(sv[0], F_GETFD) & FD_CLOEXEC);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(sv[1]);
  assert_fds_back_to(base);
}

static void test_stream_tcp_options_and_names(void **state) {
  (void)state;
  int fds[2];
  tcp_pair(fds, 0);
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, fds[0]));
  assert_evr_ok(evr_stream_nodelay(&s, 1));
  int v = 0;
  socklen_t len = sizeof v;
  assert_int_equal(getsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
  assert_true(v != 0);
  assert_evr_ok(evr_stream_nodelay(&s, 0));
  assert_evr_ok(evr_stream_keepalive(&s, 1, 30));
  assert_int_equal(getsockopt(fds[0], SOL_SOCKET, SO_KEEPALIVE, &v, &len), 0);
  assert_true(v != 0);
  assert_evr_ok(evr_stream_keepalive(&s, 0, 0));
  evr_addr_t peer, local;
  assert_evr_ok(evr_stream_peername(&s, &peer));
  assert_evr_ok(evr_stream_sockname(&s, &local));
  assert_int_equal(evr_addr_family(&peer), AF_INET);
  struct sockaddr_in sin;
  len = sizeof sin;
  assert_int_equal(getsockname(fds[1], (struct sockaddr *)&sin, &len), 0);
  assert_int_equal(evr_addr_port(&peer), ntohs(sin.sin_port));
  assert_true(evr_addr_port(&local) != 0);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(fds[1]);
}

/* A read-only pipe end and a write-only one. */
static void test_stream_over_pipes(void **state) {
  (void)state;
  int base = count_open_fds();
  int p[2];
  make_pipe(p);
  struct sink r;
  sink_open(&r, p[0]);
  evr_stream_t w;
  assert_evr_ok(evr_stream_init(test_loop, &w));
  assert_evr_ok(evr_stream_open(&w, p[1]));
  static unsigned char data[300000];
  fill_pattern(data, sizeof data, 7);
  evr_write_t req = {0};
  nwdone = 0;
  assert_evr_ok(do_write(&req, &w, data, sizeof data, 1));
  assert_true(evr_stream_write_queue_size(&w) > 0); /* a pipe holds 64 KiB */
  flag = 0;
  assert_evr_ok(evr_stream_end(&w, set_flag_close_cb));
  while (!r.eof) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  run_until(test_loop, &flag, 10);
  assert_int_equal(nwdone, 1);
  assert_int_equal(wdone_status[0], 0);
  assert_int_equal(r.len, sizeof data);
  assert_memory_equal(r.buf, data, sizeof data);
  sink_close(&r);
  assert_fds_back_to(base);
}

/* ---- writes ---- */

/* Many partial writes through tiny kernel buffers: every byte arrives, in
 * order, and callbacks run in submission order. */
static void test_stream_partial_writes_tiny_buffers(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  struct sink rx;
  sink_open(&rx, fds[1]);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  enum { N = 24, CHUNK = 100000 };
  static unsigned char data[N * CHUNK];
  fill_pattern(data, sizeof data, 1);
  static evr_write_t reqs[N];
  nwdone = 0;
  size_t expect = 0;
  for (int i = 0; i < N; i++) {
    if (i % 3 == 2) {
      /* Three buffers, array on the stack and scribbled over at once. */
      evr_buf_t bufs[3] = {{data + i * CHUNK, 10},
                           {data + i * CHUNK + 10, 0},
                           {data + i * CHUNK + 10, CHUNK - 10}};
      reqs[i].data = (void *)(intptr_t)i;
      in_write_call = 1;
      assert_evr_ok(evr_stream_write(&reqs[i], &tx, bufs, 3, wcb));
      in_write_call = 0;
      memset(bufs, 0, sizeof bufs);
    } else {
      assert_evr_ok(do_write(&reqs[i], &tx, data + i * CHUNK, CHUNK, i));
    }
    expect += CHUNK;
    assert_true(evr_stream_write_queue_size(&tx) <= expect);
  }
  assert_true(evr_stream_write_queue_size(&tx) > 0);
  assert_int_equal(nwdone, 0);
  while (rx.len < sizeof data) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  while (nwdone < N) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(evr_stream_write_queue_size(&tx), 0);
  assert_memory_equal(rx.buf, data, sizeof data);
  for (int i = 0; i < N; i++) {
    assert_int_equal(wdone_order[i], i);
    assert_int_equal(wdone_status[i], 0);
  }
  flag = 0;
  assert_evr_ok(evr_close(&tx.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  sink_close(&rx);
  assert_fds_back_to(base);
}

/* Write callbacks run in submission order whatever the sizes: an empty
 * write (zero-length buffers) queued behind a large one that the peer does
 * not take waits for it. */
static void test_stream_empty_write_completes_in_submission_order(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  /* Static handles: a failed check leaves them to the fixture's teardown. */
  static evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  static unsigned char data[1 << 20];
  fill_pattern(data, sizeof data, 5);
  static evr_write_t w[4];
  nwdone = 0;
  assert_evr_ok(do_write(&w[0], &tx, data, sizeof data, 1));
  size_t queued = evr_stream_write_queue_size(&tx);
  assert_true(queued > 0); /* the peer does not read: it stays queued */
  assert_evr_ok(do_write(&w[1], &tx, data, 0, 2));
  evr_buf_t empty[2] = {{NULL, 0}, {data, 0}};
  w[2].data = (void *)(intptr_t)3;
  in_write_call = 1;
  assert_evr_ok(evr_stream_write(&w[2], &tx, empty, 2, wcb));
  in_write_call = 0;
  assert_evr_ok(do_write(&w[3], &tx, data, 10, 4));
  assert_int_equal(evr_stream_write_queue_size(&tx), queued + 10);
  for (int i = 0; i < 5; i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  if (nwdone != 0)
    fail_msg("%d callback(s) ran while the first write was stuck, first id %d",
             nwdone, wdone_order[0]);
  /* The peer reads: everything completes, in order. */
  static struct sink rx;
  sink_open(&rx, fds[1]);
  while (nwdone < 4) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  for (int i = 0; i < 4; i++) {
    if (wdone_order[i] != i + 1)
      fail_msg("callback order: %d %d %d %d", wdone_order[0], wdone_order[1],
               wdone_order[2], wdone_order[3]);
    assert_int_equal(wdone_status[i], 0);
  }
  assert_int_equal(evr_stream_write_queue_size(&tx), 0);
  while (rx.len < sizeof data + 10)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_memory_equal(rx.buf, data, sizeof data);

  /* Alone on an idle stream, an empty write completes from the loop, never
   * inside the call; behind a write that went out at once, after it. */
  nwdone = 0;
  assert_evr_ok(do_write(&w[0], &tx, data, 0, 1));
  assert_int_equal(nwdone, 0);
  assert_int_equal(evr_stream_write_queue_size(&tx), 0);
  while (nwdone < 1) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(wdone_status[0], 0);
  nwdone = 0;
  assert_evr_ok(do_write(&w[0], &tx, "abc", 3, 1));
  assert_evr_ok(do_write(&w[1], &tx, data, 0, 2));
  assert_int_equal(nwdone, 0);
  while (nwdone < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(wdone_order[0], 1);
  assert_int_equal(wdone_order[1], 2);

  /* Queued behind a write_copy tail, and cancelled in order by a close. */
  nwdone = 0;
  assert_evr_ok(evr_stream_read_stop(&rx.s));
  assert_evr_ok(evr_stream_write_copy(&tx, data, sizeof data));
  assert_true(evr_stream_write_queue_size(&tx) > 0);
  assert_evr_ok(do_write(&w[0], &tx, data, 0, 1));
  assert_evr_ok(do_write(&w[1], &tx, data, 5, 2));
  assert_evr_ok(do_write(&w[2], &tx, data, 0, 3));
  for (int i = 0; i < 5; i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(nwdone, 0);
  flag = 0;
  assert_evr_ok(evr_close(&tx.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  assert_int_equal(nwdone, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(wdone_order[i], i + 1);
    assert_int_equal(wdone_status[i], EVR_ECANCELED);
  }
  sink_close(&rx);
  assert_fds_back_to(base);
}

/* The loop has nothing left: a bounded run comes back with 0 and the loop
 * can be freed (the fixture then has nothing to tear down). */
static void assert_loop_settles_and_frees(void) {
  int rc = 1;
  for (int i = 0; i < 100 && rc > 0; i++) rc = evr_loop_run(test_loop, EVR_RUN_NOWAIT);
  if (rc != 0) fail_msg("the loop is still alive after 100 iterations");
  assert_int_equal(evr_loop_free(test_loop), 0);
  test_loop = NULL;
}

static int resubmits; /* how many times wcb_resubmit submits again */
static evr_stream_t *resubmit_to;

static void wcb_resubmit(evr_write_t *req, int status) {
  wcb(req, status);
  if (resubmits > 0) {
    resubmits--;
    evr_buf_t b = {"again", 5};
    /* From its own callback the request is free again. */
    assert_evr_ok(evr_stream_write(req, resubmit_to, &b, 1, wcb_resubmit));
  }
}

/* A write request whose callback has not run yet cannot be submitted again,
 * wherever it waits (the loop's list of completed requests, or a stream's
 * queue): EVR_EINVAL, and the first submission still ends with exactly one
 * callback. */
static void test_stream_write_resubmitted_while_pending_is_refused(void **state) {
  (void)state;
  int sv[2];
  make_socketpair(sv);
  static evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  static evr_write_t w;
  evr_buf_t b = {"hello", 5};
  nwdone = 0;
  w.data = (void *)(intptr_t)1;
  assert_evr_ok(evr_stream_write(&w, &s, &b, 1, wcb));
  /* sent, cb due (queued until the next wait on the completion path) */
  assert_int_equal(evr_stream_write_queue_size(&s), sends_at_once(test_loop) ? 0 : 5);
  assert_int_equal(evr_stream_write(&w, &s, &b, 1, wcb), EVR_EINVAL);
  for (int i = 0; i < 10; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(nwdone, 1);
  assert_int_equal(wdone_status[0], 0);
  /* Its callback ran: the request may be submitted again, also from the
   * callback itself. */
  resubmits = 1;
  resubmit_to = &s;
  assert_evr_ok(evr_stream_write(&w, &s, &b, 1, wcb_resubmit));
  for (int i = 0; i < 10 && nwdone < 3; i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(nwdone, 3);
  char got[32];
  assert_int_equal(read(sv[1], got, sizeof got), 15);
  assert_memory_equal(got, "hellohelloagain", 15);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(sv[1]);
  assert_int_equal(nwdone, 3);

  /* A refused submission leaves the request free: after an error of the
   * immediate attempt, the next submission reports the stream's error. */
  make_socketpair(sv);
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  close(sv[1]);
  int expect = 3;
  if (!sends_at_once(test_loop)) {
    /* The completion path has no immediate attempt: the write is taken,
     * its callback gets the error, and the next one is refused with it. */
    assert_evr_ok(evr_stream_write(&w, &s, &b, 1, wcb));
    for (int i = 0; i < 10 && nwdone < 4; i++)
      assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
    assert_int_equal(nwdone, 4);
    assert_int_equal(wdone_status[3], EVR_EPIPE);
    expect = 4;
  }
  assert_int_equal(evr_stream_write(&w, &s, &b, 1, wcb), EVR_EPIPE);
  assert_int_equal(evr_stream_write(&w, &s, &b, 1, wcb), EVR_EPIPE);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  assert_int_equal(nwdone, expect);
  assert_loop_settles_and_frees();
}

static void test_stream_write_queued_on_one_stream_refused_on_another(void **state) {
  (void)state;
  int fds[2], sv[2];
  tcp_pair(fds, 1);
  make_socketpair(sv);
  static evr_stream_t a, b;
  assert_evr_ok(evr_stream_init(test_loop, &a));
  assert_evr_ok(evr_stream_open(&a, fds[0]));
  assert_evr_ok(evr_stream_init(test_loop, &b));
  assert_evr_ok(evr_stream_open(&b, sv[0]));
  static unsigned char data[1 << 20];
  static evr_write_t w;
  nwdone = 0;
  assert_evr_ok(do_write(&w, &a, data, sizeof data, 1));
  assert_true(evr_stream_write_queue_size(&a) > 0);
  evr_buf_t x = {"x", 1};
  assert_int_equal(evr_stream_write(&w, &a, &x, 1, wcb), EVR_EINVAL);
  assert_int_equal(evr_stream_write(&w, &b, &x, 1, wcb), EVR_EINVAL);
  assert_int_equal(evr_stream_write_queue_size(&b), 0);
  flag = 0;
  assert_evr_ok(evr_close(&a.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  assert_int_equal(nwdone, 1);
  assert_int_equal(wdone_status[0], EVR_ECANCELED);
  flag = 0;
  assert_evr_ok(evr_close(&b.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(fds[1]);
  close(sv[1]);
  assert_int_equal(nwdone, 1);
  assert_loop_settles_and_frees();
}

/* A shutdown request is one per stream: a second one (or an end) while the
 * first is pending is refused with EVR_EALREADY, and the first still gets
 * exactly one callback, after the write queued before it. */
static void test_stream_shutdown_resubmitted_while_pending_is_refused(void **state);

static int water_events[16], nwater;
static void water_cb(evr_stream_t *s, int above) {
  (void)s;
  assert_true(nwater < 16);
  water_events[nwater++] = above;
}

static void test_stream_water_marks_fire(void **state) {
  (void)state;
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  assert_evr_ok(evr_stream_set_water_marks(&tx, 1000, 50000, water_cb));
  nwater = 0;
  static unsigned char data[400000];
  fill_pattern(data, sizeof data, 3);
  /* The peer does not read: the kernel fills, then the queue grows. */
  size_t off = 0;
  while (nwater == 0 && off < sizeof data) {
    assert_evr_ok(evr_stream_write_copy(&tx, data + off, 10000));
    off += 10000;
  }
  /* The high mark is reported inside the write that crosses it. */
  assert_int_equal(nwater, 1);
  assert_int_equal(water_events[0], 1);
  assert_true(evr_stream_write_queue_size(&tx) > 50000);
  /* No second report while above. */
  assert_evr_ok(evr_stream_write_copy(&tx, data + off, 10000));
  off += 10000;
  assert_int_equal(nwater, 1);
  /* Now the peer reads: the queue drains below the low mark. */
  struct sink rx;
  sink_open(&rx, fds[1]);
  while (rx.len < off) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(nwater, 2);
  assert_int_equal(water_events[1], 0);
  assert_int_equal(evr_stream_write_queue_size(&tx), 0);
  assert_memory_equal(rx.buf, data, off);
  /* Disabling the marks. */
  assert_evr_ok(evr_stream_set_water_marks(&tx, 0, 0, NULL));
  flag = 0;
  assert_evr_ok(evr_close(&tx.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  sink_close(&rx);
}

/* write_copy: the caller's buffer may change at once; only the unsent part
 * is queued. */
static void test_stream_write_copy_copies_only_the_tail(void **state) {
  (void)state;
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  static unsigned char data[300000], scratch[300000];
  fill_pattern(data, sizeof data, 5);
  memcpy(scratch, data, sizeof data);
  assert_evr_ok(evr_stream_write_copy(&tx, "ab", 2));
  if (sends_at_once(test_loop)) {
    assert_int_equal(evr_stream_write_queue_size(&tx), 0); /* all sent */
    assert_evr_ok(evr_stream_write_copy(&tx, scratch, sizeof scratch));
    size_t q = evr_stream_write_queue_size(&tx);
    assert_true(q > 0 && q < sizeof scratch); /* some went at once */
  } else {
    /* The completion path sends nothing at once: all of it is copied. */
    assert_int_equal(evr_stream_write_queue_size(&tx), 2);
    assert_evr_ok(evr_stream_write_copy(&tx, scratch, sizeof scratch));
    assert_int_equal(evr_stream_write_queue_size(&tx), sizeof scratch + 2);
  }
  memset(scratch, 0xEE, sizeof scratch);
  struct sink rx;
  sink_open(&rx, fds[1]);
  while (rx.len < sizeof data + 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_memory_equal(rx.buf, "ab", 2);
  assert_memory_equal(rx.buf + 2, data, sizeof data);
  flag = 0;
  assert_evr_ok(evr_close(&tx.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  sink_close(&rx);
}

static void test_stream_read_max_bounds_each_callback(void **state) {
  (void)state;
  int sv[2];
  make_socketpair(sv);
  struct sink rx;
  sink_open(&rx, sv[0]);
  assert_evr_ok(evr_stream_set_read_max(&rx.s, 100));
  static unsigned char data[5000];
  fill_pattern(data, sizeof data, 9);
  assert_int_equal(write(sv[1], data, sizeof data), (ssize_t)sizeof data);
  while (rx.len < sizeof data) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_true(rx.max_chunk <= 100);
  assert_true(rx.reads >= 50);
  assert_memory_equal(rx.buf, data, sizeof data);
  sink_close(&rx);
  close(sv[1]);
}

/* ---- ending ---- */

static int shut_status[2], nshut;
static void shut_cb(evr_stream_t *s, int status) {
  (void)s;
  assert_true(nshut < 2);
  shut_status[nshut++] = status;
}

static void test_stream_shutdown_resubmitted_while_pending_is_refused(void **state) {
  (void)state;
  int fds[2];
  tcp_pair(fds, 1);
  static evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, fds[0]));
  static unsigned char data[1 << 20];
  static evr_write_t w;
  nwdone = 0;
  nshut = 0;
  assert_evr_ok(do_write(&w, &s, data, sizeof data, 1));
  assert_true(evr_stream_write_queue_size(&s) > 0);
  assert_evr_ok(evr_stream_shutdown(&s, shut_cb));
  assert_int_equal(evr_stream_shutdown(&s, shut_cb), EVR_EALREADY);
  assert_int_equal(evr_stream_end(&s, NULL), EVR_EALREADY);
  static struct sink rx;
  sink_open(&rx, fds[1]);
  while (!rx.eof) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  while (nshut < 1) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(nwdone, 1);
  assert_int_equal(shut_status[0], 0);
  /* Done, but still one per stream. */
  assert_int_equal(evr_stream_shutdown(&s, shut_cb), EVR_EALREADY);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  sink_close(&rx);
  assert_int_equal(nshut, 1);
  assert_int_equal(nwdone, 1);
  assert_loop_settles_and_frees();
}

/* A shuts down while data is queued: B reads it all, then EOF, and can
 * still write back; then B shuts down and A reads EOF. */
static void test_stream_half_close_both_ways(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  struct sink a, b;
  sink_open(&a, fds[0]);
  sink_open(&b, fds[1]);
  assert_evr_ok(evr_stream_read_stop(&b.s)); /* let A's queue build up */
  static unsigned char data[200000];
  fill_pattern(data, sizeof data, 11);
  evr_write_t w = {0};
  nwdone = 0;
  nshut = 0;
  assert_evr_ok(do_write(&w, &a.s, data, sizeof data, 1));
  assert_true(evr_stream_write_queue_size(&a.s) > 0);
  assert_evr_ok(evr_stream_shutdown(&a.s, shut_cb));
  assert_int_equal(nshut, 0); /* never inside the call */
  assert_int_equal(evr_stream_write_copy(&a.s, "x", 1), EVR_EPIPE);
  assert_evr_ok(evr_stream_read_start(&b.s, sink_read));
  while (!b.eof) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(b.len, sizeof data);
  assert_memory_equal(b.buf, data, sizeof data);
  while (nshut < 1) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(shut_status[0], 0);
  /* The write callback ran before the shutdown callback. */
  assert_int_equal(nwdone, 1);
  assert_int_equal(evr_stream_read_start(&b.s, sink_read), EVR_EOF);
  /* The other direction still works. */
  assert_evr_ok(evr_stream_write_copy(&b.s, "back", 4));
  assert_evr_ok(evr_stream_shutdown(&b.s, shut_cb));
  while (!a.eof) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(a.len, 4);
  assert_memory_equal(a.buf, "back", 4);
  while (nshut < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(shut_status[1], 0);
  assert_int_equal(a.err, 0);
  assert_int_equal(b.err, 0);
  sink_close(&a);
  sink_close(&b);
  assert_fds_back_to(base);
}

static void test_stream_writes_after_shutdown_fail_with_epipe(void **state) {
  (void)state;
  int sv[2];
  make_socketpair(sv);
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  nshut = 0;
  assert_evr_ok(evr_stream_shutdown(&s, shut_cb));
  evr_write_t w = {0};
  evr_buf_t b = {"x", 1};
  assert_int_equal(evr_stream_write(&w, &s, &b, 1, wcb), EVR_EPIPE);
  assert_int_equal(evr_stream_write_copy(&s, "x", 1), EVR_EPIPE);
  run_until(test_loop, &nshut, 10);
  assert_int_equal(shut_status[0], 0);
  char c;
  assert_int_equal(read(sv[1], &c, 1), 0); /* the peer sees EOF */
  assert_int_equal(evr_stream_write_copy(&s, "x", 1), EVR_EPIPE);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(sv[1]);
}

/* end(): flush, FIN, close; the close callback runs once all is sent. */
static void test_stream_end_flushes_then_closes(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  static unsigned char data[250000];
  fill_pattern(data, sizeof data, 13);
  evr_write_t w = {0};
  nwdone = 0;
  assert_evr_ok(do_write(&w, &tx, data, sizeof data, 7));
  assert_evr_ok(evr_stream_write_copy(&tx, "tail", 4));
  flag = 0;
  assert_evr_ok(evr_stream_end(&tx, set_flag_close_cb));
  assert_int_equal(evr_stream_end(&tx, NULL), EVR_EALREADY);
  assert_int_equal(evr_stream_write_copy(&tx, "x", 1), EVR_EPIPE);
  struct sink rx;
  sink_open(&rx, fds[1]);
  while (!rx.eof || !flag) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(rx.len, sizeof data + 4);
  assert_memory_equal(rx.buf, data, sizeof data);
  assert_memory_equal(rx.buf + sizeof data, "tail", 4);
  assert_int_equal(nwdone, 1);
  assert_int_equal(wdone_status[0], 0);
  sink_close(&rx);
  assert_fds_back_to(base);
}

/* abort(): the peer gets a reset, queued writes are cancelled. */
static void test_stream_abort_gives_peer_econnreset(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  static unsigned char data[300000];
  evr_write_t w = {0};
  nwdone = 0;
  assert_evr_ok(do_write(&w, &tx, data, sizeof data, 3));
  assert_true(evr_stream_write_queue_size(&tx) > 0);
  flag = 0;
  assert_evr_ok(evr_stream_abort(&tx, set_flag_close_cb));
  assert_int_equal(evr_stream_abort(&tx, NULL), EVR_EALREADY);
  struct sink rx;
  sink_open(&rx, fds[1]);
  while ((!rx.err && !rx.eof) || !flag)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(rx.err, EVR_ECONNRESET);
  assert_false(rx.eof);
  assert_int_equal(nwdone, 1);
  assert_int_equal(wdone_status[0], EVR_ECANCELED);
  sink_close(&rx);
  assert_fds_back_to(base);
}

/* ---- failures ---- */

static int reader_err, reader_eof;
static void err_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  (void)s;
  (void)buf;
  if (nread == EVR_EOF) reader_eof = 1;
  else if (nread < 0) reader_err = (int)nread;
}

/* The peer resets while data is queued: the queued writes fail with the
 * reset, a reader hears it, and later writes return the sticky error. */
static void test_stream_peer_reset_while_data_queued(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  reader_err = reader_eof = 0;
  assert_evr_ok(evr_stream_read_start(&tx, err_read));
  static unsigned char data[400000];
  static evr_write_t w[2];
  nwdone = 0;
  assert_evr_ok(do_write(&w[0], &tx, data, sizeof data, 0));
  assert_evr_ok(do_write(&w[1], &tx, data, 1000, 1));
  assert_evr_ok(evr_stream_write_copy(&tx, data, 1000));
  assert_true(evr_stream_write_queue_size(&tx) > 1000);
  raw_reset(fds[1]);
  while (nwdone < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(wdone_order[0], 0);
  assert_int_equal(wdone_order[1], 1);
  assert_true(wdone_status[0] == EVR_ECONNRESET || wdone_status[0] == EVR_EPIPE);
  assert_int_equal(wdone_status[1], wdone_status[0]);
  assert_int_equal(reader_err, wdone_status[0]);
  assert_int_equal(evr_stream_read_start(&tx, err_read), wdone_status[0]);
  assert_int_equal(evr_stream_write_queue_size(&tx), 0);
  assert_int_equal(evr_stream_write_copy(&tx, "x", 1), wdone_status[0]);
  flag = 0;
  assert_evr_ok(evr_close(&tx.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  assert_fds_back_to(base);
}

/* A stream that has sent everything and half-closed still hears its
 * peer's reset as an error: a peer that resets (the connection accepted),
 * and a listener closed with the connection never accepted (the kernel
 * resets what waits in its queue), with the stream adopted or connected by
 * evr (reading, writing and half-closing from its connect callback, as a
 * proxy does towards its upstream). */
static int hcr_connected;
static void hcr_connect_cb(evr_stream_t *s, int status) {
  assert_evr_ok(status);
  assert_evr_ok(evr_stream_read_start(s, err_read));
  assert_evr_ok(evr_stream_write_copy(s, "PROXY UNKNOWN\r\n", 15));
  assert_evr_ok(evr_stream_shutdown(s, NULL));
  hcr_connected = 1;
}

static void test_stream_half_closed_hears_reset(void **state) {
  (void)state;
  int base = count_open_fds();
  for (int variant = 0; variant < 3; variant++) {
    int accepted = variant == 1, by_evr = variant == 2;
    int l = test_socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    assert_int_equal(listen(l, 16), 0);
    evr_stream_t tx;
    assert_evr_ok(evr_stream_init(test_loop, &tx));
    reader_err = reader_eof = 0;
    if (by_evr) {
      evr_addr_t addr;
      assert_evr_ok(evr_addr_from_sockaddr(&addr, (struct sockaddr *)&a, len));
      hcr_connected = 0;
      assert_evr_ok(evr_stream_connect(&tx, &addr, 5000, hcr_connect_cb));
      run_until(test_loop, &hcr_connected, 1000);
    } else {
      int c = test_socket(AF_INET, SOCK_STREAM, 0);
      assert_true(c >= 0);
      assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
      set_nonblock(c);
      assert_evr_ok(evr_stream_open(&tx, c));
      assert_evr_ok(evr_stream_read_start(&tx, err_read));
      assert_evr_ok(evr_stream_write_copy(&tx, "PROXY UNKNOWN\r\n", 15));
      assert_evr_ok(evr_stream_shutdown(&tx, NULL));
    }
    int u = -1;
    if (accepted) {
      u = accept(l, NULL, NULL);
      assert_true(u >= 0);
    }
    /* Until the header and the FIN are out. */
    for (int i = 0; i < 100 && evr_stream_write_queue_size(&tx) > 0; i++)
      assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    if (accepted) raw_reset(u);
    close(l);
    for (int i = 0; i < 1000 && !reader_err && !reader_eof; i++)
      assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
    if (reader_err != EVR_ECONNRESET)
      fail_msg("variant %d: the reader got %s, eof %d", variant, evr_err_name(reader_err),
               reader_eof);
    flag = 0;
    assert_evr_ok(evr_close(&tx.base, set_flag_close_cb));
    run_until(test_loop, &flag, 10);
  }
  assert_fds_back_to(base);
}

/* EOF arrives while our data is queued: the peer only half-closed, so the
 * queue still drains; when the peer then closes for good, the rest fails. */
static void test_stream_eof_in_mid_write(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  struct sink a;
  sink_open(&a, fds[0]);
  static unsigned char data[200000];
  fill_pattern(data, sizeof data, 17);
  evr_write_t w = {0};
  nwdone = 0;
  assert_evr_ok(do_write(&w, &a.s, data, sizeof data, 1));
  assert_true(evr_stream_write_queue_size(&a.s) > 0);
  assert_int_equal(shutdown(fds[1], SHUT_WR), 0);
  while (!a.eof) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(a.err, 0);
  /* Half-closed: the rest is still delivered. */
  static unsigned char got[sizeof data];
  size_t n = 0;
  while (n < sizeof data) {
    ssize_t r = raw_drain(fds[1], (char *)got + n, sizeof data - n);
    assert_true(r >= 0);
    n += (size_t)r;
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  }
  assert_memory_equal(got, data, sizeof data);
  while (nwdone < 1) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(wdone_status[0], 0);
  /* Now a write into a peer that closed without reading: the queued part
   * fails (reset by the peer's kernel), the caller learns it. */
  assert_evr_ok(do_write(&w, &a.s, data, sizeof data, 2));
  close(fds[1]);
  while (nwdone < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_true(wdone_status[1] == EVR_EPIPE || wdone_status[1] == EVR_ECONNRESET ||
              wdone_status[1] == 0);
  if (wdone_status[1] == 0) {
    /* Everything fit in the kernel before the close: the next write meets
     * the reset. */
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) {
      rc = evr_stream_write_copy(&a.s, data, 1000);
      assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    }
    assert_true(rc == EVR_EPIPE || rc == EVR_ECONNRESET);
  }
  sink_close(&a);
  assert_fds_back_to(base);
}

/* ---- bytes that arrive while the reader is stopped ---- */

/* A reader that stops itself after its first chunk. */
struct pauser {
  evr_stream_t s;
  char buf[8192];
  size_t len;
  int chunks, eof, stop_after_first, in_start;
};

static void pauser_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct pauser *p = (struct pauser *)s;
  assert_false(p->in_start); /* never inside read_start() */
  if (nread < 0) {
    assert_int_equal(nread, EVR_EOF);
    p->eof = 1;
    return;
  }
  assert_false(p->eof);
  assert_true(p->len + (size_t)nread <= sizeof p->buf);
  memcpy(p->buf + p->len, buf, (size_t)nread);
  p->len += (size_t)nread;
  if (p->chunks++ == 0 && p->stop_after_first) assert_evr_ok(evr_stream_read_stop(s));
}

/* The reader stops in its first callback; more bytes and the EOF arrive
 * while it is stopped. Nothing reaches it until read_start(), which calls
 * nothing itself; then the bytes come in order, and the EOF after them.
 * (On io_uring the bytes already received are held by the stream.) */
static void test_stream_bytes_while_stopped_come_after_restart(void **state) {
  (void)state;
  int base = count_open_fds();
  int sv[2];
  make_socketpair(sv);
  static struct pauser p;
  memset(&p, 0, sizeof p);
  p.stop_after_first = 1;
  assert_evr_ok(evr_stream_init(test_loop, &p.s));
  assert_evr_ok(evr_stream_open(&p.s, sv[0]));
  assert_evr_ok(evr_stream_set_read_max(&p.s, 1000));
  assert_evr_ok(evr_stream_read_start(&p.s, pauser_read));
  static char data[6000];
  fill_pattern((unsigned char *)data, sizeof data, 3);
  assert_int_equal(write(sv[1], data, 3000), 3000);
  while (p.chunks == 0) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(p.chunks, 1);
  assert_int_equal(p.len, 1000);
  assert_int_equal(write(sv[1], data + 3000, 3000), 3000);
  assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
  for (int i = 0; i < 10; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(p.chunks, 1);
  assert_false(p.eof);
  p.stop_after_first = 0;
  p.in_start = 1;
  assert_evr_ok(evr_stream_read_start(&p.s, pauser_read));
  p.in_start = 0;
  for (int i = 0; i < 50 && !p.eof; i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_true(p.eof);
  assert_int_equal(p.len, sizeof data);
  assert_memory_equal(p.buf, data, sizeof data);
  assert_true(p.chunks >= 6); /* read_max still bounds each callback */
  flag = 0;
  assert_evr_ok(evr_close(&p.s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(sv[1]);
  assert_fds_back_to(base);
}

/* A loop whose receive ring is tiny (2 buffers of 1 KiB on io_uring;
 * other backends ignore the option): eight streams that receive 64 KiB
 * each at once run the ring dry again and again, and lose nothing. */
#define RING_STREAMS 8
#define RING_BYTES (64 * 1024)
struct ring_rx {
  evr_stream_t s;
  unsigned char got[RING_BYTES];
  size_t len;
  int eof;
};
static void ring_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct ring_rx *r = (struct ring_rx *)s;
  if (nread == EVR_EOF) {
    r->eof = 1;
    return;
  }
  assert_true(nread > 0 && r->len + (size_t)nread <= RING_BYTES);
  memcpy(r->got + r->len, buf, (size_t)nread);
  r->len += (size_t)nread;
}
static void ring_close_cb(evr_handle_t *h) { (void)h; flag++; }

/* A loop of the backend under test whose receive ring (io_uring) has n
 * buffers of size bytes; other backends ignore the sizes. */
static evr_loop_t *ring_loop(unsigned n, unsigned size) {
  evr_loop_options_t o = {0};
  o.backend = requested_backend();
  o.flags = EVR_LOOP_IGNORE_ENV;
  o.io_buffers = n;
  o.io_buffer_size = size;
  evr_loop_t *loop;
  assert_evr_ok(evr_loop_new(&loop, &o));
  return loop;
}

static void test_stream_small_receive_ring_loses_nothing(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_loop_t *loop = ring_loop(2, 1024);
  static struct ring_rx rx[RING_STREAMS];
  static unsigned char data[RING_STREAMS][RING_BYTES];
  int peer[RING_STREAMS];
  for (int i = 0; i < RING_STREAMS; i++) {
    int sv[2];
    make_socketpair(sv);
    int big = 256 * 1024;
    (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    set_nonblock(sv[1]);
    memset(&rx[i], 0, sizeof rx[i]);
    assert_evr_ok(evr_stream_init(loop, &rx[i].s));
    assert_evr_ok(evr_stream_open(&rx[i].s, sv[0]));
    assert_evr_ok(evr_stream_read_start(&rx[i].s, ring_read));
    peer[i] = sv[1];
    fill_pattern(data[i], RING_BYTES, (unsigned)i + 11);
  }
  size_t sent[RING_STREAMS] = {0};
  int done = 0;
  for (int iter = 0; iter < 100000 && done < RING_STREAMS; iter++) {
    for (int i = 0; i < RING_STREAMS; i++) {
      if (sent[i] < RING_BYTES) {
        ssize_t n = write(peer[i], data[i] + sent[i], RING_BYTES - sent[i]);
        if (n > 0) sent[i] += (size_t)n;
        if (sent[i] == RING_BYTES) assert_int_equal(shutdown(peer[i], SHUT_WR), 0);
      }
    }
    assert_true(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
    done = 0;
    for (int i = 0; i < RING_STREAMS; i++) done += rx[i].eof;
  }
  flag = 0;
  for (int i = 0; i < RING_STREAMS; i++) {
    assert_true(rx[i].eof);
    assert_int_equal(rx[i].len, RING_BYTES);
    assert_memory_equal(rx[i].got, data[i], RING_BYTES);
    assert_evr_ok(evr_close(&rx[i].s.base, ring_close_cb));
    close(peer[i]);
  }
  while (flag < RING_STREAMS) assert_true(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(evr_loop_run(loop, EVR_RUN_DEFAULT), 0);
  assert_evr_ok(evr_loop_free(loop));
  assert_fds_back_to(base);
}

/* A relay: what stream `in` reads is written on with evr_stream_write_copy()
 * from inside the read callback, in two pieces per view (on io_uring the
 * bytes are then sent from the receive buffer in place, which stays out of
 * the ring until they are). The loop's ring is tiny (8 buffers of 4 KiB on
 * io_uring), and views are cut at read_max so that several pieces of several
 * views hold one buffer. */
#define RELAY_BYTES (256 * 1024)
static evr_stream_t relay_in, *relay_out;
static int relay_eof;
static void relay_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  if (nread == EVR_EOF) {
    relay_eof = 1;
    return;
  }
  assert_true(nread > 0);
  (void)s;
  size_t k = (size_t)nread / 3;
  assert_evr_ok(evr_stream_write_copy(relay_out, buf, k));
  assert_evr_ok(evr_stream_write_copy(relay_out, buf + k, (size_t)nread - k));
}

/* Sends all of data into `src` and reads what comes out of `dst` into got,
 * running the loop; reading starts only after `hold` iterations, so that the
 * relay's queue grows first. */
static void relay_pump(evr_loop_t *loop, int src, int dst, const unsigned char *data,
                       unsigned char *got, size_t len, int hold) {
  size_t sent = 0, rcvd = 0;
  for (int iter = 0; iter < 200000 && rcvd < len; iter++) {
    if (sent < len) {
      ssize_t n = write(src, data + sent, len - sent > 16384 ? 16384 : len - sent);
      if (n > 0) sent += (size_t)n;
    }
    assert_true(evr_loop_run(loop, EVR_RUN_NOWAIT) >= 0);
    if (iter >= hold) {
      ssize_t n = read(dst, got + rcvd, len - rcvd);
      if (n > 0) rcvd += (size_t)n;
    }
  }
  assert_int_equal(rcvd, len);
  assert_memory_equal(got, data, len);
}

static void test_stream_relay_of_read_views_is_exact(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_loop_t *loop = ring_loop(8, 4096);
  static unsigned char data[RELAY_BYTES], got[RELAY_BYTES];
  int a[2], b[2];
  make_socketpair(a); /* a[1] -> relay_in (a[0]) */
  make_socketpair(b); /* out (b[0]) -> b[1] */
  set_nonblock(a[1]);
  set_nonblock(b[1]);
  int small = 4096;
  (void)setsockopt(b[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  (void)setsockopt(b[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  static evr_stream_t out1, out2;
  assert_evr_ok(evr_stream_init(loop, &relay_in));
  assert_evr_ok(evr_stream_open(&relay_in, a[0]));
  assert_evr_ok(evr_stream_set_read_max(&relay_in, 1500));
  assert_evr_ok(evr_stream_init(loop, &out1));
  assert_evr_ok(evr_stream_open(&out1, b[0]));
  relay_out = &out1;
  relay_eof = 0;
  assert_evr_ok(evr_stream_read_start(&relay_in, relay_read));

  /* 1. The receiver reads nothing for a while: the queue holds every
   * byte (past half the ring they are copies), and they arrive exact. */
  fill_pattern(data, RELAY_BYTES, 21);
  relay_pump(loop, a[1], b[1], data, got, RELAY_BYTES, 2000);
  assert_int_equal(evr_stream_write_queue_size(&out1), 0);

  /* 2. A receiver that never reads, closed with its queue full: the
   * queued bytes are dropped and the buffers they held go back. */
  int c[2];
  make_socketpair(c);
  (void)setsockopt(c[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  assert_evr_ok(evr_stream_init(loop, &out2));
  assert_evr_ok(evr_stream_open(&out2, c[0]));
  relay_out = &out2;
  fill_pattern(data, RELAY_BYTES, 22);
  size_t sent = 0;
  for (int iter = 0; iter < 2000 && sent < 64 * 1024; iter++) {
    ssize_t n = write(a[1], data + sent, 64 * 1024 - sent);
    if (n > 0) sent += (size_t)n;
    assert_true(evr_loop_run(loop, EVR_RUN_NOWAIT) >= 0);
  }
  assert_int_equal(sent, 64 * 1024);
  for (int i = 0; i < 50; i++) assert_true(evr_loop_run(loop, EVR_RUN_NOWAIT) >= 0);
  assert_true(evr_stream_write_queue_size(&out2) > 0);
  flag = 0;
  assert_evr_ok(evr_close(&out2.base, ring_close_cb));
  while (flag < 1) assert_true(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
  close(c[1]);

  /* 3. Every buffer is back in the ring: a new transfer through it goes
   * through whole (with buffers lost it would stall). */
  relay_out = &out1;
  fill_pattern(data, RELAY_BYTES, 23);
  relay_pump(loop, a[1], b[1], data, got, RELAY_BYTES, 0);

  /* 4. The end: EOF reaches the relay; everything closes. */
  assert_int_equal(shutdown(a[1], SHUT_WR), 0);
  for (int i = 0; i < 10000 && !relay_eof; i++)
    assert_true(evr_loop_run(loop, EVR_RUN_NOWAIT) >= 0);
  assert_true(relay_eof);
  flag = 0;
  assert_evr_ok(evr_close(&relay_in.base, ring_close_cb));
  assert_evr_ok(evr_close(&out1.base, ring_close_cb));
  while (flag < 2) assert_true(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
  close(a[1]);
  close(b[1]);
  assert_int_equal(evr_loop_run(loop, EVR_RUN_DEFAULT), 0);
  assert_evr_ok(evr_loop_free(loop));
  assert_fds_back_to(base);
}

/* A fan-out: each view is written to three streams (on io_uring three
 * writes hold the one receive buffer), through a ring of two buffers, with
 * the receivers reading late: all three get every byte in order. */
#define FAN 3
static evr_stream_t fan_out[FAN];
static void fan_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  (void)s;
  if (nread <= 0) return;
  for (int i = 0; i < FAN; i++)
    assert_evr_ok(evr_stream_write_copy(&fan_out[i], buf, (size_t)nread));
}

static void test_stream_fan_out_of_read_views_is_exact(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_loop_t *loop = ring_loop(2, 1024);
  enum { LEN = 128 * 1024 };
  static unsigned char data[LEN], got[FAN][LEN];
  int a[2], b[FAN][2];
  make_socketpair(a);
  set_nonblock(a[1]);
  static evr_stream_t in;
  assert_evr_ok(evr_stream_init(loop, &in));
  assert_evr_ok(evr_stream_open(&in, a[0]));
  for (int i = 0; i < FAN; i++) {
    make_socketpair(b[i]);
    set_nonblock(b[i][1]);
    assert_evr_ok(evr_stream_init(loop, &fan_out[i]));
    assert_evr_ok(evr_stream_open(&fan_out[i], b[i][0]));
  }
  assert_evr_ok(evr_stream_read_start(&in, fan_read));
  fill_pattern(data, LEN, 41);
  size_t sent = 0, rcvd[FAN] = {0};
  int done = 0;
  for (int iter = 0; iter < 200000 && done < FAN; iter++) {
    if (sent < LEN) {
      ssize_t n = write(a[1], data + sent, LEN - sent > 4096 ? 4096 : LEN - sent);
      if (n > 0) sent += (size_t)n;
    }
    assert_true(evr_loop_run(loop, EVR_RUN_NOWAIT) >= 0);
    done = 0;
    for (int i = 0; i < FAN; i++) {
      if (iter >= 500 * (i + 1) && rcvd[i] < LEN) { /* late, each later */
        ssize_t n = read(b[i][1], got[i] + rcvd[i], LEN - rcvd[i]);
        if (n > 0) rcvd[i] += (size_t)n;
      }
      done += rcvd[i] == LEN;
    }
  }
  for (int i = 0; i < FAN; i++) {
    assert_int_equal(rcvd[i], LEN);
    assert_memory_equal(got[i], data, LEN);
  }
  flag = 0;
  assert_evr_ok(evr_close(&in.base, ring_close_cb));
  for (int i = 0; i < FAN; i++) assert_evr_ok(evr_close(&fan_out[i].base, ring_close_cb));
  while (flag < 1 + FAN) assert_true(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
  close(a[1]);
  for (int i = 0; i < FAN; i++) close(b[i][1]);
  assert_int_equal(evr_loop_run(loop, EVR_RUN_DEFAULT), 0);
  assert_evr_ok(evr_loop_free(loop));
  assert_fds_back_to(base);
}

/* A relay of 8 KiB views to a receiver that keeps up allocates nothing
 * once warm, on every backend: a copying write either goes out at once
 * (readiness backends) or is sent from the receive buffer (io_uring). */
static void relay_whole(evr_stream_t *s, ssize_t nread, const char *buf) {
  (void)s;
  if (nread == EVR_EOF) {
    relay_eof = 1;
    return;
  }
  assert_true(nread > 0);
  assert_evr_ok(evr_stream_write_copy(relay_out, buf, (size_t)nread));
}

static void test_stream_relay_of_read_views_does_not_allocate(void **state) {
  (void)state;
  if (!FAULT_AVAILABLE) {
    print_message("skipped: no fault injection (no -Wl,--wrap on this linker)\n");
    skip();
  }
  int base = count_open_fds();
  static unsigned char data[RELAY_BYTES], got[RELAY_BYTES];
  int a[2], b[2];
  make_socketpair(a);
  make_socketpair(b);
  set_nonblock(a[1]);
  set_nonblock(b[1]);
  /* Room for what one round of the pump relays (16 KiB) wherever socket
   * pairs start smaller (BSD: 8 KiB), so a readiness backend's write goes
   * out whole and queues nothing. */
  int room = 256 * 1024;
  (void)setsockopt(b[0], SOL_SOCKET, SO_SNDBUF, &room, sizeof room);
  (void)setsockopt(b[1], SOL_SOCKET, SO_RCVBUF, &room, sizeof room);
  static evr_stream_t in, out;
  assert_evr_ok(evr_stream_init(test_loop, &in));
  assert_evr_ok(evr_stream_open(&in, a[0]));
  assert_evr_ok(evr_stream_init(test_loop, &out));
  assert_evr_ok(evr_stream_open(&out, b[0]));
  relay_out = &out;
  relay_eof = 0;
  assert_evr_ok(evr_stream_read_start(&in, relay_whole));
  fill_pattern(data, RELAY_BYTES, 31);
  relay_pump(test_loop, a[1], b[1], data, got, RELAY_BYTES, 0); /* warm up */
  fill_pattern(data, RELAY_BYTES, 32);
  fault_arm("malloc", ~0ul, 0, 0); /* counts the calls, fails none */
  relay_pump(test_loop, a[1], b[1], data, got, RELAY_BYTES, 0);
  unsigned long mallocs = fault_calls();
  fault_disarm();
  assert_int_equal(mallocs, 0);
  flag = 0;
  assert_evr_ok(evr_close(&in.base, ring_close_cb));
  assert_evr_ok(evr_close(&out.base, ring_close_cb));
  while (flag < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  close(a[1]);
  close(b[1]);
  assert_fds_back_to(base);
}

/* A descriptor number used again: a stream closes its socket (the peer
 * sees the end at once), a new socket gets the same number, and a stream
 * on it talks to the new peer only (on io_uring, where the socket's file
 * sits in the ring's file table under its number, the old file must be
 * gone from it). */
static char reuse_got[16];
static size_t reuse_len;
static void reuse_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  (void)s;
  if (nread <= 0) return;
  assert_true(reuse_len + (size_t)nread <= sizeof reuse_got);
  memcpy(reuse_got + reuse_len, buf, (size_t)nread);
  reuse_len += (size_t)nread;
}

static void reuse_exchange(evr_stream_t *st, int peer, const char *out, const char *in) {
  reuse_len = 0;
  assert_int_equal(write(peer, in, strlen(in)), (ssize_t)strlen(in));
  for (int i = 0; i < 10000 && reuse_len < strlen(in); i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(reuse_len, strlen(in));
  assert_memory_equal(reuse_got, in, strlen(in));
  assert_evr_ok(evr_stream_write_copy(st, out, strlen(out)));
  char buf[16];
  size_t got = 0;
  for (int i = 0; i < 10000 && got < strlen(out); i++) {
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    ssize_t n = read(peer, buf + got, sizeof buf - got);
    if (n > 0) got += (size_t)n;
  }
  assert_int_equal(got, strlen(out));
  assert_memory_equal(buf, out, got);
}

static void test_stream_descriptor_number_reused_after_close(void **state) {
  (void)state;
  int base = count_open_fds();
  int a[2], b[2];
  make_socketpair(a);
  set_nonblock(a[1]);
  static evr_stream_t s1, s2;
  assert_evr_ok(evr_stream_init(test_loop, &s1));
  assert_evr_ok(evr_stream_open(&s1, a[0]));
  assert_evr_ok(evr_stream_read_start(&s1, reuse_read));
  reuse_exchange(&s1, a[1], "one", "ping1");
  int number = a[0];
  flag = 0;
  assert_evr_ok(evr_close(&s1.base, ring_close_cb));
  while (flag < 1) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  char c;
  assert_int_equal(read(a[1], &c, 1), 0); /* the end, at once */
  /* The new socket under the old number. */
  make_socketpair(b);
  set_nonblock(b[1]);
  if (b[0] != number) {
    assert_int_equal(dup2(b[0], number), number);
    close(b[0]);
  }
  assert_evr_ok(evr_stream_init(test_loop, &s2));
  assert_evr_ok(evr_stream_open(&s2, number));
  assert_evr_ok(evr_stream_read_start(&s2, reuse_read));
  reuse_exchange(&s2, b[1], "two", "ping2");
  reuse_exchange(&s2, b[1], "three", "ping3");
  assert_int_equal(read(a[1], &c, 1), 0); /* nothing reached the old peer */
  flag = 0;
  assert_evr_ok(evr_close(&s2.base, ring_close_cb));
  while (flag < 1) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(read(b[1], &c, 1), 0);
  close(a[1]);
  close(b[1]);
  assert_fds_back_to(base);
}

/* Closing a stream while it reads and while a large write is on its way
 * (on io_uring: a receive and a send in flight): the peer sees the close
 * at once, the write callback reports the cancel, the close callback runs
 * once after it, and nothing is left behind. */
static int close_order[4], nclose_events;
static void order_wcb(evr_write_t *req, int status) {
  (void)req;
  assert_true(nclose_events < 4);
  close_order[nclose_events++] = status == EVR_ECANCELED ? 1 : 100 + status;
}
static void order_close_cb(evr_handle_t *h) {
  (void)h;
  assert_true(nclose_events < 4);
  close_order[nclose_events++] = 2;
}

static void test_stream_close_with_io_in_flight(void **state) {
  (void)state;
  int base = count_open_fds();
  int sv[2];
  make_socketpair(sv);
  struct sink a;
  sink_open(&a, sv[0]);
  static unsigned char data[4 << 20];
  static evr_write_t w;
  memset(&w, 0, sizeof w);
  evr_buf_t b = {data, sizeof data};
  nclose_events = 0;
  assert_evr_ok(evr_stream_write(&w, &a.s, &b, 1, order_wcb));
  for (int i = 0; i < 5; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_true(evr_stream_write_queue_size(&a.s) > 0); /* the peer reads nothing */
  assert_int_equal(nclose_events, 0);
  assert_evr_ok(evr_close(&a.s.base, order_close_cb));
  /* The socket is closed now, not at the next iteration. */
  assert_int_equal(write(sv[1], "x", 1), -1);
  for (int i = 0; i < 20 && nclose_events < 2; i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(nclose_events, 2);
  assert_int_equal(close_order[0], 1); /* cancelled */
  assert_int_equal(close_order[1], 2); /* then closed */
  assert_int_equal(a.reads, 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  free(a.buf);
  close(sv[1]);
  assert_fds_back_to(base);
}

/* ---- closing from callbacks ---- */

static void test_stream_close_inside_read_callback(void **state) {
  (void)state;
  int base = count_open_fds();
  int sv[2];
  make_socketpair(sv);
  struct sink a;
  sink_open(&a, sv[0]);
  a.close_on_read = 1;
  /* Queued writes of the stream are cancelled before its close callback. */
  assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &(int){1}, sizeof(int)), 0);
  static unsigned char data[500000];
  evr_write_t w = {0};
  nwdone = 0;
  assert_evr_ok(do_write(&w, &a.s, data, sizeof data, 1));
  assert_true(evr_stream_write_queue_size(&a.s) > 0);
  assert_int_equal(write(sv[1], "abcdef", 6), 6);
  while (a.reads == 0) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(a.reads, 1);
  assert_true(evr_is_closing(&a.s.base));
  assert_int_equal(evr_stream_fd(&a.s), -1);
  assert_int_equal(write(sv[1], "more", 4), -1); /* the fd is closed already */
  flag = 0;
  while (!nwdone) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(wdone_status[0], EVR_ECANCELED);
  assert_int_equal(a.reads, 1);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  free(a.buf);
  close(sv[1]);
  assert_fds_back_to(base);
}

static evr_stream_t *close_target;
static int events_seen[8], nevents;
static void note_close_cb(evr_handle_t *h) {
  (void)h;
  events_seen[nevents++] = 9;
  flag = 1;
}
static void closing_wcb(evr_write_t *req, int status) {
  events_seen[nevents++] = status == 0 ? 1 : (status == EVR_ECANCELED ? 2 : 3);
  if ((intptr_t)req->data == 1) assert_evr_ok(evr_close(&close_target->base, note_close_cb));
}

/* Closing a stream from the callback of one of its writes cancels the later
 * ones; their callbacks run before the close callback. */
static void test_stream_close_inside_write_callback(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  close_target = &tx;
  static unsigned char data[300000];
  static evr_write_t w[3];
  evr_buf_t b0 = {"x", 1}, b1 = {data, sizeof data};
  w[0].data = (void *)1;
  w[1].data = (void *)2;
  w[2].data = (void *)3;
  nevents = 0;
  flag = 0;
  assert_evr_ok(evr_stream_write(&w[0], &tx, &b0, 1, closing_wcb));
  assert_evr_ok(evr_stream_write(&w[1], &tx, &b1, 1, closing_wcb));
  assert_evr_ok(evr_stream_write(&w[2], &tx, &b1, 1, closing_wcb));
  run_until(test_loop, &flag, 20);
  assert_int_equal(nevents, 4);
  assert_int_equal(events_seen[0], 1); /* sent */
  assert_int_equal(events_seen[1], 2); /* cancelled */
  assert_int_equal(events_seen[2], 2);
  assert_int_equal(events_seen[3], 9); /* then the close callback */
  close(fds[1]);
  assert_fds_back_to(base);
}

/* A close callback from evr_close() right after a write that completed at
 * once still sees the write callback first. */
static void test_stream_close_after_completed_write_runs_callback_first(void **state) {
  (void)state;
  int sv[2];
  make_socketpair(sv);
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  evr_write_t w = {0};
  evr_buf_t b = {"hey", 3};
  w.data = (void *)5;
  nevents = 0;
  flag = 0;
  assert_evr_ok(evr_stream_write(&w, &s, &b, 1, closing_wcb));
  assert_evr_ok(evr_close(&s.base, note_close_cb));
  assert_int_equal(nevents, 0);
  run_until(test_loop, &flag, 10);
  assert_int_equal(nevents, 2);
  assert_int_equal(events_seen[0], 1); /* the bytes were sent: status 0 */
  assert_int_equal(events_seen[1], 9);
  char buf[4];
  assert_int_equal(read(sv[1], buf, 4), 3);
  close(sv[1]);
}

/* Several writes completed at once, then one queued behind a full kernel,
 * then a close in the same callback: the completed ones report 0 in
 * submission order, the queued one EVR_ECANCELED, all before close_cb. */
static void test_stream_close_runs_due_writes_in_order_before_close_cb(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  static unsigned char big[400000];
  static evr_write_t w[4];
  memset(w, 0, sizeof w);
  evr_buf_t small = {"ab", 2}, large = {big, sizeof big};
  nevents = 0;
  flag = 0;
  for (int i = 0; i < 3; i++)
    assert_evr_ok(evr_stream_write(&w[i], &tx, &small, 1, closing_wcb));
  assert_evr_ok(evr_stream_write(&w[3], &tx, &large, 1, closing_wcb));
  assert_true(evr_stream_write_queue_size(&tx) > 0);
  assert_evr_ok(evr_close(&tx.base, note_close_cb));
  assert_int_equal(nevents, 0);
  run_until(test_loop, &flag, 10);
  assert_int_equal(nevents, 5);
  for (int i = 0; i < 3; i++) assert_int_equal(events_seen[i], 1);
  assert_int_equal(events_seen[3], 2); /* cancelled */
  assert_int_equal(events_seen[4], 9); /* then the close callback */
  close(fds[1]);
  assert_fds_back_to(base);
}

/* The size of a stream is part of its cost per connection (docs/net.md,
 * "Memory"); an I/O watcher is a handle around a 12-byte node. */
static void test_stream_sizes_are_pinned(void **state) {
  (void)state;
  _Static_assert(sizeof(evr_stream_t) <= 168, "evr_stream_t grew past 168 bytes");
  assert_int_equal(sizeof(struct evr__ionode), 12);
  assert_true(sizeof(evr_stream_t) <= 168);
  if (sizeof(void *) == 8) {
    assert_int_equal(sizeof(evr_handle_t), 48);
    assert_int_equal(sizeof(evr_io_t), 72);
    assert_int_equal(sizeof(evr_stream_t), 168);
  }
}

/* ---- idle timeout ---- */

static int idle_fired;
static uint64_t idle_at;
static void idle_cb(evr_stream_t *s) {
  idle_fired++;
  idle_at = evr_now(s->base.loop);
}

static uint64_t traffic_at;
static int traffic_left;
static int peer_fd;
static evr_timer_t traffic_timer;
static void traffic_cb(evr_timer_t *t) {
  (void)t;
  assert_int_equal(write(peer_fd, "t", 1), 1);
  traffic_at = evr_now(test_loop);
  if (--traffic_left == 0) evr_timer_stop(t);
}

static void test_stream_idle_timeout_fires_and_traffic_rearms_it(void **state) {
  (void)state;
  int sv[2];
  make_socketpair(sv);
  struct sink a;
  sink_open(&a, sv[0]);
  peer_fd = sv[1];
  idle_fired = 0;
  enum { IDLE = 60 };
  uint64_t t0 = evr_now(test_loop);
  assert_evr_ok(evr_stream_set_idle_timeout(&a.s, IDLE, idle_cb));
  /* Traffic every IDLE/3 ms, five times: the timeout counts from the last
   * byte, so it fires no earlier than IDLE after it. */
  traffic_left = 5;
  assert_evr_ok(evr_timer_init(test_loop, &traffic_timer));
  assert_evr_ok(evr_timer_start(&traffic_timer, traffic_cb, IDLE / 3, IDLE / 3));
  run_until(test_loop, &idle_fired, 10000);
  assert_int_equal(traffic_left, 0);
  assert_int_equal(a.len, 5);
  assert_true(idle_at >= traffic_at + IDLE);
  assert_true(idle_at >= t0 + IDLE + 5 * (IDLE / 3));
  /* Left open, it fires again a period later. */
  uint64_t first = idle_at;
  while (idle_fired < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_true(idle_at >= first + IDLE);
  /* Disabled: nothing keeps the loop alive any more once reading stops. */
  assert_evr_ok(evr_stream_set_idle_timeout(&a.s, 0, NULL));
  assert_evr_ok(evr_stream_read_stop(&a.s));
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(idle_fired, 2);
  assert_evr_ok(evr_timer_stop(&traffic_timer));
  sink_close(&a);
  close(sv[1]);
}

static void idle_close_cb(evr_stream_t *s) {
  idle_fired++;
  assert_evr_ok(evr_close(&s->base, set_flag_close_cb));
}

/* An idle timeout cuts short an end() whose queue cannot drain. */
static void test_stream_idle_timeout_ends_stuck_end(void **state) {
  (void)state;
  int base = count_open_fds();
  int fds[2];
  tcp_pair(fds, 1);
  evr_stream_t tx;
  assert_evr_ok(evr_stream_init(test_loop, &tx));
  assert_evr_ok(evr_stream_open(&tx, fds[0]));
  assert_evr_ok(evr_stream_set_idle_timeout(&tx, 30, idle_close_cb));
  static unsigned char data[400000];
  evr_write_t w = {0};
  nwdone = 0;
  idle_fired = 0;
  assert_evr_ok(do_write(&w, &tx, data, sizeof data, 1));
  flag = 0;
  assert_evr_ok(evr_stream_end(&tx, set_flag_close_cb));
  run_until(test_loop, &flag, 10000);
  assert_int_equal(idle_fired, 0); /* end() owns the stream now */
  assert_int_equal(nwdone, 1);
  assert_int_equal(wdone_status[0], EVR_ETIMEDOUT);
  close(fds[1]);
  assert_fds_back_to(base);
}

/* ---- connect ---- */

static int conn_status, conn_done;
static void conn_cb(evr_stream_t *s, int status) {
  (void)s;
  conn_status = status;
  conn_done++;
}

static int raw_listen_tcp(uint16_t *port) {
  int l = test_socket(AF_INET, SOCK_STREAM, 1);
  assert_true(l >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
  assert_int_equal(listen(l, 16), 0);
  *port = ntohs(a.sin_port);
  return l;
}

static void test_stream_connect_then_transfer(void **state) {
  (void)state;
  int base = count_open_fds();
  uint16_t port;
  int l = raw_listen_tcp(&port);
  evr_addr_t addr;
  assert_evr_ok(evr_addr_from_ip(&addr, "127.0.0.1", port));
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  conn_done = 0;
  assert_evr_ok(evr_stream_connect(&s, &addr, 5000, conn_cb));
  assert_int_equal(conn_done, 0);
  assert_int_equal(evr_stream_connect(&s, &addr, 0, conn_cb), EVR_EBUSY);
  assert_int_equal(evr_stream_write_copy(&s, "x", 1), EVR_ENOTCONN);
  assert_int_equal(evr_stream_read_start(&s, sink_read), EVR_ENOTCONN);
  run_until(test_loop, &conn_done, 100);
  assert_int_equal(conn_status, 0);
  assert_true(evr_stream_fd(&s) >= 0);
  int c = accept(l, NULL, NULL);
  assert_true(c >= 0);
  assert_evr_ok(evr_stream_write_copy(&s, "ping", 4));
  char buf[8];
  ssize_t n = 0;
  while (n <= 0) {
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    n = read(c, buf, sizeof buf);
  }
  assert_int_equal(n, 4);
  assert_int_equal(conn_done, 1);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(c);
  close(l);
  assert_fds_back_to(base);
}

static void test_stream_connect_refused_through_callback(void **state) {
  (void)state;
  int base = count_open_fds();
  uint16_t port;
  int l = raw_listen_tcp(&port);
  close(l); /* nobody listens on the port now */
  evr_addr_t addr;
  assert_evr_ok(evr_addr_from_ip(&addr, "127.0.0.1", port));
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  conn_done = 0;
  assert_evr_ok(evr_stream_connect(&s, &addr, 0, conn_cb));
  assert_int_equal(conn_done, 0);
  run_until(test_loop, &conn_done, 100);
  assert_int_equal(conn_status, EVR_ECONNREFUSED);
  assert_int_equal(evr_stream_fd(&s), -1);
  /* A failed stream may try again. */
  assert_evr_ok(evr_stream_connect(&s, &addr, 0, conn_cb));
  while (conn_done < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(conn_status, EVR_ECONNREFUSED);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  assert_int_equal(conn_done, 2);
  assert_fds_back_to(base);
}

/* Closing during a pending connect: the callback gets EVR_ECANCELED before
 * the close callback, and the socket is gone. */
/* Start a connect of s to a listener that never accepts (its backlog
 * completes the handshake later); returns the listening socket. */
static int start_pending_connect(evr_stream_t *s) {
  uint16_t port;
  int l = raw_listen_tcp(&port);
  evr_addr_t addr;
  assert_evr_ok(evr_addr_from_ip(&addr, "127.0.0.1", port));
  assert_evr_ok(evr_stream_init(test_loop, s));
  conn_done = 0;
  assert_evr_ok(evr_stream_connect(s, &addr, 1000, conn_cb));
  return l;
}

static void test_stream_close_during_pending_connect(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_stream_t s;
  int l = start_pending_connect(&s);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  assert_int_equal(conn_done, 0);
  run_until(test_loop, &flag, 10);
  assert_int_equal(conn_done, 1);
  assert_int_equal(conn_status, EVR_ECANCELED);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  close(l);
  assert_fds_back_to(base);
}

/* end() on a stream that is still connecting has nothing to drain: it
 * closes, and the connect callback gets EVR_ECANCELED before close_cb. */
static void test_stream_end_during_pending_connect_cancels_it(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_stream_t s;
  int l = start_pending_connect(&s);
  flag = 0;
  assert_evr_ok(evr_stream_end(&s, set_flag_close_cb));
  assert_int_equal(evr_stream_end(&s, set_flag_close_cb), EVR_EALREADY);
  assert_int_equal(conn_done, 0);
  run_until(test_loop, &flag, 10);
  assert_int_equal(conn_done, 1);
  assert_int_equal(conn_status, EVR_ECANCELED);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  close(l);
  assert_fds_back_to(base);
}

/* Connect to a Unix socket, which completes inside connect(): the callback
 * still runs later, from the loop. */
static void test_stream_connect_unix(void **state) {
  (void)state;
  int base = count_open_fds();
  char dir[] = "/tmp/evr-stream-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/s", dir);
  int l = test_socket(AF_UNIX, SOCK_STREAM, 0);
  assert_true(l >= 0);
  struct sockaddr_un un;
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  strcpy(un.sun_path, path);
  assert_int_equal(bind(l, (struct sockaddr *)&un, sizeof un), 0);
  assert_int_equal(listen(l, 4), 0);
  evr_addr_t addr;
  assert_evr_ok(evr_addr_from_path(&addr, path));
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  conn_done = 0;
  assert_evr_ok(evr_stream_connect(&s, &addr, 0, conn_cb));
  assert_int_equal(conn_done, 0);
  run_until(test_loop, &conn_done, 10);
  assert_int_equal(conn_status, 0);
  int c = accept(l, NULL, NULL);
  assert_true(c >= 0);
  assert_evr_ok(evr_stream_write_copy(&s, "u", 1));
  flush_writes(test_loop, &s, 10);
  char ch;
  assert_int_equal(read(c, &ch, 1), 1);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  /* A path nobody listens on: an error through the callback. */
  close(l);
  unlink(path);
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_connect(&s, &addr, 0, conn_cb));
  while (conn_done < 2) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_true(conn_status == EVR_ENOENT || conn_status == EVR_ECONNREFUSED);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(c);
  rmdir(dir);
  assert_fds_back_to(base);
}

/* ---- liveness ---- */

/* Pending writes keep the loop alive; a reading stream does; an idle one
 * does not. */
static void test_stream_liveness(void **state) {
  (void)state;
  int sv[2];
  make_socketpair(sv);
  evr_stream_t s;
  assert_evr_ok(evr_stream_init(test_loop, &s));
  assert_evr_ok(evr_stream_open(&s, sv[0]));
  assert_int_equal(evr_is_active(&s.base), 0);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_evr_ok(evr_stream_read_start(&s, sink_read));
  assert_int_equal(evr_is_active(&s.base), 1);
  assert_int_equal(evr_loop_alive(test_loop), 1);
  evr_unref(&s.base);
  assert_int_equal(evr_loop_alive(test_loop), 0);
  evr_ref(&s.base);
  assert_evr_ok(evr_stream_read_stop(&s));
  assert_int_equal(evr_is_active(&s.base), 0);
  evr_write_t w = {0};
  nwdone = 0;
  assert_evr_ok(do_write(&w, &s, "abc", 3, 1));
  assert_int_equal(evr_loop_alive(test_loop), 1); /* the callback is due */
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
  assert_int_equal(nwdone, 1);
  flag = 0;
  assert_evr_ok(evr_close(&s.base, set_flag_close_cb));
  run_until(test_loop, &flag, 10);
  close(sv[1]);
}

/* A write to a socket whose peer is gone fails with EVR_EPIPE (or
 * EVR_ECONNRESET) and never raises SIGPIPE, whatever the system offers
 * (MSG_NOSIGNAL, SO_NOSIGPIPE, or neither: the EVR_PORTABLE build on Linux
 * takes that path). The rest of this file ignores SIGPIPE, so this runs in
 * a child with the default action, which would kill it. */
static int gone_status;
static void gone_wcb(evr_write_t *req, int status) {
  (void)req;
  gone_status = status;
}

static void test_stream_write_to_gone_peer_never_raises_sigpipe(void **state) {
  (void)state;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    CHILD_CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    evr_loop_t *loop;
    CHILD_CHECK(evr_loop_new(&loop, NULL) == 0);
    static evr_stream_t s;
    static evr_write_t w[8];
    static char big[64 * 1024];
    int sv[2];
    make_socketpair(sv);
    CHILD_CHECK(evr_stream_init(loop, &s) == 0);
    CHILD_CHECK(evr_stream_open(&s, sv[0]) == 0);
    CHILD_CHECK(close(sv[1]) == 0);
    gone_status = 1;
    evr_buf_t b = {big, sizeof big};
    int queued = 0;
    for (int i = 0; i < 8; i++) {
      int rc = evr_stream_write(&w[i], &s, &b, 1, gone_wcb);
      CHILD_CHECK(rc == 0 || rc == EVR_EPIPE || rc == EVR_ECONNRESET);
      if (rc == 0) queued++;
      (void)evr_loop_run(loop, EVR_RUN_NOWAIT);
    }
    for (int i = 0; i < 100 && queued && gone_status > 0; i++)
      (void)evr_loop_run(loop, EVR_RUN_NOWAIT);
    CHILD_CHECK(!queued || gone_status == EVR_EPIPE || gone_status == EVR_ECONNRESET);
    CHILD_CHECK(evr_close(&s.base, NULL) == 0);
    CHILD_CHECK(evr_loop_run(loop, EVR_RUN_DEFAULT) == 0);
    CHILD_CHECK(evr_loop_free(loop) == 0);
    _exit(0);
  }
  assert_child_ok(pid); /* killed by SIGPIPE: not WIFEXITED */
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* the pipe test writes into closed pipes */
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_stream_socketpair_roundtrip),
      EVR_TEST(test_stream_write_to_gone_peer_never_raises_sigpipe),
      EVR_TEST(test_stream_api_errors),
      EVR_TEST(test_stream_open_refused_fd_keeps_its_flags),
      EVR_TEST(test_stream_tcp_options_and_names),
      EVR_TEST(test_stream_over_pipes),
      EVR_TEST(test_stream_partial_writes_tiny_buffers),
      EVR_TEST(test_stream_empty_write_completes_in_submission_order),
      EVR_TEST(test_stream_write_resubmitted_while_pending_is_refused),
      EVR_TEST(test_stream_write_queued_on_one_stream_refused_on_another),
      EVR_TEST(test_stream_shutdown_resubmitted_while_pending_is_refused),
      EVR_TEST(test_stream_water_marks_fire),
      EVR_TEST(test_stream_write_copy_copies_only_the_tail),
      EVR_TEST(test_stream_read_max_bounds_each_callback),
      EVR_TEST(test_stream_half_close_both_ways),
      EVR_TEST(test_stream_writes_after_shutdown_fail_with_epipe),
      EVR_TEST(test_stream_end_flushes_then_closes),
      EVR_TEST(test_stream_abort_gives_peer_econnreset),
      EVR_TEST(test_stream_peer_reset_while_data_queued),
      EVR_TEST(test_stream_half_closed_hears_reset),
      EVR_TEST(test_stream_eof_in_mid_write),
      EVR_TEST(test_stream_close_inside_read_callback),
      EVR_TEST(test_stream_close_inside_write_callback),
      EVR_TEST(test_stream_bytes_while_stopped_come_after_restart),
      EVR_TEST(test_stream_small_receive_ring_loses_nothing),
      EVR_TEST(test_stream_relay_of_read_views_is_exact),
      EVR_TEST(test_stream_fan_out_of_read_views_is_exact),
      EVR_TEST(test_stream_relay_of_read_views_does_not_allocate),
      EVR_TEST(test_stream_descriptor_number_reused_after_close),
      EVR_TEST(test_stream_close_with_io_in_flight),
      EVR_TEST(test_stream_close_after_completed_write_runs_callback_first),
      EVR_TEST(test_stream_close_runs_due_writes_in_order_before_close_cb),
      EVR_TEST(test_stream_sizes_are_pinned),
      EVR_TEST(test_stream_idle_timeout_fires_and_traffic_rearms_it),
      EVR_TEST(test_stream_idle_timeout_ends_stuck_end),
      EVR_TEST(test_stream_connect_then_transfer),
      EVR_TEST(test_stream_connect_refused_through_callback),
      EVR_TEST(test_stream_close_during_pending_connect),
      EVR_TEST(test_stream_end_during_pending_connect_cancels_it),
      EVR_TEST(test_stream_connect_unix),
      EVR_TEST(test_stream_liveness),
  };
  const char *only = getenv("EVR_TEST_FILTER"); /* e.g. "*bulk*" */
  if (only && *only) cmocka_set_test_filter(only);
  return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
