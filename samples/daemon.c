/* samples/daemon.c: logging, options, threads, connection hand-over, the
 * worker supervisor, and the service manager's side (socket activation,
 * notifications, watchdog; the protocols themselves are in sd.c). */
#define _GNU_SOURCE
#include "daemon.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "reload.h"
#include "sd.h"

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

static int notify(const char *state); /* below: the service manager */

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

/* Sleep 1 s; with the watchdog on (SIGALRM is blocked meanwhile), in steps
 * of at most half its interval, sending WATCHDOG=1 after each. */
static void pause_1s(uint64_t wd_usec) {
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  double left, half = wd_usec / 2 < 1000 ? 1e-3 : (double)(wd_usec / 2) / 1e6;
  while ((left = 1.0 - since(&start)) > 0) {
    double step = wd_usec && left > half ? half : left;
    struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    if (wd_usec) notify("WATCHDOG=1");
  }
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
    sigaddset(&mask, SIGUSR2); /* the supervisor's: taken and ignored by fn */
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    sysd_detach(); /* the supervisor speaks for the workers */
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
  sigaddset(&set, SIGUSR2);
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
  int stopping = 0, status = 0, alive = 0, killed = 0, reloaded = 0;
  for (int i = 0; i < n; i++) alive += w[i].pid > 0;
  /* With the service manager's watchdog on, SIGALRM comes every
   * WATCHDOG_USEC / 2 (and also times the kill after a stop); else alarm()
   * times the kill alone. */
  uint64_t wd_usec = sysd_watchdog_usec();
  struct timespec kill_at = {0, 0};
  if (wd_usec) {
    uint64_t half = wd_usec / 2 < 1000 ? 1000 : wd_usec / 2;
    struct itimerval it;
    it.it_interval.tv_sec = (time_t)(half / 1000000);
    it.it_interval.tv_usec = (suseconds_t)(half % 1000000);
    it.it_value = it.it_interval;
    setitimer(ITIMER_REAL, &it, NULL);
  }
  int failed = 0; /* not ready: stop the workers, exit 1 */
  if (alive > 0 && service_ready() != 0) failed = 1;
  while (alive > 0) {
    int sig;
    if (failed) {
      failed = 0;
      status = 1;
      sig = SIGTERM;
    } else if (sigwait(&set, &sig) != 0) {
      continue;
    }
    if (sig == SIGUSR2) {
      /* A reload: once the new supervisor serves, stop as on SIGTERM. */
      if (reload_run(stopping) != 0) continue;
      reloaded = 1;
      sig = SIGTERM;
    }
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      if (!stopping) {
        if (reloaded) log_info("reloaded: stopping %d workers", alive);
        else log_info("signal %d: stopping %d workers", sig, alive);
        stopping = 1;
        if (!reloaded) service_stopping();
        if (on_stop) on_stop(stop_arg);
        clock_gettime(CLOCK_MONOTONIC, &kill_at);
        kill_at.tv_sec += (time_t)kill_after_s;
        if (!wd_usec) alarm(kill_after_s);
      }
      for (int i = 0; i < n; i++)
        if (w[i].pid > 0) kill(w[i].pid, SIGTERM);
      continue;
    }
    if (sig == SIGALRM) {
      if (wd_usec) {
        notify("WATCHDOG=1");
        if (!stopping || killed || since(&kill_at) < 0) continue;
      }
      killed = 1;
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
      if (i == n) { /* a new supervisor, started by a reload, that ended */
        if (WIFSIGNALED(st))
          log_info("pid %ld (started by a reload) killed by signal %d", (long)pid, WTERMSIG(st));
        else
          log_info("pid %ld (started by a reload) exited with status %d", (long)pid,
                   WEXITSTATUS(st));
        continue;
      }
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
      if (since(&w[i].started) < 1.0) pause_1s(wd_usec);
      w[i].pid = spawn(i, fn, arg, &old);
      clock_gettime(CLOCK_MONOTONIC, &w[i].started);
      if (w[i].pid > 0) {
        alive++;
        log_info("worker %d restarted (pid %ld)", i, (long)w[i].pid);
      }
    }
  }
  if (wd_usec) {
    struct itimerval off;
    memset(&off, 0, sizeof off);
    setitimer(ITIMER_REAL, &off, NULL);
  }
  alarm(0);
  free(w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return status;
}

