/* tests/test_proxy.c: evr-proxy end to end, under every backend (EVR_BACKEND
 * is inherited by the daemons): byte-exact relay to evr-echo on 100
 * connections, half-close both ways, upstream failures and resets, abort
 * propagation, bounded memory with a client that never reads, PROXY
 * protocol headers, /metrics, drain on SIGTERM, --splice, command line. */
/* evr-test: backends novalgrind needs=evr-proxy,evr-echo timeout=900 */
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "e2e.h"
#include "helpers.h"

static char proxy_log[64], echo_log[64];
static pid_t echo_pid, proxy_pid;
static int echo_port, proxy_port, metrics_port;

static int setup(void **state) {
  (void)state;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl); /* inherited by the daemons */
  snprintf(proxy_log, sizeof proxy_log, "/tmp/evr-proxy-test-%ld.log", (long)getpid());
  snprintf(echo_log, sizeof echo_log, "/tmp/evr-proxy-test-echo-%ld.log", (long)getpid());
  echo_pid = proxy_pid = 0;
  return 0;
}

static void dump_logs(void) {
  char *a = e2e_read_file(proxy_log), *b = e2e_read_file(echo_log);
  fprintf(stderr, "---- evr-proxy log ----\n%s\n---- evr-echo log ----\n%s\n", a ? a : "(none)",
          b ? b : "(none)");
  free(a);
  free(b);
}

static int teardown(void **state) {
  (void)state;
  if (proxy_pid > 0) e2e_stop(proxy_pid, SIGKILL, 5000);
  if (echo_pid > 0) e2e_stop(echo_pid, SIGKILL, 5000);
  unlink(proxy_log);
  unlink(echo_log);
  return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static void start_echo(void) {
  echo_port = e2e_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", echo_port);
  char *argv[] = {(char *)e2e_bin("evr-echo"), "--listen", listen, "--threads", "1", NULL};
  echo_pid = e2e_spawn(argv, echo_log);
  if (e2e_wait_listening(echo_port, 10000) != 0) {
    dump_logs();
    fail_msg("evr-echo did not listen");
  }
}

/* Start evr-proxy on a fresh port with --metrics, the given upstream ports
 * (127.0.0.1) and extra arguments (NULL-terminated). */
static void start_proxy(const int *ups, int nups, const char *const *extra) {
  static char listen[64], metrics[64], up[8][64];
  char *argv[48];
  int n = 0;
  proxy_port = e2e_free_port();
  metrics_port = e2e_free_port();
  snprintf(listen, sizeof listen, "127.0.0.1:%d", proxy_port);
  snprintf(metrics, sizeof metrics, "127.0.0.1:%d", metrics_port);
  argv[n++] = (char *)e2e_bin("evr-proxy");
  argv[n++] = "--listen";
  argv[n++] = listen;
  argv[n++] = "--metrics";
  argv[n++] = metrics;
  argv[n++] = "--log-level";
  argv[n++] = "debug";
  for (int i = 0; i < nups && i < 8; i++) {
    snprintf(up[i], sizeof up[i], "127.0.0.1:%d", ups[i]);
    argv[n++] = "--upstream";
    argv[n++] = up[i];
  }
  for (int i = 0; extra && extra[i] && n < 46; i++) argv[n++] = (char *)extra[i];
  argv[n] = NULL;
  proxy_pid = e2e_spawn(argv, proxy_log);
  /* All listeners are bound before any loop runs, the metrics one last, so
   * probing the metrics port alone is enough; probing the proxy port would
   * open an upstream connection that a test's own fake upstream then sees. */
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
    fail_msg("daemon did not exit 0 (status 0x%x)", st);
  }
}

/* ---- small socket helpers ---- */

/* A listening socket on 127.0.0.1 with a free port (our fake upstream). */
static int listen_local(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 16), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

/* A port with nothing listening on it (connections are refused). */
static int dead_port(void) { return e2e_free_port(); }

static int wait_fd(int fd, short events, int ms) {
  struct pollfd p = {.fd = fd, .events = events};
  int rc;
  do rc = poll(&p, 1, ms);
  while (rc < 0 && errno == EINTR);
  return rc;
}

