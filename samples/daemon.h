/* samples/daemon.h: what evr-echo and evr-proxy share and evr does not
 * provide: logging, option parsing, running N loops in N threads, spreading
 * connections over the loops, and a supervisor for N worker processes. */
#ifndef EVR_SAMPLES_DAEMON_H
#define EVR_SAMPLES_DAEMON_H

#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h> /* SO_REUSEPORT_LB, where it exists */
#include "evr/evr.h"

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
 * copies it inherits, and on_stop must close the supervisor's own. */
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

/* Number of online CPUs (at least 1). */
int cpu_count(void);

#endif
