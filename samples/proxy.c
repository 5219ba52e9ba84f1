/* samples/proxy.c: evr-proxy, a TCP proxy.
 *
 * Every accepted client is relayed to one upstream, bytes both ways,
 * exactly. Upstreams are chosen round-robin or by fewest active
 * connections; one that fails to connect is marked down for DOWN_MS and
 * the next one is tried. When every upstream is down, the one that went
 * down first is tried once, so the client is answered promptly and a
 * recovered upstream is noticed at once.
 *
 * Memory per connection is bounded: each direction holds at most
 * --buffer-size unsent bytes. Reads are capped at a chunk (half the buffer,
 * at most 64 KiB), reading from a side stops while the other side's queue
 * is above buffer-size minus one chunk, so one more read cannot pass the
 * limit.
 *
 * Half-close is relayed (a side's FIN is sent to the other after its queued
 * bytes), and so is reset (a side that aborts makes us abort the other).
 *
 * One loop per thread; --loop-balance says how clients reach the loops
 * (daemon.h): one SO_REUSEPORT listener per loop, or the first loop
 * accepting for all and handing clients out in turn.
 *
 * --accept-proxy: each client first sends a PROXY protocol header
 * (proxy_proto.h), read before an upstream is chosen; its addresses stand
 * for the client's in --send-proxy headers and in the logs.
 *
 * --tls-cert/--tls-key: clients speak TLS (evr/tls.h), terminated here;
 * with --accept-proxy the PROXY header comes first, in the clear, then the
 * ClientHello on the same connection. --upstream-tls: upstreams are spoken
 * to in TLS, their certificates verified. A TLS side is an evr_tls_t over
 * the side's stream (struct side); the relay is the same, through
 * side_write() and friends. Without EVR_TLS these options are refused.
 *
 * --access-log: each loop has its own writer (accesslog.h); a session
 * keeps its start time, its byte counts and the first cause of its end,
 * and writes its line when it is freed (session_unref()). SIGUSR1 makes
 * every writer reopen its file.
 *
 * --check-interval: one active checker (health.h) on the first loop checks
 * every upstream given by address; every loop's upstream choice reads its
 * states (health_is_up() is an atomic read). The checker stops once the
 * first loop drains and every other loop has finished (checks_maybe_stop(),
 * on the main thread, wakes the first loop), so no loop ever reads a
 * freed target.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "accesslog.h"
#include "daemon.h"
#include "reload.h"
#include "evr/evr.h"
#include "health.h"
#include "metrics_req.h"
#include "proxy_proto.h"
#include "srclimit.h"
#if EVR_PROXY_TLS
#include "evr/tls.h"
#else
#define EVR_PROXY_TLS 0
#endif

/* --splice needs Linux: splice(2), pipe2() and F_SETPIPE_SZ. Elsewhere,
 * and in a portable build, the option is refused (exit status 2). */
#if defined(__linux__) && !SAMPLES_PORTABLE
#define HAVE_SPLICE 1
#else
#define HAVE_SPLICE 0
#endif

/* Sockets of this process never raise SIGPIPE: it is ignored (serve()),
 * and MSG_NOSIGNAL says so once more where it exists. */
#if defined(MSG_NOSIGNAL) && !SAMPLES_PORTABLE
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0
#endif

#define PROXY_VERSION "1.0.0"
#define MAX_LISTEN 16
#define MAX_UPSTREAMS 64
#define DOWN_MS 5000
#define NBUCKETS 12
#define METRICS_MAX_CONNS 64  /* metrics connections held at once */
#define METRICS_IDLE_MS 10000 /* a metrics request must be complete by then */
#define MAX_CERTS 16          /* --tls-cert/--tls-key pairs */
/* --accept-proxy on a TLS listener: no read may go past the header (what
 * follows is the ClientHello, for the TLS layer). The first read takes at
 * most the shortest valid header ("PROXY UNKNOWN\r\n"), later ones what
 * pproto_parse() says the header still needs at least. */
#define PP_SHORTEST 15

/* ---- configuration ---- */

enum { BAL_ROUNDROBIN, BAL_LEASTCONN };
enum { PP_NONE, PP_V1, PP_V2 };

struct upstream {
  const char *text;        /* as given */
  char *label;             /* text escaped for a /metrics label value */
  int numeric;             /* addr is valid; else host/port are resolved */
  evr_addr_t addr;
  char host[256];
  uint16_t port;
  /* shared by every loop of the process: atomics */
  atomic_ullong down_until; /* evr_hrtime() ms; 0 = up */
  atomic_ullong active, total, failures, bytes_up, bytes_down;
  atomic_ullong latency_us_sum, latency_count;
  atomic_ullong latency_bucket[NBUCKETS];
  atomic_ullong tls_handshakes, tls_failures; /* --upstream-tls */
  atomic_ullong tls_resumed;                  /* of tls_handshakes */
  /* --upstream-tls: the name its certificate is checked against, also
   * sent as SNI when it is not an IP address; "" checks the chain only */
  char tls_name[256];
  /* --check-interval: the upstream's target in the checker (NULL: not
   * checked: a host name); its counters as they were when the checker
   * stopped (read by /metrics afterwards) */
  health_target_t *target;
  health_stats_t hstats;
};