/* ---- the service manager ---- */

struct passed {
  int fd;
  int taken;
  const char *name;
  evr_addr_t addr;
  char text[EVR_ADDR_STRLEN];
};

static struct passed *passed; /* kept for the life of the process */
static int npassed = -1;      /* -1: the environment has not been read */

static void activation_fail(int fd, const char *name, const char *why) {
  log_error("socket activation: descriptor %d ('%s'): %s", fd, name, why);
  exit(1);
}

static void activation_take(void) {
  if (npassed >= 0) return;
  npassed = 0;
  /* Passed to another process (one that forked us and kept them): not
   * ours to serve, and sysd_listen_fds() says nothing about it. */
  const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
  if (fds && (!pid || strtoll(pid, NULL, 10) != (long long)getpid()))
    log_warn("socket activation: LISTEN_FDS=%s is for process %s, not this one (%ld): ignored",
             fds, pid ? pid : "(no LISTEN_PID)", (long)getpid());
  char **names = NULL;
  int n = sysd_listen_fds(&names);
  if (n < 0) {
    log_error("socket activation: LISTEN_FDS, LISTEN_FDNAMES: %s", strerror(-n));
    exit(1);
  }
  if (n == 0) return;
  passed = calloc((size_t)n, sizeof *passed);
  if (!passed) {
    log_error("out of memory");
    exit(1);
  }
  for (int i = 0; i < n; i++) {
    struct passed *p = &passed[i];
    p->fd = SD_FIRST_FD + i;
    p->name = names && names[i] ? names[i] : "unknown";
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(p->fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
      activation_fail(p->fd, p->name, errno == ENOTSOCK ? "not a socket" : strerror(errno));
    if (type != SOCK_STREAM)
      activation_fail(p->fd, p->name, "not a stream socket (ListenStream= only)");
#ifdef SO_ACCEPTCONN
    int listening = 0;
    len = sizeof listening;
    if (getsockopt(p->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
      activation_fail(p->fd, p->name, "not a listening socket (Accept=yes is not supported)");
#endif
    struct sockaddr_storage ss;
    len = sizeof ss;
    if (getsockname(p->fd, (struct sockaddr *)&ss, &len) < 0)
      activation_fail(p->fd, p->name, strerror(errno));
    if (evr_addr_from_sockaddr(&p->addr, (struct sockaddr *)&ss, len) != 0 ||
        evr_addr_format(&p->addr, p->text, sizeof p->text) < 0)
      activation_fail(p->fd, p->name, "an address family that is not served");
    log_info("socket activation: descriptor %d ('%s') listens on %s", p->fd, p->name, p->text);
  }
  free(names); /* the array; the names stay, pointed to by passed[] */
  npassed = n;
}

int activation_match(const evr_addr_t *addr) {
  activation_take();
  char text[EVR_ADDR_STRLEN];
  if (evr_addr_format(addr, text, sizeof text) < 0) return -1;
  for (int i = 0; i < npassed; i++)
    if (!passed[i].taken && strcmp(passed[i].text, text) == 0) {
      passed[i].taken = 1;
      return passed[i].fd;
    }
  return -1;
}

int activation_named(const char *name, evr_addr_t *addr, const char **text) {
  activation_take();
  for (int i = 0; i < npassed; i++)
    if (!passed[i].taken && strcmp(passed[i].name, name) == 0) {
      passed[i].taken = 1;
      *addr = passed[i].addr;
      *text = passed[i].text;
      return passed[i].fd;
    }
  return -1;
}

int activation_listen(const char **text, evr_addr_t *addrs, int *fds, int *n, int max) {
  activation_take();
  int used = 0;
  for (int i = 0; i < *n; i++) used += (fds[i] = activation_match(&addrs[i])) >= 0;
  for (int i = 0; i < npassed; i++) {
    if (passed[i].taken) continue;
    if (*n == max) {
      log_error("socket activation: more than %d listening sockets", max);
      exit(1);
    }
    passed[i].taken = 1;
    text[*n] = passed[i].text;
    addrs[*n] = passed[i].addr;
    fds[*n] = passed[i].fd;
    ++*n;
    used++;
  }
  return used;
}

static atomic_int notify_failed; /* warn once */

/* 1 if sent, 0 if there is no NOTIFY_SOCKET, -1 on failure (logged once). */
static int notify(const char *state) {
  int rc = sysd_notify(state);
  if (rc > 0) {
    log_debug("service manager: %s sent", state);
    return 1;
  }
  if (rc < 0 && !atomic_exchange(&notify_failed, 1))
    log_warn("service manager: sending %s to NOTIFY_SOCKET: %s", state, strerror(-rc));
  return rc < 0 ? -1 : 0;
}

int service_ready(void) {
  if (reload_ready() != 0) return -1;
  /* A new copy started by a reload is the service's main process from now
   * on (NotifyAccess=all lets it say so). */
  char state[64];
  if (reload_active())
    snprintf(state, sizeof state, "MAINPID=%ld\nREADY=1", (long)getpid());
  else
    snprintf(state, sizeof state, "READY=1");
  if (notify(state) > 0) log_info("service manager: ready (%s)", sysd_impl());
  uint64_t usec = sysd_watchdog_usec();
  if (usec)
    log_info("service manager: watchdog, %llu ms (WATCHDOG=1 every %llu ms)",
             (unsigned long long)(usec / 1000), (unsigned long long)(usec / 2000));
  return 0;
}

void service_stopping(void) { notify("STOPPING=1"); }

/* The watchdog: a round ends, and WATCHDOG=1 is sent, when every member
 * (a loop in service_run()) has beaten since the round began. A member
 * that leaves counts as having beaten. */
static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned wd_round;
static int wd_members, wd_pending; /* pending: members yet to beat */

struct beat {
  evr_timer_t timer;
  unsigned round; /* the last round this member beat in */
};

static void wd_beat(struct beat *b, int leaving) {
  int send = 0;
  pthread_mutex_lock(&wd_lock);
  if (b->round != wd_round) {
    b->round = wd_round;
    wd_pending--;
  }
  if (leaving) wd_members--;
  if (wd_pending == 0 && wd_members > 0) {
    wd_round++;
    wd_pending = wd_members;
    send = 1;
  }
  pthread_mutex_unlock(&wd_lock);
  if (send) notify("WATCHDOG=1");
}

static void on_beat(evr_timer_t *t) { wd_beat(t->data, 0); }

int service_run(evr_loop_t *loop) {
  uint64_t usec = sysd_watchdog_usec();
  struct beat b;
  int watched = 0;
  if (usec && evr_timer_init(loop, &b.timer) == 0) {
    uint64_t half_ns = usec * 1000 / 2;
    if (half_ns < 1000000) half_ns = 1000000; /* at most 1,000 beats a second */
    b.timer.data = &b;
    pthread_mutex_lock(&wd_lock);
    wd_members++;
    wd_pending++;
    b.round = wd_round - 1; /* yet to beat in this round */
    pthread_mutex_unlock(&wd_lock);
    evr_timer_start_ns(&b.timer, on_beat, half_ns, half_ns);
    evr_timer_unref(&b.timer); /* the loop ends when its work does */
    watched = 1;
  }
  int rc = evr_loop_run(loop, EVR_RUN_DEFAULT);
  if (watched) {
    evr_timer_stop(&b.timer);
    wd_beat(&b, 1);
  }
  return rc;
}

/* ---- per-source limits at accept ---- */

int source_limits_start(struct source_limits *sl) {
  sl->table = NULL;
  if (!sl->max_conns && !sl->rate) return 0;
  sl->table = srclimit_new(sl->table_size, sl->max_conns, sl->rate, SRCLIMIT_SHARED);
  if (!sl->table) {
    log_error("source limits: %s", strerror(errno));
    return -1;
  }
  char conns[32] = "no limit", rate[32] = "no limit";
  if (sl->max_conns) snprintf(conns, sizeof conns, "%lu", (unsigned long)sl->max_conns);
  if (sl->rate) snprintf(rate, sizeof rate, "%lu/s", (unsigned long)sl->rate);
  log_info("source limits: open %ss %s, new %ss %s, per source; %lu sources remembered, "
           "for this process",
           sl->noun, conns, sl->noun, rate, (unsigned long)sl->table_size);
  return 0;
}

static const char *refusal_detail(const struct source_limits *sl, int reason, char *buf,
                                  size_t size) {
  if (reason == SRCLIMIT_CONNS)
    snprintf(buf, size, "%lu open connections per source", (unsigned long)sl->max_conns);
  else if (reason == SRCLIMIT_RATE)
    snprintf(buf, size, "more than %lu new connections per second per source",
             (unsigned long)sl->rate);
  else
    snprintf(buf, size, "source table full (%lu sources with open connections)",
             (unsigned long)sl->table_size);
  return buf;
}

int source_admits(struct source_limits *sl, int fd, srclimit_key_t *src) {
  struct sockaddr_storage peer;
  socklen_t len = sizeof peer;
  if (getpeername(fd, (struct sockaddr *)&peer, &len) != 0) {
    /* ENOTCONN: reset by its peer already; nothing to serve. */
    log_debug("getpeername: %s: closing a %s", strerror(errno), sl->noun);
    return 0;
  }
  uint64_t now = evr_hrtime();
  int reason = srclimit_admit(sl->table, (struct sockaddr *)&peer, now, src);
  if (reason == SRCLIMIT_OK) return 1;
  uint64_t suppressed = 0;
  if (srclimit_log_due(sl->table, reason, now, &suppressed)) {
    char who[64], detail[96], more[96] = "";
    srclimit_key_t key = srclimit_key((struct sockaddr *)&peer);
    if (suppressed)
      snprintf(more, sizeof more, " (and %llu more for this reason since the last such line)",
               (unsigned long long)suppressed);
    log_warn("refused a %s from %s: %s%s", sl->noun, srclimit_key_format(&key, who, sizeof who),
             refusal_detail(sl, reason, detail, sizeof detail), more);
  }
  return 0;
}

void source_limits_stop(struct source_limits *sl) {
  if (!sl->table) return;
  srclimit_stats_t st;
  srclimit_stats(sl->table, &st);
  log_info("source limits: %llu admitted, %llu refused (open %ss %llu, rate %llu, "
           "table full %llu), %llu evicted, %lu of %lu entries in use",
           (unsigned long long)st.admitted,
           (unsigned long long)(st.refused[SRCLIMIT_CONNS] + st.refused[SRCLIMIT_RATE] +
                                st.refused[SRCLIMIT_FULL]),
           sl->noun, (unsigned long long)st.refused[SRCLIMIT_CONNS],
           (unsigned long long)st.refused[SRCLIMIT_RATE],
           (unsigned long long)st.refused[SRCLIMIT_FULL], (unsigned long long)st.evictions,
           (unsigned long)st.entries, (unsigned long)st.capacity);
  if (st.busy || st.stray_releases)
    log_error("source limits: %lu sources still counted busy, %llu releases without a "
              "%s: %ss miscounted",
              (unsigned long)st.busy, (unsigned long long)st.stray_releases, sl->noun, sl->noun);
  srclimit_free(sl->table);
  sl->table = NULL;
}
