/* net/stream.h: what net/stream.c and net/connect.c share about a stream's
 * private state. Not installed.
 *
 * A stream's state is four small fields:
 *  - conn: where the connection stands (EVR__CONN_*). The descriptor is
 *    s->node.fd: -1 in NONE and RESOLVING, the connecting socket in
 *    CONNECTING and CONNECT_DUE, the connection from OPEN on. evr_stream_fd()
 *    shows it from OPEN on only.
 *  - req: the one pending request (EVR__REQ_*), whose callback is in
 *    s->pending; it is counted as a pending request of the loop until its
 *    callback runs.
 *  - timer_use: what the stream's one wheel node is armed for
 *    (EVR__TIMER_*); NONE exactly when the node is not pending.
 *  - sflags: EVR__SF_* bits.
 */
#ifndef EVR_NET_STREAM_H
#define EVR_NET_STREAM_H

#include "reactor/internal.h"

/* s->conn */
enum {
  EVR__CONN_NONE = 0,   /* no descriptor: open one, or connect */
  EVR__CONN_RESOLVING,  /* connect_host(): the name is resolved on the pool */
  EVR__CONN_CONNECTING, /* connect() in progress: waiting for writability */
  EVR__CONN_CONNECT_DUE,/* the outcome (s->error) is due on the timer */
  EVR__CONN_OPEN,       /* connected or adopted: read and write */
  EVR__CONN_DRAINING,   /* shutdown() or end(): FIN once the queue drains */
  EVR__CONN_SHUT        /* the FIN was sent, or could not be (SHUT_FAILED) */
};

/* s->req: the request whose callback is pending (one at a time). */
enum {
  EVR__REQ_NONE = 0,
  EVR__REQ_CONNECT,      /* pending.connect */
  EVR__REQ_CONNECT_HOST, /* pending.host (which holds the callback) */
  EVR__REQ_SHUTDOWN,     /* pending.shutdown: due once conn is SHUT */
  EVR__REQ_END           /* pending.end: close once the FIN is out */
};

/* s->timer_use */
enum {
  EVR__TIMER_NONE = 0,
  EVR__TIMER_CONNECT,    /* the connect timeout */
  EVR__TIMER_DUE,        /* next timer phase: the connect outcome
                            (CONNECT_DUE) or the shutdown callback (SHUT) */
  EVR__TIMER_IDLE        /* the idle timeout, pushed later by traffic */
};

/* s->sflags */
#define EVR__SF_READING 0x01u     /* read_start()ed */
#define EVR__SF_EOF 0x02u         /* EOF delivered to the read callback */
#define EVR__SF_ABOVE 0x04u       /* above the high water mark */
#define EVR__SF_SOCKET 0x08u      /* a socket (send/sendmsg), not a pipe */
#define EVR__SF_SHUT_FAILED 0x10u /* the FIN could not be sent */
#define EVR__SF_HUP_ERROR 0x20u   /* s->error came with a hang-up: the reader
                                     gets it in place of EOF */
#define EVR__SF_RECV 0x40u        /* completion path: a receive is in flight */
#define EVR__SF_SEND 0x80u        /* completion path: a send is in flight */

/* s->base.tflags: the completion path's state (net/stream.c). Received
 * bytes the reader has not taken wait in buffers of the loop's ring that
 * the stream holds, in order: s->base.tword is the first (EVR__NO_BUF:
 * none), each links the next. */
#define EVR__SX_CANCEL 0x01u   /* the receive is being cancelled */
#define EVR__SX_END 0x02u      /* the receive ended after the held bytes: EOF,
                                  or s->error with EVR__SF_HUP_ERROR */
#define EVR__SX_FLUSH 0x04u    /* listed for a send before the next wait */
#define EVR__SX_REDO 0x08u     /* listed for delivery of held bytes */
#define EVR__SX_PARKED 0x10u   /* closed: its close waits for its operations */
#define EVR__SX_FAILQ 0x20u    /* the queue fails with s->error once the send
                                  in flight is in */
#define EVR__SX_FILE 0x40u     /* completion path: the socket was attached to
                                  the backend (released before its close) */
#define EVR__NO_BUF 0xffffu

static inline int evr__stream_connecting(const evr_stream_t *s) {
  return s->conn >= EVR__CONN_RESOLVING && s->conn <= EVR__CONN_CONNECT_DUE;
}

/* Attach fd to the stream's I/O node (not watched yet). */
void evr__stream_io_attach(evr_stream_t *s, int fd);
/* Stop watching and close the descriptor, if any. */
void evr__stream_io_release(evr_stream_t *s);
/* Bring the node's interest and the handle's activity in line with the
 * state. @return 0 or the node's error. */
int evr__stream_sync(evr_stream_t *s);
/* The stream's wheel node, for the purpose `use` (EVR__TIMER_*): arm it
 * (restarting it if armed), or disarm it. */
void evr__stream_timer_arm(evr_stream_t *s, unsigned use, uint64_t timeout_ns);
void evr__stream_timer_disarm(evr_stream_t *s);
/* Arm the idle timeout when one is set and the stream is connected. */
void evr__stream_idle_arm(evr_stream_t *s);

/* net/connect.c */
void evr__connect_ready(evr_stream_t *s);      /* connecting fd writable */
void evr__connect_finish(evr_stream_t *s, int status);
/* The stream is closing: a connect_host() is detached from its resolution
 * and left as a plain pending connect (req EVR__REQ_CONNECT), whose
 * callback evr__stream_finish() runs with EVR_ECANCELED. */
void evr__connect_abandon(evr_stream_t *s);

static inline int evr__stream_valid(const evr_stream_t *s) {
  return s && evr__handle_is(&s->base, EVR__HT_STREAM);
}

static inline int evr__stream_usable(const evr_stream_t *s) {
  return evr__stream_valid(s) && evr__handle_usable(&s->base);
}

static inline int evr__stream_closing(const evr_stream_t *s) {
  return (s->base.flags & (EVR__H_CLOSING | EVR__H_CLOSED)) != 0;
}

#endif
