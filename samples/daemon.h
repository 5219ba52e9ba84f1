/* samples/daemon.h: what evr-echo and evr-proxy share and evr does not
 * provide: logging, option parsing, running N loops in N threads, spreading
 * connections over the loops, a supervisor for N worker processes, and the
 * service manager's side (socket activation, readiness, watchdog). */
#ifndef EVR_SAMPLES_DAEMON_H
#define EVR_SAMPLES_DAEMON_H

#include <stdarg.h>
#include <stdint.h>
#include <signal.h>
#include <sys/socket.h> /* SO_REUSEPORT_LB, where it exists */
#include "evr/evr.h"
#include "srclimit.h"

/* A build with -DEVR_PORTABLE=ON (EVR_PORTABLE=1) uses only what every
 * supported system has: no Linux-only call (splice, pipe2, accept4,
 * MSG_NOSIGNAL, ...) is compiled in, and the samples behave as they do on
 * a system without them. */
#if defined(EVR_PORTABLE) && EVR_PORTABLE
#define SAMPLES_PORTABLE 1
#else
#define SAMPLES_PORTABLE 0
#endif

/* ---- logging: one line per event on stderr ---- */
enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern int log_level;        /* messages above it are dropped */
extern const char *log_prog; /* program name in every line */

/* "2026-11-22T10:00:00.123Z evr-echo[1234] info: message" */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
  do { \
    if (log_level >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); \
  } while (0)
/* "error", "warn", "info" or "debug"; -1 if unknown. */
int log_level_parse(const char *s);

/* ---- command line ---- */
/* Print "prog: message" and a hint to stderr, exit with status 2. */
void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Parse a decimal integer in [min, max] for option `opt`: ASCII digits only
 * (no sign, no white space, no prefix; leading zeros are fine). Exits 2 on
 * error. */
uint64_t parse_uint(const char *opt, const char *s, uint64_t min, uint64_t max);
/* Return s if it is one of the NULL-terminated `choices`, else exit 2 with
 * "opt: 's' is not <hint>". For --backend: parse_choice(opt, s,
 * evr_backends(), "built in (see --version)"). */
const char *parse_choice(const char *opt, const char *s, const char *const *choices,
                         const char *hint);
/* Fetch the value of option argv[*i], advancing *i; exits 2 if missing. */
const char *option_value(int argc, char **argv, int *i);

/* ---- running loops ---- */
/* fn(index, arg) runs a whole loop and returns an exit status. */
typedef int (*serve_fn)(int index, void *arg);

/* Run fn in n threads (index 0..n-1; with n == 1, on the calling thread)
 * and return the largest status. */
int run_threads(int n, serve_fn fn, void *arg);

/* Run fn in n worker processes, restarting a worker that dies from a signal
 * or exits with a status other than 0 (after 1 s if it lived less than 1 s).
 * fn starts with SIGTERM, SIGINT and SIGHUP blocked, so a stop that comes
 * before it is ready stays pending: it takes them with sigwait() (or
 * unblocks them).
 * At the first SIGTERM/SIGINT/SIGHUP the supervisor calls on_stop(stop_arg)
 * (if not NULL), forwards the signal to the workers, waits for them to exit,
 * sends SIGKILL after kill_after_s seconds, and returns 0 if every worker
 * exited with 0. A worker starts with a copy of every descriptor the
 * supervisor holds: a listening socket stays open (and the kernel completes
 * connections on it) while any copy is, so fn must take over or close the
 * copies it inherits, and on_stop must close the supervisor's own.
 * The supervisor speaks for its workers to the service manager: READY=1
 * once they are started (the addresses are bound before, so connections
 * queue until a worker accepts them), STOPPING=1 at the first stop, and
 * WATCHDOG=1 every WATCHDOG_USEC / 2 while the watchdog is on. */
/* SIGUSR2 reloads (reload_run()): once the new supervisor serves, this one
 * stops its workers as at SIGTERM, without STOPPING=1. The workers start
 * with SIGUSR2 blocked too: fn takes and ignores it. */
int supervise(int n, serve_fn fn, void *arg, unsigned kill_after_s,
              void (*on_stop)(void *stop_arg), void *stop_arg);

/* ---- spreading connections over the loops (--loop-balance) ----
 * BALANCE_KERNEL: every loop has its own SO_REUSEPORT listener on each
 * address and the kernel spreads new connections over them. Only Linux
 * (3.9+) and FreeBSD (12+, SO_REUSEPORT_LB) do that; macOS, OpenBSD and
 * NetBSD hand every connection to one of the sockets, so one loop would
 * serve them all.
 * BALANCE_ACCEPT: the first loop alone listens; each connection it accepts
 * goes to the next loop in turn (itself included), handed over with
 * evr_post() and adopted by that loop, as Node's cluster primary hands
 * connections to its workers. */
