/* tests/test_proxy_ops.c: evr-proxy's access log and active health checks
 * end to end, under every backend (EVR_BACKEND is inherited by the
 * daemons): one line per session with the right client, upstream, bytes
 * and cause (done, client-reset, upstream-refused, idle-timeout,
 * header-invalid, no upstream up), the client a PROXY header gave, the
 * JSON variant parsed by Python, SIGUSR1 reopening a
 * renamed file, a `-` reader that stalls never stalling the relay; an
 * upstream killed is taken down after --fall failed checks and gets no
 * client, brought back it is up after --rise passed checks and gets
 * clients again, a wrong --check-expect keeps it down; per-source limits
 * (open clients, new clients per second) close the clients over them and
 * count them. Counts are asserted
 * from /metrics and the log lines, never from wall time. */
/* evr-test: backends novalgrind needs=evr-proxy,evr-echo timeout=600 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "e2e.h"
#include "helpers.h"

static char proxy_log[80], echo_log[2][80], alog_path[80], alog_old[80];
static pid_t proxy_pid, echo_pid[2];
static int echo_port[2], proxy_port, metrics_port;
static int out_pipe = -1; /* --access-log -: our end of the proxy's stdout */

static int setup(void **state) {
  (void)state;
  evr_test_skip_if_backend_refused();
  long me = (long)getpid();
  snprintf(proxy_log, sizeof proxy_log, "/tmp/evr-proxy-ops-%ld.log", me);
  snprintf(echo_log[0], sizeof echo_log[0], "/tmp/evr-proxy-ops-echo0-%ld.log", me);
  snprintf(echo_log[1], sizeof echo_log[1], "/tmp/evr-proxy-ops-echo1-%ld.log", me);
  snprintf(alog_path, sizeof alog_path, "/tmp/evr-proxy-ops-access-%ld.log", me);
  snprintf(alog_old, sizeof alog_old, "/tmp/evr-proxy-ops-access-%ld.log.1", me);
  unlink(alog_path);
  unlink(alog_old);
  proxy_pid = echo_pid[0] = echo_pid[1] = 0;
  echo_port[0] = echo_port[1] = 0; /* fresh ports for each test */
  return 0;
}

static void dump_logs(void) {
  char *a = e2e_read_file(proxy_log);
  fprintf(stderr, "---- evr-proxy log ----\n%s\n", a ? a : "(none)");
  free(a);
  a = e2e_read_file(alog_path);
  fprintf(stderr, "---- access log ----\n%s\n", a ? a : "(none)");
  free(a);
  for (int i = 0; i < 2; i++) {
    a = e2e_read_file(echo_log[i]);
    if (a) fprintf(stderr, "---- evr-echo %d log ----\n%s\n", i, a);
    free(a);
  }
}

