/* tests/test_handoff.c: handing listeners over a Unix socket
 * (evr/handoff.h): TCP and Unix listeners sent, received, adopted and
 * accepting real connections, in one process and across fork(); two
 * messages back to back; a message of 64 items sent in parts; a send that
 * waits for room (EAGAIN); a send to a gone peer (EVR_EPIPE, no SIGPIPE);
 * garbage, a wrong version, a cut-short message,
 * descriptors that do not match the items, too many descriptors
 * (MSG_CTRUNC) and descriptors running out, each refused with every
 * received descriptor closed; cancelling pending requests; argument
 * errors. Every test ends with the descriptor count back at its start. */
/* evr-test: backends timeout=300 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "helpers.h"

static char tmpdir[256];
static int fd_base;

static void begin(void) { fd_base = count_open_fds(); }
static void end(void) { assert_fds_back_to(fd_base); }

/* ---- requests ---- */

typedef struct {
  evr_handoff_t req;
  int done;     /* callback runs */
  int status;
  evr_handoff_t *other; /* cancelled from the callback */
} op_t;

static void on_done(evr_handoff_t *req, int status) {
  op_t *o = req->data;
  o->done++;
  o->status = status;
  if (o->other) assert_evr_ok(evr_handoff_cancel(o->other));
}

static void op_init(op_t *o) {
  memset(o, 0, sizeof *o);
  o->req.data = o;
}

/* ---- listeners ---- */

typedef struct {
  evr_listener_t l;
  int accepted;
  int fd;
  int closed;
} acc_t;

static void on_accept(evr_listener_t *l, int fd) {
  acc_t *a = l->base.data;
  assert_true(fd >= 0);
  a->accepted++;
  if (a->fd >= 0) close(a->fd);
  a->fd = fd;
}

static void on_closed(evr_handle_t *h) {
  acc_t *a = h->data;
  a->closed = 1;
}

static void acc_init(acc_t *a) {
  memset(a, 0, sizeof *a);
  a->fd = -1;
  assert_evr_ok(evr_listener_init(test_loop, &a->l));
  a->l.base.data = a;
}

static void acc_close(acc_t *a) {
  if (a->fd >= 0) close(a->fd);
  a->fd = -1;
  assert_evr_ok(evr_close(&a->l.base, on_closed));
  run_until(test_loop, &a->closed, 100);
}

static void listen_text(acc_t *a, const char *text, unsigned flags) {
  evr_addr_t addr;
  evr_listen_options_t o;
  memset(&o, 0, sizeof o);
  o.flags = flags;
  assert_evr_ok(evr_addr_parse(&addr, text));
  assert_evr_ok(evr_listen(&a->l, &addr, &o, on_accept));
}

static int have_ipv6(void) {
  int fd = test_socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in6 sa;
  memset(&sa, 0, sizeof sa);
  sa.sin6_family = AF_INET6;
  sa.sin6_addr = in6addr_loopback;
  int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  if (!ok) print_message("note: no [::1] here: the IPv6 listener is left out\n");
  return ok;
}

/* A blocking client connected to addr. */
static int client_to(const evr_addr_t *addr) {
  int fd = test_socket(addr->u.sa.sa_family, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  int rc;
  do
    rc = connect(fd, &addr->u.sa, addr->len);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) fail_msg("connect: %s", strerror(errno));
  return fd;
}

/* One byte from c reaches s. */
static void assert_linked(int c, int s) {
  char b = 'x', r = 0;
  assert_int_equal(write(c, &b, 1), 1);
  struct pollfd p = {s, POLLIN, 0};
  assert_int_equal(poll(&p, 1, 10000), 1);
  assert_int_equal(read(s, &r, 1), 1);
  assert_int_equal(r, 'x');
}

static void addr_text(const evr_addr_t *a, char *buf) {
  assert_true(evr_addr_format(a, buf, EVR_ADDR_STRLEN) >= 0);
}

static void path_in_tmp(char *out, size_t size, const char *name) {
  int n = snprintf(out, size, "%s/%s", tmpdir, name);
  assert_true(n > 0 && (size_t)n < size);
}

static int is_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  assert_true(fl >= 0);
  return (fl & FD_CLOEXEC) != 0;
}

/* Run until both requests have called back. */
static void run_both(op_t *a, op_t *b) {
  for (int i = 0; i < 1000 && (!a->done || !b->done); i++)
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(a->done, 1);
  assert_int_equal(b->done, 1);
}

/* ---- the wire format, written by hand (docs/net.md) ---- */

#define HDR 16
#define REC 160

