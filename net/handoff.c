/* net/handoff.c: sending and receiving descriptors with their addresses
 * over a Unix stream socket (evr/handoff.h; the format is in docs/net.md).
 *
 * A request watches the caller's socket through its own I/O node (not a
 * handle) and counts as a pending request of the loop from submission to
 * its callback. A send encodes the message again from the caller's items
 * at each attempt (it keeps no copy) and attaches the descriptors to the
 * first byte only. A receive reads exactly one unit at a time (the header,
 * then each record), so it never consumes a byte of whatever follows the
 * message. Invariant: the descriptors a receive holds are in req->fds
 * until the whole message is checked; every way out but success closes
 * them, so none leaks and the caller sees either all of them or none.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MSG_CMSG_CLOEXEC */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "net/sock.h"
#include "reactor/internal.h"

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
#define HAVE_SA_LEN 1
#endif

#define SUN_OFF offsetof(struct sockaddr_un, sun_path)

/* The wire format: a header, then one fixed-size record per item. Numbers
 * are big-endian. */
#define HDR_SIZE 16u
#define REC_SIZE 160u
#define MSG_MAX (HDR_SIZE + EVR_HANDOFF_MAX * REC_SIZE)
#define REC_ADDR 12u   /* offset of the address bytes */
#define REC_ADDR_MAX 112u
#define REC_NAME 124u  /* offset of the name */
#define REC_NAME_SIZE 32u
#define REC_RESERVED 156u

_Static_assert(REC_ADDR + REC_ADDR_MAX == REC_NAME, "record layout");
_Static_assert(REC_NAME + REC_NAME_SIZE == REC_RESERVED, "record layout");
_Static_assert(REC_RESERVED + 4 == REC_SIZE, "record layout");
_Static_assert(REC_NAME_SIZE == EVR_HANDOFF_NAME_MAX + 1, "name size");
_Static_assert(sizeof(((evr_handoff_t *)0)->buf) == REC_SIZE, "unit buffer");
_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) <= REC_ADDR_MAX,
               "a Unix path fits a record");

static const unsigned char MAGIC[4] = {'E', 'V', 'R', 'H'};

/* Address families on the wire. */
enum { WF_NONE = 0, WF_UNIX = 1, WF_INET = 4, WF_INET6 = 6 };

/* Request ops and states. */
enum { OP_IDLE = 0, OP_SEND, OP_RECV };
enum { ST_PENDING = 1, ST_CANCELLED };

#define ITEM_FLAGS \
  ((unsigned)(EVR_LISTEN_REUSEPORT | EVR_LISTEN_V6ONLY | EVR_LISTEN_DUALSTACK))

#ifdef MSG_DONTWAIT
#define DONTWAIT MSG_DONTWAIT
#else
#define DONTWAIT 0 /* every system evr runs on has it */
#endif

#if EVR_HAVE_MSG_CMSG_CLOEXEC
#define RECV_FLAGS (DONTWAIT | MSG_CMSG_CLOEXEC)
#else
#define RECV_FLAGS DONTWAIT
#endif

static void put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}
static void put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}
static unsigned get16(const unsigned char *p) {
  return (unsigned)p[0] << 8 | p[1];
}
static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* ---- items ---- */

static int addr_family(const evr_addr_t *a) {
  return a->len >= offsetof(struct sockaddr, sa_family) + sizeof a->u.sa.sa_family
             ? a->u.sa.sa_family
             : AF_UNSPEC;
}

/* What the kind, flags, address and name of an item may be: the same rules
 * for what is sent and what is received. 0 or EVR_EINVAL. */
