/* tests/test_reload.c: seamless reload (SIGUSR2) of evr-echo and evr-proxy
 * end to end: while clients connect, echo and close in a tight loop and one
 * client holds a long transfer open, the daemon is reloaded again and
 * again; no connection may be refused or reset, every byte must come back,
 * the --pid-file must name each new process and every old one must exit 0.
 * Also: with --workers, with --loop-balance accept, evr-proxy in front of
 * evr-echo (its /metrics listener handed over too), and a reload that
 * fails (the executable replaced by a program that exits 1) leaving the
 * old process serving. */
/* evr-test: novalgrind needs=evr-echo,evr-proxy timeout=300 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include "e2e.h"
#include "helpers.h"

static char log_path[64], pid_path[64], log2_path[64];
static char listen_arg[64];
static int port;

/* Every daemon process a test learns of: killed at teardown if a failed
 * test left it running. */
static pid_t known[64];
static int nknown;

static void know(pid_t pid) {
  if (pid > 0 && nknown < 64) known[nknown++] = pid;
}

/* Exited and reaped: its pid may be reused, never kill it. */
static void forget(pid_t pid) {
  for (int i = 0; i < nknown; i++)
    if (known[i] == pid) known[i] = known[--nknown];
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int setup(void **state) {
  (void)state;
  (void)raise_nofile(1L << 16);
#ifdef PR_SET_CHILD_SUBREAPER
  /* The old processes' new copies become ours when their parent exits: we
   * can then wait for each one and see its exit status. */
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif
  snprintf(log_path, sizeof log_path, "/tmp/evr-reload-test-%ld.log", (long)getpid());
  snprintf(log2_path, sizeof log2_path, "/tmp/evr-reload-test-%ld-2.log", (long)getpid());
  snprintf(pid_path, sizeof pid_path, "/tmp/evr-reload-test-%ld.pid", (long)getpid());
  unlink(pid_path);
  port = e2e_free_port();
  assert_true(port > 0);
  snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%d", port);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < nknown; i++)
    if (kill(known[i], SIGKILL) == 0) (void)waitpid(known[i], NULL, 0);
  nknown = 0;
  unlink(log_path);
  unlink(log2_path);
  unlink(pid_path);
  return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static void dump_log(const char *path) {
  char *log = e2e_read_file(path);
  fprintf(stderr, "---- %s ----\n%s\n", path, log ? log : "(none)");
  free(log);
}

/* The pid in the pid file, or 0. */
static pid_t read_pid(void) {
  char *s = e2e_read_file(pid_path);
  long pid = s ? strtol(s, NULL, 10) : 0;
  free(s);
  return (pid_t)pid;
}

/* Wait until the pid file names a process other than `not` (0: any). */
static pid_t wait_pid_file(pid_t not, int timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  while (now_ms() < end) {
    pid_t p = read_pid();
    if (p > 0 && p != not) {
      know(p);
      return p;
    }
    sleep_ms(5);
  }
  return 0;
}

static pid_t spawn_args(const char *const *args, const char *log) {
  char *argv[32];
  int n = 0;
  while (args[n] && n < 31) {
    argv[n] = (char *)args[n];
    n++;
  }
  argv[n] = NULL;
  pid_t pid = e2e_spawn(argv, log);
  know(pid);
  return pid;
}

/* ---- clients ---- */

struct clients {
  int port;
  atomic_int stop;
  atomic_long ok, refused, reset, other, long_bytes;
  atomic_int long_failed;
  char first_error[160];
  pthread_mutex_t lock;
  pthread_t short_thread, long_thread;
  int with_long;
};

static void note_error(struct clients *c, const char *what, int err) {
  pthread_mutex_lock(&c->lock);
  if (!c->first_error[0])
    snprintf(c->first_error, sizeof c->first_error, "%s: %s", what, err ? strerror(err) : "-");
  pthread_mutex_unlock(&c->lock);
}

static int connect_to(int to_port, int *err) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)to_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {10, 0}; /* a hang is an error, not a stuck test */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int rc;
  do rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* 0, or -1 with errno (0: early EOF). */
static int read_all(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) errno = 0;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static ssize_t recv_retry(int fd, char *p, size_t n) {
  ssize_t r;
  do r = recv(fd, p, n, 0);
  while (r < 0 && errno == EINTR);
  return r;
}

static void count_failure(struct clients *c, const char *what, int err) {
  if (err == ECONNREFUSED) atomic_fetch_add(&c->refused, 1);
  else if (err == ECONNRESET || err == EPIPE || err == 0) atomic_fetch_add(&c->reset, 1);
  else atomic_fetch_add(&c->other, 1);
  note_error(c, what, err);
}

/* Connect, echo one message, close; again and again. */
static void *short_main(void *arg) {
  struct clients *c = arg;
  char out[2048], in[2048];
  unsigned seed = 1;
  while (!atomic_load(&c->stop)) {
    size_t len = 1 + ((size_t)rand_r(&seed) % sizeof out);
    for (size_t i = 0; i < len; i++) out[i] = (char)rand_r(&seed);
    int err = 0;
    int fd = connect_to(c->port, &err);
    if (fd < 0) {
      count_failure(c, "connect", err);
      continue;
    }
    if (write_all(fd, out, len) != 0) {
      count_failure(c, "send", errno);
    } else if (read_all(fd, in, len) != 0) {
      count_failure(c, "recv", errno);
    } else if (memcmp(in, out, len) != 0) {
      atomic_fetch_add(&c->other, 1);
      note_error(c, "echo differs", 0);
    } else {
      /* Half-close, and the server closes first: the TIME_WAIT is its, so
       * this loop does not run out of ports. */
      char extra;
      ssize_t r;
      if (shutdown(fd, SHUT_WR) != 0) count_failure(c, "shutdown", errno);
      else if ((r = recv_retry(fd, &extra, 1)) != 0)
        count_failure(c, r > 0 ? "bytes after the echo" : "recv FIN", r > 0 ? EPROTO : errno);
      else atomic_fetch_add(&c->ok, 1);
    }
    close(fd);
  }
  return NULL;
}

/* One connection for the whole test: 16 KiB out, 16 KiB back, verified. */
static void *long_main(void *arg) {
  struct clients *c = arg;
  char out[16384], in[16384];
  unsigned seed = 7;
  int err = 0;
  int fd = connect_to(c->port, &err);
  if (fd < 0) {
    note_error(c, "long: connect", err);
    atomic_store(&c->long_failed, 1);
    return NULL;
  }
  while (!atomic_load(&c->stop)) {
    for (size_t i = 0; i < sizeof out; i++) out[i] = (char)rand_r(&seed);
    if (write_all(fd, out, sizeof out) != 0 || read_all(fd, in, sizeof in) != 0) {
      note_error(c, "long: transfer", errno);
      atomic_store(&c->long_failed, 1);
      break;
    }
    if (memcmp(in, out, sizeof in) != 0) {
      note_error(c, "long: echo differs", 0);
      atomic_store(&c->long_failed, 1);
      break;
    }
    atomic_fetch_add(&c->long_bytes, (long)sizeof out);
    sleep_ms(2);
  }
  close(fd);
  return NULL;
}

static void clients_start(struct clients *c, int to_port, int with_long) {
  memset(c, 0, sizeof *c);
  c->port = to_port;
  c->with_long = with_long;
  pthread_mutex_init(&c->lock, NULL);
  assert_int_equal(pthread_create(&c->short_thread, NULL, short_main, c), 0);
  if (with_long) assert_int_equal(pthread_create(&c->long_thread, NULL, long_main, c), 0);
}

static void clients_stop(struct clients *c, const char *name) {
  atomic_store(&c->stop, 1);
  pthread_join(c->short_thread, NULL);
  if (c->with_long) pthread_join(c->long_thread, NULL);
  pthread_mutex_destroy(&c->lock);
  fprintf(stderr,
          "%s: %ld echoes ok, %ld refused, %ld reset, %ld other failures; long transfer: %ld "
          "bytes%s%s%s\n",
          name, atomic_load(&c->ok), atomic_load(&c->refused), atomic_load(&c->reset),
          atomic_load(&c->other), atomic_load(&c->long_bytes),
          atomic_load(&c->long_failed) ? " FAILED" : " ok", c->first_error[0] ? "; first: " : "",
          c->first_error);
}

static int clients_clean(struct clients *c) {
  return atomic_load(&c->refused) == 0 && atomic_load(&c->reset) == 0 &&
         atomic_load(&c->other) == 0 && !atomic_load(&c->long_failed) && atomic_load(&c->ok) > 0;
}

/* ---- reloading ---- */

#define MAX_GEN 16

/* Reload `reloads` times; pids[0] is the running process (from the pid
 * file); pids[1..reloads] are filled in. Prints the time each took. */
static void reload_times(pid_t *pids, int reloads, const char *log) {
  for (int r = 1; r <= reloads; r++) {
    int64_t t0 = now_ms();
    assert_int_equal(kill(pids[r - 1], SIGUSR2), 0);
    pids[r] = wait_pid_file(pids[r - 1], 20000);
    if (pids[r] == 0) {
      dump_log(log);
      fail_msg("reload %d: the pid file still names %ld", r, (long)pids[r - 1]);
    }
    fprintf(stderr, "reload %d: pid %ld -> %ld in %lld ms\n", r, (long)pids[r - 1],
            (long)pids[r], (long long)(now_ms() - t0));
    sleep_ms(100); /* clients run against each generation */
  }
}

/* Each of pids[0..n) exits 0: our child, directly or (Linux) as the
 * subreaper of an orphan; or one that its parent, a supervisor, reaped:
 * then the parent's log says how it exited. */
static void expect_all_exit_0(const pid_t *pids, int n, const char *log) {
  for (int i = 0; i < n; i++) {
    int64_t end = now_ms() + 60000;
    int st = -1, gone = 0;
    while (now_ms() < end) {
      pid_t r = waitpid(pids[i], &st, WNOHANG);
      if (r == pids[i]) break;
      st = -1;
      if (r < 0 && errno == ECHILD && kill(pids[i], 0) != 0 && errno == ESRCH) {
        gone = 1;
        break;
      }
      sleep_ms(5);
    }
    if (gone && i > 0) {
      char line[96];
      snprintf(line, sizeof line, "pid %ld (started by a reload) exited with status 0",
               (long)pids[i]);
      char *text = e2e_read_file(log);
      int found = text && strstr(text, line);
#ifndef PR_SET_CHILD_SUBREAPER
      found = found || (text && !strstr(text, "(started by a reload) exited with status"));
#endif
      free(text);
      if (found) {
        forget(pids[i]);
        continue;
      }
    }
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      dump_log(log);
      fail_msg("process %d (pid %ld) did not exit 0 (status 0x%x)", i, (long)pids[i], st);
    }
    forget(pids[i]);
  }
}