static void put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}
static void put32(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* A header announcing count records. */
static void hdr(unsigned char *p, unsigned version, unsigned count) {
  memset(p, 0, HDR);
  memcpy(p, "EVRH", 4);
  p[4] = (unsigned char)version;
  put16(p + 6, count);
  put32(p + 8, count * REC);
}

/* A record of kind OTHER, no address, named name. */
static void rec_other(unsigned char *p, const char *name) {
  memset(p, 0, REC);
  p[0] = EVR_HANDOFF_OTHER;
  size_t n = strlen(name);
  p[6] = (unsigned char)n;
  memcpy(p + 124, name, n);
}

/* Write buf with fds[0..nfds) on its first byte. */
static void raw_send(int sock, const void *buf, size_t len, const int *fds, int nfds) {
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(sizeof(int) * 8)];
  } cm;
  assert_true(nfds <= 8);
  struct iovec iov = {(void *)(uintptr_t)buf, len};
  struct msghdr m;
  memset(&m, 0, sizeof m);
  memset(&cm, 0, sizeof cm);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (nfds > 0) {
    m.msg_control = cm.b;
    m.msg_controllen = (socklen_t)CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = (socklen_t)CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  assert_int_equal(sendmsg(sock, &m, 0), (ssize_t)len);
}

/* Open n descriptors (ends of pipes) into fds; n even. */
static void some_fds(int *fds, int n) {
  for (int i = 0; i < n; i += 2) assert_int_equal(pipe(fds + i), 0);
}
static void close_fds(const int *fds, int n) {
  for (int i = 0; i < n; i++) assert_int_equal(close(fds[i]), 0);
}

/* Receive on sp[1] what was written into sp[0], expecting want. */
static void expect_recv(int sp[2], int want) {
  op_t r;
  op_init(&r);
  evr_handoff_item_t items[4];
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], items, 4, on_done));
  run_until(test_loop, &r.done, 1000);
  if (r.status != want)
    fail_msg("receive: %s, %s wanted", evr_err_name(r.status), evr_err_name(want));
  for (int i = 0; i < 4; i++) assert_int_equal(items[i].fd, -1);
}

/* ---- tests ---- */

static void test_handoff_listeners_move_and_accept(void **state) {
  (void)state;
  begin();
  int six = have_ipv6();
  char path[300];
  path_in_tmp(path, sizeof path, "move.sock");
  char unix_text[320];
  snprintf(unix_text, sizeof unix_text, "unix:%s", path);

  acc_t old[3];
  const char *names[3] = {"v4", "unix", "v6"};
  int n = six ? 3 : 2;
  for (int i = 0; i < n; i++) acc_init(&old[i]);
  listen_text(&old[0], "127.0.0.1:0", 0);
  listen_text(&old[1], unix_text, 0);
  if (six) listen_text(&old[2], "[::1]:0", EVR_LISTEN_V6ONLY);

  evr_handoff_item_t out[3];
  for (int i = 0; i < n; i++) assert_evr_ok(evr_handoff_export(&out[i], &old[i].l, names[i]));
  assert_int_equal(out[0].kind, EVR_HANDOFF_TCP);
  assert_int_equal(out[1].kind, EVR_HANDOFF_UNIX);
  if (six) {
    assert_int_equal(out[2].kind, EVR_HANDOFF_TCP);
    assert_true(out[2].flags & EVR_LISTEN_V6ONLY);
  }

  int sp[2];
  make_socketpair(sp);
  op_t s, r;
  op_init(&s);
  op_init(&r);
  evr_handoff_item_t in[8];
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, (unsigned)n, on_done));
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 8, on_done));
  assert_int_equal(s.done + r.done, 0); /* never inside the call */
  run_both(&s, &r);
  assert_evr_ok(s.status);
  assert_int_equal(r.status, n);

  for (int i = 0; i < n; i++) {
    assert_string_equal(in[i].name, names[i]);
    assert_int_equal(in[i].kind, out[i].kind);
    assert_int_equal(in[i].flags, out[i].flags);
    char a[EVR_ADDR_STRLEN], b[EVR_ADDR_STRLEN];
    addr_text(&in[i].addr, a);
    addr_text(&out[i].addr, b);
    assert_string_equal(a, b);
    assert_true(in[i].fd >= 0);
    assert_true(is_cloexec(in[i].fd));
  }

  /* The old copies go away; the file of the Unix one stays, as it now
   * belongs to the receiver too. */
  for (int i = 0; i < n; i++) acc_close(&old[i]);
  struct stat st;
  assert_int_equal(lstat(path, &st), 0);

  acc_t adopted[3];
  for (int i = 0; i < n; i++) {
    acc_init(&adopted[i]);
    evr_handoff_item_t *it = evr_handoff_find(in, (unsigned)r.status, names[i]);
    assert_non_null(it);
    assert_evr_ok(evr_handoff_adopt(&adopted[i].l, it, NULL, on_accept));
    assert_int_equal(it->fd, -1);
    assert_null(evr_handoff_find(in, (unsigned)r.status, names[i])); /* taken */
  }
  for (int i = 0; i < n; i++) {
    int c = client_to(&in[i].addr);
    for (int k = 0; k < 1000 && !adopted[i].accepted; k++)
      assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
    assert_int_equal(adopted[i].accepted, 1);
    assert_linked(c, adopted[i].fd);
    close(c);
    acc_close(&adopted[i]);
  }
  /* An adopted listener never removes the file: its owner does. */
  assert_int_equal(lstat(path, &st), 0);
  assert_int_equal(unlink(path), 0);
  close(sp[0]);
  close(sp[1]);
  end();
}

