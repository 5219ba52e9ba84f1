/* bench/echo_client.c: evr-bench-echo, the echo load generator (on evr).
 *
 * Opens N connections to 127.0.0.1:PORT and keeps P messages of S bytes in
 * flight on each: every time a whole message has come back, one more is
 * sent. Each connection's byte stream is a window into one random table at a
 * per-connection phase, so every echoed byte is compared with what was sent
 * without keeping copies. Message i of a connection is bytes [i*S, (i+1)*S);
 * its round trip runs from the moment it was queued for sending to the read
 * that completes it, taken from a per-connection FIFO of send times and
 * recorded in a log-linear histogram (1.6% resolution, no allocation per
 * message). Only messages completed between the end of the warm-up and the
 * end of the run count.
 *
 * Output, one machine-readable line on stdout:
 *   RESULT msgs_per_s=... bytes_per_s=... p50_us=... p99_us=... ...
 *   errors=0
 * Exit status 1 if any byte differs, a connection fails or nothing was
 * echoed; 2 on bad options.
 *
 * --idle: one round trip per connection, then print "IDLE conns=N" and hold
 * the connections open until SIGTERM/SIGINT (or --duration, if given). For
 * measuring a server's memory per idle connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include "evr/evr.h"
#include "bench_util.h"

#define PRIME 65521u            /* pattern period, prime */
#define MAXIO (256u * 1024u)    /* largest single read or write */

/* ---- latency histogram: 64 linear sub-buckets per power of two ---- */
#define HSUB 64u
#define HBUCKETS (HSUB * 60u)

static uint64_t hist[HBUCKETS];

static unsigned hist_index(uint64_t v) {
  if (v < 2 * HSUB) return (unsigned)v;
  unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - 6; /* >= 1 */
  unsigned idx = HSUB * shift + (unsigned)(v >> shift);
  return idx < HBUCKETS ? idx : HBUCKETS - 1;
}

/* Midpoint of the values of bucket idx. */
static double hist_value(unsigned idx) {
  if (idx < 2 * HSUB) return idx;
  unsigned shift = idx / HSUB - 1;
  uint64_t lo = (uint64_t)(idx - HSUB * shift) << shift;
  return (double)lo + (double)((uint64_t)1 << shift) / 2.0;
}

/* The value below which a fraction q of the samples lies. */
static double hist_quantile(double q, uint64_t total) {
  if (total == 0) return 0;
  uint64_t rank = (uint64_t)(q * (double)total);
  if (rank >= total) rank = total - 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HBUCKETS; i++) {
    seen += hist[i];
    if (seen > rank) return hist_value(i);
  }
  return hist_value(HBUCKETS - 1);
}

/* ---- state ---- */

struct conn {
  evr_io_t io;
  uint32_t phase;      /* offset of byte 0 of the stream in the table */
  int writing;         /* EVR_WRITE interest is on */
  uint64_t queued;     /* bytes the stream should have sent so far */
  uint64_t sent;       /* bytes written */
  uint64_t recvd;      /* bytes received and verified */
  uint64_t *sent_at;   /* FIFO of send times of messages in flight */
  uint32_t head, count;
};

static struct {
  uint16_t port;
  uint32_t conns, size, pipeline;
  double duration, warmup;
  int idle;
} opt = {0, 1, 64, 1, 5.0, -1.0, 0};

static evr_loop_t *loop;
static struct conn *conns;
static uint64_t *sent_at_all;
static unsigned char *table;     /* PRIME + MAXIO bytes */
static unsigned char *rbuf;
static int measuring, running = 1;
static uint64_t t_start, t_end;
static uint64_t msgs_window, msgs_total, errors, open_conns, idle_done;
static evr_timer_t warm_timer, end_timer;
static evr_signal_t sig_term, sig_int;

static void stop_all(void) {
  running = 0;
  evr_loop_stop(loop);
}