static void echo_reloads(const char *const *extra, int reloads, int with_long) {
  const char *args[24] = {e2e_bin("evr-echo"), "--listen", listen_arg, "--pid-file", pid_path,
                          "--drain-timeout", "60"};
  int n = 7;
  for (int i = 0; extra[i]; i++) args[n++] = extra[i];
  args[n] = NULL;
  char *bin = strdup(args[0]);
  args[0] = bin;
  pid_t first = spawn_args(args, log_path);
  pid_t pids[MAX_GEN + 1];
  pids[0] = wait_pid_file(0, 10000);
  if (pids[0] != first) {
    dump_log(log_path);
    fail_msg("the pid file does not name the daemon (%ld, not %ld)", (long)pids[0], (long)first);
  }
  struct clients c;
  clients_start(&c, port, with_long);
  sleep_ms(200);
  reload_times(pids, reloads, log_path);
  sleep_ms(200);
  clients_stop(&c, "evr-echo");
  if (!clients_clean(&c)) {
    dump_log(log_path);
    fail_msg("clients saw failures across %d reloads", reloads);
  }
  /* The last one stops on SIGTERM; the pid file goes with it. */
  assert_int_equal(kill(pids[reloads], SIGTERM), 0);
  expect_all_exit_0(pids, reloads + 1, log_path);
  assert_null(e2e_read_file(pid_path));
  char *log = e2e_read_file(log_path);
  assert_non_null(log);
  assert_non_null(strstr(log, "reload: new process"));
  assert_null(strstr(log, "reload failed"));
  free(log);
  free(bin);
}