static const double bucket_le[NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                            0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

struct config {
  const char *listen[MAX_LISTEN];
  evr_addr_t addrs[MAX_LISTEN];
  int nlisten;
  struct upstream up[MAX_UPSTREAMS];
  int nup;
  int balance;
  uint64_t connect_timeout_ms;
  uint64_t idle_timeout_s;
  uint64_t max_conns;
  uint32_t max_conns_per_source; /* 0: no limit */
  uint32_t rate_per_source;      /* new clients per second per source; 0: no limit */
  uint32_t source_table_size;    /* sources remembered (power of two) */
  uint64_t buffer_size;
  int send_proxy;
  int accept_proxy;                 /* --accept-proxy */
  uint64_t accept_proxy_timeout_ms; /* the header must be complete by then */
  const char *metrics;
  evr_addr_t metrics_addr;
  int threads;
  int loop_balance; /* BALANCE_KERNEL or BALANCE_ACCEPT */
  int splice;
  const char *backend;
  uint64_t drain_timeout_s;
  /* sockets passed by socket activation (daemon.h), or -1 */
  int fds[MAX_LISTEN];
  int metrics_fd;
  /* TLS: --tls-cert/--tls-key pairs (the first is the default), the
   * handshake bound, and --upstream-tls with its CA file and name */
  const char *tls_cert[MAX_CERTS], *tls_key[MAX_CERTS];
  int ncert, nkey;
  uint64_t tls_handshake_timeout_ms;
  int tls_handshake_timeout_set;
  int upstream_tls;
  const char *tls_ca, *tls_sni;
  /* --access-log FILE|- with its format and buffer size (0: the module's
   * default) */
  const char *access_log;
  int access_log_format, access_log_format_set;
  uint64_t access_log_buffer;
  /* --check-interval (0: no active checks), --check-timeout (0: the
   * interval), --rise, --fall (0: the module's defaults, 2 and 3),
   * --check-send and --check-expect with their escapes undone */
  uint64_t check_interval_ms, check_timeout_ms, rise, fall;
  char *check_send, *check_expect;
  size_t check_send_len, check_expect_len;
  int check_opts_set; /* a check option other than --check-interval */
};

static struct config cfg;
#if EVR_PROXY_TLS
/* --tls-cert: the listeners' context; --upstream-tls: the upstreams'.
 * Shared by every loop (OpenSSL's contexts are thread-safe). */
static evr_tls_ctx_t *server_ctx, *upstream_ctx;
#endif
/* derived from --buffer-size: see the header comment */
static size_t read_chunk, high_mark, low_mark;
/* the io_uring backend's receive buffers (evr_loop_options_t): IO_BUFFERS
 * of io_buffer_size, a read chunk up to 16 KiB */
#define IO_BUFFERS 256u
#define IO_BUFFER_MAX 16384u
static size_t io_buffer_size;

static struct {
  atomic_ullong active, total, refused, bytes_in, bytes_out, queued_max;
  atomic_ullong local_errors;    /* connect attempts failed for lack of local resources */
  atomic_ullong metrics_refused; /* metrics connections beyond METRICS_MAX_CONNS */
  /* --accept-proxy: valid headers by version; clients closed for an
   * invalid header, for one not complete in time, or that left first */
  atomic_ullong pp_v1, pp_v2, pp_invalid, pp_timeout, pp_closed;
  /* --tls-cert: client handshakes done, and failed: a protocol error (a
   * client that does not speak TLS), not done within
   * --tls-handshake-timeout, or the client left first */
  atomic_ullong tls_ok, tls_invalid, tls_timeout, tls_closed;
  /* clients closed because every upstream was down by its active checks */
  atomic_ullong no_upstream_up;
  atomic_ullong rr;
} stats;

/* --check-interval: the checker (first loop) while it runs; checks_live is
 * 1 from its start until it is freed, and says whether the targets may be
 * read. */
static health_checker_t *checker;
static atomic_int checks_live;

static uint64_t now_ms(void) { return evr_hrtime() / 1000000u; }

/* ---- log episodes ----
 * A failure that can repeat once per client (descriptors ran out, no
 * upstream reachable) writes at most one line a second: the first
 * occurrence in full, then "N more suppressed" summaries, the last one
 * once the episode is over (the next success) and its count is due. A
 * loop that counts an occurrence arms its episode timer, which writes the
 * summary when it is due; exit writes what is left. Shared by every loop:
 * atomics. */
struct episode {
  const char *what;          /* names the failure in the summaries */
  atomic_int open;           /* an episode is under way */
  atomic_int last_rc;        /* the latest error, 0 if none applies */
  atomic_ullong suppressed;  /* occurrences not reported yet */
  atomic_ullong last_ms;     /* when the last line about it was written */
};

static struct episode ep_local = {.what = "upstream connect: out of local resources"};
static struct episode ep_connect = {.what = "upstream connect: could not start"};
static struct episode ep_unreachable = {.what = "no upstream reachable"};
static struct episode ep_header = {.what = "PROXY header rejected"};
static struct episode ep_tls = {.what = "client TLS handshake failed"};
/* The first NCONNECT_EPISODES end with a successful upstream connect;
 * ep_header ends with a valid header, ep_tls with a client handshake done. */
static struct episode *const episodes[] = {&ep_local, &ep_connect, &ep_unreachable, &ep_header,
                                           &ep_tls};
#define NEPISODES (sizeof episodes / sizeof episodes[0])
#define NCONNECT_EPISODES 3

/* Claim the right to write a line about e now (one a second). */
static int episode_claim(struct episode *e, uint64_t now) {
  unsigned long long last = atomic_load(&e->last_ms);
  return now - last >= 1000 && atomic_compare_exchange_strong(&e->last_ms, &last, now);
}

/* One occurrence. Returns 1 if it was only counted (a summary is due
 * later), 0 if a line was written. */
static int episode_hit(struct episode *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int episode_hit(struct episode *e, int rc, const char *fmt, ...) {
  uint64_t now = now_ms();
  atomic_store(&e->last_rc, rc);
  int was_open = atomic_exchange(&e->open, 1);
  if (!episode_claim(e, now)) {
    atomic_fetch_add(&e->suppressed, 1);
    return 1;
  }
  unsigned long long n = atomic_exchange(&e->suppressed, 0);
  if (was_open) {
    log_warn("%s: %llu more suppressed in the last second or more%s%s%s", e->what, n + 1,
             rc ? " (" : "", rc ? evr_strerror(rc) : "", rc ? ")" : "");
    return 0;
  }
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n)
    log_warn("%s (%llu earlier ones suppressed; repeats are counted, reported at most once a "
             "second)", msg, n);
  else
    log_warn("%s (repeats are counted, reported at most once a second)", msg);
  return 0;
}

/* Write e's pending count if it is due (or force). Returns 1 if a count
 * is still pending. */
static int episode_flush(struct episode *e, int force) {
  if (atomic_load(&e->suppressed) == 0) return 0;
  uint64_t now = now_ms();
  if (!episode_claim(e, now) && !force) return 1;
  unsigned long long n = atomic_exchange(&e->suppressed, 0);
  if (!n) return 0;
  int rc = atomic_load(&e->last_rc);
  const char *l = rc ? " (" : "", *err = rc ? evr_strerror(rc) : "", *r = rc ? ")" : "";
  if (atomic_load(&e->open))
    log_warn("%s: %llu more suppressed in the last second or more%s%s%s", e->what, n, l, err, r);
  else
    log_info("%s: over; %llu more suppressed since the last line%s%s%s", e->what, n, l, err, r);
  return 0;
}

/* A success: the episode is over. Returns 1 if its count is still due. */
static int episode_end(struct episode *e) {
  if (!atomic_load_explicit(&e->open, memory_order_relaxed)) return 0;
  if (!atomic_exchange(&e->open, 0)) return 0;
  return episode_flush(e, 0);
}

/* Failures that are this host's, not the upstream's: they neither mark the
 * upstream down nor count as its failures. */
static int local_error(int rc) {
  return rc == EVR_EMFILE || rc == EVR_ENFILE || rc == EVR_ENOBUFS || rc == EVR_ENOMEM ||
         rc == EVR_EAI_MEMORY;
}

/* ---- sessions ---- */

struct server;
struct session;

/* One side of a session: a stream plus what the relay needs to know. A
 * TLS side is tls, whose first member is the stream: s and tls.stream are
 * one object, and a callback's stream or TLS pointer is the side's. */
struct side {
  union {
    evr_stream_t s;
#if EVR_PROXY_TLS
    evr_tls_t tls;
#endif
  };
  struct session *ses;
  struct side *peer;
  int open;        /* the stream is initialised and not yet closed */
  int eof;         /* read EOF (or close_notify) from this side */
  int shut;        /* FIN (after close_notify) sent to this side */
  int is_tls;      /* the side speaks TLS: tls is initialised */
  evr_close_cb close_cb; /* a TLS side's, called from side_tls_closed() */
};

/* --splice: one direction of the relay through a kernel pipe. */
struct sdir {
  int pr, pw;      /* the pipe */
  size_t inpipe;   /* bytes in it */
  int eof, shut;   /* source sent FIN; FIN passed on */
};

struct session {
  struct side client, upstream;
  struct server *srv;
  srclimit_key_t src; /* the client's source, released when the session ends */
  struct session *prev, *next;
  struct upstream *up; /* chosen upstream, or NULL */
  int tried;           /* upstreams tried so far */
  uint64_t connect_start_ns;
  int connected;
  int closing;
  int nopen;           /* handles whose close callback is still due */
  /* --splice: our own copies of the two sockets, each with a watcher;
   * dir[0] is client -> upstream, dir[1] upstream -> client. */
  int spliced;
  int sfd[2];
  evr_io_t sio[2];
  struct sdir dir[2];
  size_t cap;          /* bytes one pipe may hold */
  evr_timer_t sidle;
  uint64_t last_traffic;
  /* --accept-proxy: hbuf[0..hlen) (room for hcap) holds the header as it
   * arrives; once it is read, hbuf[hoff..hlen) are the bytes that came
   * after it, for the upstream (hbuf is NULL if there are none). htimer
   * bounds the wait. has_orig: orig_src/orig_dst are the client's
   * addresses from the header. */
  unsigned char *hbuf;
  size_t hlen, hcap, hoff;
  evr_timer_t htimer;
  int has_orig;
  evr_addr_t orig_src, orig_dst;
  /* --access-log: when the client was adopted (evr_hrtime()), bytes relayed
   * each way, the first cause of the end (-1 until one is known), the
   * cause of the last failed upstream connect (-1: none), and the
   * addresses for the line (peer: the connection's own client address;
   * upaddr: the upstream connected to, or the last one tried) */
  uint64_t start_ns;
  uint64_t bytes_up, bytes_down;
  int cause, connect_cause;
  int has_peer, has_upaddr;
  evr_addr_t peer, upaddr;
};

struct server {
  int index;
  evr_loop_t *loop;
  unsigned next; /* BALANCE_ACCEPT, first loop: the loop for the next client */
  evr_post_t handed_node; /* BALANCE_ACCEPT: the first loop's notice ... */
  int handed_all;         /* ... that it hands this loop no more clients */
  /* read by /metrics on the first loop: atomics */
  atomic_ullong conns_total, conns_active; /* clients this loop adopted */
  evr_listener_t listeners[MAX_LISTEN];
  int nlisteners;
  evr_listener_t metrics;
  int has_metrics;
  int nmconns; /* metrics connections open (first loop only) */
  evr_async_t wake;
  atomic_int command;
  atomic_int finished;
  int draining; /* 1: the listeners are closed; 2: the loop is being freed */
  evr_timer_t drain_timer;
  evr_timer_t ep_timer; /* writes due episode summaries; unreferenced */
  /* --access-log: this loop's writer */
  accesslog_t alog;
  int has_alog;
  /* --check-interval, first loop: checks_stop() frees the checker;
   * unreferenced */
  evr_async_t checks_wake;
  int has_checks_wake;
  struct session *sessions;
  int status;
  pthread_t thread;
};

/* The loops of this process: hand-over of clients, per-loop metrics. */
static struct server *loops;
static int nloops;
/* --max-conns-per-source, --rate-per-source: one table for every loop of
 * the process (srclimit.h; its table NULL without a limit). */
static struct source_limits sources = {.noun = "client"};

/* The first loop accepts for every loop (BALANCE_ACCEPT with 2+ loops). */
static int spreading(void) { return cfg.loop_balance == BALANCE_ACCEPT && cfg.threads > 1; }

static void on_episode_timer(evr_timer_t *t) {
  int pending = 0;
  for (size_t i = 0; i < NEPISODES; i++) pending |= episode_flush(episodes[i], 0);
  if (pending) evr_timer_start(t, on_episode_timer, 1000, 0);
}

/* A count is pending: this loop writes it when it is due. */
static void episode_later(struct server *srv) {
  if (!evr_timer_is_active(&srv->ep_timer))
    evr_timer_start(&srv->ep_timer, on_episode_timer, 1000, 0);
}

/* The first cause of a session's end is the one its log line gives. */
static void session_cause(struct session *ses, accesslog_cause_t cause) {
  if (ses->cause < 0) ses->cause = (int)cause;
}

/* Close the session for `cause` (session_close() below). */
static void session_end(struct session *ses, accesslog_cause_t cause);

/* --access-log: the session's line, written when it is freed. */
static void session_log(struct session *ses) {
  const evr_addr_t *client = ses->has_orig ? &ses->orig_src : ses->has_peer ? &ses->peer : NULL;
  accesslog_record_t r = {
      .client = client,
      .upstream = ses->has_upaddr ? &ses->upaddr : NULL,
      .duration_ns = evr_hrtime() - ses->start_ns,
      .bytes_up = ses->bytes_up,
      .bytes_down = ses->bytes_down,
      .cause = ses->cause >= 0 ? (accesslog_cause_t)ses->cause : ACCESSLOG_DONE,
  };
  /* A line that does not fit is counted by the writer (and in /metrics). */
  (void)accesslog_write(&ses->srv->alog, &r);
}

/* The last handle of a session to close frees it. */
static void session_unref(struct session *ses) {
  if (--ses->nopen > 0) return;
  struct server *srv = ses->srv;
  if (srv->has_alog) session_log(ses);
  if (ses->prev) ses->prev->next = ses->next;
  else srv->sessions = ses->next;
  if (ses->next) ses->next->prev = ses->prev;
  atomic_fetch_sub(&stats.active, 1);
  atomic_fetch_sub(&srv->conns_active, 1);
  if (sources.table) srclimit_release(sources.table, &ses->src);
  if (ses->up && ses->connected) atomic_fetch_sub(&ses->up->active, 1);
  log_debug("session %p closed", (void *)ses);
  evr_timer_stop(&ses->htimer); /* EVR_EINVAL if never initialised: harmless */
  free(ses->hbuf);
  free(ses);
}

static void session_closed_side(evr_handle_t *h) {
  struct side *sd = (struct side *)h;
  sd->open = 0;
  session_unref(sd->ses);
}

static void splice_closed(evr_handle_t *h) { session_unref(h->data); }

#if EVR_PROXY_TLS
static void side_tls_closed(evr_tls_t *t) {
  struct side *sd = (struct side *)t;
  sd->close_cb((evr_handle_t *)t);
}
#endif

/* ---- a side's stream, plain or TLS ---- */

static void on_side_read(evr_stream_t *s, ssize_t nread, const char *buf);
#if EVR_PROXY_TLS
static void on_side_tls_read(evr_tls_t *t, ssize_t nread, const char *buf);
#endif

/* Queue a copy of n bytes (encrypted for a TLS side). */
static int side_write(struct side *sd, const char *buf, size_t n) {
#if EVR_PROXY_TLS
  if (sd->is_tls) return evr_tls_write(&sd->tls, buf, n);
#endif
  return evr_stream_write_copy(&sd->s, buf, n);
}

static int side_read_start(struct side *sd) {
#if EVR_PROXY_TLS
  if (sd->is_tls) return evr_tls_read_start(&sd->tls, on_side_tls_read);
#endif
  return evr_stream_read_start(&sd->s, on_side_read);
}

static void side_read_stop(struct side *sd) {
#if EVR_PROXY_TLS
  if (sd->is_tls) {
    evr_tls_read_stop(&sd->tls);
    return;
  }
#endif
  evr_stream_read_stop(&sd->s);
}

/* FIN after the queued bytes; a TLS side sends close_notify first. */
static int side_shutdown(struct side *sd, evr_shutdown_cb cb) {
#if EVR_PROXY_TLS
  if (sd->is_tls) return evr_tls_shutdown(&sd->tls, cb);
#endif
  return evr_stream_shutdown(&sd->s, cb);
}

/* Close a side's stream (and free its TLS state) with cb. */
static void side_close_with(struct side *sd, evr_close_cb cb) {
#if EVR_PROXY_TLS
  if (sd->is_tls) {
    sd->close_cb = cb;
    evr_tls_close(&sd->tls, side_tls_closed);
    return;
  }
#endif
  evr_close(&sd->s.base, cb);
}

static void splice_teardown(struct session *ses) {
  if (!ses->spliced) return;
  ses->spliced = 0;
  for (int i = 0; i < 2; i++) {
    evr_close(&ses->sio[i].base, splice_closed); /* stops watching at once */
    close(ses->sfd[i]);
    close(ses->dir[i].pr);
    close(ses->dir[i].pw);
  }
  evr_timer_stop(&ses->sidle);
}

static void side_close(struct side *sd) {
  if (sd->open && !evr_is_closing(&sd->s.base)) side_close_with(sd, session_closed_side);
}

static void side_abort(struct side *sd) {
  /* SO_LINGER 0 is set on the socket, so our spliced copy of the
   * descriptor, closed with the session, does not delay the reset. */
  if (!sd->open || evr_is_closing(&sd->s.base)) return;
#if EVR_PROXY_TLS
  if (sd->is_tls) {
    /* What evr_stream_abort() does, with the TLS state freed too. */
    struct linger lg = {1, 0};
    int fd = evr_stream_fd(&sd->s);
    if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
      log_debug("session %p: SO_LINGER: %s", (void *)sd->ses, strerror(errno));
    side_close(sd);
    return;
  }
#endif
  evr_stream_abort(&sd->s, session_closed_side);
}

static void session_close(struct session *ses) {
  ses->closing = 1;
  evr_timer_stop(&ses->htimer);
  splice_teardown(ses);
  side_close(&ses->client);
  side_close(&ses->upstream);
}

static void session_end(struct session *ses, accesslog_cause_t cause) {
  session_cause(ses, cause);
  session_close(ses);
}

/* The cause for an error `rc` of a call that hands bytes or a shutdown to
 * side sd: a local one (memory) or that side's error. */
static accesslog_cause_t side_cause(struct side *sd, int rc) {
  if (local_error(rc)) return ACCESSLOG_LOCAL_ERROR;
  return accesslog_cause_side(rc, sd == &sd->ses->upstream);
}

/* Keep stats.queued in step with a side's write queue. */
static void account(struct side *sd) {
  unsigned long long q = evr_stream_write_queue_size(&sd->s);
  unsigned long long max = atomic_load(&stats.queued_max);
  while (q > max && !atomic_compare_exchange_weak(&stats.queued_max, &max, q)) {
  }
}

static void resume_reading(struct side *sd) {
  if (!sd->open || sd->eof || evr_is_closing(&sd->s.base)) return;
  int rc = side_read_start(sd);
  if (rc && rc != EVR_EALREADY) session_end(sd->ses, side_cause(sd, rc));
}

/* The queue towards sd drained to the low mark: read from its peer again. */
static void on_water(evr_stream_t *s, int above) {
  struct side *sd = (struct side *)s;
  account(sd);
  if (!above) resume_reading(sd->peer);
}

static void on_shutdown(evr_stream_t *s, int status) {
  struct side *sd = (struct side *)s;
  account(sd);
  if (status) {
    log_debug("session %p: shutdown: %s", (void *)sd->ses, evr_strerror(status));
    session_end(sd->ses, side_cause(sd, status));
    return;
  }
  /* Both directions finished: nothing more can flow. */
  if (sd->ses->client.eof && sd->ses->upstream.eof && sd->ses->client.shut &&
      sd->ses->upstream.shut)
    session_end(sd->ses, ACCESSLOG_DONE);
}

/* Bytes (decrypted, for a TLS side) or the end from sd: relay them. */
static void side_data(struct side *sd, ssize_t nread, const char *buf) {
  struct side *to = sd->peer;
  struct session *ses = sd->ses;
  if (nread > 0) {
    if (sd == &ses->client) {
      ses->bytes_up += (uint64_t)nread;
      atomic_fetch_add(&stats.bytes_in, (uint64_t)nread);
      atomic_fetch_add(&ses->up->bytes_up, (uint64_t)nread);
    } else {
      ses->bytes_down += (uint64_t)nread;
      atomic_fetch_add(&stats.bytes_out, (uint64_t)nread);
      atomic_fetch_add(&ses->up->bytes_down, (uint64_t)nread);
    }
    int rc = side_write(to, buf, (size_t)nread);
    if (rc) {
      log_debug("session %p: relay write: %s", (void *)ses, evr_strerror(rc));
      session_cause(ses, side_cause(to, rc));
      side_abort(sd);
      side_close(to);
      return;
    }
    account(to);
    /* Backpressure: the other side's queue may grow by one more chunk at
     * most, so stop at high_mark = buffer_size - chunk. (A TLS side's
     * queue holds records: a chunk and their few bytes of framing; and a
     * TLS side delivers at most a record, 16 KiB, at a time.) */
    if (evr_stream_write_queue_size(&to->s) > high_mark) side_read_stop(sd);
    return;
  }
  if (nread == EVR_EOF) {
    sd->eof = 1;
    log_debug("session %p: %s sent FIN", (void *)ses, sd == &ses->client ? "client" : "upstream");
    if (!to->shut) {
      to->shut = 1;
      int rc = side_shutdown(to, on_shutdown);
      if (rc) session_end(ses, side_cause(to, rc));
    }
    return;
  }
  /* An error: a reset on one side resets the other. */
#if EVR_PROXY_TLS
  if (sd->is_tls && nread == EVR_ETLS)
    log_debug("session %p: %s: %s: %s", (void *)ses, sd == &ses->client ? "client" : "upstream",
              evr_strerror((int)nread), evr_tls_reason(&sd->tls));
  else
#endif
    log_debug("session %p: %s: %s", (void *)ses, sd == &ses->client ? "client" : "upstream",
              evr_strerror((int)nread));
  if (nread == EVR_ECONNRESET) side_abort(to);
  session_end(ses, accesslog_cause_side((int)nread, sd == &ses->upstream));
}

static void on_side_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  side_data((struct side *)s, nread, buf);
}

#if EVR_PROXY_TLS
static void on_side_tls_read(evr_tls_t *t, ssize_t nread, const char *buf) {
  side_data((struct side *)t, nread, buf);
}
#endif

static void on_idle(evr_stream_t *s) {
  struct side *sd = (struct side *)s;
  log_debug("session %p: idle for %" PRIu64 " s, closing", (void *)sd->ses, cfg.idle_timeout_s);
  session_end(sd->ses, ACCESSLOG_IDLE_TIMEOUT);
}

/* ---- PROXY protocol ---- */

/* The client's addresses as the upstream and the logs are to know them:
 * those its PROXY header gave (--accept-proxy), else the connection's own.
 * 0, or -1 if they cannot be read. */
static int client_addrs(struct session *ses, evr_addr_t *src, evr_addr_t *dst) {
  if (ses->has_orig) {
    *src = ses->orig_src;
    *dst = ses->orig_dst;
    return 0;
  }
  if (evr_stream_peername(&ses->client.s, src) != 0 ||
      evr_stream_sockname(&ses->client.s, dst) != 0)
    return -1;
  return 0;
}

/* An address as text for a log line ("?" if it cannot be written). */
static const char *addr_text(const evr_addr_t *a, char buf[EVR_ADDR_STRLEN]) {
  if (evr_addr_format(a, buf, EVR_ADDR_STRLEN) < 0) snprintf(buf, EVR_ADDR_STRLEN, "?");
  return buf;
}

/* The header for the session's client (client_addrs()) into out (128
 * bytes suffice: the longest v1 line is 116); returns its length, or -1.
 * A client without TCP addresses (a Unix socket client, or addresses that
 * cannot be read) gets "PROXY UNKNOWN" in v1 and the LOCAL command in v2:
 * version 2 + LOCAL (0x20), family and transport unspecified (0x00), no
 * address block. The receiver then uses the connection's own addresses; a
 * PROXY command with the unspecified family may be refused instead
 * (HAProxy resets the connection). */
static int proxy_header(struct session *ses, char *out, size_t size) {
  evr_addr_t src, dst;
  if (client_addrs(ses, &src, &dst) != 0 || evr_addr_family(&src) != evr_addr_family(&dst) ||
      (evr_addr_family(&src) != AF_INET && evr_addr_family(&src) != AF_INET6)) {
    if (cfg.send_proxy == PP_V1) {
      int n = snprintf(out, size, "PROXY UNKNOWN\r\n");
      return n > 0 && (size_t)n < size ? n : -1;
    }
    memcpy(out, "\r\n\r\n\0\r\nQUIT\n", 12);
    out[12] = 0x20; /* version 2, LOCAL */
    out[13] = 0x00; /* AF_UNSPEC, UNSPEC */
    out[14] = 0;    /* no addresses follow */
    out[15] = 0;
    return 16;
  }
  int v6 = evr_addr_family(&src) == AF_INET6;
  if (cfg.send_proxy == PP_V1) {
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
    if (v6) {
      inet_ntop(AF_INET6, &src.u.in6.sin6_addr, a, sizeof a);
      inet_ntop(AF_INET6, &dst.u.in6.sin6_addr, b, sizeof b);
    } else {
      inet_ntop(AF_INET, &src.u.in.sin_addr, a, sizeof a);
      inet_ntop(AF_INET, &dst.u.in.sin_addr, b, sizeof b);
    }
    int n = snprintf(out, size, "PROXY %s %s %s %u %u\r\n", v6 ? "TCP6" : "TCP4", a, b,
                     evr_addr_port(&src), evr_addr_port(&dst));
    return n > 0 && (size_t)n < size ? n : -1;
  }
  unsigned char *p = (unsigned char *)out;
  memcpy(p, "\r\n\r\n\0\r\nQUIT\n", 12);
  p[12] = 0x21; /* version 2, PROXY */
  p[13] = v6 ? 0x21 : 0x11; /* AF_INET6 or AF_INET, STREAM */
  size_t alen = v6 ? 36 : 12;
  p[14] = (unsigned char)(alen >> 8);
  p[15] = (unsigned char)alen;
  unsigned char *q = p + 16;
  if (v6) {
    memcpy(q, &src.u.in6.sin6_addr, 16);
    memcpy(q + 16, &dst.u.in6.sin6_addr, 16);
    q += 32;
  } else {
    memcpy(q, &src.u.in.sin_addr, 4);
    memcpy(q + 4, &dst.u.in.sin_addr, 4);
    q += 8;
  }
  uint16_t sp = htons(evr_addr_port(&src)), dp = htons(evr_addr_port(&dst));
  memcpy(q, &sp, 2);
  memcpy(q + 2, &dp, 2);
  return (int)(16 + alen);
}