static void conn_fail(struct conn *c, const char *what, int err) {
  if (!running) return;
  fprintf(stderr, "evr-bench-echo: connection %td: %s%s%s\n", c - conns, what,
          err ? ": " : "", err ? strerror(err) : "");
  errors++;
  int fd = evr_io_fd(&c->io);
  (void)evr_close(&c->io.base, NULL);
  (void)close(fd);
  if (--open_conns == 0) stop_all();
}

static void flush(struct conn *c) {
  while (c->sent < c->queued) {
    uint64_t len = c->queued - c->sent;
    if (len > MAXIO) len = MAXIO;
    const unsigned char *p = table + (c->phase + c->sent) % PRIME;
    ssize_t w = write(evr_io_fd(&c->io), p, (size_t)len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        conn_fail(c, "write", errno);
        return;
      }
      if (!c->writing) {
        c->writing = 1;
        (void)evr_io_set(&c->io, EVR_READ | EVR_WRITE);
      }
      return;
    }
    c->sent += (uint64_t)w;
  }
  if (c->writing) {
    c->writing = 0;
    (void)evr_io_set(&c->io, EVR_READ);
  }
}

static void queue_msgs(struct conn *c, uint64_t k, uint64_t now) {
  for (uint64_t i = 0; i < k; i++) {
    c->sent_at[(c->head + c->count) % opt.pipeline] = now;
    c->count++;
  }
  c->queued += k * opt.size;
}

static void on_read(struct conn *c) {
  ssize_t n = read(evr_io_fd(&c->io), rbuf, MAXIO);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    conn_fail(c, n == 0 ? "closed by the server" : "read", n == 0 ? 0 : errno);
    return;
  }
  if (c->recvd + (uint64_t)n > c->sent) {
    conn_fail(c, "more bytes echoed than sent", 0);
    return;
  }
  if (memcmp(rbuf, table + (c->phase + c->recvd) % PRIME, (size_t)n) != 0) {
    uint64_t at = 0;
    while (rbuf[at] == table[(c->phase + c->recvd + at) % PRIME]) at++;
    fprintf(stderr, "evr-bench-echo: connection %td: byte %" PRIu64
            " differs\n", c - conns, c->recvd + at);
    conn_fail(c, "echoed data differs", 0);
    return;
  }
  uint64_t before = c->recvd / opt.size;
  c->recvd += (uint64_t)n;
  uint64_t done = c->recvd / opt.size - before;
  if (done == 0) return;
  uint64_t now = bench_now_ns();
  for (uint64_t i = 0; i < done; i++) {
    uint64_t t = c->sent_at[c->head];
    c->head = (c->head + 1) % opt.pipeline;
    c->count--;
    if (measuring) hist[hist_index((now - t) / 10)]++; /* 10 ns units */
  }
  msgs_total += done;
  if (measuring) msgs_window += done;
  if (opt.idle) {
    if (++idle_done == opt.conns) {
      printf("IDLE conns=%" PRIu32 "\n", opt.conns);
      fflush(stdout);
    }
    return;
  }
  if (running) {
    queue_msgs(c, done, now);
    flush(c);
  }
}

static void conn_cb(evr_io_t *io, unsigned events) {
  struct conn *c = BENCH_CONTAINER_OF(io, struct conn, io);
  if (events & EVR_WRITE) {
    flush(c);
    if (evr_is_closing(&io->base)) return;
  }
  if (events & (EVR_READ | EVR_ERR | EVR_HUP)) on_read(c);
}

static void on_warm(evr_timer_t *t) {
  (void)t;
  measuring = 1;
  msgs_window = 0;
  memset(hist, 0, sizeof hist);
  t_start = bench_now_ns();
}

static void on_end(evr_timer_t *t) {
  (void)t;
  t_end = bench_now_ns();
  measuring = 0;
  stop_all();
}