static int accept_within(int lfd, int ms) {
  if (wait_fd(lfd, POLLIN, ms) <= 0) return -1;
  return accept(lfd, NULL, NULL);
}

/* recv with a bound: the result, or -2 if nothing happened in ms. */
static ssize_t recv_within(int fd, void *buf, size_t n, int ms) {
  if (wait_fd(fd, POLLIN, ms) <= 0) return -2;
  return recv(fd, buf, n, 0);
}

/* Read exactly n bytes within ms; returns bytes read. */
static size_t recv_all(int fd, void *buf, size_t n, int ms) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv_within(fd, (char *)buf + got, n - got, ms);
    if (r <= 0) break;
    got += (size_t)r;
  }
  return got;
}

static void abort_socket(int fd) {
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* The value of a metric line "name{labels} value" or "name value" in a
 * /metrics body; -1 if absent. */
static double metric(const char *body, const char *name_and_labels) {
  size_t n = strlen(name_and_labels);
  for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, name_and_labels, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
  }
  return -1;
}

static char *get_metrics(void) {
  char *resp = e2e_http_get(metrics_port, "/metrics");
  assert_non_null(resp);
  assert_non_null(strstr(resp, " 200 "));
  char *body = strstr(resp, "\r\n\r\n");
  assert_non_null(body);
  memmove(resp, body + 4, strlen(body + 4) + 1);
  return resp;
}

/* ---- tests ---- */