static int check_item(const evr_handoff_item_t *it) {
  int fam = it->addr.len ? addr_family(&it->addr) : AF_UNSPEC;
  if (it->addr.len) {
    if (it->addr.len > sizeof it->addr.u) return EVR_EINVAL;
    switch (fam) {
      case AF_INET:
        if (it->addr.len < sizeof(struct sockaddr_in)) return EVR_EINVAL;
        break;
      case AF_INET6:
        if (it->addr.len < sizeof(struct sockaddr_in6)) return EVR_EINVAL;
        break;
      case AF_UNIX:
        if (it->addr.len < SUN_OFF || it->addr.len > sizeof(struct sockaddr_un))
          return EVR_EINVAL;
        break;
      default:
        return EVR_EINVAL;
    }
  }
  switch (it->kind) {
    case EVR_HANDOFF_TCP:
      if (fam != AF_INET && fam != AF_INET6) return EVR_EINVAL;
      break;
    case EVR_HANDOFF_UNIX:
      if (fam != AF_UNIX) return EVR_EINVAL;
      break;
    case EVR_HANDOFF_OTHER:
      break;
    default:
      return EVR_EINVAL;
  }
  if (it->flags & ~ITEM_FLAGS) return EVR_EINVAL;
  if ((it->flags & EVR_LISTEN_REUSEPORT) && fam != AF_INET && fam != AF_INET6)
    return EVR_EINVAL;
  if (it->flags & (EVR_LISTEN_V6ONLY | EVR_LISTEN_DUALSTACK)) {
    if (fam != AF_INET6) return EVR_EINVAL;
    if ((it->flags & EVR_LISTEN_V6ONLY) && (it->flags & EVR_LISTEN_DUALSTACK))
      return EVR_EINVAL;
  }
  if (!memchr(it->name, '\0', sizeof it->name)) return EVR_EINVAL;
  return 0;
}

static int getopt_int(int fd, int level, int name, int *out) {
  socklen_t len = sizeof *out;
  *out = 0;
  if (getsockopt(fd, level, name, out, &len) < 0) return -errno;
  return 0;
}

/* Is the stream socket fd listening? 1, 0 or a negative code. */
static int is_listening(int fd) {
#ifdef SO_ACCEPTCONN
  int v;
  int rc = getopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN, &v);
  return rc < 0 ? rc : v != 0;
#else
  /* A stream socket with no peer and an address of its own. */
  evr_addr_t a;
  int rc = evr__peername(fd, &a);
  if (rc == 0) return 0;
  return rc == EVR_ENOTCONN ? 1 : rc;
#endif
}

/* The options of an IPv4 or IPv6 socket, as EVR_LISTEN_* flags. */
static int read_flags(int fd, int family, unsigned *out) {
  int v, rc;
  *out = 0;
#if defined(SO_REUSEPORT_LB)
  rc = getopt_int(fd, SOL_SOCKET, SO_REUSEPORT_LB, &v);
#elif defined(SO_REUSEPORT)
  rc = getopt_int(fd, SOL_SOCKET, SO_REUSEPORT, &v);
#else
  rc = 0;
  v = 0;
#endif
#ifdef ENOPROTOOPT
  if (rc == -ENOPROTOOPT) rc = v = 0; /* no SO_REUSEPORT (Linux < 3.9) */
#endif
  if (rc) return rc;
  if (v) *out |= EVR_LISTEN_REUSEPORT;
  if (family == AF_INET6) {
    rc = getopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v);
    if (rc) return rc;
    *out |= v ? EVR_LISTEN_V6ONLY : EVR_LISTEN_DUALSTACK;
  }
  return 0;
}

