/* bench/chat_client.c: evr-bench-chat, the fan-out load generator for the
 * chat servers (examples/chat.c on evr, bench/chat_uv.c, bench/chat_ev.c).
 *
 * Joins N receivers (nicks r0, r1, ...) and one sender (nick s), each
 * waiting for its "* welcome" line, then the sender sends lines of S bytes
 * ("%08u " and filler) that the server relays to every receiver as
 * "s: <line>". At most W lines (--window, default 256:
 * deep enough that the figure measures the server more than the round trip
 * between the two processes) are in flight: a line is complete when every
 * receiver has it, and the sender refills the window when half of it is
 * complete, so the server sees batches of lines, as a busy room would give
 * it. Every receiver checks that each S + 3 byte line ends where it should.
 * Counted: lines delivered (one per receiver per line) between the end of
 * the warm-up and the end of the run.
 *
 * Output, one machine-readable line on stdout:
 *   RESULT msgs_per_s=... lines_per_s=... clients=N errors=0
 * Exit status 1 on a connection failure, a malformed stream or nothing
 * delivered; 2 on bad options.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include "evr/evr.h"
#include "bench_util.h"

#define RBUF (256u * 1024u)

static struct {
  uint16_t port;
  uint32_t clients, size, window;
  double duration, warmup;
} opt = {0, 100, 64, 256, 3.0, 0.5};

struct rcv {
  evr_io_t io;
  uint64_t bytes;               /* received since the start */
};

static evr_loop_t *loop;
static struct rcv *rcvs;
static evr_io_t sender;
static char *rbuf, *sbuf;
static size_t s_off, s_len;     /* sbuf[s_off..s_len) not yet written */
static uint32_t *ring;          /* per in-flight line: receivers that have it */
static uint64_t sent, complete, delivered, delivered_warm, errors;
static int sender_blocked;
static evr_timer_t warm_timer, end_timer;

static void fail(const char *what) {
  fprintf(stderr, "evr-bench-chat: %s\n", what);
  errors++;
  evr_loop_stop(loop);
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "evr-bench-chat: %s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

/* Write what is pending; refill the window when half of it is free. */
static void pump(void) {
  for (;;) {
    if (s_off == s_len) {
      if (sent - complete > opt.window / 2) break;
      s_off = s_len = 0;
      while (sent - complete < opt.window) {
        char *l = sbuf + s_len;
        int n = snprintf(l, 10, "%08" PRIu32 " ", (uint32_t)sent);
        memset(l + n, 'x', opt.size - 1 - (size_t)n);
        l[opt.size - 1] = '\n';
        s_len += opt.size;
        sent++;
      }
    }
    ssize_t n = write(evr_io_fd(&sender), sbuf + s_off, s_len - s_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!sender_blocked) check(evr_io_set(&sender, EVR_READ | EVR_WRITE), "evr_io_set");
        sender_blocked = 1;
        return;
      }
      fail("sender: write failed");
      return;
    }
    s_off += (size_t)n;
  }
  if (sender_blocked) check(evr_io_set(&sender, EVR_READ), "evr_io_set");
  sender_blocked = 0;
}

static void on_sender(evr_io_t *io, unsigned events) {
  if (events & EVR_READ) {
    char b[256];
    ssize_t n = read(evr_io_fd(io), b, sizeof b);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      fail("sender: the server closed the connection");
      return;
    }
  }
  if (events & EVR_WRITE) pump();
}

static void on_rcv(evr_io_t *io, unsigned events) {
  (void)events;
  struct rcv *r = (struct rcv *)io;
  ssize_t n = read(evr_io_fd(io), rbuf, RBUF);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    fail("receiver: the server closed the connection");
    return;
  }
  uint64_t L = opt.size + 3; /* "s: " + line */
  uint64_t first_end = (r->bytes / L) * L + L - 1; /* offset of the next '\n' */
  for (uint64_t at = first_end; at < r->bytes + (uint64_t)n; at += L) {
    if (rbuf[at - r->bytes] != '\n') {
      fail("receiver: a line of the wrong length");
      return;
    }
    uint64_t line = at / L;
    if (++ring[line % opt.window] == opt.clients) {
      /* lines complete in order: every receiver gets them in order */
      while (complete < sent && ring[complete % opt.window] == opt.clients) {
        ring[complete % opt.window] = 0;
        complete++;
      }
    }
    delivered++;
  }
  r->bytes += (uint64_t)n;
  if (!sender_blocked) pump();
}

static void on_warm(evr_timer_t *t) {
  (void)t;
  delivered_warm = delivered;
}

static void on_end(evr_timer_t *t) {
  (void)t;
  evr_loop_stop(loop);
}