static void test_echo_10_reloads_kernel_balance(void **state) {
  (void)state;
  const char *extra[] = {"--threads", "2", "--loop-balance", "kernel", NULL};
  echo_reloads(extra, 10, 1);
}

static void test_echo_reloads_accept_balance(void **state) {
  (void)state;
  const char *extra[] = {"--threads", "2", "--loop-balance", "accept", NULL};
  echo_reloads(extra, 3, 1);
}

static void test_echo_reloads_workers(void **state) {
  (void)state;
  const char *extra[] = {"--workers", "2", NULL};
  echo_reloads(extra, 3, 1);
}

/* A second SIGUSR2 while a reload runs is ignored (logged). The program is
 * replaced by a wrapper that waits for a file before it starts the real
 * one, so the reload is in progress until the test says. */
static void test_echo_second_sigusr2_ignored(void **state) {
  (void)state;
  char copy[96], go[96], cmd[512];
  snprintf(copy, sizeof copy, "/tmp/evr-reload-test-%ld-echo3", (long)getpid());
  snprintf(go, sizeof go, "/tmp/evr-reload-test-%ld-go", (long)getpid());
  unlink(go);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", e2e_bin("evr-echo"), copy);
  assert_int_equal(system(cmd), 0);
  const char *args[] = {copy, "--listen", listen_arg, "--pid-file", pid_path, "--threads", "2",
                        "--reload-timeout", "120", NULL};
  pid_t first = spawn_args(args, log_path);
  assert_int_equal(wait_pid_file(0, 10000), first);
  char wrapper[128];
  snprintf(wrapper, sizeof wrapper, "%s.new", copy);
  FILE *f = fopen(wrapper, "w");
  assert_non_null(f);
  fprintf(f, "#!/bin/sh\nwhile [ ! -e '%s' ]; do sleep 0.01; done\nexec '%s' \"$@\"\n", go,
          e2e_bin("evr-echo"));
  assert_int_equal(fclose(f), 0);
  assert_int_equal(chmod(wrapper, 0755), 0);
  assert_int_equal(rename(wrapper, copy), 0);

  assert_int_equal(kill(first, SIGUSR2), 0);
  int seen = 0;
  for (int i = 0; i < 3000 && !seen; i++) {
    sleep_ms(10);
    char *log = e2e_read_file(log_path);
    seen = log && strstr(log, "reload: started ");
    free(log);
  }
  assert_true(seen);
  assert_int_equal(kill(first, SIGUSR2), 0);
  seen = 0;
  for (int i = 0; i < 3000 && !seen; i++) {
    sleep_ms(10);
    char *log = e2e_read_file(log_path);
    seen = log && strstr(log, "SIGUSR2 ignored: a reload is in progress");
    free(log);
  }
  if (!seen) dump_log(log_path);
  assert_true(seen);
  f = fopen(go, "w");
  assert_non_null(f);
  fclose(f);
  pid_t now = wait_pid_file(first, 20000);
  unlink(go);
  unlink(copy);
  if (now == 0) dump_log(log_path);
  assert_true(now > 0);
  assert_int_equal(e2e_echo_traffic(port, 20, 4096, 0, 30000), 0);
  assert_int_equal(kill(now, SIGTERM), 0);
  pid_t pids[] = {first, now};
  expect_all_exit_0(pids, 2, log_path);
  /* One reload only: the second signal started none. */
  char *log = e2e_read_file(log_path);
  char *p = strstr(log, "reload: started ");
  assert_non_null(p);
  assert_null(strstr(p + 1, "reload: started "));
  free(log);
}