static int child_accepted;
static void child_on_accept(evr_listener_t *l, int fd) {
  int *slot = l->base.data;
  if (fd < 0) _exit(90);
  *slot = fd;
  child_accepted++;
}

static void test_handoff_across_fork_child_serves(void **state) {
  (void)state;
  begin();
  char path[300];
  path_in_tmp(path, sizeof path, "fork.sock");
  char unix_text[320];
  snprintf(unix_text, sizeof unix_text, "unix:%s", path);
  acc_t old[2];
  acc_init(&old[0]);
  acc_init(&old[1]);
  listen_text(&old[0], "127.0.0.1:0", 0);
  listen_text(&old[1], unix_text, 0);
  evr_handoff_item_t out[2];
  assert_evr_ok(evr_handoff_export(&out[0], &old[0].l, "tcp"));
  assert_evr_ok(evr_handoff_export(&out[1], &old[1].l, "unix"));
  evr_addr_t addrs[2] = {out[0].addr, out[1].addr};

  int sp[2];
  make_socketpair(sp);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(60); /* never outlives a parent that failed */
    close(sp[0]);
    /* A loop of the child's own: the inherited one stays untouched. */
    evr_loop_t *loop = NULL;
    CHILD_CHECK(evr_loop_new(&loop, NULL) == 0);
    op_t r;
    memset(&r, 0, sizeof r);
    r.req.data = &r;
    evr_handoff_item_t in[4];
    CHILD_CHECK(evr_handoff_recv(loop, &r.req, sp[1], in, 4, on_done) == 0);
    for (int i = 0; i < 1000 && !r.done; i++) CHILD_CHECK(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
    CHILD_CHECK(r.status == 2);
    evr_listener_t ls[2];
    int fds[2] = {-1, -1};
    const char *names[2] = {"tcp", "unix"};
    for (int i = 0; i < 2; i++) {
      CHILD_CHECK(evr_listener_init(loop, &ls[i]) == 0);
      ls[i].base.data = &fds[i];
      evr_handoff_item_t *it = evr_handoff_find(in, 2, names[i]);
      CHILD_CHECK(it != NULL);
      CHILD_CHECK(evr_handoff_adopt(&ls[i], it, NULL, child_on_accept) == 0);
    }
    /* Tell the parent, which connects only then. */
    CHILD_CHECK(write(sp[1], "r", 1) == 1);
    for (int i = 0; i < 1000 && child_accepted < 2; i++)
      CHILD_CHECK(evr_loop_run(loop, EVR_RUN_ONCE) >= 0);
    CHILD_CHECK(child_accepted == 2);
    for (int i = 0; i < 2; i++) {
      struct pollfd p = {fds[i], POLLIN, 0};
      CHILD_CHECK(poll(&p, 1, 10000) == 1);
      char b = 0;
      CHILD_CHECK(read(fds[i], &b, 1) == 1 && b == 'q');
      CHILD_CHECK(write(fds[i], "a", 1) == 1);
      close(fds[i]);
    }
    _exit(0);
  }
  close(sp[1]);
  op_t s;
  op_init(&s);
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, 2, on_done));
  run_until(test_loop, &s.done, 1000);
  assert_evr_ok(s.status);
  /* The parent lets go of its copies: only the child can accept now. */
  acc_close(&old[0]);
  acc_close(&old[1]);
  char ready = 0;
  struct pollfd p = {sp[0], POLLIN, 0};
  assert_int_equal(poll(&p, 1, 30000), 1);
  if (read(sp[0], &ready, 1) != 1) {
    assert_child_ok(pid); /* reports the child's failing line */
    fail_msg("the child went away");
  }
  int c[2];
  for (int i = 0; i < 2; i++) {
    c[i] = client_to(&addrs[i]);
    assert_int_equal(write(c[i], "q", 1), 1);
  }
  for (int i = 0; i < 2; i++) {
    char b = 0;
    struct pollfd q = {c[i], POLLIN, 0};
    assert_int_equal(poll(&q, 1, 30000), 1);
    assert_int_equal(read(c[i], &b, 1), 1);
    assert_int_equal(b, 'a');
    close(c[i]);
  }
  assert_child_ok(pid);
  assert_int_equal(unlink(path), 0);
  close(sp[0]);
  end();
}

