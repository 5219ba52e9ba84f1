/* bench/echo_event.c: bench-echo-event, the TCP echo server on libevent.
 *
 * Default: the raw event API. One persistent EV_READ event per connection;
 * one read per readiness into a per-process buffer, then a direct write. If
 * the kernel takes only part, the rest goes to the heap and the event is
 * re-assigned to EV_WRITE until it is out (reading pauses meanwhile).
 *
 * --bufferevent: the buffered API, as libevent documents an echo server: an
 * evconnlistener, a socket bufferevent per connection, and a read callback
 * that moves the input buffer to the output buffer.
 *
 * Connections sit on a list so SIGTERM/SIGINT can free them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include "bench_util.h"

struct conn {
  struct conn *prev, *next;  /* all connections, for shutdown */
  struct event *ev;          /* raw mode */
  struct bufferevent *bev;   /* --bufferevent mode */
  char *rest;                /* raw mode: bytes not written yet, or NULL */
  uint32_t len, off;
};

static char buf[64 * 1024];
static struct event_base *base;
static struct conn conns = {&conns, &conns, NULL, NULL, NULL, 0, 0};

static struct conn *conn_new(void) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->next = conns.next;
  c->prev = &conns;
  conns.next->prev = c;
  conns.next = c;
  return c;
}

static void conn_free(struct conn *c) {
  c->prev->next = c->next;
  c->next->prev = c->prev;
  if (c->ev) {
    (void)close(event_get_fd(c->ev));
    event_free(c->ev);
  }
  if (c->bev) bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE */
  free(c->rest);
  free(c);
}

/* ---- raw event API ---- */

static int soft_error(void) { return errno == EAGAIN || errno == EINTR; }

static void conn_cb(evutil_socket_t fd, short what, void *arg);

/* Re-point the connection's event at `what` (EV_READ or EV_WRITE). */
static int conn_watch(struct conn *c, short what) {
  evutil_socket_t fd = event_get_fd(c->ev);
  if (event_del(c->ev) < 0 ||
      event_assign(c->ev, base, fd, what | EV_PERSIST, conn_cb, c) < 0 ||
      event_add(c->ev, NULL) < 0)
    return -1;
  return 0;
}

static void conn_cb(evutil_socket_t fd, short what, void *arg) {
  struct conn *c = arg;
  (void)what;
  if (c->rest) { /* watching EV_WRITE */
    ssize_t w = write(fd, c->rest + c->off, c->len - c->off);
    if (w < 0) {
      if (!soft_error()) conn_free(c);
      return;
    }
    c->off += (uint32_t)w;
    if (c->off < c->len) return;
    free(c->rest);
    c->rest = NULL;
    if (conn_watch(c, EV_READ) < 0) conn_free(c);
    return;
  }
  ssize_t n = read(fd, buf, sizeof buf);
  if (n <= 0) {
    if (n == 0 || !soft_error()) conn_free(c);
    return;
  }
  ssize_t w = write(fd, buf, (size_t)n);
  if (w == n) return;
  if (w < 0) {
    if (!soft_error()) {
      conn_free(c);
      return;
    }
    w = 0;
  }
  c->len = (uint32_t)(n - w);
  c->off = 0;
  c->rest = malloc(c->len);
  if (!c->rest) {
    conn_free(c);
    return;
  }
  memcpy(c->rest, buf + w, c->len);
  if (conn_watch(c, EV_WRITE) < 0) conn_free(c);
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg) {
  (void)what;
  (void)arg;
  for (int i = 0; i < 256; i++) {
    int fd = bench_accept(lfd);
    if (fd < 0) {
      if (errno == ECONNABORTED || errno == EINTR) continue;
      if (errno != EAGAIN) perror("accept");
      return;
    }
    bench_nodelay(fd);
    struct conn *c = conn_new();
    if (c) c->ev = event_new(base, fd, EV_READ | EV_PERSIST, conn_cb, c);
    if (!c || !c->ev || event_add(c->ev, NULL) < 0) {
      (void)close(fd);
      if (c) {
        if (c->ev) event_free(c->ev);
        c->ev = NULL;
        conn_free(c);
      }
    }
  }
}

/* ---- bufferevent API ---- */

static void bev_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  (void)evbuffer_add_buffer(bufferevent_get_output(bev),
                            bufferevent_get_input(bev));
}

static void bev_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) conn_free(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg) {
  (void)l;
  (void)sa;
  (void)salen;
  (void)arg;
  bench_nodelay(fd);
  struct conn *c = conn_new();
  if (c) c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!c || !c->bev) {
    (void)close(fd);
    if (c) conn_free(c);
    return;
  }
  bufferevent_setcb(c->bev, bev_read, NULL, bev_event, c);
  if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0) conn_free(c);
}

/* ---- main ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  (void)arg;
  (void)event_base_loopbreak(base);
}

static void die(const char *what) {
  fprintf(stderr, "bench-echo-event: %s failed\n", what);
  exit(1);
}

int main(int argc, char **argv) {
  int buffered;
  uint16_t port = bench_server_opts(argc, argv, "--bufferevent", &buffered);
  bench_ignore_sigpipe();
  (void)bench_raise_nofile(65536);
  base = event_base_new();
  if (!base) die("event_base_new");
  struct event *sig_term = evsignal_new(base, SIGTERM, on_signal, NULL);
  struct event *sig_int = evsignal_new(base, SIGINT, on_signal, NULL);
  if (!sig_term || !sig_int || evsignal_add(sig_term, NULL) < 0 ||
      evsignal_add(sig_int, NULL) < 0)
    die("evsignal_add");

  struct evconnlistener *listener = NULL;
  struct event *accept_ev = NULL;
  int lfd = -1;
  if (buffered) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener = evconnlistener_new_bind(
        base, on_accept, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, -1,
        (struct sockaddr *)&sa, sizeof sa);
    if (!listener) die("evconnlistener_new_bind");
    socklen_t len = sizeof sa;
    if (getsockname(evconnlistener_get_fd(listener), (struct sockaddr *)&sa,
                    &len) < 0)
      die("getsockname");
    port = ntohs(sa.sin_port);
  } else {
    lfd = bench_listen(port, &port);
    accept_ev = event_new(base, lfd, EV_READ | EV_PERSIST, accept_cb, NULL);
    if (!accept_ev || event_add(accept_ev, NULL) < 0) die("event_add");
  }
  bench_announce(port);
  if (event_base_dispatch(base) < 0) die("event_base_dispatch");

  while (conns.next != &conns) conn_free(conns.next);
  if (listener) evconnlistener_free(listener);
  if (accept_ev) {
    event_free(accept_ev);
    (void)close(lfd);
  }
  event_free(sig_term);
  event_free(sig_int);
  event_base_free(base);
  return 0;
}
