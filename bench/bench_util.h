/* bench/bench_util.h: plain-socket helpers shared by the benchmark programs
 * (echo servers, load generator, loop-overhead drivers). Nothing here uses an
 * event library, so every server pays the same for these steps.
 */
#ifndef EVR_BENCH_UTIL_H
#define EVR_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The struct of type T whose member m is at p. */
#define BENCH_CONTAINER_OF(p, T, m) ((T *)(void *)((char *)(p)-offsetof(T, m)))

/* Parse a decimal integer in [min, max] given to option `opt`; prints a
 * message and exits with status 2 on error. */
uint64_t bench_parse_u64(const char *opt, const char *s, uint64_t min,
                         uint64_t max);
/* Parse a non-negative decimal number (e.g. seconds "1.5"); exits 2 on
 * error. */
double bench_parse_double(const char *opt, const char *s);
/* The value of option argv[*i] (advances *i); exits 2 if it is missing. */
const char *bench_optval(int argc, char **argv, int *i);

/* Parse the server command line: --port P (default 0: any free port),
 * --help, and, if `flag` is not NULL, that boolean flag (e.g.
 * "--bufferevent"), stored in *flag_on. Exits 2 on anything else. */
uint16_t bench_server_opts(int argc, char **argv, const char *flag,
                           int *flag_on);

/* A non-blocking, close-on-exec TCP socket listening on 127.0.0.1:port
 * (0: any free port) with SO_REUSEADDR and the largest backlog. Exits 1
 * on failure. *bound receives the actual port. */
int bench_listen(uint16_t port, uint16_t *bound);

/* Print "listening 127.0.0.1:<port>" on stdout and flush: run.sh waits for
 * this line. */
void bench_announce(uint16_t port);

/* Set O_NONBLOCK. 0 or -1 (errno set). */
int bench_nonblock(int fd);

/* Accept a connection on the listening socket lfd, non-blocking and
 * close-on-exec: accept4() where the system has it (Linux, the BSDs;
 * not in an EVR_PORTABLE build), else accept() then fcntl(). The
 * descriptor, or -1 with errno set (EAGAIN: nothing pending). */
int bench_accept(int lfd);

/* socket(domain, SOCK_STREAM, 0), close-on-exec, and non-blocking if
 * `nonblock`: SOCK_NONBLOCK/SOCK_CLOEXEC where they exist, else fcntl().
 * The descriptor, or -1 with errno set. */
int bench_socket(int domain, int nonblock);

/* socketpair(AF_UNIX, SOCK_STREAM), both ends non-blocking and
 * close-on-exec. 0, or -1 with errno set. */
int bench_socketpair(int sv[2]);

/* Disable Nagle's algorithm (every peer does the same). Errors ignored. */
void bench_nodelay(int fd);

/* Raise RLIMIT_NOFILE's soft limit to at least `want` descriptors if the
 * hard limit (or privileges to raise it) allow; otherwise to the hard limit.
 * Returns the resulting soft limit. */
uint64_t bench_raise_nofile(uint64_t want);

/* Ignore SIGPIPE: writes to a closed peer then fail with EPIPE. */
void bench_ignore_sigpipe(void);

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

#endif
