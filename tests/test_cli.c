/* tests/test_cli.c: the command lines of evr-echo and evr-proxy. A bad value
 * (a signed or padded number, a malformed upstream host name, a backend
 * that is not built) is a usage error: exit status 2 and one line on stderr
 * naming the option. The good values next to them are accepted, and a
 * daemon started with them runs and stops with status 0 on SIGTERM. */
/* evr-test: novalgrind needs=evr-echo,evr-proxy timeout=300 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "e2e.h"
#include "helpers.h"

static char log_path[64];
static char listen_arg[64];
static int port;

static int setup(void **state) {
  (void)state;
  snprintf(log_path, sizeof log_path, "/tmp/evr-cli-test-%ld.log", (long)getpid());
  port = e2e_free_port();
  assert_true(port > 0);
  snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%d", port);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  unlink(log_path);
  return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define MAX_ARGS 24

/* argv for `prog` followed by the NULL-terminated list `args`, plus the
 * arguments a daemon needs to start at all (evr-proxy: --listen and
 * --upstream) unless `bare`. */
static void build_argv(char **argv, const char *prog, const char *const *args, int bare) {
  int n = 0;
  argv[n++] = (char *)e2e_bin(prog);
  if (!bare) {
    argv[n++] = "--listen";
    argv[n++] = listen_arg;
    if (!strcmp(prog, "evr-proxy")) {
      argv[n++] = "--upstream";
      argv[n++] = "127.0.0.1:9";
    }
  }
  for (; *args; args++) {
    assert_true(n < MAX_ARGS - 1);
    argv[n++] = (char *)*args;
  }
  argv[n] = NULL;
}

/* e2e_spawn with the child's stdout on /dev/null (--help output). */
static pid_t spawn_quiet(char *const *argv) {
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  assert_true(saved >= 0 && null >= 0);
  dup2(null, STDOUT_FILENO);
  close(null);
  pid_t pid = e2e_spawn(argv, log_path);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  return pid;
}

static void describe(char *const *argv, char *out, size_t size) {
  size_t pos = 0;
  out[0] = '\0';
  for (int i = 1; argv[i] && pos + 1 < size; i++) {
    int k = snprintf(out + pos, size - pos, "%s'%s'", i > 1 ? " " : "", argv[i]);
    if (k < 0) break;
    pos += (size_t)k;
  }
}

/* Run `prog args... --help` and expect a usage error from args: exit 2, and
 * exactly one line on stderr, starting with the program's name and
 * containing `mention`. (A value wrongly accepted reaches --help, which
 * exits 0 at once instead of starting the daemon.) Returns 0, or 1 after
 * printing what happened instead. */
static int usage_error_from(const char *prog, const char *mention, const char *const *args) {
  char *argv[MAX_ARGS];
  char what[512];
  build_argv(argv, prog, args, 1);
  int n = 0;
  while (argv[n]) n++;
  argv[n++] = "--help";
  argv[n] = NULL;
  describe(argv, what, sizeof what);
  pid_t pid = spawn_quiet(argv);
  int st = e2e_wait_exit(pid, 10000);
  if (st == -1) st = e2e_stop(pid, SIGKILL, 10000);
  char *log = e2e_read_file(log_path);
  const char *text = log ? log : "";
  const char *nl = strchr(text, '\n');
  char prefix[32];
  snprintf(prefix, sizeof prefix, "%s: ", prog);
  int bad = !(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 2) ||
            strncmp(text, prefix, strlen(prefix)) != 0 || !strstr(text, mention) || !nl ||
            nl[1] != '\0';
  if (bad)
    print_error("%s %s: want exit 2 and one line on stderr mentioning \"%s\"; got %s %d, "
                "stderr: %s%s",
                prog, what, mention, WIFEXITED(st) ? "exit status" : "wait status",
                WIFEXITED(st) ? WEXITSTATUS(st) : st, nl ? "" : "\n", text);
  free(log);
  return bad;
}

/* Run `prog args...` (with the arguments it needs to start), wait until it
 * listens, stop it with SIGTERM and expect exit status 0. */
static void expect_start(const char *prog, const char *const *args) {
  char *argv[MAX_ARGS];
  char what[512];
  build_argv(argv, prog, args, 0);
  describe(argv, what, sizeof what);
  pid_t pid = e2e_spawn(argv, log_path);
  int listening = e2e_wait_listening(port, 10000) == 0;
  int st = e2e_stop(pid, SIGTERM, 20000);
  if (!listening || st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char *log = e2e_read_file(log_path);
    fail_msg("%s %s: want it to listen, then exit 0 on SIGTERM; listening %d, status 0x%x, "
             "log:\n%s",
             prog, what, listening, st, log ? log : "(none)");
  }
}

