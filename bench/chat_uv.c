/* bench/chat_uv.c: bench-chat-uv, the chat server of examples/chat.c on
 * libuv, for the fan-out benchmark (bench/run.sh --only chat).
 *
 * The same protocol and the same policy as the evr example: the first line
 * is the nick (answered with "* welcome NICK"), every later line goes to
 * every other joined client as "NICK: line", the lines of one read are
 * broadcast together (one write per recipient per read, or per 16 KiB),
 * and a client whose write queue passes 256 KiB is dropped. A write is
 * uv_try_write() first; what the kernel does not take is copied into a
 * uv_write() request (libuv's write queue, whose size is
 * stream->write_queue_size).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "bench_util.h"

#define MAX_LINE 1024
#define MAX_NICK 31
#define HIGH_MARK (256u << 10)
#define FLUSH_AT (16u << 10)

struct client {
  uv_tcp_t tcp;                  /* first member */
  struct client *prev, *next;
  int joined;
  char nick[MAX_NICK + 1];
  size_t len;
  char line[MAX_LINE];
};

struct wreq {
  uv_write_t req;
  char data[];
};

static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_signal_t sig_term, sig_int;
static struct client *clients;
static char rbuf[64 * 1024];
static char out[FLUSH_AT + MAX_LINE + MAX_NICK + 3];
static size_t out_len;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h;
  (void)suggested;
  *b = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_closed(uv_handle_t *h) {
  if (h->type != UV_TCP || h == (uv_handle_t *)&listener) return;
  struct client *c = (struct client *)h;
  if (c->prev) c->prev->next = c->next; else clients = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
}

static void drop(struct client *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status) {
  struct client *c = (struct client *)req->handle;
  free(req);
  if (status < 0 && status != UV_ECANCELED) drop(c);
}

static void send_to(struct client *c, const char *data, size_t len) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  uv_stream_t *s = (uv_stream_t *)&c->tcp;
  size_t done = 0;
  if (s->write_queue_size == 0) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write(s, &b, 1);
    if (n >= 0) done = (size_t)n;
    else if (n != UV_EAGAIN) {
      drop(c);
      return;
    }
  }
  if (done == len) return;
  struct wreq *w = malloc(sizeof *w + (len - done));
  if (!w) {
    drop(c);
    return;
  }
  memcpy(w->data, data + done, len - done);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)(len - done));
  if (uv_write(&w->req, s, &b, 1, on_written) < 0) {
    free(w);
    drop(c);
    return;
  }
  if (s->write_queue_size > HIGH_MARK) drop(c);
}

static void flush(struct client *from) {
  if (out_len == 0) return;
  for (struct client *c = clients; c; c = c->next)
    if (c != from && c->joined) send_to(c, out, out_len);
  out_len = 0;
}

static int valid_nick(const char *s, size_t len) {
  if (len == 0 || len > MAX_NICK) return 0;
  for (size_t i = 0; i < len; i++)
    if (!(s[i] == '-' || s[i] == '_' || (s[i] >= '0' && s[i] <= '9') ||
          (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
      return 0;
  return 1;
}

static void on_line(struct client *c, const char *s, size_t len) {
  if (len > 0 && s[len - 1] == '\r') len--;
  if (!c->joined) {
    if (!valid_nick(s, len)) {
      drop(c);
      return;
    }
    memcpy(c->nick, s, len);
    c->nick[len] = '\0';
    c->joined = 1;
    char hello[MAX_NICK + 16];
    int n = snprintf(hello, sizeof hello, "* welcome %s\n", c->nick);
    send_to(c, hello, (size_t)n);
    return;
  }
  if (len == 0) return;
  size_t nl = strlen(c->nick);
  memcpy(out + out_len, c->nick, nl);
  memcpy(out + out_len + nl, ": ", 2);
  memcpy(out + out_len + nl + 2, s, len);
  out[out_len + nl + 2 + len] = '\n';
  out_len += nl + 3 + len;
  if (out_len >= FLUSH_AT) flush(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  struct client *c = (struct client *)s;
  if (n < 0) {
    drop(c);
    return;
  }
  const char *p = b->base, *end = b->base + n;
  while (p < end && !uv_is_closing((uv_handle_t *)s)) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t take = (size_t)((nl ? nl : end) - p);
    if (c->len + take > MAX_LINE) {
      drop(c);
      break;
    }
    if (!nl) {
      memcpy(c->line + c->len, p, take);
      c->len += take;
      break;
    }
    if (c->len) {
      memcpy(c->line + c->len, p, take);
      on_line(c, c->line, c->len + take);
      c->len = 0;
    } else {
      on_line(c, p, take);
    }
    p = nl + 1;
  }
  flush(c);
}

static void on_connection(uv_stream_t *l, int status) {
  if (status < 0) return;
  struct client *c = calloc(1, sizeof *c);
  if (!c) return;
  if (uv_tcp_init(loop, &c->tcp) < 0) {
    free(c);
    return;
  }
  c->next = clients;
  if (clients) clients->prev = c;
  clients = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0 || uv_tcp_nodelay(&c->tcp, 1) < 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    drop(c);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, on_closed);
}

static void on_signal(uv_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
  uv_walk(loop, close_any, NULL);
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "bench-chat-uv: %s: %s\n", what, uv_strerror(rc));
    exit(1);
  }
}

int main(int argc, char **argv) {
  uint16_t port = bench_server_opts(argc, argv, NULL, NULL);
  bench_ignore_sigpipe();
  (void)bench_raise_nofile(65536);
  loop = uv_default_loop();
  struct sockaddr_in sa;
  check(uv_ip4_addr("127.0.0.1", port, &sa), "uv_ip4_addr");
  check(uv_tcp_init(loop, &listener), "uv_tcp_init");
  check(uv_tcp_bind(&listener, (const struct sockaddr *)&sa, 0), "bind");
  check(uv_listen((uv_stream_t *)&listener, SOMAXCONN, on_connection), "listen");
  int len = sizeof sa;
  check(uv_tcp_getsockname(&listener, (struct sockaddr *)&sa, &len), "getsockname");
  check(uv_signal_init(loop, &sig_term), "uv_signal_init");
  check(uv_signal_init(loop, &sig_int), "uv_signal_init");
  check(uv_signal_start(&sig_term, on_signal, SIGTERM), "uv_signal_start");
  check(uv_signal_start(&sig_int, on_signal, SIGINT), "uv_signal_start");
  bench_announce(ntohs(sa.sin_port));
  check(uv_run(loop, UV_RUN_DEFAULT), "uv_run");
  check(uv_loop_close(loop), "uv_loop_close");
  return 0;
}
