/* samples/echo.c: evr-echo, a TCP (and Unix-socket) echo server.
 *
 * One loop per thread. --loop-balance kernel: every loop listens on every
 * --listen address (SO_REUSEPORT for TCP, so the kernel spreads
 * connections; a Unix socket is bound once and its descriptor shared).
 * --loop-balance accept: the first loop alone listens and hands each
 * connection to the loops in turn (daemon.h says which is the default
 * where). --workers N runs N processes instead, under a supervisor that
 * restarts a worker that dies. Sockets passed by socket activation are
 * served like --listen addresses (daemon.h); like a Unix socket, each is
 * one socket, and every loop that listens accepts on a copy of it.
 *
 * Per connection: every byte read is written back. Memory is bounded: when
 * more than ECHO_HIGH_WATER bytes wait to be sent back, reading stops until
 * the backlog falls to ECHO_LOW_WATER. A client's FIN is answered, after
 * the backlog is flushed, with our FIN.
 *
 * Per source (--max-conns-per-source, --rate-per-source): a connection is
 * checked against its client address's limits as soon as it is accepted,
 * before anything is allocated for it, and closed at once if it is over
 * (srclimit.h). One table per process, shared by its loops: the limits hold
 * for the process whatever loop serves a connection; with --workers, each
 * worker process has its own.
 *
 * SIGTERM/SIGINT/SIGHUP: the listeners close at once, open connections go
 * on for at most --drain-timeout seconds, then are closed; the process
 * exits 0. A second signal closes every connection at once. SIGUSR2: a new
 * copy of the program takes the listening sockets over (reload.h), then
 * this one drains as on SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "daemon.h"
#include "reload.h"
#include "evr/evr.h"
#include "srclimit.h"

#define ECHO_VERSION "1.0.0"
#define ECHO_HIGH_WATER (1u << 20)
#define ECHO_LOW_WATER (256u << 10)
#define MAX_LISTEN 16

struct config {
  const char *listen[MAX_LISTEN];
  evr_addr_t addrs[MAX_LISTEN];
  int fds[MAX_LISTEN]; /* a socket passed by socket activation, or -1 */
  int nlisten;
  int threads;
  int workers;
  int balance; /* BALANCE_KERNEL or BALANCE_ACCEPT */
  const char *backend;
  uint64_t idle_timeout_s;
  uint64_t max_conns;
  uint64_t drain_timeout_s;
  uint32_t max_conns_per_source; /* 0: no limit */
  uint32_t rate_per_source;      /* new connections per second, and the burst; 0: no limit */
  uint32_t source_table_size;    /* sources the limits remember (a power of two) */
};

static struct config cfg;
static atomic_ulong conns_open; /* across the threads of this process */
/* The per-source limits of this process, shared by its loops; NULL when
 * there are none. */
static struct source_limits sources = {.noun = "connection"};

struct server;

struct conn {
  evr_stream_t s; /* first: a stream pointer is a conn pointer */
  struct server *srv;
  struct conn *prev, *next;
  uint64_t bytes;
  srclimit_key_t src; /* released when the connection ends */
};

struct server {
  int index;
  evr_loop_t *loop;
  evr_listener_t listeners[MAX_LISTEN];
  int nlisteners;
  evr_async_t wake; /* the main thread asks for a drain or a hard stop */
  atomic_int command; /* 1: drain, 2: close everything */
  int draining; /* 1: the listeners are closed; 2: the loop is being freed */
  evr_timer_t drain_timer;
  struct conn *conns; /* open connections */
  uint64_t accepted;  /* connections this loop adopted */
  unsigned next;      /* BALANCE_ACCEPT: the loop for the next connection */
  evr_post_t handed_node; /* BALANCE_ACCEPT: the first loop's notice ... */
  int handed_all;     /* ... that it hands this loop no more connections */
  int status;
  atomic_int finished;
  pthread_t thread;
};

/* With --workers, the supervisor binds every address before it forks; the
 * workers accept on copies of those descriptors (one accept queue per
 * address, so a dying worker loses no queued connection). A socket listens
 * while any process holds a copy, so every copy must close when the drain
 * starts: the supervisor closes its own before it forwards the signal
 * (stop_listening), and a worker's loops own every copy the worker has,
 * the inherited descriptors included, and close them in on_command. */