/* A failed reload: the executable was replaced by a program that exits 1.
 * The old process says why and serves on; a later reload, with the real
 * program back, succeeds. */
static void test_echo_failed_reload_serves_on(void **state) {
  (void)state;
  char copy[96];
  snprintf(copy, sizeof copy, "/tmp/evr-reload-test-%ld-echo", (long)getpid());
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", e2e_bin("evr-echo"), copy);
  assert_int_equal(system(cmd), 0);
  const char *args[] = {copy, "--listen", listen_arg, "--pid-file", pid_path, "--threads", "2",
                        NULL};
  pid_t first = spawn_args(args, log_path);
  assert_int_equal(wait_pid_file(0, 10000), first);
  /* Replace the program: the new copy runs this and exits 1. */
  assert_int_equal(unlink(copy), 0);
  FILE *f = fopen(copy, "w");
  assert_non_null(f);
  fputs("#!/bin/sh\nexit 1\n", f);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(chmod(copy, 0755), 0);

  struct clients c;
  clients_start(&c, port, 1);
  sleep_ms(100);
  assert_int_equal(kill(first, SIGUSR2), 0);
  int seen = 0;
  char *log = NULL;
  for (int i = 0; i < 2000 && !seen; i++) {
    sleep_ms(10);
    log = e2e_read_file(log_path);
    seen = log && strstr(log, "reload failed") != NULL;
    if (!seen) free(log);
  }
  if (!seen) dump_log(log_path);
  assert_true(seen);
  assert_non_null(strstr(strstr(log, "reload failed"), "(exit status 1): this one serves on"));
  free(log);
  sleep_ms(200);
  assert_int_equal(read_pid(), first);
  assert_int_equal(kill(first, 0), 0);

  /* The real program back: the next reload works. */
  assert_int_equal(unlink(copy), 0);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", e2e_bin("evr-echo"), copy);
  assert_int_equal(system(cmd), 0);
  pid_t pids[2] = {first, 0};
  reload_times(pids, 1, log_path);
  sleep_ms(100);
  clients_stop(&c, "evr-echo (failed reload)");
  unlink(copy);
  if (!clients_clean(&c)) {
    dump_log(log_path);
    fail_msg("clients saw failures");
  }
  assert_int_equal(kill(pids[1], SIGTERM), 0);
  expect_all_exit_0(pids, 2, log_path);
}