enum { BALANCE_KERNEL, BALANCE_ACCEPT };
#if !SAMPLES_PORTABLE && (defined(__linux__) || (defined(__FreeBSD__) && defined(SO_REUSEPORT_LB)))
#define BALANCE_DEFAULT BALANCE_KERNEL
#else
#define BALANCE_DEFAULT BALANCE_ACCEPT
#endif
/* "kernel" or "accept". */
const char *balance_name(int balance);
/* The value of --loop-balance (exits 2 if it is neither name). */
int balance_parse(const char *opt, const char *s);

/* Runs on the loop thread of the loop a connection was handed to; owns fd
 * (adopt it with evr_stream_open(), or close it). */
typedef void (*adopt_fn)(void *target, int fd);

/* Make adopt(target, fd) run on loop `to` (any thread may call this; `to`
 * must not be freed meanwhile). A queued hand-over keeps `to` alive, so it
 * always runs, at the latest when the loop is run to its end before
 * evr_loop_free(); adopt must close fd if the loop no longer serves.
 * Returns 0, or a negative evr error (EVR_ENOMEM): adopt will not run and
 * fd has been closed. */
int handoff(evr_loop_t *to, adopt_fn adopt, void *target, int fd);

/* ---- the service manager (systemd): sd.h speaks its protocols ----
 * Socket activation: the listening sockets passed to this process
 * (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) are served like --listen
 * addresses. A --listen address (or evr-proxy's --metrics) whose text
 * equals a passed socket's address as evr_addr_format() writes it
 * (127.0.0.1:80, [::]:80, unix:/run/x.sock) names that socket: it is
 * adopted, not bound a second time. Every passed socket no address names
 * is served too, as if it had been given with --listen. A passed socket is
 * one socket however many loops serve it: like a Unix socket, every loop
 * that listens accepts on its own copy of the descriptor.
 *
 * The first of these calls reads the variables and removes them from the
 * environment (call it before starting threads or processes); a passed
 * descriptor that is not a listening stream socket, or malformed
 * variables, make it exit with status 1: a socket held and never served
 * would leave its clients waiting for ever. */

/* The passed socket bound to addr (see above): its descriptor, or -1. */
int activation_match(const evr_addr_t *addr);
/* The first passed socket named `name` (LISTEN_FDNAMES: a .socket unit's
 * FileDescriptorName=) that no address named: its descriptor, its address
 * in *addr and its text in *text (static storage); or -1. */
int activation_named(const char *name, evr_addr_t *addr, const char **text);
/* For a daemon's *n --listen addresses: fds[i] = activation_match(&addrs[i])
 * for each; then every passed socket not taken yet is appended to text,
 * addrs and fds (exits 1 if that makes more than max). Returns the number
 * of passed sockets among the *n. */
int activation_listen(const char **text, evr_addr_t *addrs, int *fds, int *n, int max);

/* Notifications to NOTIFY_SOCKET (no-ops without it, and in the workers of
 * supervise(), whose supervisor speaks for them): READY=1 once every loop
 * serves, STOPPING=1 when the drain begins. service_ready() first does
 * reload_ready() (reload.h: the pid file, and in a process started by a
 * reload the report to the old one; it then also sends MAINPID=): 0, or
 * -1 when the start fails (logged). */
int service_ready(void);
void service_stopping(void);

/* evr_loop_run(loop, EVR_RUN_DEFAULT) on a loop's own thread, watched: when
 * the service manager's watchdog is on (WATCHDOG_USEC, for this process),
 * the loop beats every WATCHDOG_USEC / 2 (an unreferenced timer), and
 * WATCHDOG=1 is sent each time every loop running under service_run() has
 * beaten since the last one was sent: a loop that hangs stops them. */
int service_run(evr_loop_t *loop);

/* The signal a loop thread sends the main thread (pthread_kill()) when its
 * loop has ended; SIGUSR2 is the reload's. Ignored by default, so a stray
 * one harms nothing. */
#define LOOP_DONE_SIGNAL SIGURG

/* Number of online CPUs (at least 1). */
int cpu_count(void);

/* ---- per-source limits at accept (srclimit.h) ----
 * What evr-echo and evr-proxy share around their table of sources: the
 * table with the limits it was made with, and `noun` naming what a daemon
 * accepts ("connection", "client") in its log lines. */
struct source_limits {
  srclimit_t *table;
  uint32_t max_conns, rate, table_size;
  const char *noun;
};
/* Make the table (NULL without a limit; -1 with errno logged on failure)
 * and log the limits: "source limits: open connections 3, new connections
 * no limit, per source; 65536 sources remembered, for this process". */
int source_limits_start(struct source_limits *sl);
/* Is fd, just accepted, within its source's limits? 1, with its source in
 * *src; 0 if it is to be closed: over a limit (logged at most once a
 * second per reason, with the number not logged), or already gone
 * (getpeername fails). */
int source_admits(struct source_limits *sl, int fd, srclimit_key_t *src);
/* Log the counts ("source limits: 6 admitted, 2 refused (open connections
 * 2, rate 0, table full 0), 0 evicted, 2 of 65536 entries in use"), an
 * error if a source is still counted busy, and free the table. */
void source_limits_stop(struct source_limits *sl);

#endif
