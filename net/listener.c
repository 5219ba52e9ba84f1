/* net/listener.c: listening sockets and the accept loop.
 *
 * A listener owns its socket, the socket's I/O node and a wheel node for
 * the EMFILE back-off (only the three pause_* functions touch it). Neither
 * is a handle: the listener alone is what users see (evr_loop_walk) and
 * what keeps the loop alive, and its close stops both synchronously.
 * The listener is active from evr_listen() to close, except while paused
 * by the user. While descriptors are exhausted (EMFILE/ENFILE) it keeps a
 * spare descriptor to shed pending connections, reports the condition once
 * per episode and watches nothing for a short back-off, so it never spins.
 * No allocation happens per accept; the only allocation is the record of a
 * Unix socket file to remove at close. That file is removed only by the
 * process that bound it, and only while the path still names the same file:
 * a forked child closing its copy of the listener, or a file put in its
 * place meanwhile, leaves the path alone.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "net/sock.h"
#include "reactor/internal.h"
#include "timers/wheel.h"

#define DEFAULT_BATCH 64u
#define BACKOFF_NS (100u * UINT64_C(1000000))

/* lflags */
#define L_LISTENING 0x01u /* fd is listening and its node is set up */
#define L_PAUSED 0x02u    /* evr_listener_pause() */
#define L_BACKOFF 0x04u   /* descriptors ran out: the pause node is armed */
#define L_EPISODE 0x08u   /* the exhaustion was reported; a good accept ends it */

/* The Unix socket file a listener created. unlink_path points at path[], so
 * the record is found again from it; dev/ino tell whether the file at that
 * path is still ours when the listener closes, pid which process made it
 * (a forked child inherits the record along with the listener). */
struct unix_file {
  dev_t dev;
  ino_t ino;
  pid_t pid;
  char path[];
};

static struct unix_file *unix_file_of(char *path) {
  return (struct unix_file *)(void *)(path - offsetof(struct unix_file, path));
}

/* Remove the socket file if this process bound it and the path still names
 * it. A forked child must leave it: the parent (or another child) may still
 * be listening there. Another process may also have replaced the file, with
 * a socket of its own or anything else: that one stays too. */
