/* tests/test_systemd.c: evr-echo and evr-proxy under a service manager, end
 * to end, under every backend (EVR_BACKEND is inherited by the daemons):
 * listening sockets passed by socket activation (LISTEN_FDS, LISTEN_PID,
 * LISTEN_FDNAMES: descriptor 3 on, as systemd passes them) are served
 * with one loop, several (both --loop-balance modes) and --workers, matched
 * with --listen addresses, closed when the drain starts; unusable ones make
 * the daemon exit 1; READY=1, STOPPING=1 and WATCHDOG=1 reach a
 * NOTIFY_SOCKET the test binds, from the main process; and evr-echo answers
 * under the real systemd-socket-activate where it is installed. */
/* evr-test: backends novalgrind needs=evr-echo,evr-proxy timeout=600 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "e2e.h"
#include "helpers.h"

static char log_path[64], echo_log_path[64], notify_path[64];
static int notify_fd = -1;
/* Processes a test started, killed by teardown if a failed check leaves
 * them running. */
static pid_t started[4];
static int nstarted;

static pid_t track(pid_t pid) {
  if (nstarted < (int)(sizeof started / sizeof started[0])) started[nstarted++] = pid;
  return pid;
}

/* Variables of the protocols: none may leak into a daemon from the
 * environment the tests run in. */
static const char *const sd_vars[] = {"LISTEN_PID",    "LISTEN_FDS",   "LISTEN_FDNAMES",
                                      "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                      NULL};

static int setup(void **state) {
  (void)state;
  evr_test_skip_if_backend_refused();
  for (const char *const *v = sd_vars; *v; v++) unsetenv(*v);
  snprintf(log_path, sizeof log_path, "/tmp/evr-sd-test-%ld.log", (long)getpid());
  snprintf(echo_log_path, sizeof echo_log_path, "/tmp/evr-sd-test-%ld.echo.log", (long)getpid());
  snprintf(notify_path, sizeof notify_path, "/tmp/evr-sd-test-%ld.sock", (long)getpid());
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < nstarted; i++)
    if (waitpid(started[i], NULL, WNOHANG) == 0) {
      /* Two stop signals: no drain; a supervisor stops its workers. */
      kill(started[i], SIGTERM);
      e2e_stop(started[i], SIGTERM, 5000);
    }
  nstarted = 0;
  unlink(log_path);
  unlink(echo_log_path);
  if (notify_fd >= 0) close(notify_fd);
  notify_fd = -1;
  unlink(notify_path);
  return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dump_log_and_fail(const char *what) {
  char *log = e2e_read_file(log_path);
  fail_msg("%s; log:\n%s", what, log ? log : "(none)");
}

static int log_has(const char *s) {
  char *log = e2e_read_file(log_path);
  int has = log && strstr(log, s) != NULL;
  free(log);
  return has;
}

/* A listening TCP socket on 127.0.0.1, close-on-exec (the child passes its
 * own copy); its port in *port. */
static int listen_tcp(int *port) {
  int fd = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 128), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

/* Start argv as a service manager would: fds[0..n) become descriptors 3..
 * 3+n-1 of the child, with LISTEN_FDS=n (unless env sets it) and
 * LISTEN_PID=the child's pid; env adds "NAME=VALUE" strings, "$PID" as a
 * value standing for the child's pid. The child's stderr goes to log_path.
 * The parent closes its copies of fds: from then on only the daemon holds
 * the sockets. */
static pid_t spawn_activated(char *const argv[], const int *fds, int n, const char *const *env) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int high[8];
    if (n > 8) _exit(126);
    /* Out of the way first: fds[i] may itself be one of 3, 4, ... */
    for (int i = 0; i < n; i++)
      if ((high[i] = fcntl(fds[i], F_DUPFD, 100)) < 0) _exit(126);
    for (int i = 0; i < n; i++) {
      if (dup2(high[i], 3 + i) < 0) _exit(126); /* dup2 clears close-on-exec */
      close(high[i]);
    }
    char num[32];
    snprintf(num, sizeof num, "%ld", (long)getpid());
    setenv("LISTEN_PID", num, 1);
    snprintf(num, sizeof num, "%d", n);
    if (n > 0) setenv("LISTEN_FDS", num, 1);
    for (const char *const *e = env; e && *e; e++) {
      char name[64];
      const char *eq = strchr(*e, '=');
      if (!eq || (size_t)(eq - *e) >= sizeof name) _exit(126);
      memcpy(name, *e, (size_t)(eq - *e));
      name[eq - *e] = '\0';
      snprintf(num, sizeof num, "%ld", (long)getpid());
      setenv(name, strcmp(eq + 1, "$PID") == 0 ? num : eq + 1, 1);
    }
    int lf = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (lf >= 0) {
      dup2(lf, STDERR_FILENO);
      close(lf);
    }
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  for (int i = 0; i < n; i++) close(fds[i]);
  return track(pid);
}