/* A new copy whose configuration does not match (more threads: a loop
 * without a socket) fails its start; the old one serves on. */
static void test_echo_mismatch_fails(void **state) {
  (void)state;
  char conf[96];
  snprintf(conf, sizeof conf, "/tmp/evr-reload-test-%ld-wrapper", (long)getpid());
  /* A wrapper that starts evr-echo with one more thread than the old. */
  FILE *f = fopen(conf, "w");
  assert_non_null(f);
  fprintf(f, "#!/bin/sh\nexec '%s' \"$@\" --threads 3\n", e2e_bin("evr-echo"));
  assert_int_equal(fclose(f), 0);
  assert_int_equal(chmod(conf, 0755), 0);
  char copy[96];
  snprintf(copy, sizeof copy, "/tmp/evr-reload-test-%ld-echo2", (long)getpid());
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", e2e_bin("evr-echo"), copy);
  assert_int_equal(system(cmd), 0);
  const char *args[] = {copy, "--listen", listen_arg, "--pid-file", pid_path, "--threads", "2",
                        "--loop-balance", "kernel", NULL};
  pid_t first = spawn_args(args, log_path);
  assert_int_equal(wait_pid_file(0, 10000), first);
  assert_int_equal(rename(conf, copy), 0);
  assert_int_equal(kill(first, SIGUSR2), 0);
  int seen = 0;
  for (int i = 0; i < 2000 && !seen; i++) {
    sleep_ms(10);
    char *log = e2e_read_file(log_path);
    seen = log && strstr(log, "reload failed") != NULL;
    free(log);
  }
  unlink(copy);
  if (!seen) dump_log(log_path);
  assert_true(seen);
  char *log = e2e_read_file(log_path);
  assert_non_null(strstr(log, "does not match"));
  free(log);
  assert_int_equal(read_pid(), first);
  assert_int_equal(e2e_echo_traffic(port, 20, 4096, 0, 30000), 0);
  assert_int_equal(kill(first, SIGTERM), 0);
  expect_all_exit_0(&first, 1, log_path);
}

