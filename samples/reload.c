/* samples/reload.c: reload by a new copy of the executable with the
 * listening sockets handed over, and the pid file (reload.h). */
#define _GNU_SOURCE
#include "reload.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "daemon.h"
#include "evr/handoff.h"

extern char **environ;

#define RELOAD_ENV "EVR_RELOAD_FD"
#define CHECK_MS 50 /* how often a wait looks at the new copy and at signals */

static pid_t owner;           /* the process these settings belong to */
static char *exe;             /* what a reload starts (malloc'd), or NULL */
static char **args;           /* the arguments it gets (argv, kept) */
static const char *pid_file;  /* --pid-file */
static unsigned timeout_s = 10; /* --reload-timeout */
static int pid_written;       /* the pid file holds our pid */

/* A new copy: the sockets received, and the socket to report ready on. */
static evr_handoff_item_t got[EVR_HANDOFF_MAX];
static unsigned ngot;
static int report_fd = -1;
static int received;
static long old_pid;

/* An old process: the listeners to hand over. */
struct reg {
  evr_listener_t *l;
  char name[EVR_HANDOFF_NAME_MAX + 1];
};
static struct reg regs[EVR_HANDOFF_MAX];
static unsigned nregs;

static double ms_since(const struct timespec *t) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

static int set_cloexec(int fd, int on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return -1;
  flags = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
  return fcntl(fd, F_SETFD, flags);
}

/* ---- the executable ---- */

static char *resolve_exe(const char *argv0) {
  char buf[PATH_MAX];
#ifdef __linux__
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = '\0';
    return strdup(buf);
  }
#endif
  if (!argv0 || !argv0[0]) return NULL;
  if (strchr(argv0, '/')) {
    if (argv0[0] == '/') return strdup(argv0);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    int len = snprintf(buf, sizeof buf, "%s/%s", cwd, argv0);
    return len > 0 && (size_t)len < sizeof buf ? strdup(buf) : NULL;
  }
  /* A bare name: the shell found it in PATH. */
  const char *path = getenv("PATH");
  while (path && *path) {
    const char *end = strchr(path, ':');
    size_t dlen = end ? (size_t)(end - path) : strlen(path);
    if (dlen > 0 && dlen < sizeof buf - 2 - strlen(argv0)) {
      snprintf(buf, sizeof buf, "%.*s/%s", (int)dlen, path, argv0);
      if (access(buf, X_OK) == 0) {
        if (buf[0] == '/') return strdup(buf);
        char cwd[PATH_MAX], full[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) return NULL;
        int len = snprintf(full, sizeof full, "%s/%s", cwd, buf);
        return len > 0 && (size_t)len < sizeof full ? strdup(full) : NULL;
      }
    }
    path = end ? end + 1 : NULL;
  }
  return NULL;
}

/* ---- receiving (a new copy) ---- */

static void on_received(evr_handoff_t *req, int status) {
  *(int *)req->data = status;
}

static void on_recv_timeout(evr_timer_t *t) { evr_handoff_cancel(t->data); }

static void receive(void) {
  const char *v = getenv(RELOAD_ENV);
  if (!v) return;
  char *end;
  errno = 0;
  long fd = strtol(v, &end, 10);
  if (errno || end == v || *end || fd < 0 || fd > INT_MAX) {
    log_error("reload: %s=%s is not a descriptor", RELOAD_ENV, v);
    exit(1);
  }
  if (unsetenv(RELOAD_ENV) != 0 || set_cloexec((int)fd, 1) != 0) {
    log_error("reload: %s=%s: %s", RELOAD_ENV, v, strerror(errno));
    exit(1);
  }
  report_fd = (int)fd;
  evr_loop_t *loop;
  int rc = evr_loop_new(&loop, NULL);
  if (rc) {
    log_error("reload: loop: %s", evr_strerror(rc));
    exit(1);
  }
  static evr_handoff_t req;
  evr_timer_t timer;
  int status = 1; /* neither a count nor an error: pending */
  req.data = &status;
  if ((rc = evr_timer_init(loop, &timer)) == 0 &&
      (rc = evr_handoff_recv(loop, &req, report_fd, got, EVR_HANDOFF_MAX, on_received)) == 0) {
    timer.data = &req;
    evr_timer_start(&timer, on_recv_timeout, (uint64_t)timeout_s * 1000, 0);
    evr_timer_unref(&timer);
    evr_loop_run(loop, EVR_RUN_DEFAULT);
    evr_timer_stop(&timer);
  }
  evr_loop_run(loop, EVR_RUN_DEFAULT);
  int frc = evr_loop_free(loop);
  if (frc) log_warn("reload: loop: free: %s", evr_strerror(frc));
  if (rc == 0 && status < 0) rc = status;
  if (rc) {
    log_error("reload: receiving the listening sockets from the old process: %s",
              rc == EVR_ECANCELED ? "timed out" : evr_strerror(rc));
    exit(1);
  }
  ngot = (unsigned)status;
  received = 1;
  old_pid = (long)getppid();
  log_info("reload: received %u listening socket%s from the old process (pid %ld)", ngot,
           ngot == 1 ? "" : "s", old_pid);
}