int evr_handoff_item_init(evr_handoff_item_t *item, int fd, const char *name) {
  if (!item) return EVR_EINVAL;
  if (!name) name = "";
  size_t nlen = strlen(name);
  if (nlen > EVR_HANDOFF_NAME_MAX) return EVR_ENAMETOOLONG;
  if (fd < 0) return EVR_EBADF;
  if (fcntl(fd, F_GETFD) < 0) return -errno;

  evr_handoff_item_t it;
  memset(&it, 0, sizeof it);
  it.fd = fd;
  it.kind = EVR_HANDOFF_OTHER;
  memcpy(it.name, name, nlen);

  int type;
  int rc = getopt_int(fd, SOL_SOCKET, SO_TYPE, &type);
  if (rc == EVR_ENOTSOCK) {
    *item = it; /* a pipe, a file ...: no address */
    return 0;
  }
  if (rc) return rc;
  evr_addr_t a;
  rc = evr__sockname(fd, &a);
  if (rc) return rc;
  int fam = addr_family(&a);
  if (fam != AF_INET && fam != AF_INET6 && fam != AF_UNIX) {
    *item = it;
    return 0;
  }
  it.addr = a;
  if (fam != AF_UNIX) {
    rc = read_flags(fd, fam, &it.flags);
    if (rc) return rc;
  }
  if (type == SOCK_STREAM) {
    rc = is_listening(fd);
    if (rc < 0) return rc;
    if (rc) it.kind = fam == AF_UNIX ? EVR_HANDOFF_UNIX : EVR_HANDOFF_TCP;
  }
  *item = it;
  return 0;
}

int evr_handoff_export(evr_handoff_item_t *item, evr_listener_t *l,
                       const char *name) {
  if (!item || !l || !evr__handle_is(&l->base, EVR__HT_LISTENER) || l->fd < 0)
    return EVR_EINVAL;
  evr_handoff_item_t it;
  int rc = evr_handoff_item_init(&it, l->fd, name);
  if (rc) return rc;
  if (it.kind != EVR_HANDOFF_TCP && it.kind != EVR_HANDOFF_UNIX)
    return EVR_EINVAL;
  /* The receiver serves the same socket file: whichever process closes
   * its copy first must not remove it from under the other. */
  evr__listener_keep_file(l);
  *item = it;
  return 0;
}

int evr_handoff_adopt(evr_listener_t *l, evr_handoff_item_t *item,
                      const evr_listen_options_t *opts, evr_accept_cb cb) {
  if (!l || !item || !cb) return EVR_EINVAL;
  if (item->kind != EVR_HANDOFF_TCP && item->kind != EVR_HANDOFF_UNIX)
    return EVR_EINVAL;
  if (item->fd < 0) return EVR_EBADF;
  evr_handoff_item_t now;
  int rc = evr_handoff_item_init(&now, item->fd, NULL);
  if (rc) return rc;
  /* Still a listening socket of the kind and family the sender said. */
  if (now.kind != item->kind) return EVR_EINVAL;
  if (item->addr.len && addr_family(&now.addr) != addr_family(&item->addr))
    return EVR_EINVAL;
  rc = evr_listener_open(l, item->fd, opts, cb);
  if (rc) return rc;
  item->fd = -1;
  return 0;
}

evr_handoff_item_t *evr_handoff_find(evr_handoff_item_t *items, unsigned n,
                                     const char *name) {
  if (!items || !name) return NULL;
  for (unsigned i = 0; i < n; i++) {
    if (items[i].fd < 0) continue;
    if (strncmp(items[i].name, name, sizeof items[i].name) == 0) return &items[i];
  }
  return NULL;
}

void evr_handoff_items_close(evr_handoff_item_t *items, unsigned n) {
  if (!items) return;
  for (unsigned i = 0; i < n; i++) {
    if (items[i].fd >= 0) evr__close_fd(items[i].fd);
    items[i].fd = -1;
  }
}

/* ---- the wire format ---- */

static void encode_header(unsigned char *p, unsigned count) {
  memset(p, 0, HDR_SIZE);
  memcpy(p, MAGIC, sizeof MAGIC);
  p[4] = EVR_HANDOFF_VERSION;
  put16(p + 6, count);
  put32(p + 8, (uint32_t)(count * REC_SIZE));
}