/* ---- a fake NOTIFY_SOCKET ---- */

static void notify_open(void) {
  notify_fd = test_socket(AF_UNIX, SOCK_DGRAM, 0);
  assert_true(notify_fd >= 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", notify_path);
  unlink(notify_path);
  assert_int_equal(bind(notify_fd, (struct sockaddr *)&sa, sizeof sa), 0);
#if defined(SO_PASSCRED) && defined(SCM_CREDENTIALS)
  int on = 1; /* the sender's pid comes with each datagram, as systemd gets it */
  assert_int_equal(setsockopt(notify_fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
#endif
}

/* The next datagram within timeout_ms (NUL-terminated in buf): its length,
 * or -1. *from is its sender's pid where the system says (Linux), else 0. */
static int notify_next(char *buf, size_t size, int timeout_ms, pid_t *from) {
  struct pollfd p = {notify_fd, POLLIN, 0};
  int n;
  do n = poll(&p, 1, timeout_ms);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  struct iovec iov = {buf, size - 1};
  union {
    struct cmsghdr h;
    char space[256];
  } ctl;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = &ctl;
  msg.msg_controllen = sizeof ctl;
  ssize_t r = recvmsg(notify_fd, &msg, 0);
  if (r < 0) return -1;
  buf[r] = '\0';
  *from = 0;
#if defined(SO_PASSCRED) && defined(SCM_CREDENTIALS)
  /* The credentials are the only control message asked for: the first.
   * (musl's CMSG_NXTHDR does not build under -Wsign-conversion.) */
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
    struct ucred cred;
    memcpy(&cred, CMSG_DATA(c), sizeof cred);
    *from = cred.pid;
  }
#endif
  return (int)r;
}

/* 1 if the datagram has the line `want` ("READY=1"). */
static int has_line(const char *msg, const char *want) {
  size_t len = strlen(want);
  for (const char *p = msg; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, want, len) == 0 && (p[len] == '\n' || p[len] == '\0')) return 1;
  return 0;
}

/* Wait at most timeout_ms for a datagram with the line `want`, skipping
 * others (WATCHDOG=1 comes at any time); it must come from pid `from`. */
static void expect_notify(const char *want, pid_t from, int timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  char buf[512];
  for (;;) {
    int64_t left = end - now_ms();
    pid_t sender;
    if (left <= 0 || notify_next(buf, sizeof buf, (int)left, &sender) < 0) {
      char what[128];
      snprintf(what, sizeof what, "no %s on NOTIFY_SOCKET within %d ms", want, timeout_ms);
      dump_log_and_fail(what);
    }
    if (!has_line(buf, want)) continue;
    if (sender && sender != from)
      fail_msg("%s came from pid %ld, not from the main process %ld", want, (long)sender,
               (long)from);
    return;
  }
}

/* How many datagrams with the line `want` arrive in window_ms. */
static int count_notify(const char *want, int window_ms, pid_t from) {
  int64_t end = now_ms() + window_ms;
  int count = 0;
  char buf[512];
  for (;;) {
    int64_t left = end - now_ms();
    pid_t sender;
    if (left <= 0 || notify_next(buf, sizeof buf, (int)left, &sender) < 0) return count;
    if (!has_line(buf, want)) continue;
    if (sender && sender != from)
      fail_msg("%s came from pid %ld, not from the main process %ld", want, (long)sender,
               (long)from);
    count++;
  }
}

static void expect_exit(pid_t pid, int status, int timeout_ms) {
  int st = e2e_wait_exit(pid, timeout_ms);
  if (st == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != status) {
    char what[128];
    snprintf(what, sizeof what, "want exit status %d, got wait status 0x%x", status, st);
    dump_log_and_fail(what);
  }
}

/* Stop with SIGTERM while a client is connected: the passed socket (every
 * copy of it: per loop, per worker, the supervisor's) must stop listening
 * when the drain starts, the client keeps being served, STOPPING=1 is sent,
 * and the daemon exits 0 once the client leaves. */
static void drain_and_stop(pid_t pid, int port, int notify) {
  int fd = e2e_connect(port);
  assert_true(fd >= 0);
  char buf[4];
  assert_int_equal(test_send(fd, "ping", 4), 4);
  assert_int_equal(recv(fd, buf, 4, MSG_WAITALL), 4);
  kill(pid, SIGTERM);
  if (notify) expect_notify("STOPPING=1", pid, 10000);
  if (!e2e_wait_refused(port)) dump_log_and_fail("the passed socket still listens while draining");
  assert_int_equal(test_send(fd, "pong", 4), 4);
  assert_int_equal(recv(fd, buf, 4, MSG_WAITALL), 4);
  assert_memory_equal(buf, "pong", 4);
  close(fd);
  expect_exit(pid, 0, 20000);
}

static char *const *echo_argv(const char *a1, const char *a2, const char *a3, const char *a4,
                              const char *a5, const char *a6) {
  static char *argv[16];
  int n = 0;
  argv[n++] = (char *)e2e_bin("evr-echo");
  argv[n++] = "--log-level";
  argv[n++] = "debug";
  const char *extra[] = {a1, a2, a3, a4, a5, a6};
  for (int i = 0; i < 6 && extra[i]; i++) argv[n++] = (char *)extra[i];
  argv[n] = NULL;
  return argv;
}

/* ---- the tests ---- */

/* One passed socket, no --listen: evr-echo serves it (and not its default
 * address), says READY=1 once it serves and STOPPING=1 when it drains, in
 * every process model. */
static void check_echo_passed(const char *a1, const char *a2, const char *a3, const char *a4) {
  int port, lfd = listen_tcp(&port);
  notify_open();
  char notify_env[128];
  snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", notify_path);
  const char *env[] = {notify_env, "LISTEN_FDNAMES=echo", NULL};
  pid_t pid = spawn_activated(echo_argv(a1, a2, a3, a4, NULL, NULL), &lfd, 1, env);
  expect_notify("READY=1", pid, 10000);
  assert_int_equal(e2e_echo_traffic(port, 40, 16 * 1024, 0, 60000), 0);
  char want[128];
  snprintf(want, sizeof want, "descriptor 3 ('echo') listens on 127.0.0.1:%d", port);
  if (!log_has(want)) dump_log_and_fail(want);
  if (log_has("127.0.0.1:7777")) dump_log_and_fail("the default address was bound too");
  drain_and_stop(pid, port, 1);
}

static void test_echo_serves_passed_socket_one_loop(void **state) {
  (void)state;
  check_echo_passed("--threads", "1", NULL, NULL);
}

static void test_echo_serves_passed_socket_loop_balance_kernel(void **state) {
  (void)state;
  check_echo_passed("--threads", "2", "--loop-balance", "kernel");
}

static void test_echo_serves_passed_socket_loop_balance_accept(void **state) {
  (void)state;
  check_echo_passed("--threads", "2", "--loop-balance", "accept");
  /* The first loop accepted from the passed socket for both. */
  char *log = e2e_read_file(log_path);
  assert_non_null(log);
  const char *p = strstr(log, "(per loop: ");
  unsigned long a = 0, b = 0;
  if (!p || sscanf(p, "(per loop: %lu %lu)", &a, &b) != 2 || a == 0 || b == 0)
    fail_msg("want connections on both loops; log:\n%s", log);
  free(log);
}

static void test_echo_serves_passed_socket_workers(void **state) {
  (void)state;
  check_echo_passed("--workers", "2", "--threads", "2");
}

/* Two passed sockets, named; --listen names the second (adopted, not bound
 * again: that would fail, the address is in use) and a third address that
 * is bound as usual. All three answer. */
static void test_echo_listen_matches_passed_sockets(void **state) {
  (void)state;
  int p1, p2, fds[2];
  fds[0] = listen_tcp(&p1);
  fds[1] = listen_tcp(&p2);
  int p3 = e2e_free_port();
  char l2[64], l3[64];
  snprintf(l2, sizeof l2, "127.0.0.1:%d", p2);
  snprintf(l3, sizeof l3, "127.0.0.1:%d", p3);
  const char *env[] = {"LISTEN_FDNAMES=one:two", NULL};
  pid_t pid = spawn_activated(echo_argv("--listen", l2, "--listen", l3, "--threads", "2"), fds,
                              2, env);
  if (e2e_wait_listening(p3, 10000) != 0) dump_log_and_fail("the --listen address is not bound");
  assert_int_equal(e2e_echo_traffic(p1, 20, 8192, 0, 60000), 0);
  assert_int_equal(e2e_echo_traffic(p2, 20, 8192, 0, 60000), 0);
  assert_int_equal(e2e_echo_traffic(p3, 20, 8192, 0, 60000), 0);
  assert_true(log_has("descriptor 3 ('one')"));
  assert_true(log_has("descriptor 4 ('two')"));
  drain_and_stop(pid, p1, 0);
}

/* A passed descriptor that cannot be served is an error at start (exit
 * status 1, a line that says why), never a socket held and not served. */
static void check_refused(int fd, const char *const *env, const char *why) {
  pid_t pid = spawn_activated(echo_argv("--listen", "127.0.0.1:0", NULL, NULL, NULL, NULL), &fd,
                              fd >= 0 ? 1 : 0, env);
  expect_exit(pid, 1, 10000);
  if (!log_has(why)) dump_log_and_fail(why);
}

static void test_echo_refuses_unusable_passed_descriptors(void **state) {
  (void)state;
  /* A datagram socket (ListenDatagram=). */
  int udp = test_socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(udp >= 0);
  check_refused(udp, NULL, "not a stream socket");
  /* A TCP socket that does not listen (Accept=yes passes connections). */
  int tcp = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(tcp >= 0);
#ifdef SO_ACCEPTCONN
  check_refused(tcp, NULL, "not a listening socket");
#else
  close(tcp);
#endif
  /* LISTEN_FDS that is not a number; names that do not match the count. */
  int port, lfd = listen_tcp(&port);
  const char *bad_count[] = {"LISTEN_FDS=x", NULL};
  check_refused(lfd, bad_count, "socket activation: LISTEN_FDS");
  lfd = listen_tcp(&port);
  const char *bad_names[] = {"LISTEN_FDNAMES=a:b", NULL};
  check_refused(lfd, bad_names, "socket activation: LISTEN_FDS");
}

/* LISTEN_PID names another process: the variables are not for this one
 * (it was forked by the process they were for); a warning, and the daemon
 * serves its --listen address. */
static void test_echo_ignores_sockets_passed_to_another_process(void **state) {
  (void)state;
  int port, lfd = listen_tcp(&port);
  int p2 = e2e_free_port();
  char l2[64];
  snprintf(l2, sizeof l2, "127.0.0.1:%d", p2);
  const char *env[] = {"LISTEN_PID=1", NULL};
  pid_t pid = spawn_activated(echo_argv("--listen", l2, "--threads", "1", NULL, NULL), &lfd, 1,
                              env);
  if (e2e_wait_listening(p2, 10000) != 0) dump_log_and_fail("the --listen address is not bound");
  assert_int_equal(e2e_echo_traffic(p2, 10, 4096, 0, 60000), 0);
  assert_true(log_has("is for process 1, not this one"));
  assert_false(log_has("descriptor 3"));
  drain_and_stop(pid, p2, 0);
}

/* WATCHDOG_USEC for this process: WATCHDOG=1 every half of it, from the
 * main process (the supervisor with --workers). */
static void check_watchdog(const char *a1, const char *a2, const char *a3, const char *a4) {
  int port, lfd = listen_tcp(&port);
  notify_open();
  char notify_env[128];
  snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", notify_path);
  const char *env[] = {notify_env, "WATCHDOG_USEC=200000", "WATCHDOG_PID=$PID", NULL};
  pid_t pid = spawn_activated(echo_argv(a1, a2, a3, a4, NULL, NULL), &lfd, 1, env);
  expect_notify("READY=1", pid, 10000);
  /* Every 100 ms: at least 3 in 2 s, even on a loaded machine. */
  int beats = count_notify("WATCHDOG=1", 2000, pid);
  if (beats < 3) {
    char what[64];
    snprintf(what, sizeof what, "%d WATCHDOG=1 in 2 s", beats);
    dump_log_and_fail(what);
  }
  assert_int_equal(e2e_echo_traffic(port, 10, 4096, 0, 60000), 0);
  drain_and_stop(pid, port, 1);
}

static void test_echo_watchdog_threads(void **state) {
  (void)state;
  check_watchdog("--threads", "2", NULL, NULL);
}

static void test_echo_watchdog_workers(void **state) {
  (void)state;
  check_watchdog("--workers", "2", "--threads", "1");
}

/* WATCHDOG_PID names another process: no WATCHDOG=1. */
static void test_echo_watchdog_for_another_process(void **state) {
  (void)state;
  int port, lfd = listen_tcp(&port);
  notify_open();
  char notify_env[128];
  snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", notify_path);
  const char *env[] = {notify_env, "WATCHDOG_USEC=100000", "WATCHDOG_PID=1", NULL};
  pid_t pid = spawn_activated(echo_argv("--threads", "2", NULL, NULL, NULL, NULL), &lfd, 1, env);
  expect_notify("READY=1", pid, 10000);
  assert_int_equal(count_notify("WATCHDOG=1", 500, pid), 0);
  drain_and_stop(pid, port, 1);
}

/* evr-proxy: a client socket and one named "metrics" passed; no --listen
 * and no --metrics. Clients are relayed to an evr-echo, /metrics answers
 * on the other socket, READY=1, WATCHDOG=1 and STOPPING=1 arrive. */
/* NOTIFY_SOCKET=@name: a Linux abstract socket (systemd uses one for some
 * services). */
static void test_echo_notify_abstract_socket(void **state) {
  (void)state;
#ifdef __linux__
  notify_fd = test_socket(AF_UNIX, SOCK_DGRAM, 0);
  assert_true(notify_fd >= 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  int len = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "evr-sd-test-%ld", (long)getpid());
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
  assert_int_equal(bind(notify_fd, (struct sockaddr *)&sa, salen), 0);
  int on = 1;
  assert_int_equal(setsockopt(notify_fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
  char notify_env[128];
  snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=@%s", sa.sun_path + 1);
  int port, lfd = listen_tcp(&port);
  const char *env[] = {notify_env, NULL};
  pid_t pid = spawn_activated(echo_argv("--threads", "1", NULL, NULL, NULL, NULL), &lfd, 1, env);
  expect_notify("READY=1", pid, 10000);
  drain_and_stop(pid, port, 1);
#else
  skip(); /* abstract sockets are Linux's */
#endif
}

static void test_proxy_serves_passed_sockets(void **state) {
  (void)state;
  int echo_port = e2e_free_port();
  char echo_listen[64];
  snprintf(echo_listen, sizeof echo_listen, "127.0.0.1:%d", echo_port);
  char *eargv[] = {(char *)e2e_bin("evr-echo"), "--listen", echo_listen, "--threads", "1", NULL};
  pid_t echo = track(e2e_spawn(eargv, echo_log_path));
  assert_int_equal(e2e_wait_listening(echo_port, 10000), 0);

  int cport, mport, fds[2];
  fds[0] = listen_tcp(&cport);
  fds[1] = listen_tcp(&mport);
  notify_open();
  char notify_env[128];
  snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", notify_path);
  const char *env[] = {notify_env, "LISTEN_FDNAMES=evr-proxy.socket:metrics",
                       "WATCHDOG_USEC=200000", NULL};
  char *pargv[] = {(char *)e2e_bin("evr-proxy"), "--upstream", echo_listen, "--threads", "2",
                   "--log-level", "debug", NULL};
  pid_t pid = spawn_activated(pargv, fds, 2, env);
  expect_notify("READY=1", pid, 10000);
  assert_int_equal(e2e_echo_traffic(cport, 20, 16 * 1024, 0, 60000), 0);
  char *m = e2e_http_get(mport, "/metrics");
  if (!m || !strstr(m, "evr_proxy_connections_total")) dump_log_and_fail("no /metrics");
  free(m);
  expect_notify("WATCHDOG=1", pid, 5000);
  drain_and_stop(pid, cport, 1);
  assert_int_equal(e2e_wait_refused(mport), 1);
  int st = e2e_stop(echo, SIGTERM, 20000);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Path of systemd-socket-activate, or NULL. */
static const char *find_socket_activate(void) {
  static const char *const cand[] = {"/usr/bin/systemd-socket-activate",
                                     "/bin/systemd-socket-activate",
                                     "/usr/local/bin/systemd-socket-activate",
                                     "/lib/systemd/systemd-activate"};
  for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
    if (access(cand[i], X_OK) == 0) return cand[i];
  return NULL;
}

/* The real tool: it listens, and execs evr-echo in its place at the first
 * connection, with the socket as descriptor 3. */
static void test_echo_under_systemd_socket_activate(void **state) {
  (void)state;
  const char *tool = find_socket_activate();
  if (!tool) {
    fprintf(stderr, "SKIP test_echo_under_systemd_socket_activate: systemd-socket-activate "
                    "is not installed (Debian/Ubuntu package 'systemd')\n");
    skip();
  }
  int port = e2e_free_port();
  char addr[64], notify_env[128];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  notify_open();
  snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", notify_path);
  char *argv[] = {(char *)tool, "-l", addr, "--fdname=echo", "-E", notify_env,
                  (char *)e2e_bin("evr-echo"), "--threads", "2", NULL};
  pid_t pid = track(e2e_spawn(argv, log_path));
  if (e2e_wait_listening(port, 10000) != 0) dump_log_and_fail("systemd-socket-activate");
  /* The first connection starts evr-echo, which must answer it. */
  assert_int_equal(e2e_echo_traffic(port, 20, 16 * 1024, 0, 60000), 0);
  expect_notify("READY=1", pid, 10000);
  char want[128];
  snprintf(want, sizeof want, "descriptor 3 ('echo') listens on %s", addr);
  if (!log_has(want)) dump_log_and_fail(want);
  drain_and_stop(pid, port, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_echo_serves_passed_socket_one_loop),
      T(test_echo_serves_passed_socket_loop_balance_kernel),
      T(test_echo_serves_passed_socket_loop_balance_accept),
      T(test_echo_serves_passed_socket_workers),
      T(test_echo_listen_matches_passed_sockets),
      T(test_echo_refuses_unusable_passed_descriptors),
      T(test_echo_ignores_sockets_passed_to_another_process),
      T(test_echo_watchdog_threads),
      T(test_echo_watchdog_workers),
      T(test_echo_watchdog_for_another_process),
      T(test_echo_notify_abstract_socket),
      T(test_proxy_serves_passed_sockets),
      T(test_echo_under_systemd_socket_activate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