static void test_proxy_relays_64_mib_on_100_connections(void **state) {
  (void)state;
  start_echo();
  const char *extra[] = {"--threads", "2", NULL};
  start_proxy(&echo_port, 1, extra);
  size_t per_conn = (64u << 20) / 100;
  int failed = e2e_echo_traffic(proxy_port, 100, per_conn, 0, 300000);
  if (failed) dump_logs();
  assert_int_equal(failed, 0);
  char *m = get_metrics();
  assert_true(metric(m, "evr_proxy_connections_total") >= 100);
  assert_true(metric(m, "evr_proxy_bytes_in_total") >= (double)(per_conn * 100));
  assert_true(metric(m, "evr_proxy_bytes_out_total") >= (double)(per_conn * 100));
  free(m);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_proxy_half_close_both_ways(void **state) {
  (void)state;
  /* Client first: client FIN reaches evr-echo, whose FIN comes back. */
  start_echo();
  start_proxy(&echo_port, 1, NULL);
  assert_int_equal(e2e_echo_traffic(proxy_port, 10, 1u << 20, 1, 120000), 0);
  expect_clean_exit(&proxy_pid, SIGTERM);

  /* Upstream first: it sends and half-closes; the client still sends. */
  int up_port, lfd = listen_local(&up_port);
  start_proxy(&up_port, 1, NULL);
  int c = e2e_connect(proxy_port);
  assert_true(c >= 0);
  int u = accept_within(lfd, 10000);
  assert_true(u >= 0);
  assert_int_equal(send(u, "hello", 5, 0), 5);
  assert_int_equal(shutdown(u, SHUT_WR), 0);
  char buf[16];
  assert_int_equal(recv_all(c, buf, 5, 10000), 5);
  assert_memory_equal(buf, "hello", 5);
  assert_int_equal(recv_within(c, buf, sizeof buf, 10000), 0); /* EOF relayed */
  assert_int_equal(send(c, "world", 5, 0), 5);                 /* other way still open */
  assert_int_equal(recv_all(u, buf, 5, 10000), 5);
  assert_memory_equal(buf, "world", 5);
  assert_int_equal(shutdown(c, SHUT_WR), 0);
  assert_int_equal(recv_within(u, buf, sizeof buf, 10000), 0);
  close(c);
  close(u);
  close(lfd);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_proxy_skips_down_upstream(void **state) {
  (void)state;
  start_echo();
  int ups[2] = {dead_port(), echo_port};
  const char *extra[] = {"--threads", "1", NULL};
  start_proxy(ups, 2, extra);
  assert_int_equal(e2e_echo_traffic(proxy_port, 20, 64 * 1024, 0, 60000), 0);
  char *m = get_metrics();
  char name[128];
  snprintf(name, sizeof name, "evr_proxy_upstream_connect_failures_total{upstream=\"127.0.0.1:%d\"}",
           ups[0]);
  assert_true(metric(m, name) >= 1);
  snprintf(name, sizeof name, "evr_proxy_upstream_up{upstream=\"127.0.0.1:%d\"}", ups[0]);
  assert_true(metric(m, name) == 0);
  snprintf(name, sizeof name, "evr_proxy_upstream_connections_total{upstream=\"127.0.0.1:%d\"}",
           ups[1]);
  assert_true(metric(m, name) >= 20);
  free(m);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_proxy_closes_client_when_no_upstream_reachable(void **state) {
  (void)state;
  int ups[2] = {dead_port(), dead_port()};
  start_proxy(ups, 2, NULL);
  for (int i = 0; i < 3; i++) {
    int c = e2e_connect(proxy_port);
    assert_true(c >= 0);
    char buf[8];
    ssize_t r = recv_within(c, buf, sizeof buf, 10000);
    assert_true(r == 0 || (r == -1 && errno == ECONNRESET));
    close(c);
  }
  char *m = get_metrics();
  assert_true(metric(m, "evr_proxy_connections_refused_total") >= 3);
  free(m);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

static void test_proxy_upstream_reset_resets_client(void **state) {
  (void)state;
  int up_port, lfd = listen_local(&up_port);
  start_proxy(&up_port, 1, NULL);
  int c = e2e_connect(proxy_port);
  assert_true(c >= 0);
  int u = accept_within(lfd, 10000);
  assert_true(u >= 0);
  assert_int_equal(send(c, "data", 4, 0), 4);
  char buf[8];
  assert_int_equal(recv_all(u, buf, 4, 10000), 4);
  abort_socket(u); /* the upstream resets */
  ssize_t r = recv_within(c, buf, sizeof buf, 10000);
  assert_int_equal(r, -1);
  assert_int_equal(errno, ECONNRESET);
  close(c);
  close(lfd);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

static void test_proxy_client_abort_closes_upstream(void **state) {
  (void)state;
  int up_port, lfd = listen_local(&up_port);
  start_proxy(&up_port, 1, NULL);
  int c = e2e_connect(proxy_port);
  assert_true(c >= 0);
  int u = accept_within(lfd, 10000);
  assert_true(u >= 0);
  assert_int_equal(send(c, "x", 1, 0), 1);
  char buf[8];
  assert_int_equal(recv_all(u, buf, 1, 10000), 1);
  abort_socket(c);
  ssize_t r = recv_within(u, buf, sizeof buf, 10000);
  assert_int_equal(r, -1);
  assert_int_equal(errno, ECONNRESET);
  close(u);
  close(lfd);
  char *m = get_metrics();
  for (int i = 0; i < 200 && metric(m, "evr_proxy_connections_active") != 0; i++) {
    free(m);
    usleep(10000);
    m = get_metrics();
  }
  assert_true(metric(m, "evr_proxy_connections_active") == 0);
  free(m);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

static void test_proxy_memory_bounded_with_client_that_never_reads(void **state) {
  (void)state;
  start_echo();
  const char *extra[] = {"--buffer-size", "65536", "--threads", "1", NULL};
  start_proxy(&echo_port, 1, extra);
  int c = e2e_connect(proxy_port);
  assert_true(c >= 0);
  int small = 64 * 1024;
  setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  int fl = fcntl(c, F_GETFL);
  assert_int_equal(fcntl(c, F_SETFL, fl | O_NONBLOCK), 0);
  static char chunk[64 * 1024];
  memset(chunk, 'z', sizeof chunk);
  size_t sent = 0, limit = 256u << 20;
  /* Send until every buffer on the way is full and sending stalls. */
  while (sent < limit) {
    ssize_t n = send(c, chunk, sizeof chunk, 0);
    if (n > 0) {
      sent += (size_t)n;
      continue;
    }
    assert_true(n < 0 && errno == EAGAIN);
    if (wait_fd(c, POLLOUT, 1000) == 0) break; /* stalled for a second */
  }
  assert_true(sent < limit); /* backpressure reached the client */
  char *m = get_metrics();
  double maxq = metric(m, "evr_proxy_buffered_bytes_max_per_direction");
  assert_true(maxq >= 0 && maxq <= 65536);
  free(m);
  close(c);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void check_proxy_header(const char *version) {
  int up_port, lfd = listen_local(&up_port);
  const char *extra[] = {"--send-proxy", version, NULL};
  start_proxy(&up_port, 1, extra);
  int c = e2e_connect(proxy_port);
  assert_true(c >= 0);
  struct sockaddr_in me;
  socklen_t len = sizeof me;
  assert_int_equal(getsockname(c, (struct sockaddr *)&me, &len), 0);
  int u = accept_within(lfd, 10000);
  assert_true(u >= 0);
  assert_int_equal(send(c, "PAYLOAD", 7, 0), 7);
  unsigned char want[128];
  size_t wlen;
  if (strcmp(version, "v1") == 0) {
    wlen = (size_t)snprintf((char *)want, sizeof want, "PROXY TCP4 127.0.0.1 127.0.0.1 %u %d\r\n",
                            ntohs(me.sin_port), proxy_port);
  } else {
    memcpy(want, "\r\n\r\n\0\r\nQUIT\n", 12);
    want[12] = 0x21;
    want[13] = 0x11;
    want[14] = 0;
    want[15] = 12;
    uint32_t lo = htonl(INADDR_LOOPBACK);
    memcpy(want + 16, &lo, 4);
    memcpy(want + 20, &lo, 4);
    uint16_t sp = me.sin_port, dp = htons((uint16_t)proxy_port);
    memcpy(want + 24, &sp, 2);
    memcpy(want + 26, &dp, 2);
    wlen = 28;
  }
  memcpy(want + wlen, "PAYLOAD", 7);
  unsigned char got[128];
  assert_int_equal(recv_all(u, got, wlen + 7, 10000), wlen + 7);
  assert_memory_equal(got, want, wlen + 7);
  close(c);
  close(u);
  close(lfd);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

static void test_proxy_send_proxy_v1_header_exact(void **state) {
  (void)state;
  check_proxy_header("v1");
}

static void test_proxy_send_proxy_v2_header_exact(void **state) {
  (void)state;
  check_proxy_header("v2");
}

static void test_proxy_metrics_parse(void **state) {
  (void)state;
  start_echo();
  start_proxy(&echo_port, 1, NULL);
  assert_int_equal(e2e_echo_traffic(proxy_port, 5, 10000, 0, 60000), 0);
  char *m = get_metrics();
  /* Every line is a comment or "name[{labels}] number". */
  int samples = 0;
  for (char *line = strtok(m, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#') {
      assert_true(strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0);
      continue;
    }
    char *sp = strrchr(line, ' ');
    assert_non_null(sp);
    char *end;
    strtod(sp + 1, &end);
    assert_true(end != sp + 1 && *end == '\0');
    assert_true(line[0] == '_' || (line[0] >= 'a' && line[0] <= 'z'));
    char *brace = strchr(line, '{');
    if (brace && brace < sp) assert_true(sp[-1] == '}');
    samples++;
  }
  assert_true(samples > 10);
  free(m);
  m = get_metrics();
  char name[128];
  snprintf(name, sizeof name, "evr_proxy_upstream_connect_seconds_count{upstream=\"127.0.0.1:%d\"}",
           echo_port);
  assert_true(metric(m, name) >= 5);
  assert_true(metric(m, "evr_proxy_connections_total") >= 5);
  free(m);
  char *nf = e2e_http_get(metrics_port, "/nope");
  assert_non_null(nf);
  assert_non_null(strstr(nf, " 404 "));
  free(nf);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_proxy_drains_on_sigterm(void **state) {
  (void)state;
  start_echo();
  const char *extra[] = {"--drain-timeout", "30", NULL};
  start_proxy(&echo_port, 1, extra);
  int c = e2e_connect(proxy_port);
  assert_true(c >= 0);
  char buf[8];
  assert_int_equal(send(c, "ping", 4, 0), 4);
  assert_int_equal(recv_all(c, buf, 4, 10000), 4);
  kill(proxy_pid, SIGTERM);
  int refused = 0;
  for (int i = 0; i < 500 && !refused; i++) {
    int probe = e2e_connect(proxy_port);
    if (probe < 0) refused = 1;
    else {
      close(probe);
      usleep(10000);
    }
  }
  assert_true(refused);
  assert_int_equal(send(c, "pong", 4, 0), 4);
  assert_int_equal(recv_all(c, buf, 4, 10000), 4);
  assert_memory_equal(buf, "pong", 4);
  assert_int_equal(e2e_wait_exit(proxy_pid, 200), -1); /* still draining */
  close(c);
  int st = e2e_wait_exit(proxy_pid, 20000);
  proxy_pid = 0;
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_proxy_splice_relays_exactly(void **state) {
  (void)state;
  start_echo();
  const char *extra[] = {"--splice", "--threads", "2", NULL};
  start_proxy(&echo_port, 1, extra);
  assert_int_equal(e2e_echo_traffic(proxy_port, 20, 1u << 20, 1, 120000), 0);
  assert_int_equal(e2e_echo_traffic(proxy_port, 50, 64 * 1024, 0, 120000), 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static int run_status(char *const argv[]) {
  pid_t pid = e2e_spawn(argv, proxy_log);
  int st = e2e_wait_exit(pid, 10000);
  assert_true(st != -1 && WIFEXITED(st));
  return WEXITSTATUS(st);
}

static void test_proxy_command_line(void **state) {
  (void)state;
  char *bin = (char *)e2e_bin("evr-proxy");
  char *help[] = {bin, "--help", NULL};
  char *version[] = {bin, "--version", NULL};
  char *bad_flag[] = {bin, "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", "--bogus", NULL};
  char *no_upstream[] = {bin, "--listen", "127.0.0.1:1", NULL};
  char *no_listen[] = {bin, "--upstream", "127.0.0.1:2", NULL};
  char *bad_balance[] = {bin, "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2",
                         "--balance", "random", NULL};
  char *bad_pp[] = {bin, "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2",
                    "--send-proxy", "v3", NULL};
  char *bad_buf[] = {bin, "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2",
                     "--buffer-size", "12x", NULL};
  char *bad_up[] = {bin, "--listen", "127.0.0.1:1", "--upstream", "nohostport", NULL};
  char *missing[] = {bin, "--listen", NULL};
  assert_int_equal(run_status(help), 0);
  assert_int_equal(run_status(version), 0);
  assert_int_equal(run_status(bad_flag), 2);
  char *log = e2e_read_file(proxy_log);
  assert_non_null(log);
  assert_non_null(strstr(log, "--bogus"));
  assert_null(strchr(strchr(log, '\n') + 1, '\n')); /* one line */
  free(log);
  assert_int_equal(run_status(no_upstream), 2);
  assert_int_equal(run_status(no_listen), 2);
  assert_int_equal(run_status(bad_balance), 2);
  assert_int_equal(run_status(bad_pp), 2);
  assert_int_equal(run_status(bad_buf), 2);
  assert_int_equal(run_status(bad_up), 2);
  assert_int_equal(run_status(missing), 2);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      T(test_proxy_command_line),
      T(test_proxy_relays_64_mib_on_100_connections),
      T(test_proxy_half_close_both_ways),
      T(test_proxy_skips_down_upstream),
      T(test_proxy_closes_client_when_no_upstream_reachable),
      T(test_proxy_upstream_reset_resets_client),
      T(test_proxy_client_abort_closes_upstream),
      T(test_proxy_memory_bounded_with_client_that_never_reads),
      T(test_proxy_send_proxy_v1_header_exact),
      T(test_proxy_send_proxy_v2_header_exact),
      T(test_proxy_metrics_parse),
      T(test_proxy_drains_on_sigterm),
      T(test_proxy_splice_relays_exactly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