/* The item was checked (check_item). */
static void encode_item(unsigned char *p, const evr_handoff_item_t *it) {
  memset(p, 0, REC_SIZE);
  p[0] = (unsigned char)it->kind;
  put16(p + 2, it->flags);
  size_t nlen = strlen(it->name);
  p[6] = (unsigned char)nlen;
  memcpy(p + REC_NAME, it->name, nlen);
  switch (it->addr.len ? addr_family(&it->addr) : AF_UNSPEC) {
    case AF_INET:
      p[1] = WF_INET;
      p[7] = 4;
      put16(p + 4, ntohs(it->addr.u.in.sin_port));
      memcpy(p + REC_ADDR, &it->addr.u.in.sin_addr, 4);
      break;
    case AF_INET6:
      p[1] = WF_INET6;
      p[7] = 16;
      put16(p + 4, ntohs(it->addr.u.in6.sin6_port));
      put32(p + 8, it->addr.u.in6.sin6_scope_id);
      memcpy(p + REC_ADDR, &it->addr.u.in6.sin6_addr, 16);
      break;
    case AF_UNIX: {
      size_t plen = it->addr.len - SUN_OFF;
      p[1] = WF_UNIX;
      p[7] = (unsigned char)plen;
      memcpy(p + REC_ADDR, it->addr.u.un.sun_path, plen);
      break;
    }
    default:
      break; /* WF_NONE */
  }
}

/* A record into *it (fd left alone). 0 or EVR_EPROTO. */
static int decode_item(const unsigned char *p, evr_handoff_item_t *it) {
  unsigned fam = p[1], nlen = p[6], alen = p[7];
  unsigned port = get16(p + 4);
  uint32_t scope = get32(p + 8);
  if (nlen > EVR_HANDOFF_NAME_MAX || alen > REC_ADDR_MAX) return EVR_EPROTO;
  /* Garbage is refused, not ignored: every unused byte must be zero. */
  if (!all_zero(p + REC_ADDR + alen, REC_ADDR_MAX - alen) ||
      !all_zero(p + REC_NAME + nlen, REC_NAME_SIZE - nlen) ||
      !all_zero(p + REC_RESERVED, 4) || memchr(p + REC_NAME, '\0', nlen))
    return EVR_EPROTO;
  union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_un un;
  } u;
  memset(&u, 0, sizeof u);
  socklen_t len = 0;
  switch (fam) {
    case WF_NONE:
      if (alen || port || scope) return EVR_EPROTO;
      break;
    case WF_INET:
      if (alen != 4 || scope) return EVR_EPROTO;
      u.in.sin_family = AF_INET;
      u.in.sin_port = htons((uint16_t)port);
      memcpy(&u.in.sin_addr, p + REC_ADDR, 4);
      len = sizeof u.in;
      break;
    case WF_INET6:
      if (alen != 16) return EVR_EPROTO;
      u.in6.sin6_family = AF_INET6;
      u.in6.sin6_port = htons((uint16_t)port);
      u.in6.sin6_scope_id = scope;
      memcpy(&u.in6.sin6_addr, p + REC_ADDR, 16);
      len = sizeof u.in6;
      break;
    case WF_UNIX:
      if (alen > sizeof u.un.sun_path || port || scope) return EVR_EPROTO;
      u.un.sun_family = AF_UNIX;
      memcpy(u.un.sun_path, p + REC_ADDR, alen);
      len = (socklen_t)(SUN_OFF + alen);
      break;
    default:
      return EVR_EPROTO;
  }
#ifdef HAVE_SA_LEN
  u.sa.sa_len = (unsigned char)len;
#endif
  memset(it, 0, sizeof *it);
  it->fd = -1;
  if (len && evr_addr_from_sockaddr(&it->addr, &u.sa, len) != 0) return EVR_EPROTO;
  it->kind = p[0];
  it->flags = get16(p + 2);
  memcpy(it->name, p + REC_NAME, nlen);
  return check_item(it) ? EVR_EPROTO : 0;
}

/* ---- requests ---- */