static void usage(void) {
  fprintf(stderr, "usage: evr-bench-chat --port P [--clients N] [--size BYTES] "
                  "[--window LINES] [--duration S] [--warmup S]\n");
  exit(2);
}

/* Connect, send the nick, read the welcome line (blocking), then make the
 * socket non-blocking. */
static int join(const char *nick) {
  int fd = bench_socket(AF_INET, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(opt.port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    if (errno != EINTR) goto fail;
  bench_nodelay(fd);
  struct timeval tv = {10, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) goto fail;
  char line[64];
  int len = snprintf(line, sizeof line, "%s\n", nick);
  if (write(fd, line, (size_t)len) != len) goto fail;
  size_t got = 0;
  while (got == 0 || line[got - 1] != '\n') { /* the welcome is short: one line */
    ssize_t n = read(fd, line + got, 1);
    if (n <= 0 || ++got == sizeof line) goto fail;
  }
  if (strncmp(line, "* welcome ", 10) != 0) goto fail;
  if (bench_nonblock(fd) < 0) goto fail;
  return fd;
fail:
  (void)close(fd);
  return -1;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--port")) opt.port = (uint16_t)bench_parse_u64(a, bench_optval(argc, argv, &i), 1, 65535);
    else if (!strcmp(a, "--clients")) opt.clients = (uint32_t)bench_parse_u64(a, bench_optval(argc, argv, &i), 1, 100000);
    else if (!strcmp(a, "--size")) opt.size = (uint32_t)bench_parse_u64(a, bench_optval(argc, argv, &i), 16, 1000);
    else if (!strcmp(a, "--window")) opt.window = (uint32_t)bench_parse_u64(a, bench_optval(argc, argv, &i), 2, 4096);
    else if (!strcmp(a, "--duration")) opt.duration = bench_parse_double(a, bench_optval(argc, argv, &i));
    else if (!strcmp(a, "--warmup")) opt.warmup = bench_parse_double(a, bench_optval(argc, argv, &i));
    else usage();
  }
  if (!opt.port || opt.duration <= 0) usage();
  bench_ignore_sigpipe();
  uint64_t lim = bench_raise_nofile((uint64_t)opt.clients + 64);
  if (lim < (uint64_t)opt.clients + 16) {
    fprintf(stderr, "evr-bench-chat: %" PRIu32 " clients need more descriptors "
            "than RLIMIT_NOFILE allows (%" PRIu64 ")\n", opt.clients, lim);
    return 2;
  }
  rbuf = malloc(RBUF);
  sbuf = malloc((size_t)opt.window * opt.size);
  ring = calloc(opt.window, sizeof *ring);
  rcvs = calloc(opt.clients, sizeof *rcvs);
  if (!rbuf || !sbuf || !ring || !rcvs) {
    fprintf(stderr, "evr-bench-chat: out of memory\n");
    return 1;
  }
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  for (uint32_t i = 0; i < opt.clients; i++) {
    char nick[16];
    snprintf(nick, sizeof nick, "r%" PRIu32, i);
    int fd = join(nick);
    if (fd < 0) {
      fprintf(stderr, "evr-bench-chat: receiver %" PRIu32 " could not join: %s\n", i, strerror(errno));
      return 1;
    }
    check(evr_io_init(loop, &rcvs[i].io, fd), "evr_io_init");
    check(evr_io_start(&rcvs[i].io, EVR_READ, on_rcv), "evr_io_start");
  }
  int fd = join("s");
  if (fd < 0) {
    fprintf(stderr, "evr-bench-chat: the sender could not join: %s\n", strerror(errno));
    return 1;
  }
  check(evr_io_init(loop, &sender, fd), "evr_io_init");
  check(evr_io_start(&sender, EVR_READ, on_sender), "evr_io_start");
  check(evr_timer_init(loop, &warm_timer), "evr_timer_init");
  check(evr_timer_init(loop, &end_timer), "evr_timer_init");
  check(evr_timer_start(&warm_timer, on_warm, (uint64_t)(opt.warmup * 1000), 0), "evr_timer_start");
  check(evr_timer_start(&end_timer, on_end, (uint64_t)((opt.warmup + opt.duration) * 1000), 0),
        "evr_timer_start");
  pump();
  int rc = evr_loop_run(loop, EVR_RUN_DEFAULT);
  check(rc, "evr_loop_run");
  uint64_t n = delivered - delivered_warm;
  printf("RESULT msgs_per_s=%.0f lines_per_s=%.0f clients=%" PRIu32 " size=%" PRIu32
         " window=%" PRIu32 " errors=%" PRIu64 "\n",
         (double)n / opt.duration, (double)n / opt.duration / opt.clients, opt.clients,
         opt.size, opt.window, errors);
  fflush(stdout);
  /* The process ends here: the kernel closes the sockets. */
  return errors || n == 0 ? 1 : 0;
}