static struct server *bound;

/* The loops of this process, for the hand-over of connections. */
static struct server *loops;
static int nloops;

/* The first loop accepts for every loop (BALANCE_ACCEPT with 2+ loops). */
static int spreading(void) { return cfg.balance == BALANCE_ACCEPT && cfg.threads > 1; }

/* ---- connections ---- */

/* A connection is no more (closed, or never served): its places in
 * conns_open and in its source's count are given back. */
static void conn_discard(struct conn *c) {
  if (sources.table) srclimit_release(sources.table, &c->src);
  atomic_fetch_sub(&conns_open, 1);
  free(c);
}

static void conn_closed(evr_handle_t *h) {
  struct conn *c = (struct conn *)h;
  struct server *srv = c->srv;
  if (c->prev) c->prev->next = c->next;
  else srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  log_debug("conn %p closed after %llu bytes", (void *)c, (unsigned long long)c->bytes);
  conn_discard(c);
}

static void conn_close(struct conn *c) {
  if (!evr_is_closing(&c->s.base)) evr_close(&c->s.base, conn_closed);
}

static void on_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  struct conn *c = (struct conn *)s;
  if (nread > 0) {
    c->bytes += (uint64_t)nread;
    int rc = evr_stream_write_copy(s, buf, (size_t)nread);
    if (rc) {
      log_debug("conn %p: write: %s", (void *)c, evr_strerror(rc));
      conn_close(c);
    }
    return;
  }
  if (nread == EVR_EOF) {
    /* Half-close: flush what is queued, then FIN, then close. */
    log_debug("conn %p: client sent FIN", (void *)c);
    if (evr_stream_end(s, conn_closed) != 0) conn_close(c);
    return;
  }
  log_debug("conn %p: read: %s", (void *)c, evr_strerror((int)nread));
  conn_close(c);
}

static void on_water(evr_stream_t *s, int above) {
  /* Backpressure: the client does not read its echo fast enough. */
  if (above) evr_stream_read_stop(s);
  else if (evr_stream_read_start(s, on_read) != 0 && !evr_is_closing(&s->base))
    conn_close((struct conn *)s);
}

static void on_idle(evr_stream_t *s) {
  log_debug("conn %p: idle for %llu s, closing", (void *)s,
            (unsigned long long)cfg.idle_timeout_s);
  conn_close((struct conn *)s);
}

/* A connection to serve on c->srv's loop (its thread). c was allocated
 * when it was accepted; its places in conns_open and in its source's
 * count are already taken. */
static void conn_adopt(struct conn *c, int fd) {
  struct server *srv = c->srv;
  if (srv->draining > 1) {
    /* Handed over as the loop is freed: the client sees the connection
     * closed. One accepted before the listener closed and handed over
     * during a drain is served like the others: after a reload, no client
     * is turned away. */
    log_debug("loop %d: draining: closing a connection handed over", srv->index);
    close(fd);
    conn_discard(c);
    return;
  }
  int rc = evr_stream_init(srv->loop, &c->s);
  if (rc == 0) rc = evr_stream_open(&c->s, fd);
  if (rc) {
    log_error("stream: %s", evr_strerror(rc));
    close(fd);
    conn_discard(c);
    return;
  }
  c->next = srv->conns;
  if (c->next) c->next->prev = c;
  srv->conns = c;
  srv->accepted++;
  evr_stream_nodelay(&c->s, 1); /* ENOTSUP on Unix sockets: fine */
  evr_stream_set_water_marks(&c->s, ECHO_LOW_WATER, ECHO_HIGH_WATER, on_water);
  if (cfg.idle_timeout_s) evr_stream_set_idle_timeout(&c->s, cfg.idle_timeout_s * 1000, on_idle);
  if (log_level >= LOG_DEBUG) {
    evr_addr_t peer;
    char text[EVR_ADDR_STRLEN] = "?";
    if (evr_stream_peername(&c->s, &peer) == 0) evr_addr_format(&peer, text, sizeof text);
    log_debug("conn %p from %s (loop %d)", (void *)c, text, srv->index);
  }
  rc = evr_stream_read_start(&c->s, on_read);
  if (rc) conn_close(c);
}