void reload_init(int argc, char **argv) {
  (void)argc;
  owner = getpid();
  args = argv;
  exe = resolve_exe(argv[0]);
  receive();
}

int reload_option(int argc, char **argv, int *i) {
  const char *a = argv[*i];
  if (!strcmp(a, "--pid-file")) {
    pid_file = option_value(argc, argv, i);
    if (!pid_file[0]) usage_error("--pid-file: a path is needed");
    return 1;
  }
  if (!strcmp(a, "--reload-timeout")) {
    timeout_s = (unsigned)parse_uint(a, option_value(argc, argv, i), 1, 3600);
    return 1;
  }
  return 0;
}

int reload_active(void) { return received; }

static evr_handoff_item_t *find(const char *name) {
  return evr_handoff_find(got, ngot, name);
}

/* Does the item's address fit what the configuration says? A TCP port 0
 * ("any") fits every port. */
static int fits(const evr_handoff_item_t *it, const evr_addr_t *want) {
  char a[EVR_ADDR_STRLEN], b[EVR_ADDR_STRLEN];
  if (evr_addr_family(&it->addr) != evr_addr_family(want)) return 0;
  if (evr_addr_format(&it->addr, a, sizeof a) < 0 || evr_addr_format(want, b, sizeof b) < 0)
    return 0;
  if (strcmp(a, b) == 0) return 1;
  if (evr_addr_family(want) == AF_UNIX || evr_addr_port(want) != 0) return 0;
  /* Compare the hosts alone. */
  char ha[EVR_ADDR_STRLEN], hb[EVR_ADDR_STRLEN];
  uint16_t pa, pb;
  if (evr_addr_split(a, ha, sizeof ha, &pa) != 0 || evr_addr_split(b, hb, sizeof hb, &pb) != 0)
    return 0;
  return strcmp(ha, hb) == 0;
}

static void mismatch(const char *name, const evr_handoff_item_t *it, const char *text) {
  char a[EVR_ADDR_STRLEN] = "?";
  evr_addr_format(&it->addr, a, sizeof a);
  log_error("reload: the old process's socket '%s' listens on %s, this configuration says %s: "
            "not started",
            name, a, text);
  exit(1);
}

void reload_listen(const char **text, evr_addr_t *addrs, int *fds, int *n, int max) {
  if (!received) return;
  static char texts[EVR_HANDOFF_MAX][EVR_ADDR_STRLEN];
  char name[EVR_HANDOFF_NAME_MAX + 1];
  for (int i = 0;; i++) {
    snprintf(name, sizeof name, "one/%d", i);
    evr_handoff_item_t *it = find(name);
    if (!it) {
      if (i >= *n) break;
      continue;
    }
    if (i >= *n) {
      /* Served unasked by the old process (socket activation). */
      if (*n == max || i != *n || i >= EVR_HANDOFF_MAX) {
        log_error("reload: the old process's socket '%s' has no place here: not started", name);
        exit(1);
      }
      addrs[i] = it->addr;
      if (evr_addr_format(&it->addr, texts[i], sizeof texts[i]) < 0) mismatch(name, it, "?");
      text[i] = texts[i];
      ++*n;
    } else if (fds[i] >= 0 || !fits(it, &addrs[i])) {
      mismatch(name, it, text[i]);
    }
    fds[i] = it->fd;
    it->fd = -1;
  }
}