static void test_handoff_two_messages_back_to_back(void **state) {
  (void)state;
  begin();
  int fds[4];
  some_fds(fds, 4);
  evr_handoff_item_t a[2], b[2];
  assert_evr_ok(evr_handoff_item_init(&a[0], fds[0], "a0"));
  assert_evr_ok(evr_handoff_item_init(&a[1], fds[1], "a1"));
  assert_evr_ok(evr_handoff_item_init(&b[0], fds[2], "b0"));
  assert_evr_ok(evr_handoff_item_init(&b[1], fds[3], ""));
  assert_int_equal(a[0].kind, EVR_HANDOFF_OTHER);
  assert_int_equal(a[0].addr.len, 0);
  int sp[2];
  make_socketpair(sp);
  op_t s1, s2;
  op_init(&s1);
  op_init(&s2);
  assert_evr_ok(evr_handoff_send(test_loop, &s1.req, sp[0], a, 2, on_done));
  run_until(test_loop, &s1.done, 1000);
  assert_evr_ok(s1.status);
  assert_evr_ok(evr_handoff_send(test_loop, &s2.req, sp[0], b, 1, on_done));
  run_until(test_loop, &s2.done, 1000);
  assert_evr_ok(s2.status);
  close_fds(fds, 4);

  /* Each receive takes exactly one message. */
  evr_handoff_item_t in[4];
  op_t r;
  op_init(&r);
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 4, on_done));
  run_until(test_loop, &r.done, 1000);
  assert_int_equal(r.status, 2);
  assert_string_equal(in[0].name, "a0");
  assert_string_equal(in[1].name, "a1");
  assert_int_equal(in[2].fd, -1);
  evr_handoff_items_close(in, 4);
  assert_int_equal(in[0].fd, -1);
  r.done = 0;
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 4, on_done));
  run_until(test_loop, &r.done, 1000);
  assert_int_equal(r.status, 1);
  assert_string_equal(in[0].name, "b0");
  evr_handoff_items_close(in, 4);
  /* The peer goes: the next receive sees the end. */
  close(sp[0]);
  r.done = 0;
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 4, on_done));
  run_until(test_loop, &r.done, 1000);
  assert_int_equal(r.status, EVR_EOF);
  close(sp[1]);
  end();
}

static void test_handoff_full_message_sent_in_parts(void **state) {
  (void)state;
  begin();
  int p[2];
  assert_int_equal(pipe(p), 0);
  evr_handoff_item_t out[EVR_HANDOFF_MAX];
  for (int i = 0; i < EVR_HANDOFF_MAX; i++) {
    char name[16];
    snprintf(name, sizeof name, "item%d", i);
    assert_evr_ok(evr_handoff_item_init(&out[i], p[i % 2], name));
  }
  int sp[2];
  make_socketpair(sp);
  /* A send buffer smaller than the message (about 10 KiB): the kernel takes
   * it in parts. */
  int small = 2048;
  assert_int_equal(setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  op_t s, r;
  op_init(&s);
  op_init(&r);
  evr_handoff_item_t in[EVR_HANDOFF_MAX];
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, EVR_HANDOFF_MAX, on_done));
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, EVR_HANDOFF_MAX, on_done));
  run_both(&s, &r);
  assert_evr_ok(s.status);
  assert_int_equal(r.status, EVR_HANDOFF_MAX);
  for (int i = 0; i < EVR_HANDOFF_MAX; i++) {
    assert_string_equal(in[i].name, out[i].name);
    assert_true(in[i].fd >= 0);
    assert_true(is_cloexec(in[i].fd));
  }
  evr_handoff_items_close(in, EVR_HANDOFF_MAX);
  close_fds(p, 2);
  close(sp[0]);
  close(sp[1]);
  end();
}

static void test_handoff_send_waits_for_room(void **state) {
  (void)state;
  begin();
  int p[2];
  assert_int_equal(pipe(p), 0);
  evr_handoff_item_t out[2];
  assert_evr_ok(evr_handoff_item_init(&out[0], p[0], "r"));
  assert_evr_ok(evr_handoff_item_init(&out[1], p[1], "w"));
  int sp[2];
  make_socketpair(sp);
  /* Fill the socket: the send meets EAGAIN and completes later. */
  static char junk[4096];
  size_t filled = 0;
  for (;;) {
    ssize_t w = test_send(sp[0], junk, sizeof junk);
    if (w < 0) {
      assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
      break;
    }
    filled += (size_t)w;
  }
  for (;;) { /* down to the last byte */
    ssize_t w = test_send(sp[0], junk, 1);
    if (w < 0) break;
    filled += (size_t)w;
  }
  op_t s;
  op_init(&s);
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, 2, on_done));
  for (int i = 0; i < 5; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(s.done, 0);
  /* Make room: read exactly the junk, not a byte of the message. */
  while (filled > 0) {
    size_t want = filled < sizeof junk ? filled : sizeof junk;
    ssize_t n = read(sp[1], junk, want);
    assert_true(n > 0);
    filled -= (size_t)n;
  }
  op_t r;
  op_init(&r);
  evr_handoff_item_t in[2];
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 2, on_done));
  run_both(&s, &r);
  assert_evr_ok(s.status);
  assert_int_equal(r.status, 2);
  /* The descriptors work: a byte through the received pipe. */
  close_fds(p, 2);
  evr_handoff_item_t *rd = evr_handoff_find(in, 2, "r");
  evr_handoff_item_t *wr = evr_handoff_find(in, 2, "w");
  assert_non_null(rd);
  assert_non_null(wr);
  assert_int_equal(write(wr->fd, "z", 1), 1);
  char b = 0;
  assert_int_equal(read(rd->fd, &b, 1), 1);
  assert_int_equal(b, 'z');
  evr_handoff_items_close(in, 2);
  close(sp[0]);
  close(sp[1]);
  end();
}