/* ---- --splice: zero-copy relay (Linux) ---- */

#if HAVE_SPLICE
static void splice_update(struct session *ses);

/* Fall back to the copy path: possible only before any byte moved. */
static void splice_fallback(struct session *ses, const char *why) {
  log_debug("session %p: splice: %s: using the copy path", (void *)ses, why);
  splice_teardown(ses);
  resume_reading(&ses->client);
  resume_reading(&ses->upstream);
}

static void splice_reset(struct session *ses, int from, int err) {
  log_debug("session %p: %s: %s", (void *)ses, from == 0 ? "client" : "upstream",
            strerror(err));
  if (err == ECONNRESET) side_abort(from == 0 ? &ses->upstream : &ses->client);
  /* evr's errors are negative errno values */
  session_end(ses, err == ENOMEM || err == ENOBUFS ? ACCESSLOG_LOCAL_ERROR
                                                   : accesslog_cause_side(-err, from == 1));
}

/* Move what the pipe of direction i holds to its destination. */
static int splice_out(struct session *ses, int i) {
  struct sdir *d = &ses->dir[i];
  while (d->inpipe > 0) {
    ssize_t n = splice(d->pr, NULL, ses->sfd[1 - i], NULL, d->inpipe,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n > 0) {
      d->inpipe -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    splice_reset(ses, 1 - i, n < 0 ? errno : EPIPE);
    return -1;
  }
  if (d->eof && !d->shut && d->inpipe == 0) {
    d->shut = 1;
    if (shutdown(ses->sfd[1 - i], SHUT_WR) != 0 && errno != ENOTCONN) {
      splice_reset(ses, 1 - i, errno);
      return -1;
    }
    if (ses->dir[0].shut && ses->dir[1].shut) {
      session_end(ses, ACCESSLOG_DONE);
      return -1;
    }
  }
  return 0;
}

/* Pull from the source of direction i into its pipe, then push on. */
static int splice_in(struct session *ses, int i) {
  struct sdir *d = &ses->dir[i];
  while (!d->eof && d->inpipe < ses->cap) {
    ssize_t n = splice(ses->sfd[i], NULL, d->pw, NULL, ses->cap - d->inpipe,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n > 0) {
      d->inpipe += (size_t)n;
      ses->last_traffic = evr_now(ses->srv->loop);
      if (i == 0) {
        ses->bytes_up += (uint64_t)n;
        atomic_fetch_add(&stats.bytes_in, (uint64_t)n);
        atomic_fetch_add(&ses->up->bytes_up, (uint64_t)n);
      } else {
        ses->bytes_down += (uint64_t)n;
        atomic_fetch_add(&stats.bytes_out, (uint64_t)n);
        atomic_fetch_add(&ses->up->bytes_down, (uint64_t)n);
      }
      if (splice_out(ses, i) != 0) return -1;
      continue;
    }
    if (n == 0) {
      d->eof = 1;
      return splice_out(ses, i);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) break;
    if ((errno == EINVAL || errno == ENOSYS) && ses->dir[0].inpipe + ses->dir[1].inpipe == 0 &&
        !ses->dir[0].eof && !ses->dir[1].eof && ses->last_traffic == 0) {
      splice_fallback(ses, strerror(errno));
      return -1;
    }
    splice_reset(ses, i, errno);
    return -1;
  }
  return 0;
}

static void on_splice_io(evr_io_t *io, unsigned events) {
  struct session *ses = io->base.data;
  int i = io == &ses->sio[0] ? 0 : 1;
  if ((events & EVR_WRITE) && splice_out(ses, 1 - i) != 0) return;
  if ((events & (EVR_READ | EVR_ERR | EVR_HUP)) && splice_in(ses, i) != 0) return;
  splice_update(ses);
}

/* Interest of socket i: read while its direction has room and no EOF,
 * write while the other direction's pipe holds bytes for it. */
static void splice_update(struct session *ses) {
  for (int i = 0; i < 2 && ses->spliced; i++) {
    unsigned want = 0;
    if (!ses->dir[i].eof && ses->dir[i].inpipe < ses->cap) want |= EVR_READ;
    if (ses->dir[1 - i].inpipe > 0) want |= EVR_WRITE;
    evr_io_t *io = &ses->sio[i];
    int rc = 0;
    if (!want) rc = evr_io_stop(io);
    else if (evr_is_active(&io->base)) rc = evr_io_set(io, want);
    else rc = evr_io_start(io, want, on_splice_io);
    if (rc) {
      log_warn("session %p: watcher: %s", (void *)ses, evr_strerror(rc));
      session_end(ses, ACCESSLOG_LOCAL_ERROR);
      return;
    }
  }
}

static void on_splice_idle(evr_timer_t *t) {
  struct session *ses = t->data;
  uint64_t idle_ms = cfg.idle_timeout_s * 1000;
  uint64_t now = evr_now(ses->srv->loop);
  if (now - ses->last_traffic >= idle_ms) {
    log_debug("session %p: idle for %" PRIu64 " s, closing", (void *)ses, cfg.idle_timeout_s);
    session_end(ses, ACCESSLOG_IDLE_TIMEOUT);
    return;
  }
  evr_timer_start(t, on_splice_idle, idle_ms - (now - ses->last_traffic), 0);
}

/* Switch a connected session to splicing. 0, or -1 to use the copy path. */
static int splice_start(struct session *ses) {
  int fds[2][2] = {{-1, -1}, {-1, -1}};
  ses->sfd[0] = ses->sfd[1] = -1;
  ses->sfd[0] = dup(evr_stream_fd(&ses->client.s));
  ses->sfd[1] = dup(evr_stream_fd(&ses->upstream.s));
  if (ses->sfd[0] < 0 || ses->sfd[1] < 0 || pipe2(fds[0], O_NONBLOCK | O_CLOEXEC) != 0 ||
      pipe2(fds[1], O_NONBLOCK | O_CLOEXEC) != 0)
    goto fail;
  for (int i = 0; i < 2; i++) {
    if (fcntl(ses->sfd[i], F_SETFD, FD_CLOEXEC) != 0) goto fail;
    /* Let the pipe hold --buffer-size if the system allows it. */
    (void)fcntl(fds[i][1], F_SETPIPE_SZ, (int)(cfg.buffer_size < (1u << 20) ? cfg.buffer_size : (1u << 20)));
  }
  int psz = fcntl(fds[0][1], F_GETPIPE_SZ);
  int psz1 = fcntl(fds[1][1], F_GETPIPE_SZ);
  if (psz <= 0 || psz1 <= 0) goto fail;
  if (psz1 < psz) psz = psz1;
  ses->cap = (size_t)psz < cfg.buffer_size ? (size_t)psz : cfg.buffer_size;
  for (int i = 0; i < 2; i++) {
    if (evr_io_init(ses->srv->loop, &ses->sio[i], ses->sfd[i]) != 0) {
      if (i == 1) evr_close(&ses->sio[0].base, splice_closed);
      goto fail;
    }
    ses->sio[i].base.data = ses;
    ses->dir[i] = (struct sdir){.pr = fds[i][0], .pw = fds[i][1]};
    ses->nopen++;
  }
  evr_timer_init(ses->srv->loop, &ses->sidle);
  ses->sidle.data = ses;
  ses->spliced = 1;
  ses->last_traffic = 0;
  /* The streams only own the descriptors from now on. */
  if (cfg.idle_timeout_s) {
    evr_stream_set_idle_timeout(&ses->client.s, 0, NULL);
    evr_timer_start(&ses->sidle, on_splice_idle, cfg.idle_timeout_s * 1000, 0);
  }
  splice_update(ses);
  return 0;
fail:
  log_debug("session %p: splice set-up: %s: using the copy path", (void *)ses, strerror(errno));
  for (int i = 0; i < 2; i++) {
    if (ses->sfd[i] >= 0) close(ses->sfd[i]);
    if (fds[i][0] >= 0) close(fds[i][0]);
    if (fds[i][1] >= 0) close(fds[i][1]);
  }
  return -1;
}
#else
static int splice_start(struct session *ses) {
  (void)ses;
  return -1;
}
#endif

/* ---- choosing and connecting upstreams ---- */

/* 1 unless the active checks have the upstream down (an upstream they do
 * not check, or any once the checker has stopped, is up for them). */
static int check_up(const struct upstream *u) {
  return !u->target || !atomic_load_explicit(&checks_live, memory_order_acquire) ||
         health_is_up(u->target);
}

/* An upstream that neither its active checks nor a failed connect (for
 * DOWN_MS) have marked down. When there is none, the one that went down
 * first on a failed connect is probed, once per client, among those the
 * checks have up; when the checks have every upstream down, there is no
 * upstream (NULL with ses->tried == 0), as HAProxy has no server for the
 * client then. */
static struct upstream *pick_upstream(struct session *ses) {
  uint64_t now = now_ms();
  int n = cfg.nup;
  struct upstream *best = NULL;
  if (cfg.balance == BAL_ROUNDROBIN) {
    uint64_t start = atomic_fetch_add(&stats.rr, 1);
    for (int i = 0; i < n; i++) {
      struct upstream *u = &cfg.up[(start + (uint64_t)i) % (uint64_t)n];
      if (atomic_load(&u->down_until) <= now && check_up(u)) {
        best = u;
        break;
      }
    }
  } else {
    for (int i = 0; i < n; i++) {
      struct upstream *u = &cfg.up[i];
      if (atomic_load(&u->down_until) > now || !check_up(u)) continue;
      if (!best || atomic_load(&u->active) < atomic_load(&best->active)) best = u;
    }
  }
  if (best) return best;
  /* Every upstream is down: probe the one that went down first, once. */
  if (ses->tried > 0) return NULL;
  for (int i = 0; i < n; i++) {
    struct upstream *u = &cfg.up[i];
    if (check_up(u) && (!best || atomic_load(&u->down_until) < atomic_load(&best->down_until)))
      best = u;
  }
  return best;
}

static void on_upstream_connect(evr_stream_t *s, int status);
static void upstream_ready(struct session *ses);

#if EVR_PROXY_TLS
/* The upstream's handshake. A failure (its certificate refused, a name
 * that does not match, a timeout) closes the client with the reason
 * logged; the upstream is not marked down. */
static void on_upstream_handshake(evr_tls_t *t, int status) {
  struct side *sd = (struct side *)t;
  struct session *ses = sd->ses;
  struct upstream *u = ses->up;
  if (status) {
    atomic_fetch_add(&u->tls_failures, 1);
    log_warn("upstream %s: TLS handshake: %s%s%s: closing the client", u->text,
             evr_strerror(status), evr_tls_reason(t)[0] ? ": " : "", evr_tls_reason(t));
    session_end(ses, ACCESSLOG_TLS_FAILED);
    return;
  }
  atomic_fetch_add(&u->tls_handshakes, 1);
  int resumed = evr_tls_resumed(t);
  if (resumed) atomic_fetch_add(&u->tls_resumed, 1);
  log_debug("session %p: %s with %s%s", (void *)ses, evr_tls_version(t), u->text,
            resumed ? ", session resumed" : "");
  upstream_ready(ses);
}
#endif

/* The connect failed for lack of local resources: another upstream would
 * fail the same way, and this one is not to blame. Close the client. */
static void local_failure(struct session *ses, struct upstream *u, int rc) {
  atomic_fetch_add(&stats.local_errors, 1);
  atomic_fetch_add(&stats.refused, 1);
  if (episode_hit(&ep_local, rc,
                  "connect to %s: %s: closing the client; the upstream is not marked down",
                  u->text, evr_strerror(rc)))
    episode_later(ses->srv);
  session_end(ses, ACCESSLOG_LOCAL_ERROR);
}

static void connect_next(struct session *ses) {
  struct upstream *u = ses->tried < cfg.nup ? pick_upstream(ses) : NULL;
  if (!u) {
    if (ses->tried == 0) {
      /* Not one upstream is up by its active checks. */
      atomic_fetch_add(&stats.no_upstream_up, 1);
      if (episode_hit(&ep_unreachable, 0,
                      "no upstream reachable: every upstream is down by its health checks: "
                      "closing the client"))
        episode_later(ses->srv);
    } else if (episode_hit(&ep_unreachable, 0, "no upstream reachable: closing the client")) {
      episode_later(ses->srv);
    }
    atomic_fetch_add(&stats.refused, 1);
    session_end(ses, ses->connect_cause >= 0 ? (accesslog_cause_t)ses->connect_cause
                                             : ACCESSLOG_UPSTREAM_UNREACHABLE);
    return;
  }
  ses->tried++;
  ses->up = u;
  /* The address for the log line: the one tried (a host name's is known
   * once connected). */
  ses->has_upaddr = u->numeric;
  if (u->numeric) ses->upaddr = u->addr;
  struct side *sd = &ses->upstream;
  int rc;
#if EVR_PROXY_TLS
  sd->is_tls = upstream_ctx != NULL;
  if (sd->is_tls)
    rc = evr_tls_init(ses->srv->loop, &sd->tls, upstream_ctx, u->tls_name[0] ? u->tls_name : NULL);
  else
#endif
    rc = evr_stream_init(ses->srv->loop, &sd->s);
  if (rc == 0) {
    sd->open = 1;
    ses->nopen++;
    ses->connect_start_ns = evr_hrtime();
    rc = u->numeric ? evr_stream_connect(&sd->s, &u->addr, (unsigned)cfg.connect_timeout_ms,
                                         on_upstream_connect)
                    : evr_stream_connect_host(&sd->s, u->host, u->port,
                                              (unsigned)cfg.connect_timeout_ms,
                                              on_upstream_connect);
  }
  if (rc) {
    /* Nothing was sent: socket() or the resolver's start failed here. */
    if (local_error(rc)) {
      local_failure(ses, u, rc);
      return;
    }
    atomic_fetch_add(&stats.refused, 1);
    if (episode_hit(&ep_connect, rc, "connect to %s: %s: closing the client", u->text,
                    evr_strerror(rc)))
      episode_later(ses->srv);
    session_end(ses, accesslog_cause_connect(rc));
  }
}

static void upstream_failed_closed(evr_handle_t *h) {
  struct side *sd = (struct side *)h;
  struct session *ses = sd->ses;
  if (ses->closing || !ses->client.open || evr_is_closing(&ses->client.s.base)) {
    session_closed_side(h);
    return;
  }
  sd->open = 0;
  ses->nopen--; /* the client keeps the session alive: never 0 here */
  memset(&sd->s, 0, sizeof sd->s);
  connect_next(ses);
}

static void on_upstream_connect(evr_stream_t *s, int status) {
  struct side *sd = (struct side *)s;
  struct session *ses = sd->ses;
  struct upstream *u = ses->up;
  if (status == EVR_ECANCELED) return; /* the session is closing */
  if (status && local_error(status)) {
    if (ses->closing) side_close(sd);
    else local_failure(ses, u, status);
    return;
  }
  if (status) {
    atomic_fetch_add(&u->failures, 1);
    atomic_store(&u->down_until, now_ms() + DOWN_MS);
    log_warn("upstream %s: %s: marked down for %d ms", u->text, evr_strerror(status), DOWN_MS);
    ses->connect_cause = (int)accesslog_cause_connect(status);
    /* Passive marking feeds the active checks: one more failure. */
    if (u->target && atomic_load_explicit(&checks_live, memory_order_acquire))
      health_report_failure(u->target);
    if (ses->closing) {
      side_close(sd);
      return;
    }
    /* Close this attempt; its close callback tries the next upstream. */
    side_close_with(sd, upstream_failed_closed);
    return;
  }
  uint64_t us = (evr_hrtime() - ses->connect_start_ns) / 1000u;
  atomic_fetch_add(&u->latency_us_sum, us);
  atomic_fetch_add(&u->latency_count, 1);
  for (int i = 0; i < NBUCKETS; i++)
    if ((double)us / 1e6 <= bucket_le[i]) atomic_fetch_add(&u->latency_bucket[i], 1);
  atomic_store(&u->down_until, 0);
  for (size_t i = 0; i < NCONNECT_EPISODES; i++)
    if (episode_end(episodes[i])) episode_later(ses->srv);
  atomic_fetch_add(&u->active, 1);
  atomic_fetch_add(&u->total, 1);
  ses->connected = 1;
  log_debug("session %p: connected to %s", (void *)ses, u->text);
  if (ses->srv->has_alog && !u->numeric)
    ses->has_upaddr = evr_stream_peername(s, &ses->upaddr) == 0;

  evr_stream_nodelay(s, 1);
  evr_stream_set_read_max(s, read_chunk);
  evr_stream_set_water_marks(s, low_mark, high_mark, on_water);
  if (cfg.send_proxy != PP_NONE) {
    /* In the clear, before a TLS handshake (as HAProxy sends it). */
    char hdr[128];
    int n = proxy_header(ses, hdr, sizeof hdr);
    if (n <= 0 || evr_stream_write_copy(s, hdr, (size_t)n) != 0) {
      session_end(ses, ACCESSLOG_LOCAL_ERROR);
      return;
    }
    account(sd);
  }
#if EVR_PROXY_TLS
  if (sd->is_tls) {
    int rc = evr_tls_start(&sd->tls, on_upstream_handshake);
    if (rc) {
      log_warn("upstream %s: TLS: %s: closing the client", u->text, evr_strerror(rc));
      atomic_fetch_add(&u->tls_failures, 1);
      session_end(ses, ACCESSLOG_TLS_FAILED);
    }
    return;
  }
#endif
  upstream_ready(ses);
}

/* The upstream is connected (and its handshake done): relay. */
static void upstream_ready(struct session *ses) {
  struct side *sd = &ses->upstream;
  struct upstream *u = ses->up;
  if (ses->hbuf) {
    /* --accept-proxy: what the client sent right after its header. */
    size_t n = ses->hlen - ses->hoff;
    ses->bytes_up += n;
    atomic_fetch_add(&stats.bytes_in, (uint64_t)n);
    atomic_fetch_add(&u->bytes_up, (uint64_t)n);
    int rc = side_write(sd, (const char *)ses->hbuf + ses->hoff, n);
    free(ses->hbuf);
    ses->hbuf = NULL;
    if (rc) {
      session_end(ses, side_cause(sd, rc));
      return;
    }
    account(sd);
  }
  /* The headers and early bytes (if any) are flushed by the stream before
   * splicing starts: splice only once the upstream's queue is empty. TLS
   * sessions are not spliced. */
  if (cfg.splice && !ses->client.is_tls && !sd->is_tls &&
      evr_stream_write_queue_size(&sd->s) == 0 && splice_start(ses) == 0)
    return;
  resume_reading(&ses->client);
  resume_reading(&ses->upstream);
}

/* ---- --accept-proxy: the client's PROXY header ----
 * The client is read from as soon as it is adopted, with reads no longer
 * than what the header may still need (a v1 line is at most
 * PPROTO_V1_MAX bytes; a v2 header says its length after 16), so what is
 * read beyond the header is at most a line's worth. Those bytes are kept
 * and written to the upstream first. The header must be complete within
 * --accept-proxy-timeout; an invalid or late one closes the client, is
 * counted, and is logged as an episode (one line a second at most). */

static void header_reject(struct session *ses, atomic_ullong *counter, const char *why) {
  atomic_fetch_add(counter, 1);
  evr_addr_t peer;
  char text[EVR_ADDR_STRLEN] = "?";
  if (evr_stream_peername(&ses->client.s, &peer) == 0) addr_text(&peer, text);
  if (episode_hit(&ep_header, 0, "PROXY header from %s: %s: closing the client", text, why)) {
    log_debug("session %p: PROXY header from %s: %s: closing the client", (void *)ses, text, why);
    episode_later(ses->srv);
  }
  session_end(ses, counter == &stats.pp_timeout ? ACCESSLOG_HEADER_TIMEOUT
                                                : ACCESSLOG_HEADER_INVALID);
}

static void on_header_timeout(evr_timer_t *t) {
  char why[64];
  snprintf(why, sizeof why, "not complete within %" PRIu64 " ms", cfg.accept_proxy_timeout_ms);
  header_reject(t->data, &stats.pp_timeout, why);
}

#if EVR_PROXY_TLS
static void tls_client_start(struct session *ses);
#endif

static void on_header_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct side *sd = (struct side *)s;
  struct session *ses = sd->ses;
  if (nread < 0) {
    atomic_fetch_add(&stats.pp_closed, 1);
    log_debug("session %p: client %s before its PROXY header was complete", (void *)ses,
              nread == EVR_EOF ? "closed" : evr_strerror((int)nread));
    session_end(ses, accesslog_cause_side((int)nread, 0));
    return;
  }
  size_t n = (size_t)nread;
  if (n > ses->hcap - ses->hlen) { /* never more than asked for; but be sure */
    unsigned char *p = realloc(ses->hbuf, ses->hlen + n);
    if (!p) {
      log_error("out of memory: closing a client");
      session_end(ses, ACCESSLOG_LOCAL_ERROR);
      return;
    }
    ses->hbuf = p;
    ses->hcap = ses->hlen + n;
  }
  memcpy(ses->hbuf + ses->hlen, buf, n);
  ses->hlen += n;
  struct pproto_header h;
  int rc = pproto_parse(ses->hbuf, ses->hlen, &h);
  if (rc == PPROTO_INVALID) {
    header_reject(ses, &stats.pp_invalid, h.error);
    return;
  }
  if (rc == PPROTO_NEED_MORE) {
    /* Read at most what the header may still take; before a TLS
     * handshake, no more than it takes for sure. */
    size_t want = h.version == 2 ? h.need : PPROTO_V1_MAX;
    if (ses->client.is_tls) want = h.need > PP_SHORTEST ? h.need : PP_SHORTEST;
    if (want > ses->hcap) {
      unsigned char *p = realloc(ses->hbuf, want);
      if (!p) {
        log_error("out of memory: closing a client");
        session_end(ses, ACCESSLOG_LOCAL_ERROR);
        return;
      }
      ses->hbuf = p;
      ses->hcap = want;
    }
    evr_stream_set_read_max(s, want - ses->hlen);
    return;
  }
  evr_timer_stop(&ses->htimer);
  evr_stream_read_stop(s);
  evr_stream_set_read_max(s, read_chunk);
  atomic_fetch_add(h.version == 1 ? &stats.pp_v1 : &stats.pp_v2, 1);
  if (episode_end(&ep_header)) episode_later(ses->srv);
  ses->hoff = h.len;
  if (ses->hoff == ses->hlen) {
    free(ses->hbuf);
    ses->hbuf = NULL;
  }
  ses->has_orig = h.has_addrs;
  if (h.has_addrs) {
    ses->orig_src = h.src;
    ses->orig_dst = h.dst;
  }
  if (log_level >= LOG_DEBUG) {
    evr_addr_t src, dst;
    char a[EVR_ADDR_STRLEN] = "?", b[EVR_ADDR_STRLEN] = "?";
    if (client_addrs(ses, &src, &dst) == 0) {
      addr_text(&src, a);
      addr_text(&dst, b);
    }
    log_debug("session %p: PROXY v%d header, %zu bytes: client %s, to %s%s", (void *)ses,
              h.version, h.len, a, b, h.has_addrs ? "" : " (none given: the connection's own)");
  }
#if EVR_PROXY_TLS
  if (ses->client.is_tls) {
    tls_client_start(ses); /* nothing past the header was read: ses->hbuf is NULL */
    return;
  }
#endif
  connect_next(ses);
}