static void adopt_handed(void *target, int fd) { conn_adopt(target, fd); }



static void on_accept(evr_listener_t *l, int fd) {
  struct server *srv = l->base.data;
  if (fd < 0) {
    log_warn("accept: %s", evr_strerror(fd));
    return;
  }
  /* Counted here, before a hand-over, so that a burst of connections on
   * their way to other loops cannot pass --max-conns. */
  unsigned long open = atomic_fetch_add(&conns_open, 1);
  if (cfg.max_conns && open >= cfg.max_conns) {
    atomic_fetch_sub(&conns_open, 1);
    log_debug("max-conns %llu reached: refusing a connection",
              (unsigned long long)cfg.max_conns);
    close(fd);
    return;
  }
  /* The source's limits, before anything is allocated for the connection. */
  srclimit_key_t src = {0, 0};
  if (sources.table && !source_admits(&sources, fd, &src)) {
    atomic_fetch_sub(&conns_open, 1);
    close(fd);
    return;
  }
  struct conn *c = calloc(1, sizeof *c);
  if (!c) {
    log_error("out of memory: refusing a connection");
    close(fd);
    if (sources.table) srclimit_release(sources.table, &src);
    atomic_fetch_sub(&conns_open, 1);
    return;
  }
  c->src = src;
  c->srv = srv;
  if (spreading()) {
    struct server *to = &loops[srv->next];
    srv->next = (srv->next + 1) % (unsigned)nloops;
    if (to != srv) {
      c->srv = to;
      int rc = handoff(to->loop, adopt_handed, c, fd);
      if (rc) {
        /* fd is closed: the client sees its connection end. */
        log_error("hand-over to loop %d: %s: closing a connection", to->index, evr_strerror(rc));
        conn_discard(c);
      }
      return;
    }
  }
  conn_adopt(c, fd);
}

/* ---- draining ---- */

static void close_listeners(struct server *srv) {
  for (int i = 0; i < srv->nlisteners; i++)
    if (!evr_is_closing(&srv->listeners[i].base)) evr_close(&srv->listeners[i].base, NULL);
}

static void close_all_conns(struct server *srv) {
  for (struct conn *c = srv->conns; c; c = c->next) conn_close(c);
}

static void on_drain_timeout(evr_timer_t *t) {
  struct server *srv = t->data;
  unsigned n = 0;
  for (struct conn *c = srv->conns; c; c = c->next) n++;
  if (n)
    log_info("loop %d: drain timeout: closing %u connection%s", srv->index, n, n == 1 ? "" : "s");
  close_all_conns(srv);
}

/* With --loop-balance accept, a loop that does not accept ends its drain
 * only once the first loop has closed its listeners: a connection that
 * loop accepted just before is handed over ahead of this notice (posts run
 * in order), so it is served, not closed with the loop. */
static void on_handed_all(void *arg) {
  struct server *srv = arg;
  srv->handed_all = 1;
  if (srv->draining == 1) evr_unref(&srv->wake.base);
}

static void on_command(evr_async_t *a) {
  struct server *srv = a->base.data;
  int cmd = atomic_load(&srv->command);
  if (!srv->draining) {
    srv->draining = 1;
    close_listeners(srv);
    if (spreading() && srv == &loops[0])
      for (int i = 1; i < nloops; i++)
        (void)evr_post_node(loops[i].loop, &loops[i].handed_node, on_handed_all, &loops[i]);
    /* Neither the wake-up handle nor the drain timer keeps the loop alive:
     * it ends as soon as the last connection closes (and, on a loop that
     * is handed connections, once the notice above has come). */
    if (!spreading() || srv == &loops[0] || srv->handed_all) evr_unref(&srv->wake.base);
    evr_timer_start(&srv->drain_timer, on_drain_timeout, cfg.drain_timeout_s * 1000, 0);
    evr_timer_unref(&srv->drain_timer);
  }
  if (cmd >= 2) close_all_conns(srv);
}

