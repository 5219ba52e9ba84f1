/** @file evr/handoff.h
 *  Handing open descriptors (listeners above all) to another process over
 *  a connected Unix stream socket, with each one's address and options.
 *
 * A daemon that reloads by starting a new copy of itself exports its
 * listeners into items (evr_handoff_export()), sends them with
 * evr_handoff_send() over a Unix socket the new copy is connected to; the
 * new copy receives them with evr_handoff_recv(), finds them by name
 * (evr_handoff_find()) and adopts them (evr_handoff_adopt()). No
 * connection waiting in a listen queue is lost: both processes hold the
 * same listening sockets until the old one closes its copies.
 *
 * One call sends one message: a header and up to #EVR_HANDOFF_MAX items,
 * the descriptors riding on its first byte (SCM_RIGHTS). The message format
 * is in docs/net.md, "Handing listeners to another process". Both requests
 * run on the loop, never block, and complete through a callback, exactly
 * once, never inside the call that submitted them. A timeout is the
 * caller's to set (a timer that calls evr_handoff_cancel()).
 *
 * Descriptors are never leaked: a received descriptor is close-on-exec
 * from the moment it exists in this process (MSG_CMSG_CLOEXEC where the
 * system has it, else FD_CLOEXEC at once), and every error or cancellation
 * of a receive closes whatever descriptors it had received.
 */
#ifndef EVR_HANDOFF_H
#define EVR_HANDOFF_H

#include "evr/loop.h"
#include "evr/io.h"
#include "evr/defer.h"
#include "evr/addr.h"
#include "evr/tcp.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The most items (descriptors) one message carries. */
#define EVR_HANDOFF_MAX 64
/** The longest item name, in bytes, without its NUL. */
#define EVR_HANDOFF_NAME_MAX 31
/** The version of the message format that evr writes and reads. */
#define EVR_HANDOFF_VERSION 1

/** What an item's descriptor is (evr_handoff_item_t.kind). */
enum {
  /** A listening TCP socket (IPv4 or IPv6). */
  EVR_HANDOFF_TCP = 1,
  /** A listening Unix stream socket. */
  EVR_HANDOFF_UNIX = 2,
  /** Any other descriptor (a connected socket, a pipe, a file ...). */
  EVR_HANDOFF_OTHER = 3
};

/** One descriptor with what the receiver needs to know about it. Plain
 *  data: copy freely. */
typedef struct evr_handoff_item {
  /** The descriptor. Sending: stays the caller's. Received: the caller's,
   *  until evr_handoff_adopt() takes it (then -1). */
  int fd;
  /** EVR_HANDOFF_TCP, EVR_HANDOFF_UNIX or EVR_HANDOFF_OTHER. */
  unsigned kind;
  /** Options the socket has, as evr_listen_options_t flags:
   *  EVR_LISTEN_REUSEPORT, and for IPv6 EVR_LISTEN_V6ONLY or
   *  EVR_LISTEN_DUALSTACK (IPV6_V6ONLY set or not); 0 for others. */
  unsigned flags;
  /** The local address (len 0: none, e.g. a pipe). */
  evr_addr_t addr;
  /** A name of the caller's choice, NUL-terminated ("" allowed). Several
   *  items may share one (e.g. SO_REUSEPORT listeners of one port). */
  char name[EVR_HANDOFF_NAME_MAX + 1];
} evr_handoff_item_t;

/** A send or receive request: see struct evr_handoff. */
typedef struct evr_handoff evr_handoff_t;

/** A request's callback, run once per accepted request, from the loop.
 *  @param req     the request; it may be submitted again or freed.
 *  @param status  evr_handoff_send(): 0 (the whole message is in the
 *                 kernel) or a negative error. evr_handoff_recv(): the
 *                 number of items received (>= 0; items[0..status) are
 *                 filled and their descriptors are the caller's) or a
 *                 negative error (then no descriptor was kept: every item's
 *                 fd is -1). EVR_ECANCELED after evr_handoff_cancel(). */
typedef void (*evr_handoff_cb)(evr_handoff_t *req, int status);

/** A send or receive request, caller-owned. Zero it before its first
 *  submission (= {0}, calloc, memset); evr keeps its state from then on. */