/* Read the client's header, then connect. */
static void header_start(struct session *ses) {
  ses->hcap = PPROTO_V1_MAX;
  ses->hbuf = malloc(ses->hcap);
  if (!ses->hbuf) {
    log_error("out of memory: closing a client");
    session_end(ses, ACCESSLOG_LOCAL_ERROR);
    return;
  }
  evr_timer_init(ses->srv->loop, &ses->htimer);
  ses->htimer.data = ses;
  evr_timer_start(&ses->htimer, on_header_timeout, cfg.accept_proxy_timeout_ms, 0);
  evr_stream_set_read_max(&ses->client.s, ses->client.is_tls ? PP_SHORTEST : PPROTO_V1_MAX);
  int rc = evr_stream_read_start(&ses->client.s, on_header_read);
  if (rc) session_end(ses, side_cause(&ses->client, rc));
}

/* ---- --tls-cert: the client's handshake ----
 * Run once the client is adopted (after its PROXY header with
 * --accept-proxy), bounded by --tls-handshake-timeout; the upstream is
 * chosen once it is done. A failure closes the client, is counted by
 * reason and logged as an episode. */

#if EVR_PROXY_TLS
static void on_client_handshake(evr_tls_t *t, int status) {
  struct side *sd = (struct side *)t;
  struct session *ses = sd->ses;
  if (status) {
    const char *why = evr_tls_reason(t);
    atomic_fetch_add(status == EVR_ETIMEDOUT ? &stats.tls_timeout
                     : status == EVR_ETLS    ? &stats.tls_invalid
                                             : &stats.tls_closed,
                     1);
    evr_addr_t peer;
    char text[EVR_ADDR_STRLEN] = "?";
    if (evr_stream_peername(&sd->s, &peer) == 0) addr_text(&peer, text);
    if (episode_hit(&ep_tls, 0, "TLS handshake with %s: %s%s%s: closing the client", text,
                    evr_strerror(status), why[0] ? ": " : "", why)) {
      log_debug("session %p: TLS handshake with %s: %s%s%s: closing the client", (void *)ses,
                text, evr_strerror(status), why[0] ? ": " : "", why);
      episode_later(ses->srv);
    }
    session_end(ses, ACCESSLOG_TLS_FAILED);
    return;
  }
  atomic_fetch_add(&stats.tls_ok, 1);
  if (episode_end(&ep_tls)) episode_later(ses->srv);
  /* Until the upstream is connected, the client's records wait in the
   * kernel, as a plain client's bytes do. */
  evr_tls_read_stop(t);
  const char *name = evr_tls_server_name(t);
  log_debug("session %p: client %s%s%s", (void *)ses, evr_tls_version(t),
            name ? ", SNI " : "", name ? name : "");
  connect_next(ses);
}

static void tls_client_start(struct session *ses) {
  int rc = evr_tls_start(&ses->client.tls, on_client_handshake);
  if (rc) {
    log_debug("session %p: TLS: %s: closing the client", (void *)ses, evr_strerror(rc));
    atomic_fetch_add(&stats.tls_closed, 1);
    session_end(ses, ACCESSLOG_TLS_FAILED);
  }
}
#endif

/* ---- accepting ---- */

#if EVR_PROXY_TLS
/* A client whose stream could not take its descriptor. */
static void adopt_failed_closed(evr_tls_t *t) {
  struct session *ses = ((struct side *)t)->ses;
  if (sources.table) srclimit_release(sources.table, &ses->src);
  free(ses);
  atomic_fetch_sub(&stats.active, 1);
}
#endif

/* A client from source src to serve on srv's loop (its thread). Its
 * places in stats.active and in its source's count are already taken. */
static void session_adopt(struct server *srv, int fd, const srclimit_key_t *src) {
  if (srv->draining > 1) {
    /* Handed over as the loop is freed: the client sees the connection
     * closed. One accepted before the listener closed and handed over
     * during a drain is served like the others: after a reload, no client
     * is turned away. */
    log_debug("loop %d: draining: closing a client handed over", srv->index);
    close(fd);
    atomic_fetch_add(&stats.refused, 1);
    atomic_fetch_sub(&stats.active, 1);
    if (sources.table) srclimit_release(sources.table, src);
    return;
  }
  struct session *ses = calloc(1, sizeof *ses);
  if (!ses) {
    log_error("out of memory: refusing a connection");
    close(fd);
    atomic_fetch_sub(&stats.active, 1);
    if (sources.table) srclimit_release(sources.table, src);
    return;
  }
  ses->src = *src;
  ses->srv = srv;
  ses->start_ns = evr_hrtime();
  ses->cause = ses->connect_cause = -1;
  ses->client.ses = ses->upstream.ses = ses;
  ses->client.peer = &ses->upstream;
  ses->upstream.peer = &ses->client;
  int rc;
#if EVR_PROXY_TLS
  if (server_ctx) {
    rc = evr_tls_init(srv->loop, &ses->client.tls, server_ctx, NULL);
    if (rc == 0) {
      ses->client.is_tls = 1;
      rc = evr_stream_open(&ses->client.s, fd);
      if (rc) {
        /* The TLS state is freed by a close. */
        log_error("stream: %s", evr_strerror(rc));
        close(fd);
        evr_tls_close(&ses->client.tls, adopt_failed_closed);
        return;
      }
    }
  } else
#endif
  {
    rc = evr_stream_init(srv->loop, &ses->client.s);
    if (rc == 0) rc = evr_stream_open(&ses->client.s, fd);
  }
  if (rc) {
    log_error("stream: %s", evr_strerror(rc));
    close(fd);
    if (sources.table) srclimit_release(sources.table, &ses->src);
    free(ses);
    atomic_fetch_sub(&stats.active, 1);
    return;
  }
  ses->client.open = 1;
  ses->nopen = 1;
  ses->next = srv->sessions;
  if (ses->next) ses->next->prev = ses;
  srv->sessions = ses;
  atomic_fetch_add(&stats.total, 1);
  atomic_fetch_add(&srv->conns_total, 1);
  atomic_fetch_add(&srv->conns_active, 1);
  evr_stream_nodelay(&ses->client.s, 1);
  evr_stream_set_read_max(&ses->client.s, read_chunk);
  evr_stream_set_water_marks(&ses->client.s, low_mark, high_mark, on_water);
  if (cfg.idle_timeout_s)
    evr_stream_set_idle_timeout(&ses->client.s, cfg.idle_timeout_s * 1000, on_idle);
  /* The client's address, for the access log and the debug line (read
   * now: it cannot be once the connection is closed). */
  if (srv->has_alog || log_level >= LOG_DEBUG)
    ses->has_peer = evr_stream_peername(&ses->client.s, &ses->peer) == 0;
  if (log_level >= LOG_DEBUG) {
    char text[EVR_ADDR_STRLEN] = "?";
    if (ses->has_peer) addr_text(&ses->peer, text);
    log_debug("session %p: new client %s (loop %d)", (void *)ses, text, srv->index);
  }
  if (cfg.accept_proxy) {
    header_start(ses);
    return;
  }
#if EVR_PROXY_TLS
  if (ses->client.is_tls) {
    tls_client_start(ses);
    return;
  }
#endif
  /* The client is read only once the upstream is connected: until then
   * its bytes wait in the kernel. */
  connect_next(ses);
}