static void test_handoff_send_to_a_gone_peer_fails_without_sigpipe(void **state) {
  (void)state;
  begin();
  int p[2];
  assert_int_equal(pipe(p), 0);
  evr_handoff_item_t out[1];
  assert_evr_ok(evr_handoff_item_init(&out[0], p[0], "p"));
  int sp[2];
  make_socketpair(sp);
  close(sp[1]);
  /* SIGPIPE at its default (the test runner may ignore it): raising it
   * would end the test. */
  struct sigaction dfl, old;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  assert_int_equal(sigaction(SIGPIPE, &dfl, &old), 0);
  op_t s;
  op_init(&s);
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, 1, on_done));
  run_until(test_loop, &s.done, 1000);
  assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
  assert_int_equal(s.status, EVR_EPIPE);
  close(sp[0]);
  close_fds(p, 2);
  end();
}

static void test_handoff_garbage_refused_without_leaks(void **state) {
  (void)state;
  begin();
  unsigned char msg[HDR + 3 * REC];
  int fds[2];
  int sp[2];

  /* Not a message at all, with descriptors. */
  make_socketpair(sp);
  some_fds(fds, 2);
  raw_send(sp[0], "GET / HTTP/1.0\r\n", 16, fds, 2);
  close_fds(fds, 2);
  expect_recv(sp, EVR_EPROTO);
  close(sp[0]);
  close(sp[1]);

  /* A version this build does not read. */
  make_socketpair(sp);
  some_fds(fds, 2);
  hdr(msg, EVR_HANDOFF_VERSION + 1, 2);
  rec_other(msg + HDR, "x");
  rec_other(msg + HDR + REC, "y");
  raw_send(sp[0], msg, HDR + 2 * REC, fds, 2);
  close_fds(fds, 2);
  expect_recv(sp, EVR_EPROTO);
  close(sp[0]);
  close(sp[1]);

  /* A length that does not match the count. */
  make_socketpair(sp);
  some_fds(fds, 2);
  hdr(msg, EVR_HANDOFF_VERSION, 2);
  put32(msg + 8, REC);
  raw_send(sp[0], msg, HDR, fds, 2);
  close_fds(fds, 2);
  expect_recv(sp, EVR_EPROTO);
  close(sp[0]);
  close(sp[1]);

  /* Cut short: two records announced, one sent, then the peer goes. */
  make_socketpair(sp);
  some_fds(fds, 2);
  hdr(msg, EVR_HANDOFF_VERSION, 2);
  rec_other(msg + HDR, "x");
  raw_send(sp[0], msg, HDR + REC, fds, 2);
  close_fds(fds, 2);
  close(sp[0]);
  expect_recv(sp, EVR_EPROTO);
  close(sp[1]);

  /* Two items, one descriptor. */
  make_socketpair(sp);
  some_fds(fds, 2);
  hdr(msg, EVR_HANDOFF_VERSION, 2);
  rec_other(msg + HDR, "x");
  rec_other(msg + HDR + REC, "y");
  raw_send(sp[0], msg, HDR + 2 * REC, fds, 1);
  close_fds(fds, 2);
  expect_recv(sp, EVR_EPROTO);
  close(sp[0]);
  close(sp[1]);

  /* A record with bytes after its name, and one of an unknown kind. */
  for (int bad = 0; bad < 2; bad++) {
    make_socketpair(sp);
    some_fds(fds, 2);
    hdr(msg, EVR_HANDOFF_VERSION, 2);
    rec_other(msg + HDR, "x");
    rec_other(msg + HDR + REC, "y");
    if (bad == 0)
      msg[HDR + REC + 124 + 5] = 'z';
    else
      msg[HDR + REC] = 9;
    raw_send(sp[0], msg, HDR + 2 * REC, fds, 2);
    close_fds(fds, 2);
    expect_recv(sp, EVR_EPROTO);
    close(sp[0]);
    close(sp[1]);
  }

  /* Descriptors sent on a later byte than the first. */
  make_socketpair(sp);
  some_fds(fds, 2);
  hdr(msg, EVR_HANDOFF_VERSION, 1);
  rec_other(msg + HDR, "x");
  raw_send(sp[0], msg, HDR, fds, 1);
  raw_send(sp[0], msg + HDR, REC, fds + 1, 1);
  close_fds(fds, 2);
  expect_recv(sp, EVR_EPROTO);
  close(sp[0]);
  close(sp[1]);
  end();
}