static void close_any(evr_handle_t *h, void *arg) {
  (void)arg;
  if (!evr_is_closing(h)) evr_close(h, NULL);
}

/* ---- set-up, per loop ---- */

static int server_listen(struct server *srv, struct server *first) {
  evr_listen_options_t opts = {0};
  if (spreading() && srv->index > 0) return 0; /* the first loop accepts for all */
  for (int i = 0; i < cfg.nlisten; i++) {
    evr_listener_t *l = &srv->listeners[i];
    int rc = evr_listener_init(srv->loop, l);
    if (rc) return rc;
    l->base.data = srv;
    srv->nlisteners++;
    int is_unix = evr_addr_family(&cfg.addrs[i]) == AF_UNIX;
    int passed = cfg.fds[i] >= 0; /* one socket, like a Unix one */
    if (first && (is_unix || passed || first == bound)) {
      /* One socket; every loop accepts on a copy of it. In a worker, loop 0
       * adopts the descriptor inherited from the supervisor instead of a
       * copy, so the worker holds no copy it does not accept on. */
      int fd = first == bound && srv->index == 0 ? first->listeners[i].fd
                                                 : dup(first->listeners[i].fd);
      if (fd < 0) return -errno;
      rc = evr_listener_open(l, fd, NULL, on_accept);
      if (rc) close(fd);
    } else if (passed) {
      rc = evr_listener_open(l, cfg.fds[i], NULL, on_accept);
      if (rc == 0) reload_add(l, i, -1);
    } else {
      opts.flags = (!is_unix && cfg.threads > 1 && !spreading()) ? EVR_LISTEN_REUSEPORT : 0;
      int own = opts.flags & EVR_LISTEN_REUSEPORT; /* this loop's own socket */
      rc = reload_active() ? reload_adopt(l, i, srv->index, &cfg.addrs[i], cfg.listen[i], on_accept)
                           : evr_listen(l, &cfg.addrs[i], &opts, on_accept);
      if (rc == 0) reload_add(l, i, own ? srv->index : -1);
    }
    if (rc) {
      log_error("listen on %s: %s", cfg.listen[i], evr_strerror(rc));
      return rc;
    }
    if (!first) {
      evr_addr_t local;
      char text[EVR_ADDR_STRLEN];
      if (evr_listener_sockname(l, &local) == 0 && evr_addr_format(&local, text, sizeof text) > 0)
        log_info("listening on %s", text);
    }
  }
  return 0;
}

static int server_init(struct server *srv, int index, struct server *first) {
  memset(srv, 0, sizeof *srv);
  srv->index = index;
  evr_loop_options_t lo = {.backend = cfg.backend};
  int rc = evr_loop_new(&srv->loop, &lo);
  if (rc) {
    log_error("loop: %s", evr_strerror(rc));
    return rc;
  }
  if ((rc = evr_async_init(srv->loop, &srv->wake, on_command)) != 0 ||
      (rc = evr_timer_init(srv->loop, &srv->drain_timer)) != 0) {
    log_error("loop set-up: %s", evr_strerror(rc));
    return rc;
  }
  srv->wake.base.data = srv;
  srv->drain_timer.data = srv;
  return server_listen(srv, first);
}

static void server_free(struct server *srv) {
  if (!srv->loop) return;
  /* A connection still being handed to this loop is closed when the run
   * below takes it (conn_adopt). Timers are not handles: stop them. */
  srv->draining = 2;
  evr_timer_stop(&srv->drain_timer);
  evr_loop_walk(srv->loop, close_any, NULL);
  evr_loop_run(srv->loop, EVR_RUN_DEFAULT);
  int rc = evr_loop_free(srv->loop);
  if (rc) log_error("loop %d: free: %s", srv->index, evr_strerror(rc));
  srv->loop = NULL;
}

static pthread_t main_thread;