static void on_signal(evr_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (!t_end) t_end = bench_now_ns();
  measuring = 0;
  stop_all();
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "evr-bench-echo: %s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

static void usage(const char *prog, int status) {
  fprintf(status ? stderr : stdout,
          "usage: %s --port P [--conns N] [--size S] [--pipeline P]\n"
          "       [--duration SECONDS] [--warmup SECONDS] [--idle]\n"
          "Echo load: N connections to 127.0.0.1:P, P messages of S bytes in\n"
          "flight on each, every echoed byte verified. Defaults: 1 conn, 64\n"
          "bytes, pipeline 1, 5 s, warm-up min(1 s, duration/5).\n",
          prog);
  exit(status);
}

static void parse(int argc, char **argv) {
  int have_port = 0, have_duration = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--port") == 0) {
      opt.port = (uint16_t)bench_parse_u64(a, bench_optval(argc, argv, &i), 1,
                                           65535);
      have_port = 1;
    } else if (strcmp(a, "--conns") == 0) {
      opt.conns = (uint32_t)bench_parse_u64(a, bench_optval(argc, argv, &i), 1,
                                            1000000);
    } else if (strcmp(a, "--size") == 0) {
      opt.size = (uint32_t)bench_parse_u64(a, bench_optval(argc, argv, &i), 1,
                                           16u << 20);
    } else if (strcmp(a, "--pipeline") == 0) {
      opt.pipeline = (uint32_t)bench_parse_u64(
          a, bench_optval(argc, argv, &i), 1, 65536);
    } else if (strcmp(a, "--duration") == 0) {
      opt.duration = bench_parse_double(a, bench_optval(argc, argv, &i));
      have_duration = 1;
    } else if (strcmp(a, "--warmup") == 0) {
      opt.warmup = bench_parse_double(a, bench_optval(argc, argv, &i));
    } else if (strcmp(a, "--idle") == 0) {
      opt.idle = 1;
    } else {
      usage(argv[0], strcmp(a, "--help") == 0 ? 0 : 2);
    }
  }
  if (!have_port) usage(argv[0], 2);
  if (opt.idle) {
    opt.pipeline = 1;
    if (!have_duration) opt.duration = 0; /* until a signal */
  }
  if (opt.warmup < 0) {
    opt.warmup = opt.duration / 5;
    if (opt.warmup > 1) opt.warmup = 1;
  }
  if (!opt.idle && opt.warmup >= opt.duration) {
    fprintf(stderr, "--warmup must be shorter than --duration\n");
    exit(2);
  }
}