/* fd is an open Unix stream socket. */
static int check_socket(int fd) {
  if (fd < 0) return EVR_EBADF;
  if (fcntl(fd, F_GETFD) < 0) return -errno;
  int type;
  int rc = getopt_int(fd, SOL_SOCKET, SO_TYPE, &type);
  if (rc) return rc == EVR_ENOTSOCK ? EVR_EINVAL : rc;
  if (type != SOCK_STREAM) return EVR_EINVAL;
  evr_addr_t a;
  rc = evr__sockname(fd, &a);
  if (rc) return rc;
  /* An unnamed socket may come back without its family on some systems. */
  int fam = addr_family(&a);
  if (fam != AF_UNIX && fam != AF_UNSPEC) return EVR_EINVAL;
  return 0;
}

static int start(evr_loop_t *loop, evr_handoff_t *req, int fd, unsigned events,
                 unsigned op, evr_handoff_cb cb) {
  evr__io_init(&req->node, fd, EVR__IO_HANDOFF);
  int rc = evr__io_start(loop, &req->node, events, 0);
  if (rc) {
    evr__io_init(&req->node, -1, EVR__IO_HANDOFF);
    return rc;
  }
  evr_defer_init(&req->later);
  req->loop = loop;
  req->cb = cb;
  req->off = 0;
  req->got = 0;
  req->nfds = 0;
  req->count = 0;
  req->ctrunc = 0;
  req->status = 0;
  req->op = (uint8_t)op;
  req->state = ST_PENDING;
  evr__req_register(loop);
  return 0;
}

/* Close what a receive holds; leave no descriptor in the caller's array. */
static void drop_fds(evr_handoff_t *req) {
  for (unsigned i = 0; i < req->nfds; i++) evr__close_fd(req->fds[i]);
  req->nfds = 0;
  if (req->op == OP_RECV)
    for (unsigned i = 0; i < req->nitems; i++) req->in[i].fd = -1;
}

/* The request is over: stop watching (the caller may close the socket in
 * cb, or submit again on it), then call back. req is not touched after. */
static void finish(evr_handoff_t *req, int status) {
  evr_loop_t *loop = req->loop;
  evr_handoff_cb cb = req->cb;
  if (status < 0 && req->op == OP_RECV) drop_fds(req);
  evr__io_release(loop, &req->node);
  req->op = OP_IDLE;
  req->state = 0;
  evr__req_unregister(loop);
  cb(req, status);
}

static void finish_later(evr_defer_t *task) {
  evr_handoff_t *req = EVR_CONTAINER_OF(task, evr_handoff_t, later);
  finish(req, req->status);
}

int evr_handoff_cancel(evr_handoff_t *req) {
  if (!req || req->op == OP_IDLE) return EVR_EINVAL;
  if (req->state == ST_CANCELLED) return 0;
  evr__io_release(req->loop, &req->node);
  if (req->op == OP_RECV) drop_fds(req);
  req->state = ST_CANCELLED;
  req->status = EVR_ECANCELED;
  /* Cannot fail: the task was initialised at submission and is not
   * queued. */
  (void)evr_defer(req->loop, &req->later, finish_later);
  return 0;
}

/* ---- sending ---- */

int evr_handoff_send(evr_loop_t *loop, evr_handoff_t *req, int fd,
                     const evr_handoff_item_t *items, unsigned n,
                     evr_handoff_cb cb) {
  if (!loop || !req || !cb || (n && !items)) return EVR_EINVAL;
  if (req->op != OP_IDLE) return EVR_EBUSY;
  if (n > EVR_HANDOFF_MAX) return EVR_EINVAL;
  for (unsigned i = 0; i < n; i++)
    if (items[i].fd < 0 || check_item(&items[i])) return EVR_EINVAL;
  int rc = check_socket(fd);
  if (rc) return rc;
#if !EVR_HAVE_MSG_NOSIGNAL && EVR_HAVE_SO_NOSIGPIPE
  /* No per-call flag: the socket itself must not raise SIGPIPE. */
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on) < 0) return -errno;
#endif
  rc = start(loop, req, fd, EVR_WRITE, OP_SEND, cb);
  if (rc) return rc;
  req->out = items;
  req->in = NULL;
  req->nitems = n;
  return 0;
}