struct evr_handoff {
  void *data;            /**< For the user; evr never reads it. */
  evr_loop_t *loop;      /**< The loop it was last submitted to (read-only). */
  /** @cond PRIVATE */
  struct evr__ionode node;  /* the socket's registration while pending */
  evr_defer_t later;        /* completes a cancelled request */
  evr_handoff_cb cb;
  const evr_handoff_item_t *out; /* send: the caller's items */
  evr_handoff_item_t *in;   /* recv: the caller's array */
  unsigned nitems;          /* send: how many; recv: the array's size */
  unsigned count;           /* recv: the count the header announced */
  unsigned nfds;            /* recv: descriptors received so far */
  unsigned got;             /* recv: bytes of the current unit in buf */
  size_t off;               /* bytes of the message sent or received */
  int status;               /* the outcome of a cancelled request */
  uint8_t op;               /* idle, sending, receiving */
  uint8_t state;            /* pending, cancelled */
  uint8_t ctrunc;           /* recv: the kernel truncated the descriptors */
  int fds[EVR_HANDOFF_MAX]; /* recv: the descriptors received */
  unsigned char buf[160];   /* recv: the header or record being read */
  /** @endcond */
};

/** Describe a descriptor as an item: its kind, local address and options
 *  are read from the socket (anything that is not a listening stream
 *  socket of AF_INET, AF_INET6 or AF_UNIX is EVR_HANDOFF_OTHER, with its
 *  address when it is a socket of one of those families). The descriptor
 *  stays the caller's; the item only names it.
 *  @param item  receives the description.
 *  @param fd    the descriptor.
 *  @param name  the item's name, at most #EVR_HANDOFF_NAME_MAX bytes;
 *               NULL for "".
 *  @return 0; EVR_EINVAL (NULL item); EVR_EBADF (fd < 0 or not open);
 *          EVR_ENAMETOOLONG (name too long); the error of getsockopt() or
 *          getsockname(). */
EVR_API int evr_handoff_item_init(evr_handoff_item_t *item, int fd,
                                  const char *name);

/** Describe a listener as an item, to send it (evr_handoff_item_init() on
 *  its socket). The listener keeps its socket and goes on accepting until
 *  it is closed. From this call on, closing it leaves its Unix socket
 *  file in place: the receiver serves the same file.
 *  @param item  receives the description.
 *  @param l     a listening listener.
 *  @param name  as for evr_handoff_item_init().
 *  @return 0; EVR_EINVAL (NULL, or l has no socket, or its socket is not a
 *          listening TCP or Unix stream socket); the errors of
 *          evr_handoff_item_init(). */
EVR_API int evr_handoff_export(evr_handoff_item_t *item, evr_listener_t *l,
                               const char *name);

/** Adopt a received listening socket into a listener:
 *  evr_listener_open() on item->fd after checking that the descriptor
 *  still is what the item says (a listening stream socket, SO_ACCEPTCONN
 *  where the system has it, of the item's address family). On success the
 *  listener owns the descriptor and item->fd becomes -1; on error the
 *  item is unchanged and its descriptor still the caller's.
 *  @param l     an initialised listener without a socket.
 *  @param item  an item of kind EVR_HANDOFF_TCP or EVR_HANDOFF_UNIX.
 *  @param opts  as for evr_listener_open(); NULL for defaults.
 *  @param cb    the accept callback.
 *  @return 0; EVR_EINVAL (NULL, another kind, not a listening stream
 *          socket, a family other than the item's); EVR_EBADF (fd is -1 or
 *          not open); the errors of evr_listener_open(). */
EVR_API int evr_handoff_adopt(evr_listener_t *l, evr_handoff_item_t *item,
                              const evr_listen_options_t *opts,
                              evr_accept_cb cb);

/** The first item named name whose descriptor has not been taken (fd >=
 *  0): calling it again after adopting each one walks items that share a
 *  name.
 *  @param items  the items.
 *  @param n      how many.
 *  @param name   the name, NUL-terminated.
 *  @return the item, or NULL (none, or a NULL argument). */
EVR_API evr_handoff_item_t *evr_handoff_find(evr_handoff_item_t *items,
                                             unsigned n, const char *name);