/* A client handed to another loop, with its source. */
struct handed {
  struct server *srv;
  srclimit_key_t src;
};

static void adopt_handed(void *target, int fd) {
  struct handed h = *(struct handed *)target;
  free(target);
  session_adopt(h.srv, fd, &h.src);
}

/* Without source limits there is no source to carry: no allocation. */
static void adopt_handed_plain(void *target, int fd) {
  static const srclimit_key_t none = {0, 0};
  session_adopt(target, fd, &none);
}

static void on_accept(evr_listener_t *l, int fd) {
  struct server *srv = l->base.data;
  if (fd < 0) {
    log_warn("accept: %s", evr_strerror(fd));
    return;
  }
  /* Counted here, before a hand-over, so that a burst of clients on their
   * way to other loops cannot pass --max-conns. */
  unsigned long long active = atomic_fetch_add(&stats.active, 1);
  if (cfg.max_conns && active >= cfg.max_conns) {
    atomic_fetch_sub(&stats.active, 1);
    log_debug("max-conns %" PRIu64 " reached: refusing a connection", cfg.max_conns);
    atomic_fetch_add(&stats.refused, 1);
    close(fd);
    return;
  }
  /* The source's limits, before anything is allocated for the client. */
  srclimit_key_t src = {0, 0};
  if (sources.table && !source_admits(&sources, fd, &src)) {
    atomic_fetch_sub(&stats.active, 1);
    atomic_fetch_add(&stats.refused, 1);
    close(fd);
    return;
  }
  if (spreading()) {
    struct server *to = &loops[srv->next];
    srv->next = (srv->next + 1) % (unsigned)nloops;
    if (to != srv) {
      struct handed *h = NULL;
      int rc = EVR_ENOMEM;
      if (!sources.table) {
        rc = handoff(to->loop, adopt_handed_plain, to, fd);
      } else if ((h = malloc(sizeof *h)) != NULL) {
        *h = (struct handed){to, src};
        rc = handoff(to->loop, adopt_handed, h, fd);
      } else {
        close(fd);
      }
      if (rc) {
        /* fd is closed: the client sees its connection end. */
        free(h);
        log_error("hand-over to loop %d: %s: closing a client", to->index, evr_strerror(rc));
        atomic_fetch_add(&stats.refused, 1);
        atomic_fetch_sub(&stats.active, 1);
        if (sources.table) srclimit_release(sources.table, &src);
      }
      return;
    }
  }
  session_adopt(srv, fd, &src);
}

/* ---- metrics: GET /metrics, Prometheus text format ----
 * The endpoint lives on the first loop. At most METRICS_MAX_CONNS
 * connections are held at once (more are answered 503 and closed at
 * accept); a request must be complete within METRICS_IDLE_MS, hold no NUL
 * byte (400 at once) and fit in METRICS_REQ_MAX bytes with a NUL (431 at
 * once; metrics_req.h reads it). The body is built in a buffer that grows
 * as needed, so it is never cut, and sent without a terminator. */

/* A growing text buffer. */
struct text {
  char *p;
  size_t len, cap;
  int failed; /* out of memory: the text is incomplete */
};

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(struct text *t, const char *fmt, ...) {
  while (!t->failed) {
    size_t room = t->cap - t->len;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(room ? t->p + t->len : NULL, room, fmt, ap);
    va_end(ap);
    if (k < 0) {
      t->failed = 1;
      return;
    }
    if ((size_t)k < room) {
      t->len += (size_t)k; /* the terminator stays outside len */
      return;
    }
    size_t cap = t->cap ? t->cap : 16384;
    while (cap < t->len + (size_t)k + 1) cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p) {
      t->failed = 1;
      return;
    }
    t->p = p;
    t->cap = cap;
  }
}

/* A label value in the exposition format: backslash, double quote and
 * newline escaped (a Unix socket path may hold any of them). */
static char *label_escape(const char *s) {
  char *out = malloc(2 * strlen(s) + 1), *q = out;
  if (!out) return NULL;
  for (; *s; s++) {
    if (*s == '\\' || *s == '"') *q++ = '\\';
    if (*s == '\n') {
      *q++ = '\\';
      *q++ = 'n';
      continue;
    }
    *q++ = *s;
  }
  *q = '\0';
  return out;
}

struct mconn {
  evr_stream_t s;
  struct server *srv;
  evr_write_t w;
  struct text body;
  char head[256];
  struct metrics_req req;
};

static void mconn_closed(evr_handle_t *h) {
  struct mconn *m = (struct mconn *)h;
  m->srv->nmconns--;
  free(m->body.p);
  free(m);
}

/* --check-interval: each checked upstream's check counters; they stay as
 * they were once the checker has stopped. First loop. */
static void metrics_checks(struct text *t) {
  if (!cfg.check_interval_ms) return;
  health_stats_t st[MAX_UPSTREAMS];
  for (int i = 0; i < cfg.nup; i++) {
    if (!cfg.up[i].target) continue;
    if (checker) health_target_stats(cfg.up[i].target, &st[i]);
    else st[i] = cfg.up[i].hstats;
  }
  static const struct {
    const char *name, *help;
    size_t off;
  } series[] = {
      {"evr_proxy_upstream_checks_total",
       "Active health checks of the upstream completed (--check-interval).",
       offsetof(health_stats_t, checks)},
      {"evr_proxy_upstream_check_failures_total",
       "Active health checks of the upstream that failed, plus failed connects of clients "
       "counted towards --fall.",
       offsetof(health_stats_t, failures)},
      {"evr_proxy_upstream_check_state_changes_total",
       "Times the active health checks took the upstream down or up.",
       offsetof(health_stats_t, state_changes)},
  };
  for (size_t c = 0; c < sizeof series / sizeof series[0]; c++) {
    text_printf(t, "# HELP %s %s\n# TYPE %s counter\n", series[c].name, series[c].help,
                series[c].name);
    for (int i = 0; i < cfg.nup; i++)
      if (cfg.up[i].target)
        text_printf(t, "%s{upstream=\"%s\"} %llu\n", series[c].name, cfg.up[i].label,
                    (unsigned long long)*(const uint64_t *)((const char *)&st[i] + series[c].off));
  }
}

/* --access-log: the writers' counters, summed over the loops. */
static void metrics_access_log(struct text *t) {
  if (!cfg.access_log) return;
  accesslog_counters_t sum = {0};
  for (int i = 0; i < nloops; i++) {
    if (!loops[i].has_alog) continue;
    accesslog_counters_t c;
    accesslog_counters(&loops[i].alog, &c);
    sum.lines_written += c.lines_written;
    sum.lines_dropped += c.lines_dropped;
    sum.write_errors += c.write_errors;
    sum.reopens += c.reopens;
    sum.reopen_errors += c.reopen_errors;
    sum.buffered += c.buffered;
  }
  text_printf(t,
              "# HELP evr_proxy_access_log_lines_total Access log lines written (--access-log).\n"
              "# TYPE evr_proxy_access_log_lines_total counter\n"
              "evr_proxy_access_log_lines_total %llu\n"
              "# HELP evr_proxy_access_log_dropped_total Access log lines lost: no room in a "
              "loop's buffer (a slow or stuck reader), or a failed write.\n"
              "# TYPE evr_proxy_access_log_dropped_total counter\n"
              "evr_proxy_access_log_dropped_total %llu\n"
              "# HELP evr_proxy_access_log_write_errors_total Writes to the access log that "
              "failed.\n"
              "# TYPE evr_proxy_access_log_write_errors_total counter\n"
              "evr_proxy_access_log_write_errors_total %llu\n"
              "# HELP evr_proxy_access_log_reopens_total Reopens of the access log (SIGUSR1), "
              "by result.\n"
              "# TYPE evr_proxy_access_log_reopens_total counter\n"
              "evr_proxy_access_log_reopens_total{result=\"ok\"} %llu\n"
              "evr_proxy_access_log_reopens_total{result=\"failed\"} %llu\n"
              "# HELP evr_proxy_access_log_buffered_bytes Access log bytes waiting to be "
              "written.\n"
              "# TYPE evr_proxy_access_log_buffered_bytes gauge\n"
              "evr_proxy_access_log_buffered_bytes %llu\n",
              (unsigned long long)sum.lines_written, (unsigned long long)sum.lines_dropped,
              (unsigned long long)sum.write_errors, (unsigned long long)sum.reopens,
              (unsigned long long)sum.reopen_errors, (unsigned long long)sum.buffered);
}

static void metrics_text(struct text *t) {
#define P(...) text_printf(t, __VA_ARGS__)
  P("# HELP evr_proxy_connections_active Client connections open now.\n"
    "# TYPE evr_proxy_connections_active gauge\n"
    "evr_proxy_connections_active %llu\n",
    (unsigned long long)atomic_load(&stats.active));
  P("# HELP evr_proxy_connections_total Client connections accepted.\n"
    "# TYPE evr_proxy_connections_total counter\n"
    "evr_proxy_connections_total %llu\n",
    (unsigned long long)atomic_load(&stats.total));
  P("# HELP evr_proxy_connections_refused_total Clients closed without an upstream "
    "(none reachable, --max-conns, or local resources exhausted).\n"
    "# TYPE evr_proxy_connections_refused_total counter\n"
    "evr_proxy_connections_refused_total %llu\n",
    (unsigned long long)atomic_load(&stats.refused));
  if (sources.table) {
    srclimit_stats_t st;
    srclimit_stats(sources.table, &st);
    static const char *const why[] = {[SRCLIMIT_CONNS] = "conns", [SRCLIMIT_RATE] = "rate",
                                      [SRCLIMIT_FULL] = "table_full"};
    P("# HELP evr_proxy_source_refused_total Clients closed at accept by the per-source "
      "limits (also counted as refused), by reason.\n"
      "# TYPE evr_proxy_source_refused_total counter\n");
    for (int r = SRCLIMIT_CONNS; r <= SRCLIMIT_FULL; r++)
      P("evr_proxy_source_refused_total{reason=\"%s\"} %llu\n", why[r],
        (unsigned long long)st.refused[r]);
    P("# HELP evr_proxy_source_evictions_total Idle sources dropped from the source table "
      "to make room.\n"
      "# TYPE evr_proxy_source_evictions_total counter\n"
      "evr_proxy_source_evictions_total %llu\n"
      "# HELP evr_proxy_source_entries Sources in the source table.\n"
      "# TYPE evr_proxy_source_entries gauge\n"
      "evr_proxy_source_entries %lu\n",
      (unsigned long long)st.evictions, (unsigned long)st.entries);
  }
  P("# HELP evr_proxy_connections_no_upstream_up_total Clients closed at once because "
    "the active health checks had every upstream down (also counted as refused).\n"
    "# TYPE evr_proxy_connections_no_upstream_up_total counter\n"
    "evr_proxy_connections_no_upstream_up_total %llu\n",
    (unsigned long long)atomic_load(&stats.no_upstream_up));
  metrics_access_log(t);
  P("# HELP evr_proxy_local_connect_errors_total Upstream connects that failed for lack of "
    "local resources (descriptors, buffers, memory); the upstream is not marked down.\n"
    "# TYPE evr_proxy_local_connect_errors_total counter\n"
    "evr_proxy_local_connect_errors_total %llu\n",
    (unsigned long long)atomic_load(&stats.local_errors));
  P("# HELP evr_proxy_bytes_in_total Bytes received from clients.\n"
    "# TYPE evr_proxy_bytes_in_total counter\n"
    "evr_proxy_bytes_in_total %llu\n",
    (unsigned long long)atomic_load(&stats.bytes_in));
  P("# HELP evr_proxy_bytes_out_total Bytes received from upstreams for clients.\n"
    "# TYPE evr_proxy_bytes_out_total counter\n"
    "evr_proxy_bytes_out_total %llu\n",
    (unsigned long long)atomic_load(&stats.bytes_out));
  P("# HELP evr_proxy_buffered_bytes_max_per_direction Largest queue of one direction of "
    "one connection seen.\n"
    "# TYPE evr_proxy_buffered_bytes_max_per_direction gauge\n"
    "evr_proxy_buffered_bytes_max_per_direction %llu\n",
    (unsigned long long)atomic_load(&stats.queued_max));
  P("# HELP evr_proxy_metrics_connections_refused_total Metrics connections closed at once "
    "because %d were open.\n"
    "# TYPE evr_proxy_metrics_connections_refused_total counter\n"
    "evr_proxy_metrics_connections_refused_total %llu\n",
    METRICS_MAX_CONNS, (unsigned long long)atomic_load(&stats.metrics_refused));
  P("# HELP evr_proxy_inbound_proxy_headers_total Valid PROXY protocol headers read from "
    "clients (--accept-proxy), by version.\n"
    "# TYPE evr_proxy_inbound_proxy_headers_total counter\n"
    "evr_proxy_inbound_proxy_headers_total{version=\"v1\"} %llu\n"
    "evr_proxy_inbound_proxy_headers_total{version=\"v2\"} %llu\n",
    (unsigned long long)atomic_load(&stats.pp_v1), (unsigned long long)atomic_load(&stats.pp_v2));
  P("# HELP evr_proxy_inbound_proxy_rejected_total Clients closed without a valid PROXY "
    "protocol header (--accept-proxy): invalid, not complete within --accept-proxy-timeout, "
    "or closed by the client first.\n"
    "# TYPE evr_proxy_inbound_proxy_rejected_total counter\n"
    "evr_proxy_inbound_proxy_rejected_total{reason=\"invalid\"} %llu\n"
    "evr_proxy_inbound_proxy_rejected_total{reason=\"timeout\"} %llu\n"
    "evr_proxy_inbound_proxy_rejected_total{reason=\"closed\"} %llu\n",
    (unsigned long long)atomic_load(&stats.pp_invalid),
    (unsigned long long)atomic_load(&stats.pp_timeout),
    (unsigned long long)atomic_load(&stats.pp_closed));
  P("# HELP evr_proxy_tls_handshakes_total TLS handshakes done with clients (--tls-cert).\n"
    "# TYPE evr_proxy_tls_handshakes_total counter\n"
    "evr_proxy_tls_handshakes_total %llu\n",
    (unsigned long long)atomic_load(&stats.tls_ok));
  P("# HELP evr_proxy_tls_handshake_failures_total Clients closed without a TLS handshake "
    "(--tls-cert): a protocol error (e.g. a client not speaking TLS), not done within "
    "--tls-handshake-timeout, or closed by the client first.\n"
    "# TYPE evr_proxy_tls_handshake_failures_total counter\n"
    "evr_proxy_tls_handshake_failures_total{reason=\"invalid\"} %llu\n"
    "evr_proxy_tls_handshake_failures_total{reason=\"timeout\"} %llu\n"
    "evr_proxy_tls_handshake_failures_total{reason=\"closed\"} %llu\n",
    (unsigned long long)atomic_load(&stats.tls_invalid),
    (unsigned long long)atomic_load(&stats.tls_timeout),
    (unsigned long long)atomic_load(&stats.tls_closed));
  P("# HELP evr_proxy_loop_connections_total Client connections each event loop took.\n"
    "# TYPE evr_proxy_loop_connections_total counter\n");
  for (int i = 0; i < nloops; i++)
    P("evr_proxy_loop_connections_total{loop=\"%d\"} %llu\n", i,
      (unsigned long long)atomic_load(&loops[i].conns_total));
  P("# HELP evr_proxy_loop_connections_active Client connections each event loop serves now.\n"
    "# TYPE evr_proxy_loop_connections_active gauge\n");
  for (int i = 0; i < nloops; i++)
    P("evr_proxy_loop_connections_active{loop=\"%d\"} %llu\n", i,
      (unsigned long long)atomic_load(&loops[i].conns_active));
  P("# HELP evr_proxy_upstream_up 1 if the upstream is not marked down (by its active "
    "checks, or for 5 s after a failed connect).\n"
    "# TYPE evr_proxy_upstream_up gauge\n");
  uint64_t now = now_ms();
  for (int i = 0; i < cfg.nup; i++)
    P("evr_proxy_upstream_up{upstream=\"%s\"} %d\n", cfg.up[i].label,
      atomic_load(&cfg.up[i].down_until) <= now && check_up(&cfg.up[i]));
  metrics_checks(t);
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } counters[] = {
      {"evr_proxy_upstream_connections_active", "gauge", "Connections open to the upstream.",
       offsetof(struct upstream, active)},
      {"evr_proxy_upstream_connections_total", "counter", "Connections made to the upstream.",
       offsetof(struct upstream, total)},
      {"evr_proxy_upstream_connect_failures_total", "counter",
       "Failed connection attempts to the upstream.", offsetof(struct upstream, failures)},
      {"evr_proxy_upstream_bytes_sent_total", "counter", "Bytes relayed to the upstream.",
       offsetof(struct upstream, bytes_up)},
      {"evr_proxy_upstream_bytes_received_total", "counter",
       "Bytes relayed from the upstream.", offsetof(struct upstream, bytes_down)},
      {"evr_proxy_upstream_tls_handshakes_total", "counter",
       "TLS handshakes done with the upstream (--upstream-tls).",
       offsetof(struct upstream, tls_handshakes)},
      {"evr_proxy_upstream_tls_resumed_total", "counter",
       "TLS handshakes with the upstream that resumed a session (of the handshakes).",
       offsetof(struct upstream, tls_resumed)},
      {"evr_proxy_upstream_tls_handshake_failures_total", "counter",
       "TLS handshakes with the upstream that failed (--upstream-tls): certificate refused, "
       "name mismatch, protocol error, timeout.",
       offsetof(struct upstream, tls_failures)},
  };
  for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
    P("# HELP %s %s\n# TYPE %s %s\n", counters[c].name, counters[c].help, counters[c].name,
      counters[c].type);
    for (int i = 0; i < cfg.nup; i++) {
      atomic_ullong *v = (atomic_ullong *)((char *)&cfg.up[i] + counters[c].off);
      P("%s{upstream=\"%s\"} %llu\n", counters[c].name, cfg.up[i].label,
        (unsigned long long)atomic_load(v));
    }
  }
  P("# HELP evr_proxy_upstream_connect_seconds Time to connect to the upstream.\n"
    "# TYPE evr_proxy_upstream_connect_seconds histogram\n");
  for (int i = 0; i < cfg.nup; i++) {
    struct upstream *u = &cfg.up[i];
    for (int b = 0; b < NBUCKETS; b++)
      P("evr_proxy_upstream_connect_seconds_bucket{upstream=\"%s\",le=\"%g\"} %llu\n", u->label,
        bucket_le[b], (unsigned long long)atomic_load(&u->latency_bucket[b]));
    P("evr_proxy_upstream_connect_seconds_bucket{upstream=\"%s\",le=\"+Inf\"} %llu\n", u->label,
      (unsigned long long)atomic_load(&u->latency_count));
    P("evr_proxy_upstream_connect_seconds_sum{upstream=\"%s\"} %.6f\n", u->label,
      (double)atomic_load(&u->latency_us_sum) / 1e6);
    P("evr_proxy_upstream_connect_seconds_count{upstream=\"%s\"} %llu\n", u->label,
      (unsigned long long)atomic_load(&u->latency_count));
  }
