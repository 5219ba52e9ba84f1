/* bench/chat_ev.c: bench-chat-ev, the chat server of examples/chat.c on
 * libev, for the fan-out benchmark (bench/run.sh --only chat).
 *
 * The same protocol and policy as the evr example and bench/chat_uv.c (see
 * there). libev has watchers only, so each client keeps its own write
 * queue: one growable buffer, written with write() at once when it is
 * empty, else appended to and flushed when the socket is writable; a
 * client whose queue passes 256 KiB is dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bench_util.h"

#define MAX_LINE 1024
#define MAX_NICK 31
#define HIGH_MARK (256u << 10)
#define FLUSH_AT (16u << 10)

struct client {
  ev_io io;                      /* first member */
  struct client *prev, *next;
  int joined, dead;
  char nick[MAX_NICK + 1];
  size_t len;
  char line[MAX_LINE];
  char *q;                       /* write queue: q[qoff..qlen) unsent */
  size_t qoff, qlen, qcap;
};

static struct ev_loop *loop;
static struct client *clients;
static char rbuf[64 * 1024];
static char out[FLUSH_AT + MAX_LINE + MAX_NICK + 3];
static size_t out_len;

static void client_free(struct client *c) {
  ev_io_stop(loop, &c->io);
  (void)close(c->io.fd);
  if (c->prev) c->prev->next = c->next; else clients = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c->q);
  free(c);
}

/* Dropped clients are freed after the current broadcast (a broadcast walks
 * the list): marked dead here, freed by reap(). */
static int dead_pending;
static void drop(struct client *c) {
  if (c->dead) return;
  c->dead = 1;
  ev_io_stop(loop, &c->io);
  dead_pending = 1;
}

static void reap(void) {
  if (!dead_pending) return;
  dead_pending = 0;
  for (struct client *c = clients, *n; c; c = n) {
    n = c->next;
    if (c->dead) client_free(c);
  }
}

static void set_events(struct client *c, int events) {
  if (c->dead || c->io.events == events) return;
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, events);
  ev_io_start(loop, &c->io);
}

static void send_to(struct client *c, const char *data, size_t len) {
  if (c->dead) return;
  size_t done = 0;
  if (c->qlen == c->qoff) {
    ssize_t n = write(c->io.fd, data, len);
    if (n >= 0) done = (size_t)n;
    else if (errno != EAGAIN && errno != EINTR) {
      drop(c);
      return;
    }
  }
  if (done == len) return;
  size_t rest = len - done;
  if (c->qoff && c->qoff == c->qlen) c->qoff = c->qlen = 0;
  if (c->qlen + rest > c->qcap) {
    if (c->qoff) { /* compact first */
      memmove(c->q, c->q + c->qoff, c->qlen - c->qoff);
      c->qlen -= c->qoff;
      c->qoff = 0;
    }
    if (c->qlen + rest > c->qcap) {
      size_t cap = c->qcap ? c->qcap : 4096;
      while (cap < c->qlen + rest) cap *= 2;
      char *q = realloc(c->q, cap);
      if (!q) {
        drop(c);
        return;
      }
      c->q = q;
      c->qcap = cap;
    }
  }
  memcpy(c->q + c->qlen, data + done, rest);
  c->qlen += rest;
  if (c->qlen - c->qoff > HIGH_MARK) {
    drop(c);
    return;
  }
  set_events(c, EV_READ | EV_WRITE);
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

static void on_readable(struct client *c) {
  ssize_t n = read(c->io.fd, rbuf, sizeof rbuf);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    drop(c);
    return;
  }
  const char *p = rbuf, *end = rbuf + n;
  while (p < end && !c->dead) {
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

static void on_writable(struct client *c) {
  ssize_t n = write(c->io.fd, c->q + c->qoff, c->qlen - c->qoff);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) drop(c);
    return;
  }
  c->qoff += (size_t)n;
  if (c->qoff == c->qlen) {
    c->qoff = c->qlen = 0;
    set_events(c, EV_READ);
  }
}

static void conn_cb(struct ev_loop *l, ev_io *w, int revents) {
  (void)l;
  struct client *c = (struct client *)w;
  if (revents & EV_WRITE) on_writable(c);
  if ((revents & EV_READ) && !c->dead) on_readable(c);
  reap();
}

static void accept_cb(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  for (;;) {
    int fd = bench_accept(w->fd);
    if (fd < 0) return;
    bench_nodelay(fd);
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
      (void)close(fd);
      continue;
    }
    c->next = clients;
    if (clients) clients->prev = c;
    clients = c;
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
    fprintf(stderr, "bench-chat-ev: no usable libev backend\n");
    return 1;
  }
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

  while (clients) client_free(clients);
  ev_io_stop(loop, &listener);
  (void)close(lfd);
  ev_signal_stop(loop, &sig_term);
  ev_signal_stop(loop, &sig_int);
  ev_loop_destroy(loop);
  return 0;
}