/** Close the descriptor of every item that still has one (fd >= 0) and
 *  set it to -1: what a receiver does with the items it does not use.
 *  @param items  the items; NULL is ignored.
 *  @param n      how many. */
EVR_API void evr_handoff_items_close(evr_handoff_item_t *items, unsigned n);

/** Send items[0..n) as one message over fd, a connected Unix stream
 *  socket (blocking or not: evr never waits in a call). The message is
 *  written as the socket takes it, across as many iterations as that
 *  needs; the descriptors travel with its first byte. The caller keeps the
 *  items, and their descriptors open, unchanged until cb runs. Only one
 *  request of a loop may be pending on a descriptor. A pending request
 *  keeps the loop alive. Loop thread only.
 *  req must be zeroed before its first submission. It is pending from a
 *  successful call until just before cb runs, and may be submitted again
 *  from then on (also from inside cb), not before.
 *  @param loop   the loop.
 *  @param req    the request.
 *  @param fd     the socket; it stays the caller's.
 *  @param items  the items (NULL when n is 0).
 *  @param n      how many, at most #EVR_HANDOFF_MAX.
 *  @param cb     the callback.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL, n above #EVR_HANDOFF_MAX, an item with fd < 0, an
 *          unknown kind or flag, an address of another family than its
 *          kind, an unterminated name; fd not a Unix stream socket);
 *          EVR_EBUSY (req is pending); EVR_EBADF (fd not open); EVR_EEXIST
 *          (a request or watcher of this loop is active on fd); the
 *          backend's error. A failure to send (EVR_EPIPE when the peer has
 *          gone, EVR_EBADF for an item closed meanwhile ...) comes
 *          through cb. */
EVR_API int evr_handoff_send(evr_loop_t *loop, evr_handoff_t *req, int fd,
                             const evr_handoff_item_t *items, unsigned n,
                             evr_handoff_cb cb);

/** Receive one message from fd, a connected Unix stream socket, into
 *  items[0..max). Exactly one message is read, never a byte beyond it, so
 *  the socket may be used for more after it. Everything is checked before
 *  cb sees it; on any error every descriptor received is closed. After an
 *  error other than EVR_ECANCELED before the first byte, the socket is out
 *  of step with its peer: close it. The same rules as evr_handoff_send()
 *  hold for req, fd and the loop; items must stay valid until cb runs.
 *  @param loop   the loop.
 *  @param req    the request.
 *  @param fd     the socket; it stays the caller's.
 *  @param items  where the items go.
 *  @param max    the size of items, at most #EVR_HANDOFF_MAX: a message with
 *                more fails.
 *  @param cb     the callback. Its status is the number of items, or:
 *                EVR_EOF (the peer closed before the message began);
 *                EVR_EPROTO (not a message of this format and version: bad
 *                header, length, field or name, a message cut short by
 *                the peer closing, descriptors that do not match the
 *                items); EVR_ENOSPC (more items than max); EVR_EMFILE (the
 *                kernel could not give this process every descriptor:
 *                descriptors ran out); EVR_ECANCELED; a socket error.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL, max 0 or above #EVR_HANDOFF_MAX, fd not a Unix stream
 *          socket); EVR_EBUSY (req is pending); EVR_EBADF (fd not open);
 *          EVR_EEXIST (a request or watcher of this loop is active on fd);
 *          the backend's error. */
EVR_API int evr_handoff_recv(evr_loop_t *loop, evr_handoff_t *req, int fd,
                             evr_handoff_item_t *items, unsigned max,
                             evr_handoff_cb cb);

/** Cancel a pending request: it stops at once (its socket is no longer
 *  watched, so the caller may close it right after this returns; what a
 *  receive had received is closed), and cb runs with EVR_ECANCELED later,
 *  from the loop. Safe from any callback. Cancelling twice is harmless. A
 *  send cancelled part way has left part of a message in the socket: the
 *  peer will see an error; close the socket.
 *  @param req  the request.
 *  @return 0; EVR_EINVAL (NULL or not pending: never submitted, or its cb
 *          has started). */
EVR_API int evr_handoff_cancel(evr_handoff_t *req);

#ifdef __cplusplus
}
#endif
#endif