#undef P
}

/* Answer and close: the head and body are written, then FIN. */
static void mconn_respond(struct mconn *m, const char *status, const char *msg) {
  evr_stream_read_stop(&m->s); /* the idle timeout still bounds the answer's drain */
  if (!msg) {
    metrics_text(&m->body);
    if (m->body.failed) {
      status = "500 Internal Server Error";
      msg = "out of memory\n";
    }
  }
  if (msg) {
    m->body.len = 0;
    m->body.failed = 0;
    text_printf(&m->body, "%s", msg);
  }
  int hlen = snprintf(m->head, sizeof m->head,
                      "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      status, m->body.len);
  evr_buf_t bufs[2] = {{m->head, (size_t)hlen}, {m->body.p, m->body.len}};
  if (m->body.failed || hlen <= 0 || (size_t)hlen >= sizeof m->head ||
      evr_stream_write(&m->w, &m->s, bufs, m->body.len ? 2 : 1, NULL) != 0 ||
      evr_stream_end(&m->s, mconn_closed) != 0)
    if (!evr_is_closing(&m->s.base)) evr_close(&m->s.base, mconn_closed);
}

static void on_mconn_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct mconn *m = (struct mconn *)s;
  if (nread < 0) {
    evr_close(&s->base, mconn_closed);
    return;
  }
  switch (metrics_req_feed(&m->req, buf, (size_t)nread)) {
    case MREQ_MORE: return;
    case MREQ_METRICS: mconn_respond(m, "200 OK", NULL); return;
    case MREQ_NOT_FOUND: mconn_respond(m, "404 Not Found", "try /metrics\n"); return;
    case MREQ_BAD_METHOD:
      mconn_respond(m, "405 Method Not Allowed", "only GET /metrics\n");
      return;
    case MREQ_NUL: mconn_respond(m, "400 Bad Request", "bad request: NUL byte\n"); return;
    case MREQ_TOO_LARGE:
      mconn_respond(m, "431 Request Header Fields Too Large", "request too large\n");
      return;
  }
}

static void mconn_idle(evr_stream_t *s) {
  if (!evr_is_closing(&s->base)) evr_close(&s->base, mconn_closed);
}

static void on_metrics_accept(evr_listener_t *l, int fd) {
  struct server *srv = l->base.data;
  if (fd < 0) return;
  if (srv->nmconns >= METRICS_MAX_CONNS) {
    /* Refused at once, with a best-effort answer; nothing is read. */
    static const char busy[] =
        "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        "Content-Length: 29\r\nConnection: close\r\n\r\ntoo many metrics connections\n";
    ssize_t w = send(fd, busy, sizeof busy - 1, SEND_FLAGS); /* fd is non-blocking */
    (void)w;
    close(fd);
    atomic_fetch_add(&stats.metrics_refused, 1);
    return;
  }
  struct mconn *m = calloc(1, sizeof *m);
  if (!m) {
    close(fd);
    return;
  }
  m->srv = srv;
  if (evr_stream_init(l->base.loop, &m->s) != 0 || evr_stream_open(&m->s, fd) != 0) {
    close(fd);
    free(m);
    return;
  }
  srv->nmconns++;
  evr_stream_set_idle_timeout(&m->s, METRICS_IDLE_MS, mconn_idle);
  if (evr_stream_read_start(&m->s, on_mconn_read) != 0) evr_close(&m->s.base, mconn_closed);
}

/* ---- draining and loops ---- */

static void close_listeners(struct server *srv) {
  for (int i = 0; i < srv->nlisteners; i++)
    if (!evr_is_closing(&srv->listeners[i].base)) evr_close(&srv->listeners[i].base, NULL);
  if (srv->has_metrics && !evr_is_closing(&srv->metrics.base))
    evr_close(&srv->metrics.base, NULL);
}

static void close_all_sessions(struct server *srv) {
  for (struct session *s = srv->sessions; s; s = s->next) session_end(s, ACCESSLOG_DRAIN);
}

static void on_drain_timeout(evr_timer_t *t) {
  struct server *srv = t->data;
  unsigned n = 0;
  for (struct session *s = srv->sessions; s; s = s->next) n++;
  if (n)
    log_info("loop %d: drain timeout: closing %u connection%s", srv->index, n, n == 1 ? "" : "s");
  close_all_sessions(srv);
}

/* With --loop-balance accept, a loop that does not accept ends its drain
 * only once the first loop has closed its listeners: a client that loop
 * accepted just before is handed over ahead of this notice (posts run in
 * order), so it is served, not closed with the loop. */
static void on_handed_all(void *arg) {
  struct server *srv = arg;
  srv->handed_all = 1;
  if (srv->draining == 1) evr_unref(&srv->wake.base);
}

static void on_command(evr_async_t *a) {
  struct server *srv = a->base.data;
  if (!srv->draining) {
    srv->draining = 1;
    close_listeners(srv);
    if (spreading() && srv == &loops[0])
      for (int i = 1; i < nloops; i++)
        (void)evr_post_node(loops[i].loop, &loops[i].handed_node, on_handed_all, &loops[i]);
    if (!spreading() || srv == &loops[0] || srv->handed_all) evr_unref(&srv->wake.base);
    evr_timer_start(&srv->drain_timer, on_drain_timeout, cfg.drain_timeout_s * 1000, 0);
    evr_timer_unref(&srv->drain_timer);
  }
  if (atomic_load(&srv->command) >= 2) close_all_sessions(srv);
}

/* Close every handle but those whose data is arg (the access log
 * writer's: it closes its own, after the sessions' lines are in). */
static void close_any(evr_handle_t *h, void *arg) {
  if (arg && h->data == arg) return;
  if (!evr_is_closing(h)) evr_close(h, NULL);
}

/* ---- --access-log and --check-interval: set-up and teardown ---- */

/* Free the checker (first loop): its counters are kept for /metrics, and
 * no loop reads a target from now on. */
static void checks_free(void) {
  if (!checker) return;
  for (int i = 0; i < cfg.nup; i++)
    if (cfg.up[i].target) health_target_stats(cfg.up[i].target, &cfg.up[i].hstats);
  atomic_store_explicit(&checks_live, 0, memory_order_release);
  int rc = health_free(checker, NULL, NULL);
  if (rc) log_error("health checks: free: %s", evr_strerror(rc));
  checker = NULL;
}

/* The main thread says every other loop has finished and the first one
 * drains: stop checking. */
static void on_checks_wake(evr_async_t *a) {
  (void)a;
  checks_free();
}

/* A target changed state (first loop). */
static void on_check_change(health_target_t *t, int up, const char *reason, void *arg) {
  (void)arg;
  struct upstream *u = health_target_data(t);
  health_stats_t st;
  health_target_stats(t, &st);
  if (up) {
    /* Back up: a mark left by a failed connect must not keep it out. */
    atomic_store(&u->down_until, 0);
    log_info("upstream %s: up: %s (%llu checks, %llu failed)", u->text, reason,
             (unsigned long long)st.checks, (unsigned long long)st.failures);
  } else {
    log_warn("upstream %s: down: %s (%llu checks, %llu failed): no new clients until it is "
             "up again", u->text, reason, (unsigned long long)st.checks,
             (unsigned long long)st.failures);
  }
}

/* The checker of every upstream given by address, on the first loop.
 * 0, or -1 (logged). */
static int checks_setup(struct server *first) {
  if (!cfg.check_interval_ms) return 0;
  evr_addr_t addrs[MAX_UPSTREAMS];
  struct upstream *which[MAX_UPSTREAMS];
  size_t n = 0;
  for (int i = 0; i < cfg.nup; i++) {
    struct upstream *u = &cfg.up[i];
    if (!u->numeric) {
      log_info("upstream %s: given by name, not checked (a failed connect still marks it "
               "down for %d ms)", u->text, DOWN_MS);
      continue;
    }
    which[n] = u;
    addrs[n++] = u->addr;
  }
  if (n == 0) {
    log_warn("health checks: no upstream given by address: nothing to check");
    return 0;
  }
  health_options_t ho = {
      .interval_ms = (unsigned)cfg.check_interval_ms,
      .timeout_ms = (unsigned)cfg.check_timeout_ms,
      .rise = (unsigned)cfg.rise,
      .fall = (unsigned)cfg.fall,
      .send = cfg.check_send,
      .send_len = cfg.check_send_len,
      .expect = cfg.check_expect,
      .expect_len = cfg.check_expect_len,
      .on_change = on_check_change,
  };
  int rc = health_new(&checker, first->loop, &ho, addrs, n);
  if (rc == 0) rc = evr_async_init(first->loop, &first->checks_wake, on_checks_wake);
  if (rc) {
    log_error("health checks: %s", evr_strerror(rc));
    if (checker) health_free(checker, NULL, NULL);
    checker = NULL;
    return -1;
  }
  first->has_checks_wake = 1;
  evr_unref(&first->checks_wake.base);
  for (size_t k = 0; k < n; k++) {
    which[k]->target = health_target(checker, k);
    health_target_set_data(which[k]->target, which[k]);
  }
  atomic_store_explicit(&checks_live, 1, memory_order_release);
  rc = health_start(checker);
  if (rc) {
    log_error("health checks: start: %s", evr_strerror(rc));
    return -1;
  }
  log_info("health checks: %zu upstream%s every %" PRIu64 " ms", n, n == 1 ? "" : "s",
           cfg.check_interval_ms);
  return 0;
}

/* The main thread, after each loop that finished: once the first loop has
 * been told to drain (or stop) and every other loop started has finished,
 * no loop but the first can read the checker: the first may free it. */
static void checks_maybe_stop(struct server *srv, int started, int stopping) {
  static int told;
  if (told || !stopping || started == 0 || !srv[0].has_checks_wake) return;
  for (int i = 1; i < started; i++)
    if (!atomic_load(&srv[i].finished)) return;
  told = 1;
  evr_async_send(&srv[0].checks_wake);
}

/* This loop's access log writer. 0, or the error (logged by the writer). */
static int alog_open(struct server *srv) {
  if (!cfg.access_log) return 0;
  accesslog_options_t ao = {
      .path = cfg.access_log,
      .format = cfg.access_log_format,
      .buffer_size = (size_t)cfg.access_log_buffer,
      .log = log_msg,
  };
  int rc = accesslog_open(&srv->alog, srv->loop, &ao);
  if (rc == 0) srv->has_alog = 1;
  return rc;
}

static int listen_one(struct server *srv, evr_listener_t *l, const evr_addr_t *addr,
                      const char *text, struct server *first, int i, evr_accept_cb cb) {
  int rc = evr_listener_init(srv->loop, l);
  if (rc) return rc;
  l->base.data = srv;
  int is_unix = evr_addr_family(addr) == AF_UNIX;
  int passed = i >= 0 ? cfg.fds[i] : cfg.metrics_fd; /* one socket, like a Unix one */
  if (first && (is_unix || passed >= 0)) {
    evr_listener_t *src = i >= 0 ? &first->listeners[i] : &first->metrics;
    int fd = dup(src->fd);
    if (fd < 0) rc = -errno;
    else if ((rc = evr_listener_open(l, fd, NULL, cb)) != 0) close(fd);
  } else if (passed >= 0) {
    rc = evr_listener_open(l, passed, NULL, cb);
    if (rc == 0) reload_add(l, i, -1);
  } else {
    evr_listen_options_t opts = {0};
    opts.flags = (!is_unix && cfg.threads > 1 && !spreading()) ? EVR_LISTEN_REUSEPORT : 0;
    int own = i >= 0 && (opts.flags & EVR_LISTEN_REUSEPORT); /* this loop's own socket */
    rc = reload_active() ? reload_adopt(l, i, srv->index, addr, text, cb)
                         : evr_listen(l, addr, &opts, cb);
    if (rc == 0) reload_add(l, i, own ? srv->index : -1);
  }
  if (rc) {
    log_error("listen on %s: %s", text, evr_strerror(rc));
    return rc;
  }
  if (!first) {
    evr_addr_t local;
    char buf[EVR_ADDR_STRLEN];
    if (evr_listener_sockname(l, &local) == 0 && evr_addr_format(&local, buf, sizeof buf) > 0)
      log_info("%s on %s", i >= 0 ? "listening" : "metrics", buf);
  }
  return 0;
}