static void test_handoff_too_many_descriptors_closes_them_all(void **state) {
  (void)state;
  begin();
  int p[2];
  assert_int_equal(pipe(p), 0);
  evr_handoff_item_t out[3];
  for (int i = 0; i < 3; i++) assert_evr_ok(evr_handoff_item_init(&out[i], p[i % 2], "p"));
  int sp[2];
  make_socketpair(sp);

  /* More items than the receiver takes: its control buffer is too small
   * for their descriptors (MSG_CTRUNC). */
  op_t s, r;
  op_init(&s);
  op_init(&r);
  evr_handoff_item_t in[1];
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, 3, on_done));
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 1, on_done));
  run_both(&s, &r);
  assert_evr_ok(s.status);
  assert_int_equal(r.status, EVR_ENOSPC);
  assert_int_equal(in[0].fd, -1);
  close(sp[0]);
  close(sp[1]);

  /* One item announced, eight descriptors attached. */
  make_socketpair(sp);
  unsigned char msg[HDR + REC];
  hdr(msg, EVR_HANDOFF_VERSION, 1);
  rec_other(msg + HDR, "x");
  int many[8];
  some_fds(many, 8);
  raw_send(sp[0], msg, sizeof msg, many, 8);
  close_fds(many, 8);
  op_init(&r);
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 1, on_done));
  run_until(test_loop, &r.done, 1000);
  assert_int_equal(r.status, EVR_EPROTO);
  assert_int_equal(in[0].fd, -1);
  close(sp[0]);
  close(sp[1]);
  close_fds(p, 2);
  end();
}

/* The lowest descriptor number that is free. */
static int lowest_free(void) {
  int fd = dup(0);
  assert_true(fd >= 0);
  close(fd);
  return fd;
}

static void test_handoff_descriptors_running_out_closes_them_all(void **state) {
  (void)state;
  if (getenv("EVR_TEST_UNDER_VALGRIND")) {
    print_message("skipped under valgrind, which keeps descriptors of its own\n");
    return;
  }
  begin();
  int p[2];
  assert_int_equal(pipe(p), 0);
  evr_handoff_item_t out[3];
  for (int i = 0; i < 3; i++) assert_evr_ok(evr_handoff_item_init(&out[i], p[i % 2], "p"));
  int sp[2];
  make_socketpair(sp);
  op_t s, r;
  op_init(&s);
  op_init(&r);
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, 3, on_done));
  run_until(test_loop, &s.done, 1000);
  assert_evr_ok(s.status);
  close_fds(p, 2);

  /* Leave room for one descriptor: the kernel installs one of the three
   * and truncates the rest. */
  int hold = lowest_free();
  int f1 = dup(0); /* occupy `hold` ... */
  assert_int_equal(f1, hold);
  int next = lowest_free();
  close(f1); /* ... so that `hold` is the only number below `next` */
  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  lim = old;
  lim.rlim_cur = (rlim_t)next;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
  evr_handoff_item_t in[4];
  int rc = evr_handoff_recv(test_loop, &r.req, sp[1], in, 4, on_done);
  if (rc == 0) run_until(test_loop, &r.done, 1000);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
  assert_evr_ok(rc);
  assert_int_equal(r.status, EVR_EMFILE);
  for (int i = 0; i < 4; i++) assert_int_equal(in[i].fd, -1);
  close(sp[0]);
  close(sp[1]);
  end();
}

static void cancel_timer_cb(evr_timer_t *t) {
  assert_evr_ok(evr_handoff_cancel(t->data));
}

