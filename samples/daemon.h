/* samples/daemon.h: what evr-echo and evr-proxy share and evr does not
 * provide: logging, option parsing, running N loops in N threads, and a
 * supervisor for N worker processes. */
#ifndef EVR_SAMPLES_DAEMON_H
#define EVR_SAMPLES_DAEMON_H

#include <stdarg.h>
#include <stdint.h>

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
 * At the first SIGTERM/SIGINT/SIGHUP the supervisor calls on_stop(stop_arg)
 * (if not NULL), forwards the signal to the workers, waits for them to exit,
 * sends SIGKILL after kill_after_s seconds, and returns 0 if every worker
 * exited with 0. A worker starts with a copy of every descriptor the
 * supervisor holds: a listening socket stays open (and the kernel completes
 * connections on it) while any copy is, so fn must take over or close the
 * copies it inherits, and on_stop must close the supervisor's own. */
int supervise(int n, serve_fn fn, void *arg, unsigned kill_after_s,
              void (*on_stop)(void *stop_arg), void *stop_arg);

/* Number of online CPUs (at least 1). */
int cpu_count(void);

#endif