/* Run `prog args...` and expect exit 0 with nothing on stderr: --help or
 * --version, or values followed by --help, which exits at once once the
 * values before it are accepted (no daemon starts, no name is resolved).
 * Returns 0, or 1 after printing what happened instead. */
static int exits_0(const char *prog, const char *const *args) {
  char *argv[MAX_ARGS];
  char what[512];
  build_argv(argv, prog, args, 1);
  describe(argv, what, sizeof what);
  pid_t pid = spawn_quiet(argv);
  int st = e2e_wait_exit(pid, 10000);
  if (st == -1) st = e2e_stop(pid, SIGKILL, 10000);
  char *log = e2e_read_file(log_path);
  const char *text = log ? log : "";
  int bad = !(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) || text[0] != '\0';
  if (bad)
    print_error("%s %s: want exit 0 and nothing on stderr; got status 0x%x, stderr: %s\n", prog,
                what, st, text);
  free(log);
  return bad;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *const daemons[] = {"evr-echo", "evr-proxy"};

static void test_cli_numbers_are_plain_decimal_digits(void **state) {
  (void)state;
  int failed = 0;
  for (int d = 0; d < 2; d++) {
    const char *p = daemons[d];
    failed += usage_error_from(p, "--threads", ARGS("--threads", "+2"));
    failed += usage_error_from(p, "--threads", ARGS("--threads", " 2"));
    failed += usage_error_from(p, "--threads", ARGS("--threads", "\t2"));
    failed += usage_error_from(p, "--threads", ARGS("--threads", "2 "));
    failed += usage_error_from(p, "--threads", ARGS("--threads", "-2"));
    failed += usage_error_from(p, "--threads", ARGS("--threads", "0x2"));
    failed += usage_error_from(p, "--threads", ARGS("--threads", ""));
    failed += usage_error_from(p, "--threads", ARGS("--threads", "0"));
    failed += usage_error_from(p, "--threads", ARGS("--threads", "99999999999999999999999"));
    failed += usage_error_from(p, "--drain-timeout", ARGS("--drain-timeout", "+1"));
    failed += usage_error_from(p, "--drain-timeout", ARGS("--drain-timeout", " 1"));
    failed += usage_error_from(p, "--drain-timeout", ARGS("--drain-timeout", "-0"));
    failed += usage_error_from(p, "--idle-timeout", ARGS("--idle-timeout", "+5"));
    failed += usage_error_from(p, "--max-conns", ARGS("--max-conns", " 10"));
  }
  failed += usage_error_from("evr-echo", "--workers", ARGS("--workers", "+2"));
  failed += usage_error_from("evr-echo", "--max-conns-per-source",
                             ARGS("--max-conns-per-source", "-1"));
  failed += usage_error_from("evr-echo", "--rate-per-source",
                             ARGS("--rate-per-source", "4294967296"));
  failed += usage_error_from("evr-echo", "--source-table-size",
                             ARGS("--source-table-size", "65535"));
  failed += usage_error_from("evr-echo", "--source-table-size",
                             ARGS("--source-table-size", "33554432"));
  failed += usage_error_from("evr-proxy", "--connect-timeout", ARGS("--connect-timeout", "+100"));
  failed += usage_error_from("evr-proxy", "--buffer-size", ARGS("--buffer-size", " 65536"));
  assert_int_equal(failed, 0);
}

static void test_cli_plain_numbers_are_accepted(void **state) {
  (void)state;
  int failed = 0;
  for (int d = 0; d < 2; d++) {
    const char *p = daemons[d];
    failed += exits_0(p, ARGS("--threads", "2", "--drain-timeout", "0", "--idle-timeout",
                              "86400", "--max-conns", "010", "--help"));
    failed += exits_0(p, ARGS("--threads", "1024", "--drain-timeout", "86400", "--help"));
  }
  failed += exits_0("evr-echo", ARGS("--workers", "3", "--help"));
  failed += exits_0("evr-echo", ARGS("--max-conns-per-source", "4294967295", "--rate-per-source",
                                     "0", "--source-table-size", "16777216", "--help"));
  failed += exits_0("evr-proxy",
                    ARGS("--connect-timeout", "100", "--buffer-size", "4096", "--help"));
  assert_int_equal(failed, 0);
  /* And a daemon started with them runs. */
  for (int d = 0; d < 2; d++)
    expect_start(daemons[d], ARGS("--threads", "2", "--drain-timeout", "1"));
}

/* Host names at the RFC 1123 limits: label gets `len` copies of c, then
 * ".example:80"; name gets `labels` labels "a." then tail (e.g. "b:80"). */
static void limit_names(char label[80], size_t len, char c, char name[300], int labels,
                        const char *tail) {
  memset(label, c, len);
  strcpy(label + len, ".example:80");
  size_t n = 0;
  for (int i = 0; i < labels; i++) {
    name[n++] = 'a';
    name[n++] = '.';
  }
  strcpy(name + n, tail);
}

static void test_cli_proxy_rejects_malformed_upstream_host_names(void **state) {
  (void)state;
  char label64[80], name254[300];
  /* A 64-character label; 127 labels "a." (254 characters) then "b": 255
   * characters, too long even without a trailing dot. */
  limit_names(label64, 64, 'a', name254, 127, "b:80");
  const char *const bad[] = {
      "a..b:80", "-bad-:80", "_:80", "-a.example:80", "a-.example:80", "a.-b.example:80",
      "a_b.example:80", ".example:80", "example..:80", ".:80", "exa mple:80", "ex\xc3\xa4mple:80",
      label64, name254,
  };
  int failed = 0;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    failed += usage_error_from("evr-proxy", "--upstream", ARGS("--upstream", bad[i]));
  assert_int_equal(failed, 0);
}

static void test_cli_proxy_accepts_rfc1123_upstream_host_names(void **state) {
  (void)state;
  char label63[80], name253[300];
  /* A 63-character label; 126 labels "a." (252 characters) then "b": 253
   * characters, then a trailing dot, which does not count. */
  limit_names(label63, 63, 'z', name253, 126, "b.:80");
  const char *const good[] = {
      "localhost:7", "a.example.:80", "xn--bcher-kva.example:80", "1a-b.2c.example:80",
      "x:1", "A-Z.Example.ORG:443", label63, name253,
  };
  int failed = 0;
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    failed += exits_0("evr-proxy", ARGS("--upstream", good[i], "--help"));
  assert_int_equal(failed, 0);
}

static const char *built_backend(void) {
  const char *const *b = evr_backends();
  assert_non_null(b[0]);
  return b[0];
}

static void test_cli_unbuilt_backend_is_a_usage_error(void **state) {
  (void)state;
  int failed = 0;
  for (int d = 0; d < 2; d++) {
    failed += usage_error_from(daemons[d], "--backend", ARGS("--backend", "no-such-backend"));
    failed += usage_error_from(daemons[d], "--backend", ARGS("--backend", ""));
  }
  assert_int_equal(failed, 0);
  for (int d = 0; d < 2; d++)
    expect_start(daemons[d], ARGS("--threads", "1", "--backend", built_backend()));
}

/* --loop-balance takes kernel or accept, nothing else (not even the
 * upstream choices of evr-proxy's --balance); a daemon runs with either. */
static void test_cli_loop_balance_is_kernel_or_accept(void **state) {
  (void)state;
  int failed = 0;
  for (int d = 0; d < 2; d++) {
    const char *p = daemons[d];
    failed += usage_error_from(p, "--loop-balance", ARGS("--loop-balance", "roundrobin"));
    failed += usage_error_from(p, "--loop-balance", ARGS("--loop-balance", "Kernel"));
    failed += usage_error_from(p, "--loop-balance", ARGS("--loop-balance", ""));
    failed += exits_0(p, ARGS("--loop-balance", "kernel", "--help"));
    failed += exits_0(p, ARGS("--loop-balance", "accept", "--help"));
  }
  assert_int_equal(failed, 0);
  for (int d = 0; d < 2; d++) {
    expect_start(daemons[d], ARGS("--threads", "2", "--loop-balance", "accept"));
    expect_start(daemons[d], ARGS("--threads", "2", "--loop-balance", "kernel"));
  }
}

static void test_cli_help_and_version_exit_0(void **state) {
  (void)state;
  int failed = 0;
  for (int d = 0; d < 2; d++) {
    failed += exits_0(daemons[d], ARGS("--help"));
    failed += exits_0(daemons[d], ARGS("--version"));
  }
  assert_int_equal(failed, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_cli_numbers_are_plain_decimal_digits),
      T(test_cli_plain_numbers_are_accepted),
      T(test_cli_proxy_rejects_malformed_upstream_host_names),
      T(test_cli_proxy_accepts_rfc1123_upstream_host_names),
      T(test_cli_unbuilt_backend_is_a_usage_error),
      T(test_cli_loop_balance_is_kernel_or_accept),
      T(test_cli_help_and_version_exit_0),
  };
  return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