static void test_handoff_cancel_pending_requests(void **state) {
  (void)state;
  begin();
  int sp[2];
  make_socketpair(sp);
  op_t r;
  op_init(&r);
  evr_handoff_item_t in[4];

  /* A receive that waits for nothing, cancelled by a timer (the caller's
   * timeout). */
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 4, on_done));
  evr_timer_t t;
  assert_evr_ok(evr_timer_init(test_loop, &t));
  t.data = &r.req;
  assert_evr_ok(evr_timer_start(&t, cancel_timer_cb, 1, 0));
  run_until(test_loop, &r.done, 1000);
  assert_int_equal(r.status, EVR_ECANCELED);
  assert_int_equal(evr_handoff_cancel(&r.req), EVR_EINVAL); /* not pending */

  /* A receive holding descriptors of a message half read. */
  int fds[2];
  some_fds(fds, 2);
  unsigned char msg[HDR];
  hdr(msg, EVR_HANDOFF_VERSION, 2);
  raw_send(sp[0], msg, HDR, fds, 2);
  close_fds(fds, 2);
  op_init(&r);
  assert_evr_ok(evr_handoff_recv(test_loop, &r.req, sp[1], in, 4, on_done));
  for (int i = 0; i < 5; i++) assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(r.done, 0);
  assert_evr_ok(evr_handoff_cancel(&r.req));
  assert_evr_ok(evr_handoff_cancel(&r.req)); /* twice: harmless */
  assert_int_equal(r.done, 0);               /* later, from the loop */
  /* The socket may be closed at once; the loop must not mind. */
  close(sp[1]);
  run_until(test_loop, &r.done, 100);
  assert_int_equal(r.done, 1);
  assert_int_equal(r.status, EVR_ECANCELED);
  for (int i = 0; i < 4; i++) assert_int_equal(in[i].fd, -1);
  close(sp[0]);

  /* A send that waits for room, cancelled from another request's
   * callback. */
  make_socketpair(sp);
  static char junk[4096];
  while (test_send(sp[0], junk, sizeof junk) > 0) {
  }
  while (test_send(sp[0], junk, 1) > 0) {
  }
  int p[2];
  assert_int_equal(pipe(p), 0);
  evr_handoff_item_t out[1];
  assert_evr_ok(evr_handoff_item_init(&out[0], p[0], "p"));
  op_t s, other;
  op_init(&s);
  op_init(&other);
  assert_evr_ok(evr_handoff_send(test_loop, &s.req, sp[0], out, 1, on_done));
  int sp2[2];
  make_socketpair(sp2);
  other.other = &s.req;
  assert_evr_ok(evr_handoff_recv(test_loop, &other.req, sp2[1], in, 4, on_done));
  close(sp2[0]); /* the other receive ends (EOF) and cancels the send */
  run_both(&s, &other);
  assert_int_equal(other.status, EVR_EOF);
  assert_int_equal(s.status, EVR_ECANCELED);
  close(sp2[1]);
  close(sp[0]);
  close(sp[1]);
  close_fds(p, 2);
  end();
}