static void *server_main(void *p) {
  struct server *srv = p;
  int rc = service_run(srv->loop);
  if (rc < 0) {
    log_error("loop %d: %s", srv->index, evr_strerror(rc));
    srv->status = 1;
  }
  /* Tell the main thread that this loop is done. */
  atomic_store(&srv->finished, 1);
  pthread_kill(main_thread, LOOP_DONE_SIGNAL);
  return NULL;
}

/* One process: cfg.threads loops in as many threads; the calling thread
 * waits for signals. */
static int serve(int index, void *arg) {
  (void)index;
  (void)arg;
  int n = cfg.threads;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, LOOP_DONE_SIGNAL);
  /* Blocked in every thread (they inherit the mask) and taken by sigwait()
   * here, so no handler ever interrupts a loop. */
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN); /* belt and braces: evr never raises it */
  main_thread = pthread_self();

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
  if (source_limits_start(&sources) != 0) {
    free(srv);
    loops = NULL;
    nloops = 0;
    return 1;
  }
  for (int i = 0; i < n && status == 0; i++)
    if (server_init(&srv[i], i, bound ? bound : i ? &srv[0] : NULL) != 0) status = 1;
  if (status == 0) {
    if (n > 1)
      log_info("evr-echo %s started: %d loops (loop balance: %s), backend %s", ECHO_VERSION, n,
               balance_name(cfg.balance), evr_loop_backend(srv[0].loop));
    else
      log_info("evr-echo %s started: 1 loop, backend %s", ECHO_VERSION,
               evr_loop_backend(srv[0].loop));
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
  int done = 0, signals = 0;
  if (status) { /* ask the loops that run to stop at once */
    for (int i = 0; i < started; i++) {
      atomic_store(&srv[i].command, 2);
      evr_async_send(&srv[i].wake);
    }
  }
  while (done < started) {
    int sig;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == LOOP_DONE_SIGNAL) {
      /* A loop ended; count the threads that have really finished. */
      done = 0;
      for (int i = 0; i < started; i++) done += atomic_load(&srv[i].finished);
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
  }
  for (int i = 0; i < started; i++) pthread_join(srv[i].thread, NULL);
  for (int i = 0; i < n; i++) {
    if (srv[i].status) status = 1;
    server_free(&srv[i]);
  }
  /* "... served (per loop: 11 10 10 10)": how the connections were spread. */
  uint64_t accepted = 0;
  size_t cap = (size_t)n * 21 + 16, len = 0;
  char *per_loop = n > 1 ? malloc(cap) : NULL;
  for (int i = 0; i < n; i++) {
    accepted += srv[i].accepted;
    if (per_loop)
      len += (size_t)snprintf(per_loop + len, cap - len, "%s%llu", i ? " " : " (per loop: ",
                              (unsigned long long)srv[i].accepted);
  }
  if (per_loop) snprintf(per_loop + len, cap - len, ")");
  log_info("evr-echo stopped: %llu connection%s served%s", (unsigned long long)accepted,
           accepted == 1 ? "" : "s", per_loop ? per_loop : "");
  free(per_loop);
  source_limits_stop(&sources);
  loops = NULL;
  nloops = 0;
  free(srv);
  return status;
}

/* Supervisor: stop accepting when the workers are told to stop. */
static void stop_listening(void *arg) {
  struct server *srv = arg;
  close_listeners(srv);
  evr_loop_run(srv->loop, EVR_RUN_NOWAIT);
}

/* ---- command line ---- */