static int server_init(struct server *srv, int index, struct server *first) {
  memset(srv, 0, sizeof *srv);
  srv->index = index;
  /* On io_uring the relay reads into the loop's receive buffers, and its
   * writes send from them in place: a buffer of a chunk (at most 16 KiB,
   * HAProxy's default buffer) takes a 16 KiB message in one receive and
   * one send. Other backends ignore these. */
  evr_loop_options_t lo = {.backend = cfg.backend,
                           .io_buffers = IO_BUFFERS,
                           .io_buffer_size = (unsigned)io_buffer_size};
  int rc = evr_loop_new(&srv->loop, &lo);
  if (rc) {
    log_error("loop: %s", evr_strerror(rc));
    return rc;
  }
  if ((rc = evr_async_init(srv->loop, &srv->wake, on_command)) != 0 ||
      (rc = evr_timer_init(srv->loop, &srv->drain_timer)) != 0 ||
      (rc = evr_timer_init(srv->loop, &srv->ep_timer)) != 0) {
    log_error("loop set-up: %s", evr_strerror(rc));
    return rc;
  }
  srv->wake.base.data = srv;
  srv->drain_timer.data = srv;
  evr_timer_unref(&srv->ep_timer);
  if ((rc = alog_open(srv)) != 0) return rc;
  /* BALANCE_ACCEPT: the first loop accepts for all. */
  for (int i = 0; i < cfg.nlisten && !(spreading() && index > 0); i++) {
    srv->nlisteners++;
    rc = listen_one(srv, &srv->listeners[i], &cfg.addrs[i], cfg.listen[i], first, i, on_accept);
    if (rc) return rc;
  }
  /* The metrics endpoint lives on the first loop only. */
  if (cfg.metrics && index == 0) {
    srv->has_metrics = 1;
    rc = listen_one(srv, &srv->metrics, &cfg.metrics_addr, cfg.metrics, NULL, -1,
                    on_metrics_accept);
    if (rc) return rc;
  }
  return 0;
}

static void server_free(struct server *srv) {
  if (!srv->loop) return;
  /* A client still being handed to this loop is closed when the run below
   * takes it (session_adopt). Timers are not handles: stop them. */
  srv->draining = 2;
  evr_timer_stop(&srv->drain_timer);
  evr_timer_stop(&srv->ep_timer);
  for (struct session *s = srv->sessions; s; s = s->next) evr_timer_stop(&s->sidle);
  /* Sessions left are closed as sessions: their memory and TLS state are
   * freed by their close callbacks (which write their access log lines:
   * the writer closes after them, its handles left to it). */
  close_all_sessions(srv);
  if (srv->index == 0) checks_free();
  evr_loop_walk(srv->loop, close_any, srv->has_alog ? &srv->alog : NULL);
  evr_loop_run(srv->loop, EVR_RUN_DEFAULT);
  if (srv->has_alog) {
    accesslog_counters_t c;
    int rc = accesslog_close(&srv->alog, NULL);
    if (rc) log_error("loop %d: access log: close: %s", srv->index, evr_strerror(rc));
    evr_loop_run(srv->loop, EVR_RUN_DEFAULT);
    accesslog_counters(&srv->alog, &c);
    if (c.lines_dropped)
      log_warn("loop %d: access log: %llu lines dropped in all", srv->index,
               (unsigned long long)c.lines_dropped);
    srv->has_alog = 0;
  }
  int rc = evr_loop_free(srv->loop);
  if (rc) log_error("loop %d: free: %s", srv->index, evr_strerror(rc));
  srv->loop = NULL;
}

#if EVR_PROXY_TLS
/* The contexts, before any loop runs. 0, or -1 (logged). */
static int tls_setup(void) {
  int rc;
  if (cfg.ncert) {
    /* The first pair is the default; each other one is presented to the
     * clients that ask (SNI) for a name its certificate carries. */
    for (int i = 0; i < cfg.ncert; i++) {
      rc = i == 0 ? evr_tls_ctx_new_server(&server_ctx, cfg.tls_cert[0], cfg.tls_key[0])
                  : evr_tls_ctx_add_server_cert(server_ctx, cfg.tls_cert[i], cfg.tls_key[i]);
      if (rc) {
        const char *why = rc == EVR_ETLS ? evr_tls_ctx_error() : "";
        log_error("--tls-cert %s --tls-key %s: %s%s%s", cfg.tls_cert[i], cfg.tls_key[i],
                  evr_strerror(rc), why[0] ? ": " : "", why);
        return -1;
      }
    }
    evr_tls_ctx_set_handshake_timeout(server_ctx, (unsigned)cfg.tls_handshake_timeout_ms);
  }
  if (cfg.upstream_tls) {
    rc = evr_tls_ctx_new_client(&upstream_ctx, cfg.tls_ca);
    if (rc) {
      const char *why = rc == EVR_ETLS ? evr_tls_ctx_error() : "";
      log_error("--tls-ca %s: %s%s%s", cfg.tls_ca ? cfg.tls_ca : "(the system's CAs)",
                evr_strerror(rc), why[0] ? ": " : "", why);
      return -1;
    }
    evr_tls_ctx_set_handshake_timeout(upstream_ctx, (unsigned)cfg.tls_handshake_timeout_ms);
    /* Resume sessions with the upstreams (as HAProxy reuses them by
     * default): the newest ticket of each upstream name or address. */
    evr_tls_ctx_set_resumption(upstream_ctx, 1);
  }
  return 0;
}

static void tls_cleanup(void) {
  evr_tls_ctx_free(server_ctx);
  evr_tls_ctx_free(upstream_ctx);
  server_ctx = upstream_ctx = NULL;
}
#endif

static pthread_t main_thread;

static void *server_main(void *p) {
  struct server *srv = p;
  int rc = service_run(srv->loop);
  if (rc < 0) {
    log_error("loop %d: %s", srv->index, evr_strerror(rc));
    srv->status = 1;
  }
  atomic_store(&srv->finished, 1);
  pthread_kill(main_thread, LOOP_DONE_SIGNAL);
  return NULL;
}

/* SIGUSR1: every loop's writer reopens its file (log rotation). */
static void reopen_access_logs(struct server *srv, int started) {
  if (!cfg.access_log) {
    log_info("signal %d: no --access-log to reopen", SIGUSR1);
    return;
  }
  log_info("signal %d: reopening the access log %s", SIGUSR1, cfg.access_log);
  for (int i = 0; i < started; i++)
    if (srv[i].has_alog) accesslog_request_reopen(&srv[i].alog);
}

static int serve(void) {
  int n = cfg.threads;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, LOOP_DONE_SIGNAL);
  sigaddset(&set, SIGUSR1); /* --access-log: reopen */
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  main_thread = pthread_self();

  for (int i = 0; i < cfg.nup; i++) {
    cfg.up[i].label = label_escape(cfg.up[i].text);
    if (!cfg.up[i].label) {
      log_error("out of memory");
      return 1;
    }
  }
#if EVR_PROXY_TLS
  if (tls_setup() != 0) {
    tls_cleanup();
    for (int i = 0; i < cfg.nup; i++) free(cfg.up[i].label);
    return 1;
  }
#endif
  struct server *srv = calloc((size_t)n, sizeof *srv);
  if (!srv) {
    log_error("out of memory");
    return 1;
  }
  loops = srv;
  nloops = n;
  int status = 0, started = 0;
  sources.max_conns = cfg.max_conns_per_source;
  sources.rate = cfg.rate_per_source;
  sources.table_size = cfg.source_table_size;
  if (source_limits_start(&sources) != 0) status = 1;
  for (int i = 0; i < n && status == 0; i++)
    if (server_init(&srv[i], i, i ? &srv[0] : NULL) != 0) status = 1;
  if (status == 0 && cfg.splice && !strcmp(evr_loop_backend(srv[0].loop), "io_uring")) {
    /* On io_uring a reading stream receives into the loop's buffers: bytes
     * it holds, or still gets from a receive being cancelled, are not in
     * the socket for splice(2) to take. */
    log_warn("--splice is not used on the io_uring backend (its receives take the bytes "
             "from the sockets): relaying through the streams");
    cfg.splice = 0;
  }
  if (status == 0 && checks_setup(&srv[0]) != 0) status = 1;
  if (status == 0) {
    char loops_text[64];
    if (n > 1)
      snprintf(loops_text, sizeof loops_text, "%d loops (loop balance: %s)", n,
               balance_name(cfg.loop_balance));
    else
      snprintf(loops_text, sizeof loops_text, "1 loop");
    log_info("evr-proxy %s started: %s, backend %s, %d upstream%s, %s", PROXY_VERSION,
             loops_text, evr_loop_backend(srv[0].loop), cfg.nup, cfg.nup > 1 ? "s" : "",
             cfg.balance == BAL_ROUNDROBIN ? "roundrobin" : "leastconn");
    for (; started < n; started++) {
      int rc = pthread_create(&srv[started].thread, NULL, server_main, &srv[started]);
      if (rc) {
        log_error("pthread_create: %s", strerror(rc));
        status = 1;
        break;
      }
    }
    if (status == 0 && service_ready() != 0) status = 1;
  }
  if (status) {
    for (int i = 0; i < started; i++) {
      atomic_store(&srv[i].command, 2);
      evr_async_send(&srv[i].wake);
    }
    checks_maybe_stop(srv, started, 1);
  }
  int done = 0, signals = 0;
  while (done < started) {
    int sig;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      reopen_access_logs(srv, started);
      continue;
    }
    if (sig == LOOP_DONE_SIGNAL) {
      done = 0;
      for (int i = 0; i < started; i++) done += atomic_load(&srv[i].finished);
      checks_maybe_stop(srv, started, signals > 0 || status != 0);
      continue;
    }
    /* SIGUSR2: once a new copy serves every listener, drain as on SIGTERM
     * (the service manager follows the new copy: no STOPPING=1). */
    int reloaded = sig == SIGUSR2;
    if (reloaded && reload_run(signals > 0 || status != 0) != 0) continue;
    if (++signals == 1 && !reloaded) service_stopping();
    log_info("%s %d: %s", reloaded ? "reloaded, signal" : "signal", sig,
             signals == 1 ? "draining connections" : "closing every connection");
    for (int i = 0; i < started; i++) {
      atomic_store(&srv[i].command, signals == 1 ? 1 : 2);
      evr_async_send(&srv[i].wake);
    }
    checks_maybe_stop(srv, started, 1);
  }
  for (int i = 0; i < started; i++) pthread_join(srv[i].thread, NULL);
  for (int i = 0; i < n; i++) {
    if (srv[i].status) status = 1;
    server_free(&srv[i]);
  }
  for (size_t i = 0; i < NEPISODES; i++) {
    atomic_store(&episodes[i]->open, 0);
    episode_flush(episodes[i], 1);
  }
  unsigned long long served = atomic_load(&stats.total);
  log_info("evr-proxy stopped: %llu connection%s served", served, served == 1 ? "" : "s");
  source_limits_stop(&sources);
  loops = NULL;
  nloops = 0;
  free(srv);
  for (int i = 0; i < cfg.nup; i++) free(cfg.up[i].label);
#if EVR_PROXY_TLS
  tls_cleanup();
#endif
  return status;
}

/* ---- command line ---- */

#if HAVE_SPLICE
#define SPLICE_HELP "  --splice                relay through kernel pipes (Linux splice(2), zero copy)\n"
#else
#define SPLICE_HELP "  --splice                not available in this build (needs Linux splice(2))\n"
#endif
#if EVR_PROXY_TLS
#define TLS_HELP ""
#else
#define TLS_HELP "                          (--tls-* and --upstream-tls: not available, built without TLS)\n"
#endif

static void usage(void) {
  printf(
      "usage: evr-proxy --listen ADDR... --upstream HOST:PORT... [options]\n"
      "A TCP proxy: relays every client to one of the upstreams.\n\n"
      "  --listen ADDR           address to accept clients on, repeatable;\n"
      "                          1.2.3.4:PORT, [::1]:PORT, unix:/path or unix:@name\n"
      "  --upstream HOST:PORT    upstream server, repeatable (also [v6]:PORT, unix:/path)\n"
      "  --balance MODE          roundrobin (default) or leastconn\n"
      "  --connect-timeout MS    upstream connect timeout (default 5000)\n"
      "  --idle-timeout SEC      close connections idle for SEC seconds (default 0: never)\n"
      "  --max-conns N           refuse clients beyond N open ones (default 0: no limit)\n"
      "  --max-conns-per-source N\n"
      "                          close at once a new client from an address (IPv4 address,\n"
      "                          IPv6 /64) that has N open (default 0: no limit)\n"
      "  --rate-per-source N     close at once a new client from an address beyond N per\n"
      "                          second, after a burst of N (default 0: no limit)\n"
      "  --source-table-size N   addresses remembered for these limits, a power of two\n"
      "                          (default 65536); when all have open clients, new addresses\n"
      "                          are refused. Unix-socket clients are not limited\n"
      "  --buffer-size BYTES     unsent bytes held per direction per connection (default 65536)\n"
      "  --send-proxy v1|v2      send a PROXY protocol header to the upstream\n"
      "  --accept-proxy          read a PROXY protocol header (v1 or v2) from every client\n"
      "                          first; its addresses are passed on as the client's\n"
      "  --accept-proxy-timeout MS\n"
      "                          the header must be complete within MS (default 5000)\n"
      "  --tls-cert FILE         terminate TLS on the listeners with this certificate chain\n"
      "                          (PEM, leaf first); repeatable: the first is the default,\n"
      "                          the others are chosen by the name the client asks (SNI)\n"
      "  --tls-key FILE          the private key of the --tls-cert of the same rank\n"
      "  --tls-handshake-timeout MS\n"
      "                          TLS handshakes must be done within MS (default 10000)\n"
      "  --upstream-tls          speak TLS to the upstreams, verifying their certificates\n"
      "  --tls-ca FILE           CAs trusted for upstream certificates (default: the system's)\n"
      "  --tls-sni NAME          name sent as SNI and checked in upstream certificates\n"
      "                          (default: the upstream's host name; its IP address is\n"
      "                          checked for an upstream given by address)\n"
      TLS_HELP
      "  --access-log FILE|-     one line per session when it ends, to FILE (appended;\n"
      "                          SIGUSR1 reopens it) or standard output\n"
      "  --access-log-format text|json\n"
      "                          the lines' format (default text)\n"
      "  --access-log-buffer BYTES\n"
      "                          per loop; lines that do not fit are dropped and counted\n"
      "                          (default 1048576, at least 2048)\n"
      "  --check-interval MS     check every upstream given by address every MS (default 0:\n"
      "                          no active checks); a down upstream gets no new clients\n"
      "  --check-timeout MS      bound of one check (default: the interval)\n"
      "  --rise N                passed checks that take a down upstream up (default 2)\n"
      "  --fall N                failed checks that take an up upstream down (default 3)\n"
      "  --check-send STR        sent once connected (escapes \\r \\n \\t \\\\ \\xHH)\n"
      "  --check-expect STR      must appear in the first 4096 bytes of the reply\n"
      "  --metrics ADDR          serve GET /metrics (Prometheus text format) on ADDR\n"
      "  --threads N             event loops, one per thread (default: one per CPU)\n"
      "  --loop-balance MODE     how clients reach the loops: kernel (one SO_REUSEPORT\n"
      "                          listener per loop) or accept (the first loop accepts and\n"
      "                          hands them out in turn); default here: %s\n"
      SPLICE_HELP
      "  --backend NAME          event backend (built here: see --version)\n"
      "  --drain-timeout SEC     on SIGTERM/SIGINT/SIGHUP, wait SEC seconds for clients\n"
      "                          (default 30)\n"
      "  --pid-file FILE         write the pid here once serving (a new copy started by a\n"
      "                          reload overwrites it; removed at exit if still ours)\n"
      "  --reload-timeout SEC    on SIGUSR2, wait SEC seconds for the new copy (default 10)\n"
      "  --log-level LEVEL       error, warn, info (default) or debug\n"
      "  --help, --version\n",
      balance_name(BALANCE_DEFAULT));
}