int reload_named(const char *name, evr_addr_t *addr, const char **text) {
  if (!received) return -1;
  evr_handoff_item_t *it = find(name);
  if (!it) return -1;
  static char buf[EVR_ADDR_STRLEN];
  if (*text) {
    if (!fits(it, addr)) mismatch(name, it, *text);
  } else {
    if (evr_addr_format(&it->addr, buf, sizeof buf) < 0) mismatch(name, it, "?");
    *addr = it->addr;
    *text = buf;
  }
  int fd = it->fd;
  it->fd = -1;
  return fd;
}

int reload_adopt(evr_listener_t *l, int i, int loop, const evr_addr_t *addr, const char *text,
                 evr_accept_cb cb) {
  char name[EVR_HANDOFF_NAME_MAX + 1];
  snprintf(name, sizeof name, "loop/%d/%d", i, loop);
  evr_handoff_item_t *it = find(name);
  if (!it) {
    log_error("reload: the old process passed no socket '%s' for %s (loop %d): this "
              "configuration does not match the old one's (threads, loop balance, addresses)",
              name, text, loop);
    return EVR_ENOENT;
  }
  if (!fits(it, addr)) mismatch(name, it, text);
  int rc = evr_handoff_adopt(l, it, NULL, cb);
  if (rc) log_error("reload: adopting '%s' for %s: %s", name, text, evr_strerror(rc));
  return rc;
}

/* ---- the pid file ---- */

static void pid_file_remove(void) {
  if (!pid_written || getpid() != owner) return;
  FILE *f = fopen(pid_file, "r");
  if (!f) return;
  long pid = 0;
  int ok = fscanf(f, "%ld", &pid) == 1;
  fclose(f);
  /* A new copy has taken it over: it is its own now. */
  if (ok && pid == (long)getpid() && unlink(pid_file) != 0)
    log_warn("--pid-file %s: %s", pid_file, strerror(errno));
}

static int pid_file_write(void) {
  if (!pid_file) return 0;
  char tmp[PATH_MAX], line[32];
  int n = snprintf(tmp, sizeof tmp, "%s.%ld.tmp", pid_file, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof tmp) {
    log_error("--pid-file %s: path too long", pid_file);
    return -1;
  }
  int len = snprintf(line, sizeof line, "%ld\n", (long)getpid());
  int fd;
  do fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    log_error("--pid-file %s: %s", tmp, strerror(errno));
    return -1;
  }
  ssize_t w;
  do w = write(fd, line, (size_t)len);
  while (w < 0 && errno == EINTR);
  int err = w == len ? 0 : w < 0 ? errno : EIO;
  if (close(fd) != 0 && !err && errno != EINTR) err = errno;
  if (!err && rename(tmp, pid_file) != 0) err = errno;
  if (err) {
    log_error("--pid-file %s: %s", pid_file, strerror(err));
    unlink(tmp);
    return -1;
  }
  if (!pid_written) atexit(pid_file_remove);
  pid_written = 1;
  return 0;
}

int reload_ready(void) {
  if (getpid() != owner) return 0; /* a worker: its supervisor reports */
  if (received) {
    int unused = 0;
    for (unsigned k = 0; k < ngot; k++)
      if (got[k].fd >= 0) {
        log_error("reload: the old process's socket '%s' is not used by this configuration",
                  got[k].name);
        unused++;
      }
    if (unused) {
      log_error("reload: this configuration does not match the old process's (%u sockets "
                "received, %d not used): not started",
                ngot, unused);
      evr_handoff_items_close(got, ngot);
      return -1;
    }
  }
  if (pid_file_write() != 0) return -1;
  if (report_fd >= 0) {
    ssize_t w;
    do w = write(report_fd, "R", 1);
    while (w < 0 && errno == EINTR);
    if (w != 1)
      log_warn("reload: telling the old process this one is ready: %s",
               w < 0 ? strerror(errno) : "short write");
    else
      log_info("reload: ready: the old process (pid %ld) stops accepting", old_pid);
    close(report_fd);
    report_fd = -1;
  }
  return 0;
}

/* ---- reloading (the old process) ---- */

void reload_add(evr_listener_t *l, int i, int loop) {
  if (getpid() != owner) return; /* a worker: its supervisor hands over */
  if (nregs == EVR_HANDOFF_MAX) {
    log_warn("reload: more than %d listening sockets: a reload will fail", EVR_HANDOFF_MAX);
    nregs++;
    return;
  }
  if (nregs > EVR_HANDOFF_MAX) return;
  struct reg *r = &regs[nregs++];
  r->l = l;
  if (i < 0) snprintf(r->name, sizeof r->name, "metrics");
  else if (loop < 0) snprintf(r->name, sizeof r->name, "one/%d", i);
  else snprintf(r->name, sizeof r->name, "loop/%d/%d", i, loop);
}