static void usage(void) {
  printf("usage: evr-echo [options]\n"
         "A TCP echo server: every byte received is sent back.\n\n"
         "  --listen ADDR         address to listen on, repeatable (default 127.0.0.1:7777,\n"
         "                        none if sockets are passed by socket activation);\n"
         "                        1.2.3.4:PORT, [::1]:PORT, unix:/path or unix:@name\n"
         "  --threads N           event loops, one per thread (default: one per CPU)\n"
         "  --workers N           run N worker processes instead, restarted if they die\n"
         "  --loop-balance MODE   how connections reach the loops: kernel (one SO_REUSEPORT\n"
         "                        listener per loop) or accept (the first loop accepts and\n"
         "                        hands them out in turn); default here: %s\n"
         "  --backend NAME        event backend: %s\n"
         "  --idle-timeout SEC    close connections idle for SEC seconds (default 0: never)\n"
         "  --max-conns N         refuse connections beyond N open ones (default 0: no limit)\n"
         "  --max-conns-per-source N\n"
         "                        close at once a new connection from a client address\n"
         "                        (IPv4 address, IPv6 /64) that has N open (default 0: no limit)\n"
         "  --rate-per-source N   close at once a new connection from a client address\n"
         "                        beyond N per second, after a burst of N (default 0: no limit)\n"
         "  --source-table-size N client addresses remembered for these limits, a power of\n"
         "                        two (default %u); when all have open connections, new\n"
         "                        addresses are refused. Unix-socket clients are not limited;\n"
         "                        the limits are per process (per worker with --workers)\n"
         "  --drain-timeout SEC   on SIGTERM/SIGINT/SIGHUP, wait SEC seconds for clients\n"
         "                        (default 30)\n"
         "  --pid-file FILE       write the pid here once serving (a new copy started by a\n"
         "                        reload overwrites it; removed at exit if still ours)\n"
         "  --reload-timeout SEC  on SIGUSR2, wait SEC seconds for the new copy (default 10)\n"
         "  --log-level LEVEL     error, warn, info (default) or debug\n"
         "  --help, --version\n",
         balance_name(BALANCE_DEFAULT), "epoll, kqueue or poll (built here: see --version)",
         SRCLIMIT_DEFAULT_CAPACITY);
}

static void version(void) {
  printf("evr-echo %s (evr %s; backends:", ECHO_VERSION, evr_version_string());
  for (const char *const *b = evr_backends(); *b; b++) printf(" %s", *b);
  printf(")\n");
}

int main(int argc, char **argv) {
  log_prog = "evr-echo";
  reload_init(argc, argv);
  cfg.drain_timeout_s = 30;
  cfg.balance = BALANCE_DEFAULT;
  cfg.source_table_size = SRCLIMIT_DEFAULT_CAPACITY;
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
    } else if (!strcmp(a, "--threads")) {
      cfg.threads = (int)parse_uint(a, option_value(argc, argv, &i), 1, 1024);
      threads_set = 1;
    } else if (!strcmp(a, "--workers")) {
      cfg.workers = (int)parse_uint(a, option_value(argc, argv, &i), 1, 1024);
    } else if (!strcmp(a, "--loop-balance")) {
      cfg.balance = balance_parse(a, option_value(argc, argv, &i));
    } else if (!strcmp(a, "--backend")) {
      cfg.backend =
          parse_choice(a, option_value(argc, argv, &i), evr_backends(), "built in (see --version)");
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
  /* Sockets passed by socket activation: adopted, and the default address
   * is not bound when there are any (daemon.h). */
  activation_listen(cfg.listen, cfg.addrs, cfg.fds, &cfg.nlisten, MAX_LISTEN);
  reload_listen(cfg.listen, cfg.addrs, cfg.fds, &cfg.nlisten, MAX_LISTEN);
  if (cfg.nlisten == 0) {
    cfg.listen[0] = "127.0.0.1:7777";
    evr_addr_parse(&cfg.addrs[0], cfg.listen[0]);
    cfg.fds[cfg.nlisten++] = -1;
  }
  if (!threads_set) cfg.threads = cfg.workers ? 1 : cpu_count();
  if (!cfg.workers) return serve(0, NULL);

  /* The supervisor's loop only holds the listeners; it never runs until
   * the workers are told to stop, when it closes them. */
  static struct server parent;
  bound = &parent;
  int threads = cfg.threads;
  cfg.threads = 1;
  if (server_init(&parent, -1, NULL) != 0) {
    server_free(&parent);
    return 1;
  }
  cfg.threads = threads;
  log_info("evr-echo %s supervising %d workers", ECHO_VERSION, cfg.workers);
  int status = supervise(cfg.workers, serve, NULL, (unsigned)cfg.drain_timeout_s + 5,
                         stop_listening, &parent);
  server_free(&parent);
  return status;
}
