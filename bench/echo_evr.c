/* bench/echo_evr.c: bench-echo-evr, a TCP echo server on raw evr_io watchers
 * or, with --stream, on evr's buffered streams.
 *
 * Level-triggered, one read per readiness into a single per-process buffer,
 * then a direct write. Only when the kernel refuses part of a write is the
 * rest copied to the heap and the watcher switched to EVR_WRITE (reading
 * stops until the rest is out), so a message normally costs one read and
 * one write and no interest change. An idle connection costs its struct conn
 * plus the loop's fd-map slot.
 *
 * --stream: the buffered API, as a user of evr_stream_t writes an echo
 * server (samples/echo.c without its bookkeeping): the connection is a
 * malloc'ed evr_stream_t, every read is echoed with evr_stream_write_copy(),
 * reading stops above a 64 KiB write queue, and EOF ends the stream
 * gracefully. --sizeof prints sizeof(evr_stream_t) and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "evr/evr.h"
#include "bench_util.h"

struct conn {
  evr_io_t io;   /* first: the watcher is the connection */
  char *rest;    /* bytes the kernel did not take yet, or NULL */
  uint32_t len;  /* size of rest */
  uint32_t off;  /* bytes of rest already written */
};

static char buf[64 * 1024];
static evr_loop_t *loop;
static evr_io_t listener;
static evr_signal_t sig_term, sig_int;
static int stream_mode; /* --stream */
static void stream_accept(int fd);

static void conn_free(evr_handle_t *h) {
  struct conn *c = BENCH_CONTAINER_OF(h, struct conn, io.base);
  free(c->rest);
  free(c);
}

static void conn_close(struct conn *c) {
  int fd = evr_io_fd(&c->io);
  (void)evr_close(&c->io.base, conn_free); /* stops the watcher now */
  (void)close(fd);
}

static int soft_error(void) { return errno == EAGAIN || errno == EINTR; }

static void conn_cb(evr_io_t *io, unsigned events) {
  struct conn *c = BENCH_CONTAINER_OF(io, struct conn, io);
  (void)events;
  if (c->rest) { /* waiting for EVR_WRITE */
    ssize_t w = write(evr_io_fd(io), c->rest + c->off, c->len - c->off);
    if (w < 0) {
      if (!soft_error()) conn_close(c);
      return;
    }
    c->off += (uint32_t)w;
    if (c->off < c->len) return;
    free(c->rest);
    c->rest = NULL;
    (void)evr_io_set(io, EVR_READ);
    return;
  }
  ssize_t n = read(evr_io_fd(io), buf, sizeof buf);
  if (n <= 0) {
    if (n == 0 || !soft_error()) conn_close(c);
    return;
  }
  ssize_t w = write(evr_io_fd(io), buf, (size_t)n);
  if (w == n) return;
  if (w < 0) {
    if (!soft_error()) {
      conn_close(c);
      return;
    }
    w = 0;
  }
  c->len = (uint32_t)(n - w);
  c->off = 0;
  c->rest = malloc(c->len);
  if (!c->rest) {
    conn_close(c);
    return;
  }
  memcpy(c->rest, buf + w, c->len);
  (void)evr_io_set(io, EVR_WRITE);
}

static void accept_cb(evr_io_t *io, unsigned events) {
  (void)events;
  for (int i = 0; i < 256; i++) {
    int fd = bench_accept(evr_io_fd(io));
    if (fd < 0) {
      if (errno == ECONNABORTED || errno == EINTR) continue;
      if (errno != EAGAIN) perror("accept"); /* EMFILE: retry next round */
      return;
    }
    bench_nodelay(fd);
    if (stream_mode) {
      stream_accept(fd);
      continue;
    }
    struct conn *c = malloc(sizeof *c);
    if (!c || evr_io_init(loop, &c->io, fd) != 0 ||
        evr_io_start(&c->io, EVR_READ, conn_cb) != 0) {
      free(c);
      (void)close(fd);
      continue;
    }
    c->rest = NULL;
    c->len = c->off = 0;
  }
}

/* ---- --stream: evr_stream_t ---- */

enum { STREAM_LOW_WATER = 16 * 1024, STREAM_HIGH_WATER = 64 * 1024 };

static void stream_free(evr_handle_t *h) {
  free(BENCH_CONTAINER_OF(h, evr_stream_t, base));
}

static void stream_close(evr_stream_t *s) {
  if (!evr_is_closing(&s->base)) (void)evr_close(&s->base, stream_free);
}

static void stream_read_cb(evr_stream_t *s, ssize_t nread, const char *data) {
  if (nread > 0) {
    if (evr_stream_write_copy(s, data, (size_t)nread) != 0) stream_close(s);
  } else if (nread == EVR_EOF) {
    if (evr_stream_end(s, stream_free) != 0) stream_close(s);
  } else {
    stream_close(s);
  }
}

static void stream_water_cb(evr_stream_t *s, int above) {
  if (above)
    (void)evr_stream_read_stop(s);
  else if (evr_stream_read_start(s, stream_read_cb) != 0)
    stream_close(s);
}

static void stream_accept(int fd) {
  evr_stream_t *s = malloc(sizeof *s);
  if (!s) {
    (void)close(fd);
    return;
  }
  if (evr_stream_init(loop, s) != 0 || evr_stream_open(s, fd) != 0) {
    free(s);
    (void)close(fd);
    return;
  }
  (void)evr_stream_set_water_marks(s, STREAM_LOW_WATER, STREAM_HIGH_WATER,
                                   stream_water_cb);
  if (evr_stream_read_start(s, stream_read_cb) != 0) stream_close(s);
}

static void close_any(evr_handle_t *h, void *arg) {
  (void)arg;
  if (h == &listener.base) {
    int fd = evr_io_fd(&listener);
    (void)evr_close(h, NULL);
    (void)close(fd);
  } else if (h == &sig_term.base || h == &sig_int.base) {
    (void)evr_close(h, NULL);
  } else if (stream_mode) {
    stream_close(BENCH_CONTAINER_OF(h, evr_stream_t, base));
  } else {
    conn_close(BENCH_CONTAINER_OF(h, struct conn, io.base));
  }
}

static void on_signal(evr_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
  evr_loop_walk(loop, close_any, NULL); /* the loop ends when all are closed */
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "bench-echo-evr: %s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--sizeof") == 0) {
    printf("%zu\n", sizeof(evr_stream_t));
    return 0;
  }
  uint16_t port = bench_server_opts(argc, argv, "--stream", &stream_mode);
  bench_ignore_sigpipe();
  (void)bench_raise_nofile(65536);
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  int lfd = bench_listen(port, &port);
  check(evr_io_init(loop, &listener, lfd), "evr_io_init");
  check(evr_io_start(&listener, EVR_READ, accept_cb), "evr_io_start");
  check(evr_signal_init(loop, &sig_term), "evr_signal_init");
  check(evr_signal_init(loop, &sig_int), "evr_signal_init");
  check(evr_signal_start(&sig_term, SIGTERM, on_signal), "evr_signal_start");
  check(evr_signal_start(&sig_int, SIGINT, on_signal), "evr_signal_start");
  bench_announce(port);
  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");
  check(evr_loop_free(loop), "evr_loop_free");
  return 0;
}
