/* examples/chat.c: a line-based chat server, one room.
 *
 *   chat [ADDRESS]           (default 127.0.0.1:0: any free port)
 *
 * A client's first line is its nick (1 to 31 letters, digits, '-' or '_');
 * the server answers "* welcome NICK". Every later line is sent to every
 * other client as "NICK: line". Logs go to stderr; SIGTERM or SIGINT stops
 * the server.
 *
 * The point is what happens when one client is slow. Each client has its
 * own write queue (its evr_stream_t's), so a client that reads slowly never
 * delays the others: their messages go straight to their sockets. But its
 * own queue grows with everything said in the room. Two answers exist:
 *   - pause reading from the *senders* while some queue is full: that is
 *     the relay's answer (evr-proxy), but here one slow reader would then
 *     stall the whole room;
 *   - drop the slow client: its queue is bounded by a high water mark
 *     (HIGH_MARK); when a write takes it above the mark, evr reports it
 *     (on_water(s, 1), from inside that write) and the server resets the
 *     connection, logging why.
 * This server drops. Memory per client is thus at most the high mark plus
 * one write, whatever the clients do; the server prints the largest queue
 * it saw when it stops.
 */
#include <evr/evr.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINE 1024              /* longer lines: the client is dropped */
#define MAX_NICK 31
#define HIGH_MARK (256u << 10)     /* queued bytes above which a client is dropped */
#define FLUSH_AT (16u << 10)       /* broadcast in writes of about this size */

struct client {
  evr_stream_t stream;             /* first member: the stream is the client */
  struct client *prev, *next;      /* every open client */
  int joined;                      /* has sent its nick */
  char nick[MAX_NICK + 1];
  size_t len;                      /* bytes of an unfinished line in `line` */
  char line[MAX_LINE];
};

static evr_listener_t listener;
static evr_signal_t sig_term, sig_int;
static struct client *clients;
static size_t max_queued, max_write;
static char out[FLUSH_AT + MAX_LINE + MAX_NICK + 3]; /* lines waiting for broadcast */
static size_t out_len;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

static const char *name(const struct client *c) { return c->joined ? c->nick : "(no nick)"; }

static void on_closed(evr_handle_t *h) {
  struct client *c = (struct client *)h;
  if (c->prev) c->prev->next = c->next; else clients = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
}

/* Drop a client now (RST): its queued bytes are freed with it. */
static void drop(struct client *c, const char *why) {
  fprintf(stderr, "dropping %s: %s\n", name(c), why);
  evr_stream_abort(&c->stream, on_closed);
}

/* Queue bytes for one client. A write that takes the queue above the high
 * mark calls on_water() before it returns, which drops the client. */
static void send_to(struct client *c, const char *data, size_t len) {
  if (evr_is_closing(&c->stream.base)) return;
  int rc = evr_stream_write_copy(&c->stream, data, len);
  if (rc < 0) {
    drop(c, evr_strerror(rc));
    return;
  }
  size_t q = evr_stream_write_queue_size(&c->stream);
  if (q > max_queued) max_queued = q;
  if (len > max_write) max_write = len;
}

static void on_water(evr_stream_t *s, int above) {
  if (!above) return;
  char why[96];
  snprintf(why, sizeof why, "more than %u bytes queued: it does not read fast enough", HIGH_MARK);
  drop((struct client *)s, why);
}

/* Send the collected lines of `from` to every other joined client. */
static void flush(struct client *from) {
  if (out_len == 0) return;
  /* The list stays intact while dropping: closed clients leave it in
   * their close callbacks, which run in the close phase, later. */
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

/* One complete line (without its newline) from c. */
static void on_line(struct client *c, const char *s, size_t len) {
  if (len > 0 && s[len - 1] == '\r') len--;
  if (!c->joined) {
    if (!valid_nick(s, len)) {
      drop(c, "bad nick");
      return;
    }
    memcpy(c->nick, s, len);
    c->nick[len] = '\0';
    c->joined = 1;
    fprintf(stderr, "%s joined\n", c->nick);
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

static void on_read(evr_stream_t *s, ssize_t n, const char *buf) {
  struct client *c = (struct client *)s;
  if (n < 0) {
    fprintf(stderr, "%s left (%s)\n", name(c), n == EVR_EOF ? "end of stream" : evr_strerror((int)n));
    evr_close(&s->base, on_closed);
    return;
  }
  /* buf holds any number of lines, the last one maybe unfinished: complete
   * lines are handled at once, the rest is kept for the next read. */
  const char *p = buf, *end = buf + n;
  while (p < end && !evr_is_closing(&s->base)) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t take = (size_t)((nl ? nl : end) - p);
    if (c->len + take > MAX_LINE) {
      drop(c, "line too long");
      break;
    }
    if (!nl) { /* keep the unfinished part */
      memcpy(c->line + c->len, p, take);
      c->len += take;
      break;
    }
    if (c->len) { /* the line began in an earlier read */
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

static void on_accept(evr_listener_t *l, int fd) {
  if (fd < 0) {
    fprintf(stderr, "accept: %s\n", evr_strerror(fd)); /* e.g. EMFILE: evr retries */
    return;
  }
  struct client *c = calloc(1, sizeof *c);
  if (!c || evr_stream_init(l->base.loop, &c->stream) < 0) {
    free(c);
    close(fd);
    return;
  }
  c->next = clients;
  if (clients) clients->prev = c;
  clients = c;
  int rc = evr_stream_open(&c->stream, fd);
  if (rc < 0) close(fd); /* refused: still ours */
  if (rc == 0) rc = evr_stream_set_water_marks(&c->stream, 0, HIGH_MARK, on_water);
  if (rc == 0) rc = evr_stream_nodelay(&c->stream, 1);
  if (rc == 0) rc = evr_stream_read_start(&c->stream, on_read);
  if (rc < 0) {
    fprintf(stderr, "new client: %s\n", evr_strerror(rc));
    evr_close(&c->stream.base, on_closed);
  }
}

static void on_signal(evr_signal_t *sig, int signum) {
  (void)sig;
  fprintf(stderr, "%s: stopping\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  evr_close(&sig_term.base, NULL);
  evr_close(&sig_int.base, NULL);
  evr_close(&listener.base, NULL);
  for (struct client *c = clients; c; c = c->next)
    if (!evr_is_closing(&c->stream.base)) evr_close(&c->stream.base, on_closed);
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
  printf("listening %s\n", text);
  fflush(stdout);

  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");
  check(evr_loop_free(loop), "evr_loop_free");
  printf("largest write queue: %zu bytes (high mark %u, largest write %zu)\n",
         max_queued, HIGH_MARK, max_write);
  return 0;
}