static ssize_t send_part(int fd, const struct msghdr *m) {
#if EVR__SIGPIPE_MASK
  evr__sigpipe_t sp;
  evr__sigpipe_hold(&sp);
#endif
  ssize_t w = sendmsg(fd, m, DONTWAIT | EVR__SEND_FLAGS);
#if EVR__SIGPIPE_MASK
  evr__sigpipe_release(&sp, w < 0 && errno == EPIPE);
#endif
  return w;
}

static void do_send(evr_handoff_t *req) {
  unsigned char msg[MSG_MAX];
  size_t len = HDR_SIZE + (size_t)req->nitems * REC_SIZE;
  encode_header(msg, req->nitems);
  for (unsigned i = 0; i < req->nitems; i++)
    encode_item(msg + HDR_SIZE + (size_t)i * REC_SIZE, &req->out[i]);

  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * EVR_HANDOFF_MAX)];
  } cm;
  while (req->off < len) {
    struct iovec iov = {msg + req->off, len - req->off};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (req->off == 0 && req->nitems > 0) {
      /* The descriptors ride on the first byte; a part of the message sent
       * later carries none. */
      memset(&cm, 0, sizeof cm);
      m.msg_control = cm.buf;
      m.msg_controllen = (socklen_t)CMSG_SPACE(sizeof(int) * req->nitems);
      struct cmsghdr *c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = (socklen_t)CMSG_LEN(sizeof(int) * req->nitems);
      unsigned char *data = CMSG_DATA(c);
      for (unsigned i = 0; i < req->nitems; i++)
        memcpy(data + i * sizeof(int), &req->out[i].fd, sizeof(int));
    }
    ssize_t w = send_part(req->node.fd, &m);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return; /* wait */
      finish(req, -errno);
      return;
    }
    req->off += (size_t)w;
  }
  finish(req, 0);
}

/* ---- receiving ---- */

int evr_handoff_recv(evr_loop_t *loop, evr_handoff_t *req, int fd,
                     evr_handoff_item_t *items, unsigned max,
                     evr_handoff_cb cb) {
  if (!loop || !req || !cb || !items) return EVR_EINVAL;
  if (req->op != OP_IDLE) return EVR_EBUSY;
  if (max == 0 || max > EVR_HANDOFF_MAX) return EVR_EINVAL;
  int rc = check_socket(fd);
  if (rc) return rc;
  rc = start(loop, req, fd, EVR_READ, OP_RECV, cb);
  if (rc) return rc;
  req->out = NULL;
  req->in = items;
  req->nitems = max;
  for (unsigned i = 0; i < max; i++) items[i].fd = -1;
  return 0;
}

/* Take the descriptors of one recvmsg() into req->fds. Any that come after
 * the first byte, or beyond the most a message has, are closed at once and
 * make the message bad. 0, EVR_EPROTO, or the error of making one
 * close-on-exec (then it is closed). */
static int take_fds(evr_handoff_t *req, struct msghdr *m, int first) {
  int rc = 0;
  if (!m->msg_control || m->msg_controllen < sizeof(struct cmsghdr)) return 0;
  const char *end = (const char *)m->msg_control + m->msg_controllen;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    if (c->cmsg_len < CMSG_LEN(0)) continue;
    const unsigned char *data = CMSG_DATA(c);
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    /* A truncated message may claim more than the buffer holds. */
    size_t room = (size_t)(end - (const char *)data) / sizeof(int);
    if (n > room) n = room;
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, data + i * sizeof fd, sizeof fd);
#if !EVR_HAVE_MSG_CMSG_CLOEXEC
      int crc = evr__cloexec(fd);
      if (crc < 0) {
        evr__close_fd(fd);
        if (!rc) rc = crc;
        continue;
      }