static void test_handoff_bad_arguments(void **state) {
  (void)state;
  begin();
  int sp[2];
  make_socketpair(sp);
  int p[2];
  assert_int_equal(pipe(p), 0);
  evr_handoff_item_t it, items[EVR_HANDOFF_MAX + 1];
  op_t o;
  op_init(&o);

  /* items */
  assert_int_equal(evr_handoff_item_init(NULL, p[0], "x"), EVR_EINVAL);
  assert_int_equal(evr_handoff_item_init(&it, -1, "x"), EVR_EBADF);
  assert_int_equal(evr_handoff_item_init(&it, p[0], "a-name-longer-than-thirty-one-bytes"),
                   EVR_ENAMETOOLONG);
  assert_evr_ok(evr_handoff_item_init(&it, p[0], NULL));
  assert_string_equal(it.name, "");
  for (int i = 0; i <= EVR_HANDOFF_MAX; i++) items[i] = it;
  acc_t a;
  acc_init(&a);
  assert_int_equal(evr_handoff_export(&it, &a.l, "x"), EVR_EINVAL); /* no socket */
  assert_int_equal(evr_handoff_export(NULL, &a.l, "x"), EVR_EINVAL);

  /* send */
  evr_handoff_t *req = &o.req;
  assert_int_equal(evr_handoff_send(NULL, req, sp[0], items, 1, on_done), EVR_EINVAL);
  assert_int_equal(evr_handoff_send(test_loop, NULL, sp[0], items, 1, on_done), EVR_EINVAL);
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], items, 1, NULL), EVR_EINVAL);
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], NULL, 1, on_done), EVR_EINVAL);
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], items, EVR_HANDOFF_MAX + 1, on_done),
                   EVR_EINVAL);
  assert_int_equal(evr_handoff_send(test_loop, req, p[1], items, 1, on_done), EVR_EINVAL);
  assert_int_equal(evr_handoff_send(test_loop, req, -1, items, 1, on_done), EVR_EBADF);
  evr_handoff_item_t bad = it;
  bad.fd = -1;
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], &bad, 1, on_done), EVR_EINVAL);
  bad = it;
  bad.kind = 7;
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], &bad, 1, on_done), EVR_EINVAL);
  bad = it;
  bad.kind = EVR_HANDOFF_TCP; /* without an address */
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], &bad, 1, on_done), EVR_EINVAL);
  bad = it;
  bad.flags = EVR_LISTEN_V6ONLY;
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], &bad, 1, on_done), EVR_EINVAL);
  bad = it;
  memset(bad.name, 'n', sizeof bad.name); /* no NUL */
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], &bad, 1, on_done), EVR_EINVAL);

  /* recv */
  evr_handoff_item_t in[4];
  assert_int_equal(evr_handoff_recv(test_loop, req, sp[1], NULL, 4, on_done), EVR_EINVAL);
  assert_int_equal(evr_handoff_recv(test_loop, req, sp[1], in, 0, on_done), EVR_EINVAL);
  assert_int_equal(evr_handoff_recv(test_loop, req, sp[1], in, EVR_HANDOFF_MAX + 1, on_done),
                   EVR_EINVAL);
  assert_int_equal(evr_handoff_recv(test_loop, req, p[0], in, 4, on_done), EVR_EINVAL);
  assert_int_equal(evr_handoff_cancel(NULL), EVR_EINVAL);
  assert_int_equal(evr_handoff_cancel(req), EVR_EINVAL); /* never submitted */

  /* pending: busy; a second request on the same socket: in use */
  assert_evr_ok(evr_handoff_recv(test_loop, req, sp[1], in, 4, on_done));
  assert_int_equal(evr_handoff_recv(test_loop, req, sp[1], in, 4, on_done), EVR_EBUSY);
  assert_int_equal(evr_handoff_send(test_loop, req, sp[0], items, 1, on_done), EVR_EBUSY);
  op_t o2;
  op_init(&o2);
  assert_int_equal(evr_handoff_send(test_loop, &o2.req, sp[1], items, 1, on_done), EVR_EEXIST);
  assert_evr_ok(evr_handoff_cancel(req));
  run_until(test_loop, &o.done, 100);
  assert_int_equal(o.status, EVR_ECANCELED);
  assert_int_equal(o2.done, 0);

  /* adopt */
  acc_t b;
  acc_init(&b);
  assert_int_equal(evr_handoff_adopt(&b.l, &it, NULL, on_accept), EVR_EINVAL); /* OTHER */
  evr_handoff_item_t lie = it;
  lie.kind = EVR_HANDOFF_TCP; /* a pipe that claims to listen */
  assert_int_equal(evr_handoff_adopt(&b.l, &lie, NULL, on_accept), EVR_EINVAL);
  assert_int_equal(lie.fd, p[0]); /* still the caller's */
  int tcp = test_socket(AF_INET, SOCK_STREAM, 0); /* not listening */
  assert_true(tcp >= 0);
  assert_evr_ok(evr_handoff_item_init(&lie, tcp, "t"));
  assert_int_equal(lie.kind, EVR_HANDOFF_OTHER);
  lie.kind = EVR_HANDOFF_TCP;
  assert_int_equal(evr_handoff_adopt(&b.l, &lie, NULL, on_accept), EVR_EINVAL);
  assert_int_equal(lie.fd, tcp);
  lie.fd = -1;
  assert_int_equal(evr_handoff_adopt(&b.l, &lie, NULL, on_accept), EVR_EBADF);
  assert_int_equal(evr_handoff_adopt(NULL, &lie, NULL, on_accept), EVR_EINVAL);
  close(tcp);

  /* find */
  assert_null(evr_handoff_find(NULL, 1, "x"));
  assert_null(evr_handoff_find(items, 1, NULL));
  assert_null(evr_handoff_find(items, 1, "x"));
  assert_ptr_equal(evr_handoff_find(items, 2, ""), &items[0]);
  evr_handoff_items_close(NULL, 3); /* ignored */

  acc_close(&a);
  acc_close(&b);
  close_fds(p, 2);
  close(sp[0]);
  close(sp[1]);
  end();
}

static int group_setup(void **state) {
  (void)state;
  const char *t = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/evr-handoff-XXXXXX",
           t && *t && strlen(t) < 120 ? t : "/tmp");
  if (!mkdtemp(tmpdir)) return -1;
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  return rmdir(tmpdir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_handoff_listeners_move_and_accept),
      EVR_TEST(test_handoff_across_fork_child_serves),
      EVR_TEST(test_handoff_two_messages_back_to_back),
      EVR_TEST(test_handoff_full_message_sent_in_parts),
      EVR_TEST(test_handoff_send_waits_for_room),
      EVR_TEST(test_handoff_send_to_a_gone_peer_fails_without_sigpipe),
      EVR_TEST(test_handoff_garbage_refused_without_leaks),
      EVR_TEST(test_handoff_too_many_descriptors_closes_them_all),
      EVR_TEST(test_handoff_descriptors_running_out_closes_them_all),
      EVR_TEST(test_handoff_cancel_pending_requests),
      EVR_TEST(test_handoff_bad_arguments),
  };
  return cmocka_run_group_tests_name("handoff", tests, group_setup, group_teardown);
}