/* What a reload in progress watches. */
struct watch {
  pid_t pid;
  struct timespec start;
  const char *why; /* set: the reload failed or is aborted */
  int status;      /* the new copy's wait status, once reaped */
  int reaped;
  int sent;        /* evr_handoff_send() status: 1 while pending */
  evr_handoff_t req;
  evr_timer_t tick;
};

/* The new copy's exit, a stop signal, the timeout; a SIGUSR2 is ignored. */
static void check(struct watch *w) {
  if (!w->why && !w->reaped) {
    pid_t p;
    do p = waitpid(w->pid, &w->status, WNOHANG);
    while (p < 0 && errno == EINTR);
    if (p == w->pid) {
      w->reaped = 1;
      w->why = "it exited before it was ready";
    }
  }
  sigset_t pending;
  if (sigpending(&pending) == 0) {
    if (sigismember(&pending, SIGUSR2)) {
      sigset_t one;
      int sig;
      sigemptyset(&one);
      sigaddset(&one, SIGUSR2);
      sigwait(&one, &sig);
      log_info("reload: SIGUSR2 ignored: a reload is in progress");
    }
    if (!w->why && (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT) ||
                    sigismember(&pending, SIGHUP)))
      w->why = "a stop signal came";
  }
  if (!w->why && ms_since(&w->start) >= (double)timeout_s * 1000) w->why = "it was not ready in time";
}

static void on_tick(evr_timer_t *t) {
  struct watch *w = t->data;
  check(w);
  if (w->why && w->sent == 1) evr_handoff_cancel(&w->req);
}

static void on_sent(evr_handoff_t *req, int status) {
  struct watch *w = req->data;
  w->sent = status;
  evr_timer_stop(&w->tick);
}

/* Send the items on a loop of this thread; 0, or -1 with w->why set. */
static int send_items(struct watch *w, int fd, const evr_handoff_item_t *items, unsigned n) {
  evr_loop_t *loop;
  int rc = evr_loop_new(&loop, NULL);
  if (rc) {
    log_error("reload: loop: %s", evr_strerror(rc));
    w->why = "no loop to send on";
    return -1;
  }
  w->req.data = w;
  w->tick.data = w;
  w->sent = 1;
  if ((rc = evr_timer_init(loop, &w->tick)) == 0 &&
      (rc = evr_handoff_send(loop, &w->req, fd, items, n, on_sent)) == 0)
    evr_timer_start(&w->tick, on_tick, CHECK_MS, CHECK_MS);
  else
    w->sent = rc;
  evr_loop_run(loop, EVR_RUN_DEFAULT);
  evr_timer_stop(&w->tick);
  evr_loop_run(loop, EVR_RUN_DEFAULT);
  int frc = evr_loop_free(loop);
  if (frc) log_warn("reload: loop: free: %s", evr_strerror(frc));
  if (w->sent != 0) {
    if (!w->why) {
      static char buf[96];
      snprintf(buf, sizeof buf, "sending the sockets: %s", evr_strerror(w->sent));
      w->why = buf;
    }
    return -1;
  }
  return 0;
}

/* Wait for the ready byte; 0, or -1 with w->why set. */
static int wait_ready(struct watch *w, int fd) {
  while (!w->why) {
    struct pollfd p = {fd, POLLIN, 0};
    int rc = poll(&p, 1, CHECK_MS);
    if (rc < 0 && errno != EINTR) {
      w->why = "poll failed";
      break;
    }
    if (rc > 0) {
      char c;
      ssize_t r;
      do r = read(fd, &c, 1);
      while (r < 0 && errno == EINTR);
      if (r == 1 && c == 'R') return 0;
      /* A peer that closes with data unread (the sockets it never read)
       * resets the connection. */
      if (r == 0 || (r < 0 && errno == ECONNRESET))
        w->why = "it closed the hand-off socket before it was ready";
      else if (r < 0 && errno != EAGAIN) w->why = "reading its report failed";
      else if (r == 1) w->why = "it sent a report this process does not know";
      if (w->why) break;
    }
    check(w);
  }
  return -1;
}