static void unlink_own_file(const struct unix_file *uf) {
  struct stat st;
  if (uf->pid != getpid()) return;
  if (lstat(uf->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == uf->dev &&
      st.st_ino == uf->ino)
    (void)unlink(uf->path);
}

static void remove_unix_file(evr_listener_t *l) {
  if (!l->unlink_path) return;
  struct unix_file *uf = unix_file_of(l->unlink_path);
  unlink_own_file(uf);
  free(uf);
  l->unlink_path = NULL;
}

static int open_spare(void) {
  int fd;
  do {
#ifdef O_CLOEXEC
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
#else
    fd = open("/dev/null", O_RDONLY);
    if (fd >= 0 && evr__cloexec(fd) < 0) {
      evr__close_fd(fd);
      fd = -1;
      errno = EBADF;
    }
#endif
  } while (fd < 0 && errno == EINTR);
  return fd;
}

/* ---- the back-off's wheel node ---- */

static void pause_arm(evr_listener_t *l) {
  evr__tnode_start(l->base.loop, &l->pause, BACKOFF_NS);
}

static void pause_disarm(evr_listener_t *l) {
  evr__tnode_stop(l->base.loop, &l->pause);
}

void evr__listener_close(evr_handle_t *h) {
  evr_listener_t *l = EVR_CONTAINER_OF(h, evr_listener_t, base);
  evr__io_release(h->loop, &l->node);
  pause_disarm(l);
  remove_unix_file(l);
  if (l->fd >= 0) evr__close_fd(l->fd);
  if (l->spare_fd >= 0) evr__close_fd(l->spare_fd);
  l->fd = -1;
  l->spare_fd = -1;
  l->lflags = 0;
}

void evr__listener_keep_file(evr_listener_t *l) {
  if (!l->unlink_path) return;
  free(unix_file_of(l->unlink_path));
  l->unlink_path = NULL;
}

int evr_listener_init(evr_loop_t *loop, evr_listener_t *l) {
  if (!loop || !l) return EVR_EINVAL;
  evr__handle_init(loop, &l->base, EVR__HT_LISTENER);
  l->fd = -1;
  l->accepted = 0;
  l->shed = 0;
  evr__io_init(&l->node, -1, EVR__IO_LISTENER);
  evr__tnode_init(&l->pause, EVR__TK_LISTENER);
  l->cb = NULL;
  l->batch = DEFAULT_BATCH;
  l->spare_fd = -1;
  l->unlink_path = NULL;
  l->lflags = 0;
  return 0;
}

static int usable(const evr_listener_t *l) {
  return l && evr__handle_is(&l->base, EVR__HT_LISTENER) &&
         evr__handle_usable(&l->base);
}

/* Watch the socket when neither the user nor the back-off holds it. */
static int watch(evr_listener_t *l) {
  if (l->lflags & (L_PAUSED | L_BACKOFF)) return 0;
  /* The listener owns its fd: it stayed open since any stop. */
  return evr__io_set(l->base.loop, &l->node, EVR_READ);
}

/* The back-off expired (timers/timer.c, timer phase). */
void evr__listener_timeout(struct evr__tnode *n) {
  evr_listener_t *l = EVR_CONTAINER_OF(n, evr_listener_t, pause);
  l->lflags &= ~L_BACKOFF;
  if (l->spare_fd < 0) l->spare_fd = open_spare();
  if (watch(l) < 0) {
    /* Cannot watch again (backend out of memory): retry later rather than
     * go deaf. */
    l->lflags |= L_BACKOFF;
    pause_arm(l);
  }
}

static void start_backoff(evr_listener_t *l) {
  evr__io_stop(l->base.loop, &l->node);
  l->lflags |= L_BACKOFF;
  pause_arm(l);
}

/* 1 while the accept loop may go on: the callback may have paused or
 * closed the listener. */
static int still_accepting(const evr_listener_t *l) {
  return evr__handle_usable(&l->base) &&
         (l->lflags & (L_LISTENING | L_PAUSED | L_BACKOFF)) == L_LISTENING;
}

/* Descriptors ran out. Give the spare back to the kernel and use it to take
 * and drop pending connections (so their clients learn at once instead of
 * timing out), report once per episode, then stop watching for a while. */
static void exhausted(evr_listener_t *l, int err) {
  if (l->spare_fd >= 0) {
    evr__close_fd(l->spare_fd);
    l->spare_fd = -1;
    for (unsigned i = 0; i < l->batch; i++) {
      int fd = evr__accept(l->fd);
      if (fd >= 0) {
        evr__close_fd(fd);
        l->shed++;
        continue;
      }
      if (fd == EVR_ECONNABORTED) continue;
      break; /* EAGAIN, or the slot was taken by another thread */
    }
    l->spare_fd = open_spare(); /* may fail: retried after the back-off */
  }
  start_backoff(l);
  if (!(l->lflags & L_EPISODE)) {
    l->lflags |= L_EPISODE;
    l->cb(l, err);
  }
}

/* The listening socket is readable (evr__io_dispatch). */
void evr__listener_io(struct evr__ionode *n) {
  evr_listener_t *l = EVR_CONTAINER_OF(n, evr_listener_t, node);
  for (unsigned n = 0; n < l->batch && still_accepting(l); n++) {
    int fd = evr__accept(l->fd);
    if (fd >= 0) {
      l->accepted++;
      l->lflags &= ~L_EPISODE;
      l->cb(l, fd);
      continue;
    }
    switch (fd) {
      case EVR_EAGAIN:
#if EWOULDBLOCK != EAGAIN
      case -EWOULDBLOCK:
#endif
        return;
      case EVR_ECONNABORTED:
      /* Linux passes network errors of the new connection through accept();
       * they concern that connection only (accept(2), "Error handling"). */
#ifdef EPROTO
      case -EPROTO:
#endif
      case EVR_ENETDOWN:
      case EVR_ENETUNREACH:
      case EVR_EHOSTUNREACH:
      case EVR_ECONNRESET:
      case EVR_ETIMEDOUT:
        continue;
      case EVR_EMFILE:
      case EVR_ENFILE:
        exhausted(l, fd);
        return;
      default:
        /* ENOBUFS, ENOMEM, or the unexpected: tell the user and back off
         * instead of retrying at once. */
        start_backoff(l);
        l->cb(l, fd);
        return;
    }
  }
}

static int check_opts(const evr_listen_options_t *o, int family) {
  if (!o) return 0;
  if (o->backlog < 0) return EVR_EINVAL;
  if (o->flags & ~(unsigned)(EVR_LISTEN_REUSEPORT | EVR_LISTEN_V6ONLY |
                             EVR_LISTEN_DUALSTACK | EVR_LISTEN_NO_UNLINK))
    return EVR_EINVAL;
  if ((o->flags & EVR_LISTEN_V6ONLY) && (o->flags & EVR_LISTEN_DUALSTACK))
    return EVR_EINVAL;
  if ((o->flags & (EVR_LISTEN_V6ONLY | EVR_LISTEN_DUALSTACK)) &&
      family != AF_INET6 && family != AF_UNSPEC)
    return EVR_EINVAL;
  if ((o->flags & EVR_LISTEN_REUSEPORT) && family == AF_UNIX)
    return EVR_ENOTSUP;
  return 0;
}

static int setopt_int(int fd, int level, int name, int v) {
  if (setsockopt(fd, level, name, &v, sizeof v) < 0) return -errno;
  return 0;
}

static int set_reuseport(int fd) {
#if defined(SO_REUSEPORT_LB)
  /* FreeBSD 12+: SO_REUSEPORT alone does not balance connections. */
  int rc = setopt_int(fd, SOL_SOCKET, SO_REUSEPORT_LB, 1);
#elif defined(SO_REUSEPORT)
  int rc = setopt_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
#else
  int rc = EVR_ENOTSUP;
  (void)fd;
#endif
#ifdef ENOPROTOOPT
  if (rc == -ENOPROTOOPT) rc = EVR_ENOTSUP; /* Linux before 3.9 */
#endif
  return rc;
}

static int bind_fd(int fd, const evr_addr_t *addr) {
  if (bind(fd, &addr->u.sa, addr->len) < 0) return -errno;
  return 0;
}

/* Is anyone listening on the Unix socket file at addr? Probe by connecting.
 * 1: live; 0: stale (refused); EVR_ENOENT: the file is gone; other
 * negative codes: the probe could not be made. */
static int unix_probe(const evr_addr_t *addr) {
  int fd = evr__socket(AF_UNIX, SOCK_STREAM);
  if (fd < 0) return fd;
  int rc;
  do {
    rc = connect(fd, &addr->u.sa, addr->len);
  } while (rc < 0 && errno == EINTR);
  int err = rc < 0 ? errno : 0;
  evr__close_fd(fd);
  switch (err) {
    case 0:
    case EAGAIN:      /* Linux: live, backlog full */
    case EINPROGRESS: /* BSD: live, not yet accepted */
      return 1;
    case ECONNREFUSED:
      return 0;
    case ENOENT:
      return EVR_ENOENT;
    default:
      return -err;
  }
}

/* Bind a Unix path socket, replacing a stale socket file as documented in
 * tcp.h. On success *st describes the file created. */
static int bind_unix_path(int fd, const evr_addr_t *addr, unsigned flags,
                          struct stat *st) {
  const char *path = addr->u.un.sun_path;
  for (int attempt = 0;; attempt++) {
    int rc = bind_fd(fd, addr);
    if (rc == 0) break;
    if (rc != EVR_EADDRINUSE || attempt >= 2) return rc;
    struct stat old;
    if (lstat(path, &old) < 0) {
      if (errno == ENOENT) continue; /* removed meanwhile: bind again */
      return EVR_EADDRINUSE;
    }
    if (!S_ISSOCK(old.st_mode)) return EVR_EADDRINUSE; /* never touch it */
    int live = unix_probe(addr);
    if (live == EVR_ENOENT) continue;
    if (live != 0) return EVR_EADDRINUSE;
    if (flags & EVR_LISTEN_NO_UNLINK) return EVR_EADDRINUSE;
    /* Stale. Remove it only if it is still the file that was probed. */
    struct stat now;
    if (lstat(path, &now) == 0 && now.st_dev == old.st_dev &&
        now.st_ino == old.st_ino && S_ISSOCK(now.st_mode)) {
      if (unlink(path) < 0 && errno != ENOENT) return -errno;
    }
  }
  if (lstat(path, st) < 0) return -errno;
  return 0;
}

/* Common tail of evr_listen() and evr_listener_open(): fd is listening. */
static int start_listening(evr_listener_t *l, int fd,
                           const evr_listen_options_t *opts,
                           evr_accept_cb cb) {
  evr__io_init(&l->node, fd, EVR__IO_LISTENER);
  l->fd = fd;
  l->cb = cb;
  l->batch = opts && opts->accept_batch ? opts->accept_batch : DEFAULT_BATCH;
  l->lflags = L_LISTENING;
  int rc = watch(l);
  if (rc) {
    evr__io_init(&l->node, -1, EVR__IO_LISTENER);
    l->fd = -1;
    l->lflags = 0;
    return rc;
  }
  /* Without a spare, exhaustion only pauses; it is retried after each
   * back-off, so a failure here is not fatal. */
  l->spare_fd = open_spare();
  evr__handle_start(&l->base);
  return 0;
}

int evr_listen(evr_listener_t *l, const evr_addr_t *addr,
               const evr_listen_options_t *opts, evr_accept_cb cb) {
  if (!usable(l) || !addr || !cb || l->fd >= 0) return EVR_EINVAL;
  int family = addr->u.sa.sa_family;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    return EVR_EINVAL;
  if (addr->len == 0 || addr->len > sizeof addr->u) return EVR_EINVAL;
  int rc = check_opts(opts, family);
  if (rc) return rc;
  unsigned flags = opts ? opts->flags : 0;
  int backlog = opts && opts->backlog > 0 ? opts->backlog : SOMAXCONN;

  int fd = evr__socket(family, SOCK_STREAM);
  if (fd < 0) return fd;

  struct unix_file *uf = NULL;
  if (family == AF_UNIX) {
    int is_path = addr->len > offsetof(struct sockaddr_un, sun_path) &&
                  addr->u.un.sun_path[0] != '\0';
    if (is_path) {
      struct stat st;
      size_t n = strnlen(addr->u.un.sun_path, sizeof addr->u.un.sun_path);
      uf = malloc(sizeof *uf + n + 1);
      if (!uf) {
        rc = EVR_ENOMEM;
        goto fail;
      }
      memcpy(uf->path, addr->u.un.sun_path, n);
      uf->path[n] = '\0';
      rc = bind_unix_path(fd, addr, flags, &st);
      if (rc) goto fail;
      uf->dev = st.st_dev;
      uf->ino = st.st_ino;
      uf->pid = getpid();
    } else {
      rc = bind_fd(fd, addr);
      if (rc) goto fail;
    }
  } else {
    rc = setopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (!rc && (flags & EVR_LISTEN_REUSEPORT)) rc = set_reuseport(fd);
    if (!rc && family == AF_INET6 &&
        (flags & (EVR_LISTEN_V6ONLY | EVR_LISTEN_DUALSTACK)))
      rc = setopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY,
                      (flags & EVR_LISTEN_V6ONLY) ? 1 : 0);
    if (!rc) rc = bind_fd(fd, addr);
    if (rc) goto fail;
  }

  if (listen(fd, backlog) < 0) {
    rc = -errno;
    goto fail_bound;
  }
  l->unlink_path = uf ? uf->path : NULL;
  rc = start_listening(l, fd, opts, cb);
  if (rc) {
    l->unlink_path = NULL;
    goto fail_bound;
  }
  return 0;

fail_bound:
  if (uf) unlink_own_file(uf); /* the file was created just now */
fail:
  free(uf);
  evr__close_fd(fd);
  return rc;
}

