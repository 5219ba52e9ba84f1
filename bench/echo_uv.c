/* bench/echo_uv.c: bench-echo-uv, the TCP echo server on libuv streams.
 *
 * uv_read_start() with an alloc callback that hands out one per-process
 * buffer (the data is consumed before the next read), uv_try_write() of what
 * arrived, and uv_write() of a heap copy of any rest, with reading stopped
 * until that write completes. An idle connection costs its uv_tcp_t.
 * --sizeof prints sizeof(uv_tcp_t) and exits.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "bench_util.h"

struct wreq {
  uv_write_t req;
  char data[]; /* the bytes uv_try_write() left */
};

static char buf[64 * 1024];
static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_signal_t sig_term, sig_int;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h;
  (void)suggested;
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_closed(uv_handle_t *h) {
  if (h != (uv_handle_t *)&listener && h->type == UV_TCP) free(h);
}

static void conn_close(uv_stream_t *s) {
  if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_closed);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void on_written(uv_write_t *req, int status) {
  uv_stream_t *s = req->handle;
  free(req);
  if (status < 0) {
    conn_close(s);
    return;
  }
  if (!uv_is_closing((uv_handle_t *)s) && uv_read_start(s, on_alloc, on_read))
    conn_close(s);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  if (n < 0) { /* UV_EOF or an error */
    conn_close(s);
    return;
  }
  if (n == 0) return; /* EAGAIN */
  uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
  int w = uv_try_write(s, &out, 1);
  if (w == n) return;
  if (w == UV_EAGAIN) w = 0;
  if (w < 0) {
    conn_close(s);
    return;
  }
  size_t rest = (size_t)n - (size_t)w;
  struct wreq *wr = malloc(sizeof *wr + rest);
  if (!wr) {
    conn_close(s);
    return;
  }
  memcpy(wr->data, b->base + w, rest);
  out = uv_buf_init(wr->data, (unsigned)rest);
  (void)uv_read_stop(s);
  if (uv_write(&wr->req, s, &out, 1, on_written) < 0) {
    free(wr);
    conn_close(s);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  uv_tcp_t *c = malloc(sizeof *c);
  if (!c) return;
  if (uv_tcp_init(loop, c) < 0) {
    free(c);
    return;
  }
  if (uv_accept(server, (uv_stream_t *)c) < 0) {
    uv_close((uv_handle_t *)c, on_closed);
    return;
  }
  (void)uv_tcp_nodelay(c, 1);
  if (uv_read_start((uv_stream_t *)c, on_alloc, on_read) < 0)
    uv_close((uv_handle_t *)c, on_closed);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, on_closed);
}

static void on_signal(uv_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
  uv_walk(loop, close_any, NULL); /* uv_run returns when all are closed */
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "bench-echo-uv: %s: %s\n", what, uv_strerror(rc));
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--sizeof") == 0) {
    printf("%zu\n", sizeof(uv_tcp_t));
    return 0;
  }
  uint16_t port = bench_server_opts(argc, argv, NULL, NULL);
  bench_ignore_sigpipe();
  (void)bench_raise_nofile(65536);
  loop = uv_default_loop();
  struct sockaddr_in sa;
  check(uv_ip4_addr("127.0.0.1", port, &sa), "uv_ip4_addr");
  check(uv_tcp_init(loop, &listener), "uv_tcp_init");
  check(uv_tcp_bind(&listener, (const struct sockaddr *)&sa, 0), "bind");
  check(uv_listen((uv_stream_t *)&listener, SOMAXCONN, on_connection),
        "listen");
  int len = sizeof sa;
  check(uv_tcp_getsockname(&listener, (struct sockaddr *)&sa, &len),
        "getsockname");
  check(uv_signal_init(loop, &sig_term), "uv_signal_init");
  check(uv_signal_init(loop, &sig_int), "uv_signal_init");
  check(uv_signal_start(&sig_term, on_signal, SIGTERM), "uv_signal_start");
  check(uv_signal_start(&sig_int, on_signal, SIGINT), "uv_signal_start");
  bench_announce(ntohs(sa.sin_port));
  check(uv_run(loop, UV_RUN_DEFAULT), "uv_run");
  check(uv_loop_close(loop), "uv_loop_close");
  return 0;
}