int reload_run(int draining) {
  if (getpid() != owner) {
    log_warn("reload: SIGUSR2 ignored: a worker; send it to the supervisor (pid %ld)",
             (long)getppid());
    return -1;
  }
  if (draining) {
    log_info("reload: SIGUSR2 ignored: stopping");
    return -1;
  }
  if (!exe) {
    log_error("reload: the path of this executable is not known: not reloading");
    return -1;
  }
  if (nregs > EVR_HANDOFF_MAX) {
    log_error("reload: more than %d listening sockets: not reloading", EVR_HANDOFF_MAX);
    return -1;
  }
  static evr_handoff_item_t items[EVR_HANDOFF_MAX];
  for (unsigned k = 0; k < nregs; k++) {
    int rc = evr_handoff_export(&items[k], regs[k].l, regs[k].name);
    if (rc) {
      log_error("reload: listening socket '%s': %s: not reloading", regs[k].name,
                evr_strerror(rc));
      return -1;
    }
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
    log_error("reload: socketpair: %s: not reloading", strerror(errno));
    return -1;
  }
  if (set_cloexec(sv[0], 1) != 0 || set_cloexec(sv[1], 1) != 0) {
    log_error("reload: fcntl: %s: not reloading", strerror(errno));
    close(sv[0]);
    close(sv[1]);
    return -1;
  }
  /* The environment, with EVR_RELOAD_FD; built before fork(): the child
   * only calls what is async-signal-safe. */
  size_t nenv = 0;
  while (environ[nenv]) nenv++;
  char **env = calloc(nenv + 2, sizeof *env);
  char var[48];
  snprintf(var, sizeof var, "%s=%d", RELOAD_ENV, sv[1]);
  if (!env) {
    log_error("reload: out of memory: not reloading");
    close(sv[0]);
    close(sv[1]);
    return -1;
  }
  /* WATCHDOG_PID naming this process would turn the new copy's watchdog
   * off: without it, WATCHDOG_USEC is for the new copy too. */
  char self[48];
  snprintf(self, sizeof self, "WATCHDOG_PID=%ld", (long)getpid());
  size_t k = 0;
  for (size_t e = 0; e < nenv; e++)
    if (strncmp(environ[e], RELOAD_ENV "=", sizeof RELOAD_ENV) != 0 &&
        strcmp(environ[e], self) != 0)
      env[k++] = environ[e];
  env[k++] = var;
  env[k] = NULL;

  struct watch w;
  memset(&w, 0, sizeof w);
  clock_gettime(CLOCK_MONOTONIC, &w.start);
  w.pid = fork();
  if (w.pid == 0) {
    /* The new copy starts as this process did: no signal blocked, SIGPIPE
     * by default, and no descriptor but 0-2 and its end of the pair. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &sa, NULL);
    if (set_cloexec(sv[1], 0) == 0) execve(exe, args, env);
    static const char msg[] = "reload: exec failed\n";
    ssize_t wr = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)wr;
    _exit(127);
  }
  int err = errno;
  free(env);
  close(sv[1]);
  if (w.pid < 0) {
    log_error("reload: fork: %s: not reloading", strerror(err));
    close(sv[0]);
    return -1;
  }
  log_info("reload: started %s (pid %ld), handing it %u listening socket%s", exe, (long)w.pid,
           nregs, nregs == 1 ? "" : "s");
  int rc = send_items(&w, sv[0], items, nregs);
  if (rc == 0) rc = wait_ready(&w, sv[0]);
  close(sv[0]);
  if (rc == 0) {
    log_info("reload: new process (pid %ld) ready after %.0f ms: stopping accepting, draining",
             (long)w.pid, ms_since(&w.start));
    return 0;
  }
  if (!w.reaped) {
    if (kill(w.pid, SIGKILL) != 0) log_warn("reload: kill %ld: %s", (long)w.pid, strerror(errno));
    pid_t p;
    do p = waitpid(w.pid, &w.status, 0);
    while (p < 0 && errno == EINTR);
    w.reaped = p == w.pid;
  }
  char how[64] = "";
  if (w.reaped && WIFEXITED(w.status))
    snprintf(how, sizeof how, " (exit status %d)", WEXITSTATUS(w.status));
  else if (w.reaped && WIFSIGNALED(w.status))
    snprintf(how, sizeof how, " (killed by signal %d)", WTERMSIG(w.status));
  log_error("reload failed: new process (pid %ld): %s%s: this one serves on", (long)w.pid, w.why,
            how);
  return -1;
}