static int teardown(void **state) {
  (void)state;
  if (proxy_pid > 0) e2e_stop(proxy_pid, SIGKILL, 5000);
  for (int i = 0; i < 2; i++)
    if (echo_pid[i] > 0) e2e_stop(echo_pid[i], SIGKILL, 5000);
  if (out_pipe >= 0) close(out_pipe);
  out_pipe = -1;
  unlink(proxy_log);
  unlink(echo_log[0]);
  unlink(echo_log[1]);
  unlink(alog_path);
  unlink(alog_old);
  return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

/* evr-echo number i on echo_port[i] (picked the first time in a test).
 * Ready once its log says it listens: probing the port is not enough, as a
 * listener of an evr-echo killed just before may still answer there for a
 * moment (on io_uring the kernel releases a killed process's sockets
 * asynchronously), and the new one may then find the port in use: it is
 * started again until it listens. */
static void start_echo(int i) {
  if (!echo_port[i]) echo_port[i] = e2e_free_port();
  char listen[64], want[80];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", echo_port[i]);
  snprintf(want, sizeof want, "listening on %s", listen);
  char *argv[] = {(char *)e2e_bin("evr-echo"), "--listen", listen, "--threads", "1", NULL};
  for (int attempt = 0; attempt < 100; attempt++) {
    unlink(echo_log[i]); /* no line of an earlier run is taken for this one's */
    echo_pid[i] = e2e_spawn(argv, echo_log[i]);
    for (int k = 0; k < 1000; k++) {
      char *text = e2e_read_file(echo_log[i]);
      int up = text && strstr(text, want);
      free(text);
      if (up) return;
      int st;
      if (waitpid(echo_pid[i], &st, WNOHANG) == echo_pid[i]) break; /* e.g. address in use */
      usleep(10 * 1000);
    }
    if (echo_pid[i] > 0 && kill(echo_pid[i], 0) == 0) fail_msg("evr-echo did not listen");
    echo_pid[i] = 0;
    usleep(100 * 1000);
  }
  fail_msg("evr-echo could not listen on %s", listen);
}

/* Start evr-proxy with --metrics, upstreams 127.0.0.1:ups[i] and extra
 * arguments (NULL-terminated). With to_pipe, its stdout is a pipe whose
 * read end is out_pipe, holding at most pipe_size bytes where the system
 * lets us say so. */
static void start_proxy(const int *ups, int nups, const char *const *extra, int to_pipe,
                        int pipe_size) {
  char listen[64], metrics[64], up[8][32];
  const char *argv[64];
  int n = 0;
  proxy_port = e2e_free_port();
  metrics_port = e2e_free_port();
  snprintf(listen, sizeof listen, "127.0.0.1:%d", proxy_port);
  snprintf(metrics, sizeof metrics, "127.0.0.1:%d", metrics_port);
  argv[n++] = e2e_bin("evr-proxy");
  argv[n++] = "--listen";
  argv[n++] = listen;
  argv[n++] = "--metrics";
  argv[n++] = metrics;
  for (int i = 0; i < nups && i < 8; i++) {
    snprintf(up[i], sizeof up[i], "127.0.0.1:%d", ups[i]);
    argv[n++] = "--upstream";
    argv[n++] = up[i];
  }
  for (int i = 0; extra && extra[i] && n < 63; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  int p[2] = {-1, -1};
  if (to_pipe) {
    assert_int_equal(pipe(p), 0);
#ifdef F_SETPIPE_SZ
    if (pipe_size) (void)fcntl(p[1], F_SETPIPE_SZ, pipe_size);
#else
    (void)pipe_size;
#endif
  }
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(proxy_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    if (to_pipe) {
      dup2(p[1], STDOUT_FILENO);
      close(p[0]);
      close(p[1]);
    }
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  proxy_pid = pid;
  if (to_pipe) {
    close(p[1]);
    out_pipe = p[0];
  }
  if (e2e_wait_listening(metrics_port, 10000) != 0) {
    dump_logs();
    fail_msg("evr-proxy did not listen");
  }
}

static void expect_clean_exit(pid_t *pid, int sig) {
  int st = e2e_stop(*pid, sig, 30000);
  *pid = 0;
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    dump_logs();
    fail_msg("evr-proxy did not exit 0 (status 0x%x)", st);
  }
}

/* ---- metrics ---- */

static double metric(const char *body, const char *name_and_labels) {
  size_t n = strlen(name_and_labels);
  for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, name_and_labels, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
  return -1;
}

static char *get_metrics(void) {
  char *resp = e2e_http_get(metrics_port, "/metrics");
  assert_non_null(resp);
  char *body = strstr(resp, "\r\n\r\n");
  assert_non_null(body);
  memmove(resp, body + 4, strlen(body + 4) + 1);
  return resp;
}

/* The value of one metric now. */
static double metric_now(const char *name_and_labels) {
  char *b = get_metrics();
  double v = metric(b, name_and_labels);
  free(b);
  return v;
}

/* A per-upstream metric of echo i. */
static double up_metric(const char *name, int i) {
  char key[128];
  snprintf(key, sizeof key, "%s{upstream=\"127.0.0.1:%d\"}", name, echo_port[i]);
  return metric_now(key);
}

/* Wait (polling every 20 ms, at most 30 s: a bound for a loaded machine,
 * not a measure) until the metric reaches at least want (or, with below,
 * at most want). Returns the value seen last. */
static double wait_metric(const char *name_and_labels, double want, int below) {
  double v = -1;
  for (int i = 0; i < 1500; i++) {
    v = metric_now(name_and_labels);
    if (below ? (v >= 0 && v <= want) : v >= want) return v;
    usleep(20 * 1000);
  }
  dump_logs();
  fail_msg("%s: %g, waited for %s%g", name_and_labels, v, below ? "<= " : ">= ", want);
  return v;
}

static double wait_up_metric(const char *name, int i, double want, int below) {
  char key[128];
  snprintf(key, sizeof key, "%s{upstream=\"127.0.0.1:%d\"}", name, echo_port[i]);
  return wait_metric(key, want, below);
}

/* ---- sessions ---- */

static int wait_fd(int fd, short events, int ms) {
  struct pollfd p = {.fd = fd, .events = events};
  int rc;
  do rc = poll(&p, 1, ms);
  while (rc < 0 && errno == EINTR);
  return rc;
}

/* The local port of a connected socket. */
static int local_port(int fd) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  return ntohs(sa.sin_port);
}

/* One session through the proxy to an echo server: send n bytes, read
 * them back, half-close, read EOF. Returns the client's port. */
static int echo_session(size_t n) {
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  int port = local_port(fd);
  char *out = malloc(n), *in = malloc(n);
  assert_non_null(out);
  assert_non_null(in);
  for (size_t i = 0; i < n; i++) out[i] = (char)(i * 7 + (size_t)port);
  size_t sent = 0, got = 0;
  while (got < n) {
    if (sent < n) {
      ssize_t w = send(fd, out + sent, n - sent, MSG_DONTWAIT);
      if (w > 0) sent += (size_t)w;
      else assert_true(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
    }
    if (wait_fd(fd, POLLIN, sent < n ? 10 : 10000) <= 0) {
      if (sent < n) continue;
      fail_msg("session from port %d: no echo (%zu of %zu bytes)", port, got, n);
    }
    ssize_t r = recv(fd, in + got, n - got, 0);
    if (r <= 0) {
      int e = errno;
      dump_logs();
      fail_msg("session from port %d: recv %zd (%s) after %zu of %zu", port, r,
               r < 0 ? strerror(e) : "EOF", got, n);
    }
    got += (size_t)r;
  }
  assert_memory_equal(in, out, n);
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  char c;
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  assert_int_equal(recv(fd, &c, 1, 0), 0);
  close(fd);
  free(out);
  free(in);
  return port;
}

/* Connect, expect the proxy to close without a byte. Returns the port. */
static int closed_session(void) {
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  int port = local_port(fd);
  char c;
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  ssize_t r = recv(fd, &c, 1, 0);
  assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
  close(fd);
  return port;
}

/* ---- the access log ---- */

struct line {
  char time[64], client[64], upstream[64], cause[32];
  double ms;
  unsigned long long up, down;
};

/* Parse a text line (without its newline). 0, or -1 if malformed. */
static int parse_line(const char *s, struct line *l) {
  char extra[8];
  int k = sscanf(s, "%63s %63s %63s %lf %llu %llu %31s %7s", l->time, l->client, l->upstream,
                 &l->ms, &l->up, &l->down, l->cause, extra);
  return k == 7 ? 0 : -1;
}

/* The lines of a file (at most max), parsed; the count. Fails on a
 * malformed line. */
static int read_lines(const char *path, struct line *out, int max) {
  char *text = e2e_read_file(path);
  if (!text) return 0;
  int n = 0;
  for (char *p = text, *nl; *p; p = nl + 1) {
    nl = strchr(p, '\n');
    if (!nl) fail_msg("%s: a line without its newline: '%s'", path, p);
    *nl = '\0';
    if (n == max) fail_msg("%s: more than %d lines", path, max);
    if (parse_line(p, &out[n]) != 0) fail_msg("%s: malformed line '%s'", path, p);
    n++;
  }
  free(text);
  return n;
}

/* The line of the client on port `port`, or NULL. */
static const struct line *line_of(const struct line *l, int n, int port) {
  char want[32];
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  for (int i = 0; i < n; i++)
    if (!strcmp(l[i].client, want)) return &l[i];
  return NULL;
}

static void expect_line(const struct line *l, int n, int port, int up_port, unsigned long long up,
                        unsigned long long down, const char *cause) {
  const struct line *x = line_of(l, n, port);
  if (!x) {
    dump_logs();
    fail_msg("no line for client port %d", port);
  }
  char want[32] = "-";
  if (up_port) snprintf(want, sizeof want, "127.0.0.1:%d", up_port);
  if (strcmp(x->upstream, want) || x->up != up || x->down != down || strcmp(x->cause, cause)) {
    dump_logs();
    fail_msg("client %d: upstream %s bytes %llu/%llu cause %s; wanted %s %llu/%llu %s", port,
             x->upstream, x->up, x->down, x->cause, want, up, down, cause);
  }
  assert_true(x->ms >= 0);
  assert_int_equal(strlen(x->time), 24); /* 2026-11-22T10:00:00.123Z */
  assert_int_equal(x->time[23], 'Z');
}

enum { NSESSIONS = 24 };

/* N sessions through two loops give N lines with each one's client,
 * upstream, bytes and cause; a client that aborts is client-reset; an
 * upstream that refuses is upstream-refused; an idle session is
 * idle-timeout. */
static void test_access_log_one_line_per_session(void **state) {
  (void)state;
  start_echo(0);
  int dead = e2e_free_port();
  const char *extra[] = {"--threads", "2", "--access-log", alog_path, NULL};
  int ups[] = {echo_port[0]};
  start_proxy(ups, 1, extra, 0, 0);
  int port[NSESSIONS];
  for (int i = 0; i < NSESSIONS; i++) port[i] = echo_session(1000 + (size_t)i * 517);
  /* A client that resets after its echo. */
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  int reset_port = local_port(fd);
  assert_int_equal(send(fd, "abc", 3, 0), 3);
  char buf[8];
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  assert_int_equal(recv(fd, buf, 3, MSG_WAITALL), 3);
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
  wait_metric("evr_proxy_access_log_lines_total", NSESSIONS + 1, 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  struct line *l = calloc(NSESSIONS + 8, sizeof *l);
  assert_non_null(l);
  int n = read_lines(alog_path, l, NSESSIONS + 8);
  assert_int_equal(n, NSESSIONS + 1);
  for (int i = 0; i < NSESSIONS; i++) {
    unsigned long long b = 1000 + (unsigned long long)i * 517;
    expect_line(l, n, port[i], echo_port[0], b, b, "done");
  }
  expect_line(l, n, reset_port, echo_port[0], 3, 3, "client-reset");

  /* An idle client: closed by the proxy after --idle-timeout 1 s. */
  unlink(alog_path);
  const char *extra1[] = {"--threads", "1", "--access-log", alog_path, "--idle-timeout", "1",
                          NULL};
  start_proxy(ups, 1, extra1, 0, 0);
  fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  int idle_port = local_port(fd);
  assert_int_equal(send(fd, "0123456789", 10, 0), 10);
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  assert_int_equal(recv(fd, buf, 8, MSG_WAITALL), 8);
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  assert_int_equal(recv(fd, buf, 8, 0), 2);
  assert_true(wait_fd(fd, POLLIN, 20000) > 0);
  ssize_t r = recv(fd, buf, 8, 0);
  assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
  close(fd);
  wait_metric("evr_proxy_access_log_lines_total", 1, 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  n = read_lines(alog_path, l, NSESSIONS + 8);
  assert_int_equal(n, 1);
  expect_line(l, n, idle_port, echo_port[0], 10, 10, "idle-timeout");
  assert_true(l[0].ms >= 1000);

  /* One upstream that refuses: the client is closed; its line names the
   * upstream tried. */
  unlink(alog_path);
  const char *extra2[] = {"--threads", "1", "--access-log", alog_path, NULL};
  int ups2[] = {dead};
  start_proxy(ups2, 1, extra2, 0, 0);
  int refused_port = closed_session();
  wait_metric("evr_proxy_access_log_lines_total", 1, 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  n = read_lines(alog_path, l, NSESSIONS + 8);
  assert_int_equal(n, 1);
  expect_line(l, n, refused_port, dead, 0, 0, "upstream-refused");
  free(l);
}

/* --accept-proxy: the line's client is the one the PROXY header gave, and
 * the header's bytes are not counted; an invalid header is header-invalid,
 * with the connection's own address and no upstream. */
static void test_access_log_client_from_proxy_header(void **state) {
  (void)state;
  start_echo(0);
  const char *extra[] = {"--threads", "1", "--access-log", alog_path, "--accept-proxy", NULL};
  int ups[] = {echo_port[0]};
  start_proxy(ups, 1, extra, 0, 0);
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  static const char hdr[] = "PROXY TCP4 192.0.2.1 198.51.100.2 51000 80\r\nhello";
  assert_int_equal(send(fd, hdr, sizeof hdr - 1, 0), (ssize_t)sizeof hdr - 1);
  char buf[8];
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  assert_int_equal(recv(fd, buf, 5, MSG_WAITALL), 5);
  assert_memory_equal(buf, "hello", 5);
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  assert_int_equal(recv(fd, buf, 1, 0), 0);
  close(fd);
  fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  int bad_port = local_port(fd);
  assert_int_equal(send(fd, "GET / HTTP/1.0\r\n\r\n", 18, 0), 18);
  assert_true(wait_fd(fd, POLLIN, 10000) > 0);
  close(fd);
  wait_metric("evr_proxy_access_log_lines_total", 2, 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  struct line l[4];
  int n = read_lines(alog_path, l, 4);
  assert_int_equal(n, 2);
  const struct line *x = !strcmp(l[0].client, "192.0.2.1:51000") ? &l[0] : &l[1];
  assert_string_equal(x->client, "192.0.2.1:51000");
  char want[32];
  snprintf(want, sizeof want, "127.0.0.1:%d", echo_port[0]);
  assert_string_equal(x->upstream, want);
  assert_int_equal(x->up, 5);
  assert_int_equal(x->down, 5);
  assert_string_equal(x->cause, "done");
  expect_line(l, n, bad_port, 0, 0, 0, "header-invalid");
}

/* The JSON variant: every line is a JSON object Python reads, with the
 * fields of the text line. */
static void test_access_log_json_lines_parse(void **state) {
  (void)state;
  if (system("python3 -c 'import json' >/dev/null 2>&1") != 0) skip();
  start_echo(0);
  const char *extra[] = {"--threads", "2", "--access-log", alog_path, "--access-log-format",
                         "json", NULL};
  int ups[] = {echo_port[0]};
  start_proxy(ups, 1, extra, 0, 0);
  int port[8];
  for (int i = 0; i < 8; i++) port[i] = echo_session(100 + (size_t)i);
  wait_metric("evr_proxy_access_log_lines_total", 8, 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  /* Python checks each line on its own and prints "client up down cause
   * upstream" for each. */
  char cmd[768], out[128];
  snprintf(out, sizeof out, "%s.check", alog_path);
  snprintf(cmd, sizeof cmd,
           "python3 -c 'import json,sys\n"
           "for line in open(sys.argv[1]):\n"
           "  r = json.loads(line)\n"
           "  assert list(r) == [\"time\",\"client\",\"upstream\",\"duration_ms\",\"bytes_up\","
           "\"bytes_down\",\"cause\"], list(r)\n"
           "  print(r[\"client\"], r[\"bytes_up\"], r[\"bytes_down\"], r[\"cause\"], "
           "r[\"upstream\"])' %s >%s",
           alog_path, out);
  int st = system(cmd);
  char *text = e2e_read_file(out);
  unlink(out);
  if (st != 0) {
    dump_logs();
    fail_msg("python3 could not read every line as JSON (status %d)", st);
  }
  assert_non_null(text);
  int lines = 0;
  for (char *p = text; (p = strchr(p, '\n')) != NULL; p++) lines++;
  assert_int_equal(lines, 8);
  for (int i = 0; i < 8; i++) {
    char want[128];
    snprintf(want, sizeof want, "127.0.0.1:%d %d %d done 127.0.0.1:%d\n", port[i], 100 + i,
             100 + i, echo_port[0]);
    if (!strstr(text, want)) fail_msg("missing: %s in:\n%s", want, text);
  }
  free(text);
}

static int count_lines(const char *path) {
  char *text = e2e_read_file(path);
  int n = 0;
  for (char *p = text; p && (p = strchr(p, '\n')) != NULL; p++) n++;
  free(text);
  return n;
}

/* SIGUSR1 after the file is renamed: the lines of later sessions go to a
 * new file at the path, those before stay in the renamed one. */
static void test_access_log_reopens_on_sigusr1(void **state) {
  (void)state;
  start_echo(0);
  const char *extra[] = {"--threads", "2", "--access-log", alog_path, NULL};
  int ups[] = {echo_port[0]};
  start_proxy(ups, 1, extra, 0, 0);
  for (int i = 0; i < 5; i++) echo_session(64);
  wait_metric("evr_proxy_access_log_lines_total", 5, 0);
  assert_int_equal(rename(alog_path, alog_old), 0);
  assert_int_equal(kill(proxy_pid, SIGUSR1), 0);
  /* Each of the two loops reopens. */
  wait_metric("evr_proxy_access_log_reopens_total{result=\"ok\"}", 2, 0);
  for (int i = 0; i < 7; i++) echo_session(64);
  wait_metric("evr_proxy_access_log_lines_total", 12, 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  assert_int_equal(count_lines(alog_old), 5);
  assert_int_equal(count_lines(alog_path), 7);
}

/* --access-log - on a pipe nobody reads (4 KiB where the pipe can be made
 * that small): the relay goes on, byte-exact, lines that do not fit are
 * dropped and counted, and once the pipe is read, whole lines come out and
 * new sessions are logged again. */
static void test_access_log_stalled_stdout_never_stalls_the_relay(void **state) {
  (void)state;
  start_echo(0);
  const char *extra[] = {"--threads", "2", "--access-log", "-", "--access-log-buffer", "4096",
                         NULL};
  int ups[] = {echo_port[0]};
  start_proxy(ups, 1, extra, 1, 4096);
  /* Enough sessions to fill the pipe and both buffers many times over. */
  for (int i = 0; i < 400; i++) echo_session(32);
  assert_int_equal(e2e_echo_traffic(proxy_port, 16, 1 << 20, 1, 60000), 0);
  double dropped = wait_metric("evr_proxy_access_log_dropped_total", 1, 0);
  fprintf(stderr, "lines dropped while the pipe was not read: %g\n", dropped);
  /* Now read: whole, well-formed lines. */
  assert_int_equal(fcntl(out_pipe, F_SETFL, O_NONBLOCK), 0);
  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap + 1);
  assert_non_null(buf);
  double written = -1;
  int port = 0;
  for (int round = 0; round < 1500; round++) {
    ssize_t r = read(out_pipe, buf + len, cap - len);
    if (r > 0) {
      len += (size_t)r;
      continue;
    }
    assert_true(r < 0 && errno == EAGAIN);
    if (round == 10) port = echo_session(77); /* logged once there is room again */
    if (port) {
      buf[len] = '\0';
      char want[48];
      snprintf(want, sizeof want, " 127.0.0.1:%d ", port);
      if (strstr(buf, want)) break;
    }
    usleep(20 * 1000);
  }
  buf[len] = '\0';
  int lines = 0;
  for (char *p = buf, *nl; *p; p = nl + 1) {
    nl = strchr(p, '\n');
    if (!nl) fail_msg("a line cut short: '%s'", p);
    *nl = '\0';
    struct line l;
    if (parse_line(p, &l) != 0) fail_msg("malformed line '%s'", p);
    lines++;
  }
  written = metric_now("evr_proxy_access_log_lines_total");
  fprintf(stderr, "lines read: %d, written: %g\n", lines, written);
  assert_true(port != 0);
  assert_true(lines >= 2 && (double)lines == written);
  free(buf);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

/* ---- health checks ---- */

/* The numbers of a state change line "upstream 127.0.0.1:PORT: <state>:
 * ... (N checks, M failed)" in the proxy's log; 0, or -1 if absent. */
static int change_line(int i, const char *state, unsigned long long *checks,
                       unsigned long long *failed) {
  char *text = e2e_read_file(proxy_log);
  if (!text) return -1;
  char want[96];
  snprintf(want, sizeof want, "upstream 127.0.0.1:%d: %s: ", echo_port[i], state);
  char *p = strstr(text, want);
  int rc = -1;
  if (p) {
    char *q = strstr(p, " checks, ");
    char *b = q;
    while (b > p && b[-1] != '(') b--;
    if (q && sscanf(b, "%llu checks, %llu failed", checks, failed) == 2) rc = 0;
  }
  free(text);
  return rc;
}

/* A log line holding text; 0 if there is none. */
static int logged(const char *text) {
  char *t = e2e_read_file(proxy_log);
  int found = t && strstr(t, text);
  free(t);
  return found;
}

enum { RISE = 2, FALL = 3 };

/* Two upstreams; one is killed: down after exactly FALL failed checks,
 * no client goes to it; started again on its port: up after exactly RISE
 * passed checks, and clients go to it again. */
static void test_health_down_after_fall_up_after_rise(void **state) {
  (void)state;
  start_echo(0);
  start_echo(1);
  const char *extra[] = {"--threads", "2", "--check-interval", "100", "--check-timeout", "2000",
                         "--rise", "2", "--fall", "3", "--log-level", "debug", NULL};
  start_proxy(echo_port, 2, extra, 0, 0);
  for (int i = 0; i < 2; i++) wait_up_metric("evr_proxy_upstream_checks_total", i, 2, 0);
  assert_int_equal(up_metric("evr_proxy_upstream_up", 0), 1);
  assert_int_equal(up_metric("evr_proxy_upstream_check_failures_total", 0), 0);
  /* Both get clients. */
  assert_int_equal(e2e_echo_traffic(proxy_port, 8, 4096, 1, 30000), 0);
  assert_true(up_metric("evr_proxy_upstream_connections_total", 0) > 0);

  assert_true(e2e_stop(echo_pid[0], SIGKILL, 5000) != -1);
  echo_pid[0] = 0;
  wait_up_metric("evr_proxy_upstream_up", 0, 0, 1);
  unsigned long long c1, f1;
  assert_int_equal(change_line(0, "down", &c1, &f1), 0);
  /* Up until then, every check passed; then FALL failed in a row. */
  fprintf(stderr, "down after %llu checks, %llu failed\n", c1, f1);
  assert_int_equal(f1, FALL);
  assert_int_equal(up_metric("evr_proxy_upstream_check_state_changes_total", 0), 1);
  assert_true(logged("warn: upstream 127.0.0.1:"));

  /* Every client goes to the live one, byte-exact. */
  double a0 = up_metric("evr_proxy_upstream_connections_total", 0);
  double b0 = up_metric("evr_proxy_upstream_connections_total", 1);
  double fails0 = up_metric("evr_proxy_upstream_connect_failures_total", 0);
  assert_int_equal(e2e_echo_traffic(proxy_port, 20, 64 * 1024, 1, 30000), 0);
  assert_int_equal(up_metric("evr_proxy_upstream_connections_total", 0), a0);
  assert_int_equal(up_metric("evr_proxy_upstream_connections_total", 1), b0 + 20);
  assert_int_equal(up_metric("evr_proxy_upstream_connect_failures_total", 0), fails0);

  /* Back on the same port: up after RISE passes in a row. */
  start_echo(0);
  wait_up_metric("evr_proxy_upstream_up", 0, 1, 0);
  unsigned long long c2, f2;
  assert_int_equal(change_line(0, "up", &c2, &f2), 0);
  fprintf(stderr, "up after %llu checks, %llu failed\n", c2, f2);
  assert_int_equal((c2 - f2) - (c1 - f1), RISE);
  assert_int_equal(up_metric("evr_proxy_upstream_check_state_changes_total", 0), 2);
  assert_true(logged("info: upstream 127.0.0.1:"));
  a0 = up_metric("evr_proxy_upstream_connections_total", 0);
  assert_int_equal(e2e_echo_traffic(proxy_port, 20, 4096, 1, 30000), 0);
  assert_true(up_metric("evr_proxy_upstream_connections_total", 0) >= a0 + 5);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

/* --check-send and --check-expect: an expectation the reply never meets
 * keeps the upstream down (every client is closed, counted, and logged as
 * upstream-unreachable); the right one keeps it up. */
static void test_health_wrong_expect_keeps_it_down(void **state) {
  (void)state;
  start_echo(0);
  const char *extra[] = {"--threads", "2", "--check-interval", "100", "--check-timeout", "300",
                         "--check-send", "PING\\r\\n", "--check-expect", "PONG",
                         "--access-log", alog_path, NULL};
  int ups[] = {echo_port[0]};
  start_proxy(ups, 1, extra, 0, 0);
  wait_up_metric("evr_proxy_upstream_checks_total", 0, 5, 0);
  assert_int_equal(up_metric("evr_proxy_upstream_up", 0), 0);
  assert_int_equal(up_metric("evr_proxy_upstream_check_state_changes_total", 0), 1);
  assert_true(up_metric("evr_proxy_upstream_check_failures_total", 0) >= 5);
  assert_true(logged(": down: reply timeout"));
  int port = closed_session();
  wait_metric("evr_proxy_connections_no_upstream_up_total", 1, 0);
  wait_metric("evr_proxy_access_log_lines_total", 1, 0);
  assert_int_equal(up_metric("evr_proxy_upstream_connections_total", 0), 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  struct line l[4];
  int n = read_lines(alog_path, l, 4);
  assert_int_equal(n, 1);
  expect_line(l, n, port, 0, 0, 0, "upstream-unreachable");

  /* The right expectation (an escape for its first byte): up, clients served. */
  const char *extra2[] = {"--threads", "2", "--check-interval", "100", "--check-timeout", "300",
                          "--check-send", "PING\\r\\n", "--check-expect", "\\x50ING\\r", NULL};
  start_proxy(ups, 1, extra2, 0, 0);
  wait_up_metric("evr_proxy_upstream_checks_total", 0, 5, 0);
  assert_int_equal(up_metric("evr_proxy_upstream_up", 0), 1);
  assert_int_equal(up_metric("evr_proxy_upstream_check_failures_total", 0), 0);
  assert_int_equal(up_metric("evr_proxy_upstream_check_state_changes_total", 0), 0);
  assert_int_equal(e2e_echo_traffic(proxy_port, 4, 4096, 1, 30000), 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

/* ---- per-source limits ---- */

/* A client of the proxy bound to source_ip (127/8 is all loopback). */
static int connect_from(const char *source_ip) {
  int fd = test_socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  assert_int_equal(inet_pton(AF_INET, source_ip, &sa.sin_addr), 1);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
    fail_msg("bind to %s: %s", source_ip, strerror(errno));
  sa.sin_port = htons((uint16_t)proxy_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
    fail_msg("connect from %s: %s", source_ip, strerror(errno));
  return fd;
}

/* 1 if "ping" comes back through the proxy; 0 if it closes fd instead. */
static int relayed(int fd) {
  (void)test_send(fd, "ping", 4); /* may fail on a closed connection */
  char buf[4];
  size_t got = 0;
  while (got < 4) {
    if (wait_fd(fd, POLLIN, 10000) <= 0) fail_msg("no answer and no close within 10 s");
    ssize_t r = recv(fd, buf + got, 4 - got, 0);
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  assert_memory_equal(buf, "ping", 4);
  return 1;
}

/* --max-conns-per-source 2, on 2 loops: a third client from 127.0.0.1 is
 * closed at once while one from 127.0.0.2 is relayed; once one of the two
 * ends, 127.0.0.1 is admitted again. Counted in /metrics and the log. */
static void test_source_max_conns(void **state) {
  (void)state;
  start_echo(0);
  const char *extra[] = {"--max-conns-per-source", "2", "--threads", "2", NULL};
  start_proxy(&echo_port[0], 1, extra, 0, 0);
  int a = connect_from("127.0.0.1"), b = connect_from("127.0.0.1");
  assert_true(relayed(a) && relayed(b));
  int over = connect_from("127.0.0.1");
  assert_false(relayed(over));
  close(over);
  int other = connect_from("127.0.0.2");
  assert_true(relayed(other));
  close(a);
  wait_metric("evr_proxy_connections_active", 2, 1); /* b and other */
  int again = connect_from("127.0.0.1");
  assert_true(relayed(again));
  over = connect_from("127.0.0.1");
  assert_false(relayed(over));
  close(over);
  assert_true(relayed(b) && relayed(again) && relayed(other));
  char *m = get_metrics();
  assert_true(metric(m, "evr_proxy_source_refused_total{reason=\"conns\"}") == 2);
  assert_true(metric(m, "evr_proxy_source_refused_total{reason=\"rate\"}") == 0);
  assert_true(metric(m, "evr_proxy_source_entries") == 2);
  free(m);
  close(b);
  close(again);
  close(other);
  wait_metric("evr_proxy_connections_active", 0, 1);
  expect_clean_exit(&proxy_pid, SIGTERM);
  char *log = e2e_read_file(proxy_log);
  assert_non_null(log);
  if (!strstr(log, "refused a client from 127.0.0.1: 2 open connections per source") ||
      !strstr(log, "source limits: 4 admitted, 2 refused (open clients 2, rate 0, table full "
                   "0), 0 evicted, 2 of 65536 entries in use") ||
      strstr(log, "miscounted"))
    fail_msg("the limits are not logged as counted; log:\n%s", log);
  free(log);
}

/* --rate-per-source 3: of 12 clients opened at once from 127.0.0.3, the
 * burst of 3 is relayed and the rest closed (plus the tokens earned in the
 * time the test took, a token every 333 ms: measured, not assumed). */
static void test_source_rate(void **state) {
  (void)state;
  enum { N = 12, RATE = 3 };
  start_echo(0);
  const char *extra[] = {"--rate-per-source", "3", NULL};
  start_proxy(&echo_port[0], 1, extra, 0, 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int fd[N], ok = 0;
  for (int i = 0; i < N; i++) fd[i] = connect_from("127.0.0.3");
  for (int i = 0; i < N; i++) ok += relayed(fd[i]);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  int allowed = RATE + (int)(elapsed * RATE);
  for (int i = 0; i < N; i++) close(fd[i]);
  if (ok < RATE || ok > allowed) {
    dump_logs();
    fail_msg("%d of %d relayed; want %d to %d", ok, N, RATE, allowed);
  }
  assert_true(metric_now("evr_proxy_source_refused_total{reason=\"rate\"}") == N - ok);
  wait_metric("evr_proxy_connections_active", 0, 1);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_access_log_one_line_per_session),
      T(test_access_log_client_from_proxy_header),
      T(test_access_log_json_lines_parse),
      T(test_access_log_reopens_on_sigusr1),
      T(test_access_log_stalled_stdout_never_stalls_the_relay),
      T(test_health_down_after_fall_up_after_rise),
      T(test_health_wrong_expect_keeps_it_down),
      T(test_source_max_conns),
      T(test_source_rate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
