/* net/stream.h: what net/stream.c and net/connect.c share about a stream's
 * private state. Not installed.
 *
 * While a connect is pending (EVR__S_CONNECTING), s->fd stays -1 and the
 * connecting socket lives in s->node.fd (-1 when there is none, e.g. while the
 * host name is resolved). The embedded timer is the connect timeout then.
 */
#ifndef EVR_NET_STREAM_H
#define EVR_NET_STREAM_H

#include "reactor/internal.h"

/* s->sflags */
#define EVR__S_READING 0x0001u    /* read_start()ed */
#define EVR__S_EOF 0x0002u        /* EOF delivered to the read callback */
#define EVR__S_CONNECTING 0x0004u /* connect cb not run yet */
#define EVR__S_CONN_WAIT 0x0008u  /* connect() in progress: waiting writable */
#define EVR__S_CONN_DUE 0x0010u   /* outcome (in s->error) due on the timer */
#define EVR__S_SHUT 0x0020u       /* shutdown() or end() requested */
#define EVR__S_SHUT_SENT 0x0040u  /* shutdown(SHUT_WR) done (or failed) */
#define EVR__S_SHUT_DUE 0x0080u   /* shutdown cb due on the timer */
#define EVR__S_SHUT_FAIL 0x0100u  /* the FIN could not be sent */
#define EVR__S_END 0x0200u        /* end(): close once drained */
#define EVR__S_ABOVE 0x0400u      /* above the high water mark */
#define EVR__S_SOCKET 0x0800u     /* a socket (send/sendmsg), not a pipe */
#define EVR__S_SHUT_REQ 0x1000u   /* shutdown cb not run yet */

/* Attach fd to the embedded watcher (kept off the loop's handle list and
 * unreferenced: the stream handle itself carries activity and refs). */
void evr__stream_io_attach(evr_stream_t *s, int fd);
/* Stop the watcher and close its descriptor, if any. */
void evr__stream_io_release(evr_stream_t *s);
/* Bring the watcher's interest and the handle's activity in line with the
 * state. @return 0 or the watcher's error. */
int evr__stream_sync(evr_stream_t *s);
/* The stream's timer callback (connect timeout, due outcomes, idle). */
void evr__stream_timer_cb(evr_timer_t *t);
/* Arm the idle timer when configured and connected. */
void evr__stream_idle_arm(evr_stream_t *s);

/* net/connect.c */
void evr__connect_ready(evr_stream_t *s);      /* connecting fd writable */
void evr__connect_finish(evr_stream_t *s, int status);
void evr__connect_abandon(evr_stream_t *s);    /* the stream is closing */

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