static int connect_one(void) {
  int fd = bench_socket(AF_INET, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(opt.port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (errno == EINTR) continue;
    int e = errno;
    (void)close(fd);
    errno = e;
    return -1;
  }
  bench_nodelay(fd);
  if (bench_nonblock(fd) < 0) {
    (void)close(fd);
    return -1;
  }
  return fd;
}

int main(int argc, char **argv) {
  parse(argc, argv);
  bench_ignore_sigpipe();
  uint64_t lim = bench_raise_nofile((uint64_t)opt.conns + 64);
  if (lim < (uint64_t)opt.conns + 16) {
    fprintf(stderr, "evr-bench-echo: %" PRIu32 " connections need more "
            "descriptors than RLIMIT_NOFILE allows (%" PRIu64 ")\n",
            opt.conns, lim);
    return 2;
  }

  table = malloc(PRIME + MAXIO);
  rbuf = malloc(MAXIO);
  conns = calloc(opt.conns, sizeof *conns);
  sent_at_all = calloc((size_t)opt.conns * opt.pipeline, sizeof *sent_at_all);
  if (!table || !rbuf || !conns || !sent_at_all) {
    fprintf(stderr, "evr-bench-echo: out of memory\n");
    return 1;
  }
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (size_t i = 0; i < PRIME; i++) { /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    table[i] = (unsigned char)(x >> 32);
  }
  for (size_t i = 0; i < MAXIO; i++) table[PRIME + i] = table[i % PRIME];

  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  for (uint32_t i = 0; i < opt.conns; i++) {
    struct conn *c = &conns[i];
    int fd = connect_one();
    if (fd < 0) {
      fprintf(stderr, "evr-bench-echo: connect 127.0.0.1:%u (connection "
              "%" PRIu32 "): %s\n", opt.port, i, strerror(errno));
      return 1;
    }
    c->phase = (uint32_t)(((uint64_t)i * 7919u) % PRIME);
    c->sent_at = sent_at_all + (size_t)i * opt.pipeline;
    check(evr_io_init(loop, &c->io, fd), "evr_io_init");
    check(evr_io_start(&c->io, EVR_READ, conn_cb), "evr_io_start");
    open_conns++;
  }

  check(evr_signal_init(loop, &sig_term), "evr_signal_init");
  check(evr_signal_init(loop, &sig_int), "evr_signal_init");
  check(evr_signal_start(&sig_term, SIGTERM, on_signal), "evr_signal_start");
  check(evr_signal_start(&sig_int, SIGINT, on_signal), "evr_signal_start");
  check(evr_timer_init(loop, &warm_timer), "evr_timer_init");
  check(evr_timer_init(loop, &end_timer), "evr_timer_init");
  if (opt.idle) {
    measuring = 1;
    t_start = bench_now_ns();
  } else {
    check(evr_timer_start(&warm_timer, on_warm,
                          (uint64_t)(opt.warmup * 1000 + 0.5), 0),
          "evr_timer_start");
  }
  if (opt.duration > 0)
    check(evr_timer_start(&end_timer, on_end,
                          (uint64_t)(opt.duration * 1000 + 0.5), 0),
          "evr_timer_start");

  uint64_t now = bench_now_ns();
  for (uint32_t i = 0; i < opt.conns; i++) {
    queue_msgs(&conns[i], opt.pipeline, now);
    flush(&conns[i]);
  }
  int rc = evr_loop_run(loop, EVR_RUN_DEFAULT);
  check(rc, "evr_loop_run");
  if (!t_end) t_end = bench_now_ns();
  if (!measuring && t_start == 0) t_start = t_end; /* stopped during warm-up */

  double secs = (double)(t_end - t_start) / 1e9;
  double rate = secs > 0 ? (double)msgs_window / secs : 0;
  printf("RESULT msgs_per_s=%.0f bytes_per_s=%.0f p50_us=%.2f p99_us=%.2f "
         "p999_us=%.2f msgs=%" PRIu64 " msgs_total=%" PRIu64
         " conns=%" PRIu32 " size=%" PRIu32 " pipeline=%" PRIu32
         " seconds=%.3f errors=%" PRIu64 "\n",
         rate, rate * opt.size, hist_quantile(0.50, msgs_window) / 100.0,
         hist_quantile(0.99, msgs_window) / 100.0,
         hist_quantile(0.999, msgs_window) / 100.0, msgs_window, msgs_total,
         opt.conns, opt.size, opt.pipeline, secs, errors);
  fflush(stdout);

  /* Tear down: every handle closed, the loop freed. */
  for (uint32_t i = 0; i < opt.conns; i++) {
    if (!evr_is_closing(&conns[i].io.base)) {
      int fd = evr_io_fd(&conns[i].io);
      (void)evr_close(&conns[i].io.base, NULL);
      (void)close(fd);
    }
  }
  (void)evr_timer_stop(&warm_timer);
  (void)evr_timer_stop(&end_timer);
  (void)evr_close(&sig_term.base, NULL);
  (void)evr_close(&sig_int.base, NULL);
  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");
  check(evr_loop_free(loop), "evr_loop_free");
  free(table);
  free(rbuf);
  free(conns);
  free(sent_at_all);
  return errors || msgs_total == 0 ? 1 : 0;
}