static void version(void) {
  printf("evr-proxy %s (evr %s; backends:", PROXY_VERSION, evr_version_string());
  for (const char *const *b = evr_backends(); *b; b++) printf(" %s", *b);
  printf(")\n");
}

static void add_upstream(const char *text) {
  if (cfg.nup == MAX_UPSTREAMS) usage_error("at most %d --upstream servers", MAX_UPSTREAMS);
  struct upstream *u = &cfg.up[cfg.nup++];
  u->text = text;
  int rc = evr_addr_parse(&u->addr, text);
  if (rc == 0) {
    u->numeric = 1;
    if (evr_addr_family(&u->addr) != AF_UNIX && evr_addr_port(&u->addr) == 0)
      usage_error("--upstream: '%s': port 0", text);
    return;
  }
  if (rc != EVR_EAI_NONAME) usage_error("--upstream: '%s': %s", text, evr_strerror(rc));
  rc = evr_addr_split(text, u->host, sizeof u->host, &u->port);
  if (rc) usage_error("--upstream: '%s': %s", text, evr_strerror(rc));
  if (u->port == 0) usage_error("--upstream: '%s': port 0", text);
}

/* --check-send and --check-expect: the string with C-style escapes undone
 * (\r \n \t \\ and \xHH, two hexadecimal digits), malloc'd, its length in
 * *len (it may hold NUL bytes). Exits 2 on an unknown or short escape, or
 * an empty string. */
static char *unescape(const char *opt, const char *s, size_t *len) {
  char *out = malloc(strlen(s) + 1);
  if (!out) usage_error("out of memory");
  size_t n = 0;
  for (const char *p = s; *p; p++) {
    if (*p != '\\') {
      out[n++] = *p;
      continue;
    }
    switch (*++p) {
      case 'r': out[n++] = '\r'; break;
      case 'n': out[n++] = '\n'; break;
      case 't': out[n++] = '\t'; break;
      case '\\': out[n++] = '\\'; break;
      case 'x': {
        int v = 0;
        for (int k = 0; k < 2; k++) {
          char c = *++p;
          int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
          if (d < 0) usage_error("%s: '%s': \\x needs two hexadecimal digits", opt, s);
          v = v * 16 + d;
        }
        out[n++] = (char)v;
        break;
      }
      default:
        usage_error("%s: '%s': unknown escape (\\r \\n \\t \\\\ \\xHH are known)", opt, s);
    }
  }
  if (n == 0) usage_error("%s: empty", opt);
  *len = n;
  return out;
}

/* Check the access log and health check options together. */
static void ops_options(void) {
  if (!cfg.access_log && (cfg.access_log_buffer || cfg.access_log_format_set))
    usage_error("%s needs --access-log",
                cfg.access_log_buffer ? "--access-log-buffer" : "--access-log-format");
  if (!cfg.check_interval_ms && cfg.check_opts_set)
    usage_error("--check-timeout, --rise, --fall, --check-send and --check-expect need "
                "--check-interval");
  if (cfg.check_expect_len > HEALTH_REPLY_MAX)
    usage_error("--check-expect: longer than %d bytes", HEALTH_REPLY_MAX);
}

/* Check the TLS options together; name what each upstream's certificate
 * is checked against. */
static void tls_options(void) {
  int any = cfg.ncert || cfg.nkey || cfg.upstream_tls || cfg.tls_ca || cfg.tls_sni ||
            cfg.tls_handshake_timeout_set;
#if !EVR_PROXY_TLS
  if (any)
    usage_error("%s: built without TLS (EVR_TLS is off, or OpenSSL 3 was not found)",
                cfg.ncert          ? "--tls-cert"
                : cfg.nkey         ? "--tls-key"
                : cfg.upstream_tls ? "--upstream-tls"
                : cfg.tls_ca       ? "--tls-ca"
                : cfg.tls_sni      ? "--tls-sni"
                                   : "--tls-handshake-timeout");
#else
  (void)any;
  if (cfg.ncert != cfg.nkey)
    usage_error("--tls-cert and --tls-key come in pairs (%d certificate%s, %d key%s)", cfg.ncert,
                cfg.ncert == 1 ? "" : "s", cfg.nkey, cfg.nkey == 1 ? "" : "s");
  if ((cfg.tls_ca || cfg.tls_sni) && !cfg.upstream_tls)
    usage_error("%s needs --upstream-tls", cfg.tls_ca ? "--tls-ca" : "--tls-sni");
  if (!cfg.upstream_tls) return;
  for (int i = 0; i < cfg.nup; i++) {
    struct upstream *u = &cfg.up[i];
    if (cfg.tls_sni) {
      snprintf(u->tls_name, sizeof u->tls_name, "%s", cfg.tls_sni);
    } else if (!u->numeric) {
      /* Both in cfg: a copy gcc's -Wrestrict does not take for an overlap
       * (host holds fewer bytes than tls_name). */
      size_t len = strnlen(u->host, sizeof u->tls_name - 1);
      memcpy(u->tls_name, u->host, len);
      u->tls_name[len] = '\0';
    } else if (evr_addr_family(&u->addr) == AF_INET || evr_addr_family(&u->addr) == AF_INET6) {
      /* The address itself: checked against the certificate's IP
       * addresses (no SNI is sent for an address). */
      const void *a = evr_addr_family(&u->addr) == AF_INET ? (const void *)&u->addr.u.in.sin_addr
                                                           : (const void *)&u->addr.u.in6.sin6_addr;
      if (!inet_ntop(evr_addr_family(&u->addr), a, u->tls_name, sizeof u->tls_name))
        usage_error("--upstream: '%s': %s", u->text, strerror(errno));
    }
    /* A Unix socket upstream: the chain only, unless --tls-sni names it. */
  }
#endif
}

int main(int argc, char **argv) {
  log_prog = "evr-proxy";
  reload_init(argc, argv);
  cfg.connect_timeout_ms = 5000;
  cfg.accept_proxy_timeout_ms = 5000;
  cfg.tls_handshake_timeout_ms = 10000;
  cfg.buffer_size = 65536;
  cfg.source_table_size = 65536;
  cfg.drain_timeout_s = 30;
  cfg.loop_balance = BALANCE_DEFAULT;
  int threads_set = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage();
      return 0;
    } else if (!strcmp(a, "--version")) {
      version();
      return 0;
    } else if (!strcmp(a, "--listen")) {
      if (cfg.nlisten == MAX_LISTEN) usage_error("at most %d --listen addresses", MAX_LISTEN);
      cfg.listen[cfg.nlisten++] = option_value(argc, argv, &i);
    } else if (!strcmp(a, "--upstream")) {
      add_upstream(option_value(argc, argv, &i));
    } else if (!strcmp(a, "--balance")) {
      const char *v = option_value(argc, argv, &i);
      if (!strcmp(v, "roundrobin")) cfg.balance = BAL_ROUNDROBIN;
      else if (!strcmp(v, "leastconn")) cfg.balance = BAL_LEASTCONN;
      else usage_error("--balance: '%s' is not roundrobin or leastconn", v);
    } else if (!strcmp(a, "--connect-timeout")) {
      cfg.connect_timeout_ms = parse_uint(a, option_value(argc, argv, &i), 1, 3600 * 1000);
    } else if (!strcmp(a, "--idle-timeout")) {
      cfg.idle_timeout_s = parse_uint(a, option_value(argc, argv, &i), 0, 86400 * 365);
    } else if (!strcmp(a, "--max-conns")) {
      cfg.max_conns = parse_uint(a, option_value(argc, argv, &i), 0, UINT32_MAX);
    } else if (!strcmp(a, "--max-conns-per-source")) {
      cfg.max_conns_per_source =
          (uint32_t)parse_uint(a, option_value(argc, argv, &i), 0, UINT32_MAX);
    } else if (!strcmp(a, "--rate-per-source")) {
      cfg.rate_per_source = (uint32_t)parse_uint(a, option_value(argc, argv, &i), 0, UINT32_MAX);
    } else if (!strcmp(a, "--source-table-size")) {
      const char *v = option_value(argc, argv, &i);
      uint64_t n = parse_uint(a, v, SRCLIMIT_MIN_CAPACITY, SRCLIMIT_MAX_CAPACITY);
      if (n & (n - 1)) usage_error("--source-table-size: '%s' is not a power of two", v);
      cfg.source_table_size = (uint32_t)n;
    } else if (!strcmp(a, "--buffer-size")) {
      cfg.buffer_size = parse_uint(a, option_value(argc, argv, &i), 4096, 1u << 30);
    } else if (!strcmp(a, "--send-proxy")) {
      const char *v = option_value(argc, argv, &i);
      if (!strcmp(v, "v1")) cfg.send_proxy = PP_V1;
      else if (!strcmp(v, "v2")) cfg.send_proxy = PP_V2;
      else usage_error("--send-proxy: '%s' is not v1 or v2", v);
    } else if (!strcmp(a, "--accept-proxy")) {
      cfg.accept_proxy = 1;
    } else if (!strcmp(a, "--accept-proxy-timeout")) {
      cfg.accept_proxy_timeout_ms = parse_uint(a, option_value(argc, argv, &i), 1, 3600 * 1000);
    } else if (!strcmp(a, "--tls-cert") || !strcmp(a, "--tls-key")) {
      int cert = !strcmp(a, "--tls-cert");
      int *n = cert ? &cfg.ncert : &cfg.nkey;
      if (*n == MAX_CERTS) usage_error("at most %d %s files", MAX_CERTS, a);
      (cert ? cfg.tls_cert : cfg.tls_key)[(*n)++] = option_value(argc, argv, &i);
    } else if (!strcmp(a, "--tls-handshake-timeout")) {
      cfg.tls_handshake_timeout_ms = parse_uint(a, option_value(argc, argv, &i), 1, 3600 * 1000);
      cfg.tls_handshake_timeout_set = 1;
    } else if (!strcmp(a, "--upstream-tls")) {
      cfg.upstream_tls = 1;
    } else if (!strcmp(a, "--tls-ca")) {
      cfg.tls_ca = option_value(argc, argv, &i);
    } else if (!strcmp(a, "--tls-sni")) {
      cfg.tls_sni = option_value(argc, argv, &i);
      if (!cfg.tls_sni[0] || strlen(cfg.tls_sni) >= sizeof cfg.up[0].tls_name)
        usage_error("--tls-sni: '%s': empty or too long", cfg.tls_sni);
    } else if (!strcmp(a, "--access-log")) {
      cfg.access_log = option_value(argc, argv, &i);
      if (!cfg.access_log[0]) usage_error("--access-log: empty path");
    } else if (!strcmp(a, "--access-log-format")) {
      const char *v = option_value(argc, argv, &i);
      if (!strcmp(v, "text")) cfg.access_log_format = ACCESSLOG_TEXT;
      else if (!strcmp(v, "json")) cfg.access_log_format = ACCESSLOG_JSON;
      else usage_error("--access-log-format: '%s' is not text or json", v);
      cfg.access_log_format_set = 1;
    } else if (!strcmp(a, "--access-log-buffer")) {
      cfg.access_log_buffer =
          parse_uint(a, option_value(argc, argv, &i), ACCESSLOG_LINE_MAX, 1u << 30);
    } else if (!strcmp(a, "--check-interval")) {
      cfg.check_interval_ms = parse_uint(a, option_value(argc, argv, &i), 0, 86400 * 1000);
    } else if (!strcmp(a, "--check-timeout")) {
      cfg.check_timeout_ms = parse_uint(a, option_value(argc, argv, &i), 1, 3600 * 1000);
      cfg.check_opts_set = 1;
    } else if (!strcmp(a, "--rise") || !strcmp(a, "--fall")) {
      uint64_t v = parse_uint(a, option_value(argc, argv, &i), 1, 1000);
      if (!strcmp(a, "--rise")) cfg.rise = v;
      else cfg.fall = v;
      cfg.check_opts_set = 1;
    } else if (!strcmp(a, "--check-send")) {
      free(cfg.check_send);
      cfg.check_send = unescape(a, option_value(argc, argv, &i), &cfg.check_send_len);
      cfg.check_opts_set = 1;
    } else if (!strcmp(a, "--check-expect")) {
      free(cfg.check_expect);
      cfg.check_expect = unescape(a, option_value(argc, argv, &i), &cfg.check_expect_len);
      cfg.check_opts_set = 1;
    } else if (!strcmp(a, "--metrics")) {
      cfg.metrics = option_value(argc, argv, &i);
      int rc = evr_addr_parse(&cfg.metrics_addr, cfg.metrics);
      if (rc) usage_error("--metrics: '%s': %s", cfg.metrics, evr_strerror(rc));
    } else if (!strcmp(a, "--threads")) {
      cfg.threads = (int)parse_uint(a, option_value(argc, argv, &i), 1, 1024);
      threads_set = 1;
    } else if (!strcmp(a, "--loop-balance")) {
      cfg.loop_balance = balance_parse(a, option_value(argc, argv, &i));
    } else if (!strcmp(a, "--splice")) {
#if HAVE_SPLICE
      cfg.splice = 1;
#elif SAMPLES_PORTABLE
      usage_error("--splice: not available in a portable build (EVR_PORTABLE): it needs Linux "
                  "splice(2)");
#else
      usage_error("--splice: not available on this system: it needs Linux splice(2)");
#endif
    } else if (!strcmp(a, "--backend")) {
      cfg.backend =
          parse_choice(a, option_value(argc, argv, &i), evr_backends(), "built in (see --version)");
    } else if (!strcmp(a, "--drain-timeout")) {
      cfg.drain_timeout_s = parse_uint(a, option_value(argc, argv, &i), 0, 86400);
    } else if (reload_option(argc, argv, &i)) {
    } else if (!strcmp(a, "--log-level")) {
      const char *v = option_value(argc, argv, &i);
      log_level = log_level_parse(v);
      if (log_level < 0) usage_error("--log-level: '%s' is not error, warn, info or debug", v);
    } else {
      usage_error("unknown option '%s'", a);
    }
  }
  for (int i = 0; i < cfg.nlisten; i++) {
    int rc = evr_addr_parse(&cfg.addrs[i], cfg.listen[i]);
    if (rc) usage_error("--listen: '%s': %s", cfg.listen[i], evr_strerror(rc));
  }
  /* Sockets passed by socket activation (daemon.h); one named "metrics"
   * serves /metrics when --metrics is not given. */
  cfg.metrics_fd = cfg.metrics ? activation_match(&cfg.metrics_addr)
                               : activation_named("metrics", &cfg.metrics_addr, &cfg.metrics);
  activation_listen(cfg.listen, cfg.addrs, cfg.fds, &cfg.nlisten, MAX_LISTEN);
  /* A reload: the old process's sockets, its metrics one included. */
  if (cfg.metrics_fd < 0) cfg.metrics_fd = reload_named("metrics", &cfg.metrics_addr, &cfg.metrics);
  reload_listen(cfg.listen, cfg.addrs, cfg.fds, &cfg.nlisten, MAX_LISTEN);
  if (cfg.nlisten == 0)
    usage_error("--listen is required (or sockets passed by socket activation)");
  if (cfg.nup == 0) usage_error("--upstream is required");
  tls_options();
  ops_options();
  if (!threads_set) cfg.threads = cpu_count();
  read_chunk = cfg.buffer_size / 2 < 65536 ? cfg.buffer_size / 2 : 65536;
  high_mark = cfg.buffer_size - read_chunk;
  io_buffer_size = read_chunk < IO_BUFFER_MAX ? read_chunk : IO_BUFFER_MAX;
  low_mark = high_mark / 2;
  int status = serve();
  free(cfg.check_send);
  free(cfg.check_expect);
  return status;
}