#endif
      if (!first || req->nfds >= EVR_HANDOFF_MAX) {
        evr__close_fd(fd);
        if (!rc) rc = EVR_EPROTO;
        continue;
      }
      req->fds[req->nfds++] = fd;
    }
  }
  return rc;
}

/* The header is in req->buf: 0 when the records may follow, else the
 * error. */
static int check_header(evr_handoff_t *req) {
  const unsigned char *p = req->buf;
  if (memcmp(p, MAGIC, sizeof MAGIC) != 0 || p[4] != EVR_HANDOFF_VERSION ||
      p[5] != 0 || get32(p + 12) != 0)
    return EVR_EPROTO;
  unsigned count = get16(p + 6);
  if (count > EVR_HANDOFF_MAX || get32(p + 8) != count * REC_SIZE)
    return EVR_EPROTO;
  req->count = count;
  if (count > req->nitems) return EVR_ENOSPC;
  if (req->ctrunc)
    /* The buffer had room for count descriptors: fewer arrived because
     * the process could not take them, or more were sent than announced. */
    return req->nfds < count ? EVR_EMFILE : EVR_EPROTO;
  if (req->nfds != count) return EVR_EPROTO;
  return 0;
}

static void do_recv(evr_handoff_t *req) {
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * EVR_HANDOFF_MAX)];
  } cm;
  for (;;) {
    int in_header = req->off < HDR_SIZE;
    unsigned unit = in_header ? HDR_SIZE : REC_SIZE;
    struct iovec iov = {req->buf + req->got, unit - req->got};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    /* Room for as many descriptors as the caller takes: more are
     * truncated by the kernel (MSG_CTRUNC). Every read has it, so that
     * descriptors sent where none belong are seen and closed. */
    m.msg_control = cm.buf;
    m.msg_controllen = (socklen_t)CMSG_SPACE(sizeof(int) * req->nitems);
    ssize_t r = recvmsg(req->node.fd, &m, RECV_FLAGS);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return; /* wait */
      finish(req, -errno);
      return;
    }
    int rc = take_fds(req, &m, req->off == 0);
    if (m.msg_flags & MSG_CTRUNC) {
      /* On the first read, judged with the header (check_header); on a
       * later one, descriptors were sent where none belong. */
      req->ctrunc = 1;
      if (req->off > 0 && !rc) rc = EVR_EPROTO;
    }
    if (rc) {
      finish(req, rc);
      return;
    }
    if (r == 0) {
      finish(req, req->off == 0 && req->nfds == 0 && !req->ctrunc ? EVR_EOF
                                                                 : EVR_EPROTO);
      return;
    }
    req->off += (size_t)r;
    req->got += (unsigned)r;
    if (req->got < unit) continue;
    req->got = 0;
    unsigned done;
    if (in_header) {
      rc = check_header(req);
      done = 0;
    } else {
      done = (unsigned)((req->off - HDR_SIZE) / REC_SIZE);
      rc = decode_item(req->buf, &req->in[done - 1]);
    }
    if (rc) {
      finish(req, rc);
      return;
    }
    if (done == req->count) {
      for (unsigned i = 0; i < req->count; i++) req->in[i].fd = req->fds[i];
      req->nfds = 0;
      finish(req, (int)req->count);
      return;
    }
  }
}

void evr__handoff_io(struct evr__ionode *n, unsigned ev) {
  (void)ev; /* an error or hang-up shows in the call itself */
  evr_handoff_t *req = EVR_CONTAINER_OF(n, evr_handoff_t, node);
  if (req->op == OP_SEND)
    do_send(req);
  else if (req->op == OP_RECV)
    do_recv(req);
}
