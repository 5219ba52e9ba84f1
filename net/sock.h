/* net/sock.h: socket helpers shared by the files of net/. Not installed.
 *
 * Every function returns a descriptor or 0 on success and a negative EVR_E*
 * code (== -errno on POSIX) taken right after the failing call. Descriptors
 * created here are always non-blocking and close-on-exec.
 *
 * A socket write never raises SIGPIPE. Three ways, best first:
 *  - MSG_NOSIGNAL: writers pass EVR__SEND_FLAGS to send()/sendmsg();
 *  - SO_NOSIGPIPE, set here on every socket evr creates, accepts or adopts;
 *  - neither (a system without both, or an EVR_PORTABLE build on Linux):
 *    EVR__SIGPIPE_MASK is 1 and writers bracket each socket write with
 *    evr__sigpipe_hold()/evr__sigpipe_release(), which block SIGPIPE in the
 *    calling thread and consume the one the write raised. Nothing
 *    process-wide is changed.
 */
#ifndef EVR_NET_SOCK_H
#define EVR_NET_SOCK_H

#include <signal.h>
#include <sys/socket.h>
#include "evr/addr.h"
#include "evr_config.h"

/* Flags to pass to send()/sendmsg() so a closed peer gives EPIPE instead of
 * SIGPIPE (MSG_NOSIGNAL where it is used, 0 otherwise). */
#if EVR_HAVE_MSG_NOSIGNAL
#define EVR__SEND_FLAGS MSG_NOSIGNAL
#else
#define EVR__SEND_FLAGS 0
#endif

/* 1 when socket writes must mask SIGPIPE themselves (see above). */
#define EVR__SIGPIPE_MASK (!EVR_HAVE_MSG_NOSIGNAL && !EVR_HAVE_SO_NOSIGPIPE)

#if EVR__SIGPIPE_MASK
/** The calling thread's state around one socket write. */
typedef struct {
  sigset_t old;    /* the signal mask to restore */
  int was_pending; /* a SIGPIPE was pending before the write */
} evr__sigpipe_t;

/** Block SIGPIPE in the calling thread before a socket write. */
void evr__sigpipe_hold(evr__sigpipe_t *st);

/** After the write: if it failed with EPIPE, consume the SIGPIPE it raised
 *  (one that was pending before is left alone), then restore the mask.
 *  errno is preserved. */
void evr__sigpipe_release(evr__sigpipe_t *st, int epipe);
#endif

/** A new socket of family (AF_INET, AF_INET6, AF_UNIX) and type
 *  (SOCK_STREAM, SOCK_DGRAM), non-blocking, close-on-exec, SO_NOSIGPIPE
 *  where available. @return the fd, or a negative EVR_E* code. */
int evr__socket(int family, int type);

/** Accept one connection from the non-blocking listening socket fd. The new
 *  descriptor is non-blocking, close-on-exec and SIGPIPE-free. EINTR is
 *  retried internally. @return the fd, or a negative code: EVR_EAGAIN (none
 *  pending), EVR_ECONNABORTED, EVR_EMFILE, EVR_ENFILE, ... */
int evr__accept(int fd);

/** Make an adopted descriptor non-blocking and close-on-exec, and set
 *  SO_NOSIGPIPE where available when it is a socket. @return 0 or a
 *  negative code (EVR_EBADF for a closed descriptor). */
int evr__sock_prepare(int fd);

/** The pending error of a socket (SO_ERROR), as a negative code, or 0. */
int evr__sock_error(int fd);

/** getsockname()/getpeername() into an evr_addr_t. @return 0 or a negative
 *  code. */
int evr__sockname(int fd, evr_addr_t *out);
int evr__peername(int fd, evr_addr_t *out);

/** close() that keeps errno out of the picture: EINTR is not retried
 *  (POSIX leaves the descriptor state unspecified, and on Linux it is
 *  closed already). */
void evr__close_fd(int fd);

/** errno value -> EVR code, for callers that have an errno in hand
 *  (e.g. from SO_ERROR). 0 stays 0; positive values become negative. */
static inline int evr__errno_code(int err) { return err > 0 ? -err : err; }

#endif
