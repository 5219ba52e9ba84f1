/* examples/signals.c: a graceful stop on SIGTERM or SIGINT.
 *
 * A small server greets each client with "hello" and keeps the connection
 * open. On SIGTERM or SIGINT (Ctrl-C) it stops accepting, says "bye" to
 * every client and ends each connection once that is sent; connections
 * still open after a drain timeout are reset. When the last handle is
 * closed, nothing keeps the loop alive: evr_loop_run() returns and the
 * program frees the loop and exits 0.
 *
 * evr_signal_t turns a signal into a callback on the loop thread, where
 * everything may be done -- unlike a signal handler, which may call almost
 * nothing. A second signal during the drain is ignored here (a daemon might
 * take it as "stop now").
 *
 *   signals [ADDRESS]        (default 127.0.0.1:0: any free port)
 */
#include <evr/evr.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DRAIN_TIMEOUT_MS 5000

struct client {
  evr_stream_t stream;            /* first member: the stream is the client */
  struct client *prev, *next;     /* the list of open clients */
};

static evr_listener_t listener;
static evr_signal_t sig_term, sig_int;
static evr_timer_t drain_timer;
static struct client *clients;
static int open_clients, draining;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

static void on_client_closed(evr_handle_t *h) {
  struct client *c = (struct client *)h;
  if (c->prev) c->prev->next = c->next; else clients = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
  if (--open_clients == 0 && draining) {
    puts("all connections closed: bye");
    check(evr_timer_stop(&drain_timer), "evr_timer_stop");
  }
}

static void on_read(evr_stream_t *s, ssize_t n, const char *buf) {
  (void)buf;
  if (n > 0) return;                       /* this server ignores input */
  if (n == EVR_EOF) evr_stream_end(s, on_client_closed);
  else evr_close(&s->base, on_client_closed);
}

static void on_accept(evr_listener_t *l, int fd) {
  if (fd < 0) {
    fprintf(stderr, "accept: %s\n", evr_strerror(fd));
    return;
  }
  struct client *c = calloc(1, sizeof *c);
  if (!c || evr_stream_init(l->base.loop, &c->stream) < 0) {
    free(c);
    close(fd);
    return;
  }
  /* An initialised stream is a handle of the loop: from here on it is
   * released by closing it, never by free() alone. */
  c->next = clients;
  if (clients) clients->prev = c;
  clients = c;
  open_clients++;
  int rc = evr_stream_open(&c->stream, fd);
  if (rc < 0) {
    close(fd); /* refused: the descriptor is still ours */
    evr_close(&c->stream.base, on_client_closed);
    return;
  }
  if ((rc = evr_stream_read_start(&c->stream, on_read)) < 0 ||
      (rc = evr_stream_write_copy(&c->stream, "hello\n", 6)) < 0) {
    evr_close(&c->stream.base, on_client_closed);
    return;
  }
  puts("client connected");
  fflush(stdout);
}

static void on_drain_timeout(evr_timer_t *t) {
  (void)t;
  printf("drain timeout: resetting %d connection(s)\n", open_clients);
  for (struct client *c = clients; c; c = c->next)
    if (!evr_is_closing(&c->stream.base)) evr_stream_abort(&c->stream, on_client_closed);
}

static void on_signal(evr_signal_t *sig, int signum) {
  (void)sig;
  if (draining) return;
  draining = 1;
  printf("%s: draining %d connection(s)\n", signum == SIGTERM ? "SIGTERM" : "SIGINT", open_clients);
  fflush(stdout);
  /* Closing the signal handles restores the default dispositions. */
  check(evr_close(&sig_term.base, NULL), "evr_close");
  check(evr_close(&sig_int.base, NULL), "evr_close");
  check(evr_close(&listener.base, NULL), "evr_close");
  if (open_clients == 0) {
    puts("all connections closed: bye");
    return;
  }
  for (struct client *c = clients; c; c = c->next) {
    if (evr_is_closing(&c->stream.base)) continue;
    /* "bye", then FIN once it is sent, then close. */
    if (evr_stream_write_copy(&c->stream, "bye\n", 4) < 0)
      evr_close(&c->stream.base, on_client_closed);
    else
      evr_stream_end(&c->stream, on_client_closed);
  }
  check(evr_timer_start(&drain_timer, on_drain_timeout, DRAIN_TIMEOUT_MS, 0), "evr_timer_start");
}

int main(int argc, char **argv) {
  evr_loop_t *loop;
  evr_addr_t addr;
  char text[EVR_ADDR_STRLEN];
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  check(evr_addr_parse(&addr, argc > 1 ? argv[1] : "127.0.0.1:0"), "address");
  check(evr_listener_init(loop, &listener), "evr_listener_init");
  check(evr_listen(&listener, &addr, NULL, on_accept), "listen");
  check(evr_listener_sockname(&listener, &addr), "sockname");
  check(evr_addr_format(&addr, text, sizeof text), "evr_addr_format");
  check(evr_signal_init(loop, &sig_term), "evr_signal_init");
  check(evr_signal_init(loop, &sig_int), "evr_signal_init");
  check(evr_signal_start(&sig_term, SIGTERM, on_signal), "evr_signal_start");
  check(evr_signal_start(&sig_int, SIGINT, on_signal), "evr_signal_start");
  check(evr_timer_init(loop, &drain_timer), "evr_timer_init");
  printf("listening %s\n", text);
  fflush(stdout); /* a pipe is fully buffered: the test waits for this line */

  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");
  check(evr_loop_free(loop), "evr_loop_free");
  return 0;
}