/* evr-proxy in front of evr-echo, reloaded 3 times: no client refused or
 * reset, and /metrics still answers from the new process. */
static void test_proxy_3_reloads(void **state) {
  (void)state;
  char echo_listen[64], up[64], plisten[64], mlisten[64];
  int eport = e2e_free_port(), mport = e2e_free_port();
  snprintf(echo_listen, sizeof echo_listen, "127.0.0.1:%d", eport);
  snprintf(up, sizeof up, "127.0.0.1:%d", eport);
  snprintf(plisten, sizeof plisten, "127.0.0.1:%d", port);
  snprintf(mlisten, sizeof mlisten, "127.0.0.1:%d", mport);
  const char *eargs[] = {e2e_bin("evr-echo"), "--listen", echo_listen, "--threads", "2", NULL};
  char *ebin = strdup(eargs[0]);
  eargs[0] = ebin;
  pid_t echo = spawn_args(eargs, log2_path);
  assert_int_equal(e2e_wait_listening(eport, 10000), 0);
  const char *pargs[] = {e2e_bin("evr-proxy"), "--listen", plisten, "--upstream", up,
                         "--metrics", mlisten, "--threads", "2", "--pid-file", pid_path,
                         "--drain-timeout", "60", NULL};
  pid_t first = spawn_args(pargs, log_path);
  pid_t pids[4];
  pids[0] = wait_pid_file(0, 10000);
  assert_int_equal(pids[0], first);
  struct clients c;
  clients_start(&c, port, 1);
  sleep_ms(200);
  for (int r = 1; r <= 3; r++) {
    reload_times(pids + r - 1, 1, log_path); /* prints "reload 1" for each */
    char *resp = e2e_http_get(mport, "/metrics");
    if (!resp || !strstr(resp, "200 OK")) {
      dump_log(log_path);
      fail_msg("/metrics did not answer after reload %d: %s", r, resp ? resp : "(nothing)");
    }
    free(resp);
  }
  sleep_ms(200);
  clients_stop(&c, "evr-proxy");
  if (!clients_clean(&c)) {
    dump_log(log_path);
    fail_msg("clients saw failures across 3 proxy reloads");
  }
  assert_int_equal(kill(pids[3], SIGTERM), 0);
  expect_all_exit_0(pids, 4, log_path);
  int st = e2e_stop(echo, SIGTERM, 20000);
  forget(echo);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  free(ebin);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      T(test_echo_10_reloads_kernel_balance),
      T(test_echo_reloads_accept_balance),
      T(test_echo_reloads_workers),
      T(test_echo_second_sigusr2_ignored),
      T(test_echo_failed_reload_serves_on),
      T(test_echo_mismatch_fails),
      T(test_proxy_3_reloads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