int evr_listener_open(evr_listener_t *l, int fd,
                      const evr_listen_options_t *opts, evr_accept_cb cb) {
  if (!usable(l) || !cb || l->fd >= 0) return EVR_EINVAL;
  if (fd < 0) return EVR_EBADF;
  if (fcntl(fd, F_GETFD) < 0) return -errno;
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    return errno == ENOTSOCK ? EVR_EINVAL : -errno;
  if (type != SOCK_STREAM) return EVR_EINVAL;
#ifdef SO_ACCEPTCONN
  int listening = 0;
  len = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
    return -errno;
  if (!listening) return EVR_EINVAL;
#endif
  if (opts) {
    if (opts->backlog < 0 ||
        (opts->flags & ~(unsigned)(EVR_LISTEN_REUSEPORT | EVR_LISTEN_V6ONLY |
                                   EVR_LISTEN_DUALSTACK | EVR_LISTEN_NO_UNLINK)))
      return EVR_EINVAL;
  }
  /* Every check passed; a refusal from here on (the watcher cannot start,
   * e.g. EVR_EEXIST when the loop already watches fd) hands the descriptor
   * back with the flags it came with. */
  int old_fl = fcntl(fd, F_GETFL);
  int old_fd = fcntl(fd, F_GETFD);
  if (old_fl < 0 || old_fd < 0) return -errno;
  int rc = evr__sock_prepare(fd);
  if (rc) return rc;
  rc = start_listening(l, fd, opts, cb);
  if (rc) {
    (void)fcntl(fd, F_SETFL, old_fl);
    (void)fcntl(fd, F_SETFD, old_fd);
  }
  return rc;
}

int evr_listener_pause(evr_listener_t *l) {
  if (!usable(l) || !(l->lflags & L_LISTENING)) return EVR_EINVAL;
  if (l->lflags & L_PAUSED) return 0;
  l->lflags |= L_PAUSED;
  evr__io_stop(l->base.loop, &l->node);
  evr__handle_stop(&l->base);
  return 0;
}

int evr_listener_resume(evr_listener_t *l) {
  if (!usable(l) || !(l->lflags & L_LISTENING)) return EVR_EINVAL;
  if (!(l->lflags & L_PAUSED)) return 0;
  l->lflags &= ~L_PAUSED;
  int rc = watch(l);
  if (rc) {
    l->lflags |= L_PAUSED;
    return rc;
  }
  evr__handle_start(&l->base);
  return 0;
}

int evr_listener_sockname(const evr_listener_t *l, evr_addr_t *out) {
  if (!l || !out || !evr__handle_is(&l->base, EVR__HT_LISTENER) || l->fd < 0)
    return EVR_EINVAL;
  return evr__sockname(l->fd, out);
}
