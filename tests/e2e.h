/* tests/e2e.h: helpers for end-to-end tests of the sample daemons: start a
 * daemon binary, wait until it listens, drive many loopback connections
 * with verified random data, stop it with a signal. Plain POSIX sockets and
 * poll(), so the tests do not depend on the library they check. */
#ifndef EVR_TESTS_E2E_H
#define EVR_TESTS_E2E_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Path of a program built into build/bin. */
const char *e2e_bin(const char *name);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int e2e_free_port(void);

/* Start argv[0] with argv; its stderr goes to the file at log_path (if not
 * NULL); it inherits no descriptor but 0, 1 and 2. Returns the pid; fails
 * the test on error. */
pid_t e2e_spawn(char *const argv[], const char *log_path);

/* Connect to 127.0.0.1:port until it succeeds, at most timeout_ms.
 * Returns 0 when something listens, -1 on timeout. */
int e2e_wait_listening(int port, int timeout_ms);

/* Send sig, then wait at most timeout_ms for the process to exit. Returns
 * the wait status, or -1 if it did not exit (it is then killed). */
int e2e_stop(pid_t pid, int sig, int timeout_ms);

/* Wait for exit without sending anything; -1 on timeout. */
int e2e_wait_exit(pid_t pid, int timeout_ms);

/* A blocking connected socket to 127.0.0.1:port, or -1. */
int e2e_connect(int port);

/* Connect to 127.0.0.1:port every 10 ms (closing what connects) until a
 * connect is refused: 1 then, 0 if every one of 500 tries connected. For a
 * daemon that is to stop listening (a drain). */
int e2e_wait_refused(int port);

/* Open `conns` connections to 127.0.0.1:port, send `bytes` of
 * pseudo-random data on each (seeded per connection) while reading the
 * echo, and verify every byte. With half_close, each connection shuts down
 * its sending side after the last byte and expects EOF after the last byte
 * back. Bounded by timeout_ms. Returns the number of connections that
 * failed (0 is success); prints the first problems. */
int e2e_echo_traffic(int port, int conns, size_t bytes, int half_close, int timeout_ms);

/* Contents of a file (NUL-terminated, malloc'd), or NULL. */
char *e2e_read_file(const char *path);

/* The TCP sockets of process pid listening on 127.0.0.1:port (Linux:
 * /proc/<pid>/fd against /proc/net/tcp); -1 where /proc cannot tell. */
int e2e_count_listeners(pid_t pid, int port);

/* Read an HTTP/1.0 response to "GET <path>" from 127.0.0.1:port (malloc'd,
 * NUL-terminated), or NULL. */
char *e2e_http_get(int port, const char *path);

#endif
