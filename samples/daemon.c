/* samples/daemon.c: logging, options, threads, connection hand-over and
 * the worker supervisor. */
#define _GNU_SOURCE
#include "daemon.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int log_level = LOG_INFO;
const char *log_prog = "evr";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_msg(int level, const char *fmt, ...) {
  if (level > log_level) return;
  char line[1024];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s: ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, ts.tv_nsec / 1000000, log_prog, (long)getpid(),
                   level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && n < (int)sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  /* One write per line, so lines of several threads do not interleave. */
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

int log_level_parse(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) return i;
  return -1;
}

void usage_error(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", log_prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (try '%s --help')\n", log_prog);
  exit(2);
}

uint64_t parse_uint(const char *opt, const char *s, uint64_t min, uint64_t max) {
  /* Decimal digits only: strtoull() would also take leading white space, a
   * sign (and wrap "-1" around) and a 0x prefix with base 0. */
  if (!s[0]) usage_error("%s: a number is needed", opt);
  uint64_t v = 0;
  int too_big = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9') usage_error("%s: '%s' is not a decimal number", opt, s);
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) too_big = 1;
    else v = v * 10 + d;
  }
  if (too_big || v < min || v > max)
    usage_error("%s: '%s' is out of range [%llu, %llu]", opt, s, (unsigned long long)min,
                (unsigned long long)max);
  return v;
}

const char *parse_choice(const char *opt, const char *s, const char *const *choices,
                         const char *hint) {
  for (const char *const *c = choices; *c; c++)
    if (strcmp(*c, s) == 0) return s;
  usage_error("%s: '%s' is not %s", opt, s, hint);
}

const char *option_value(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) usage_error("%s needs a value", argv[*i]);
  return argv[++*i];
}

int cpu_count(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : (int)n;
}

/* ---- threads ---- */
struct thread_arg {
  serve_fn fn;
  void *arg;
  int index;
  int status;
};

static void *thread_main(void *p) {
  struct thread_arg *t = p;
  t->status = t->fn(t->index, t->arg);
  return NULL;
}

int run_threads(int n, serve_fn fn, void *arg) {
  if (n <= 1) return fn(0, arg);
  struct thread_arg *ts = calloc((size_t)n, sizeof *ts);
  pthread_t *ids = calloc((size_t)n, sizeof *ids);
  if (!ts || !ids) {
    log_error("out of memory");
    free(ts);
    free(ids);
    return 1;
  }
  int started = 0, status = 0;
  for (int i = 0; i < n; i++) {
    ts[i] = (struct thread_arg){fn, arg, i, 0};
    int rc = pthread_create(&ids[i], NULL, thread_main, &ts[i]);
    if (rc) {
      log_error("pthread_create: %s", strerror(rc));
      status = 1;
      break;
    }
    started++;
  }
  for (int i = 0; i < started; i++) {
    pthread_join(ids[i], NULL);
    if (ts[i].status > status) status = ts[i].status;
  }
  free(ts);
  free(ids);
  return status;
}

/* ---- spreading connections ---- */

static const char *const balance_names[] = {"kernel", "accept", NULL};

const char *balance_name(int balance) {
  return balance == BALANCE_ACCEPT ? "accept" : "kernel";
}

int balance_parse(const char *opt, const char *s) {
  parse_choice(opt, s, balance_names, "kernel or accept");
  return strcmp(s, "accept") == 0 ? BALANCE_ACCEPT : BALANCE_KERNEL;
}

/* One connection on its way: the node lives in the same allocation, so a
 * hand-over costs one malloc() and evr_post_node() cannot fail for lack of
 * memory. */
struct handoff {
  evr_post_t node;
  adopt_fn adopt;
  void *target;
  int fd;
};

static void handoff_run(void *arg) {
  struct handoff h = *(struct handoff *)arg;
  free(arg); /* allowed once the callback has started */
  h.adopt(h.target, h.fd);
}

