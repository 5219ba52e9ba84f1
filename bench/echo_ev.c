/* bench/echo_ev.c: bench-echo-ev, the TCP echo server on libev io watchers.
 *
 * One ev_io per connection watching EV_READ; one read per readiness into a
 * per-process buffer, then a direct write. If the kernel takes only part,
 * the rest goes to the heap and the watcher is re-set to EV_WRITE (stop,
 * set, start: libev's way to change a watcher) until it is out.
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
#include <ev.h>
#include "bench_util.h"

struct conn {
  ev_io io;
  struct conn *prev, *next;  /* all connections, for shutdown */
  char *rest;                /* bytes not written yet, or NULL */
  uint32_t len, off;
};

static char buf[64 * 1024];
static struct ev_loop *loop;
static struct conn conns;

static void conn_free(struct conn *c) {
  ev_io_stop(loop, &c->io);
  (void)close(c->io.fd);
  c->prev->next = c->next;
  c->next->prev = c->prev;
  free(c->rest);
  free(c);
}

static int soft_error(void) { return errno == EAGAIN || errno == EINTR; }

static void conn_watch(struct conn *c, int what) {
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, what);
  ev_io_start(loop, &c->io);
}

static void conn_cb(struct ev_loop *l, ev_io *io, int revents) {
  struct conn *c = BENCH_CONTAINER_OF(io, struct conn, io);
  (void)l;
  (void)revents;
  if (c->rest) { /* watching EV_WRITE */
    ssize_t w = write(io->fd, c->rest + c->off, c->len - c->off);
    if (w < 0) {
      if (!soft_error()) conn_free(c);
      return;
    }
    c->off += (uint32_t)w;
    if (c->off < c->len) return;
    free(c->rest);
    c->rest = NULL;
    conn_watch(c, EV_READ);
    return;
  }
  ssize_t n = read(io->fd, buf, sizeof buf);
  if (n <= 0) {
    if (n == 0 || !soft_error()) conn_free(c);
    return;
  }
  ssize_t w = write(io->fd, buf, (size_t)n);
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
  conn_watch(c, EV_WRITE);
}

static void accept_cb(struct ev_loop *l, ev_io *io, int revents) {
  (void)revents;
  for (int i = 0; i < 256; i++) {
    int fd = bench_accept(io->fd);
    if (fd < 0) {
      if (errno == ECONNABORTED || errno == EINTR) continue;
      if (errno != EAGAIN) perror("accept");
      return;
    }
    bench_nodelay(fd);
    struct conn *c = malloc(sizeof *c);
    if (!c) {
      (void)close(fd);
      continue;
    }
    c->rest = NULL;
    c->len = c->off = 0;
    c->next = conns.next;
    c->prev = &conns;
    conns.next->prev = c;
    conns.next = c;
    ev_io_init(&c->io, conn_cb, fd, EV_READ);
    ev_io_start(l, &c->io);
  }
}

static void on_signal(struct ev_loop *l, ev_signal *w, int revents) {
  (void)w;
  (void)revents;
  ev_break(l, EVBREAK_ALL);
}

int main(int argc, char **argv) {
  uint16_t port = bench_server_opts(argc, argv, NULL, NULL);
  bench_ignore_sigpipe();
  (void)bench_raise_nofile(65536);
  loop = EV_DEFAULT;
  if (!loop) {
    fprintf(stderr, "bench-echo-ev: no usable libev backend\n");
    return 1;
  }
  conns.prev = conns.next = &conns;
  int lfd = bench_listen(port, &port);
  ev_io listener;
  ev_io_init(&listener, accept_cb, lfd, EV_READ);
  ev_io_start(loop, &listener);
  ev_signal sig_term, sig_int;
  ev_signal_init(&sig_term, on_signal, SIGTERM);
  ev_signal_init(&sig_int, on_signal, SIGINT);
  ev_signal_start(loop, &sig_term);
  ev_signal_start(loop, &sig_int);
  bench_announce(port);
  ev_run(loop, 0);

  while (conns.next != &conns) conn_free(conns.next);
  ev_io_stop(loop, &listener);
  (void)close(lfd);
  ev_signal_stop(loop, &sig_term);
  ev_signal_stop(loop, &sig_int);
  ev_loop_destroy(loop);
  return 0;
}