int handoff(evr_loop_t *to, adopt_fn adopt, void *target, int fd) {
  struct handoff *h = malloc(sizeof *h);
  if (!h) {
    close(fd);
    return EVR_ENOMEM;
  }
  h->adopt = adopt;
  h->target = target;
  h->fd = fd;
  int rc = evr_post_node(to, &h->node, handoff_run, h);
  if (rc) {
    free(h);
    close(fd);
  }
  return rc;
}

/* ---- worker processes ---- */
struct worker {
  pid_t pid;
  struct timespec started;
};

static double since(const struct timespec *t) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static pid_t spawn(int index, serve_fn fn, void *arg, const sigset_t *old_mask) {
  pid_t pid = fork();
  if (pid < 0) {
    log_error("fork: %s", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    /* The worker starts with default dispositions and the original mask,
     * but SIGTERM, SIGINT and SIGHUP stay blocked, as they were in the
     * supervisor when it forked: a stop forwarded before the worker has
     * set up its own handling then waits for it, pending, instead of
     * killing the worker (which would count as a failed worker). */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    sigset_t mask = *old_mask;
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    _exit(fn(index, arg));
  }
  return pid;
}

int supervise(int n, serve_fn fn, void *arg, unsigned kill_after_s,
              void (*on_stop)(void *stop_arg), void *stop_arg) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGALRM);
  /* Blocked and collected with sigwait(): no handler runs asynchronously. */
  pthread_sigmask(SIG_BLOCK, &set, &old);

  struct worker *w = calloc((size_t)n, sizeof *w);
  if (!w) {
    log_error("out of memory");
    return 1;
  }
  for (int i = 0; i < n; i++) {
    w[i].pid = spawn(i, fn, arg, &old);
    clock_gettime(CLOCK_MONOTONIC, &w[i].started);
    if (w[i].pid > 0) log_info("worker %d started (pid %ld)", i, (long)w[i].pid);
  }
  int stopping = 0, status = 0, alive = 0;
  for (int i = 0; i < n; i++) alive += w[i].pid > 0;
  while (alive > 0) {
    int sig;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      if (!stopping) {
        log_info("signal %d: stopping %d workers", sig, alive);
        stopping = 1;
        if (on_stop) on_stop(stop_arg);
        alarm(kill_after_s);
      }
      for (int i = 0; i < n; i++)
        if (w[i].pid > 0) kill(w[i].pid, SIGTERM);
      continue;
    }
    if (sig == SIGALRM) {
      log_warn("workers still running after %u s: killing them", kill_after_s);
      for (int i = 0; i < n; i++)
        if (w[i].pid > 0) kill(w[i].pid, SIGKILL);
      status = 1;
      continue;
    }
    /* SIGCHLD: reap every exited worker. */
    for (;;) {
      int st;
      pid_t pid = waitpid(-1, &st, WNOHANG);
      if (pid <= 0) break;
      int i = 0;
      while (i < n && w[i].pid != pid) i++;
      if (i == n) continue;
      w[i].pid = 0;
      alive--;
      int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      if (WIFSIGNALED(st))
        log_warn("worker %d (pid %ld) killed by signal %d", i, (long)pid, WTERMSIG(st));
      else
        log_info("worker %d (pid %ld) exited with status %d", i, (long)pid, WEXITSTATUS(st));
      if (stopping) {
        if (!clean) status = 1;
        continue;
      }
      if (clean) continue; /* a worker that chose to exit is not restarted */
      if (since(&w[i].started) < 1.0) {
        struct timespec pause = {1, 0};
        while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
        }
      }
      w[i].pid = spawn(i, fn, arg, &old);
      clock_gettime(CLOCK_MONOTONIC, &w[i].started);
      if (w[i].pid > 0) {
        alive++;
        log_info("worker %d restarted (pid %ld)", i, (long)w[i].pid);
      }
    }
  }
  alarm(0);
  free(w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return status;
}
