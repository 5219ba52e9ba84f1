/* reactor/internal.h: the loop structure and the evr__ functions shared
 * across reactor/, backends/, timers/ and net/. Not installed.
 */
#ifndef EVR_REACTOR_INTERNAL_H
#define EVR_REACTOR_INTERNAL_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "evr/evr.h"
#include "evr_config.h"
#include "reactor/backend.h"
#include "reactor/list.h"

/* Handle flags (evr_handle_t.flags). */
#define EVR__H_INIT 0x01u    /* initialised (guards use of zeroed memory) */
#define EVR__H_ACTIVE 0x02u
#define EVR__H_REF 0x04u
#define EVR__H_CLOSING 0x08u
#define EVR__H_CLOSED 0x10u

/* I/O node kinds (evr__ionode.kind): the owner evr__io_dispatch() hands
 * the node's events to. */
enum evr__io_kind {
  EVR__IO_WATCHER = 1,   /* an evr_io_t: its callback */
  EVR__IO_STREAM,        /* an evr_stream_t: evr__stream_io() */
  EVR__IO_LISTENER,      /* an evr_listener_t: evr__listener_io() */
  EVR__IO_HANDOFF,       /* an evr_handoff_t: evr__handoff_io() */
  EVR__IO_WAKE           /* the loop's wake-up channel: evr__wake_io() */
};
/* I/O node flags (evr__ionode.flags), reactor/io.c's lazy removal: */
#define EVR__IO_LQUEUED 0x01u /* its fd is in loop->linger */

/* Handle types (evr_handle_t.type): indexes into the table of
 * reactor/handle.c, which names each type and holds its close function.
 * 0 is no type, so zeroed memory is never taken for a handle. */
enum evr__handle_type {
  EVR__HT_NONE = 0,
  EVR__HT_IO,
  EVR__HT_PREPARE,
  EVR__HT_CHECK,
  EVR__HT_ASYNC,
  EVR__HT_SIGNAL,
  EVR__HT_STREAM,
  EVR__HT_LISTENER,
  EVR__HT_COUNT
};

/* The type-specific close of each type: stop all activity (the handle must
 * be inactive afterwards); must not fail. Defined in the type's file. */
void evr__io_close(evr_handle_t *h);         /* reactor/io.c */
void evr__hook_close(evr_handle_t *h);       /* reactor/hook.c */
void evr__async_close(evr_handle_t *h);      /* reactor/async.c */
void evr__signal_close(evr_handle_t *h);     /* reactor/signal.c */
void evr__stream_close(evr_handle_t *h);     /* net/stream.c */
/* The close phase, right before close_cb: complete what is due (streams). */
void evr__stream_finish(evr_handle_t *h);    /* net/stream.c */
void evr__listener_close(evr_handle_t *h);   /* net/listener.c */
/* Forget the Unix socket file a listener made: closing it then leaves the
 * file in place (its socket was handed to another process). */
void evr__listener_keep_file(evr_listener_t *l); /* net/listener.c */
/* The close phase: 1 while a stream's operations are in flight (it is
 * parked and put back on loop->closing once they are in). */
int evr__stream_busy(evr_handle_t *h);       /* net/stream.c */

struct evr__timers; /* timers/timer.c */
struct evr__net;    /* net/stream.c */

struct evr_loop {
  const evr__backend_t *backend;
  void *backend_state;

  /* time */
  uint64_t now_ns;             /* cached monotonic clock reading */
  uint64_t now_ms;             /* now_ns / 1e6 */

  /* liveness */
  unsigned active_refs;        /* active, referenced handles */
  unsigned active_reqs;        /* pending requests (work, connect, write) */
  evr__list_t handles;         /* every open handle */
  evr__list_t closing;         /* handles whose close_cb is due */

  /* fd -> the I/O node last started on it and not released since (active
   * or stopped; see reactor/io.c), grown when a node starts on a larger fd */
  struct evr__ionode **fds;
  unsigned nfds;
  int *linger;                 /* fds whose stopped node awaits removal */
  unsigned nlinger, linger_cap;

  /* phases */
  evr__list_t prepare_hooks;
  evr__list_t check_hooks;
  evr__list_t deferred;

  struct evr__timers *timers;

  struct evr__net *net;        /* what the loop's streams share (net/stream.c):
                                  made by the first evr_stream_init() */
  unsigned io_buffers;         /* evr_loop_options_t: the completion path's */
  unsigned io_buffer_size;     /* buffer ring (0: the defaults) */

  evr_loop_metrics_t metrics;
  unsigned fork_gen;           /* evr__fork_gen when the loop's kernel
                                  objects were made (evr__loop_inherited) */
  _Atomic int stop_flag;       /* evr_loop_stop() is thread-safe */
  int running;

  /* cross-thread wake-up (reactor/async.c, post.c, pool.c, signal.c) */
  struct evr__ionode wake_node; /* the wake-up descriptor's registration */
  int wake_rfd, wake_wfd;      /* eventfd: the same fd; a pipe; or -1 with
                                  the backend's native channel */
  atomic_int wake_pending;     /* written and not yet drained */
  evr__list_t notifiers;       /* evr__notify_t of async and signal handles */
  pthread_mutex_t post_lock;   /* guards post_queue and work_done */
  evr__list_t post_queue;      /* evr_post_t, FIFO */
  atomic_uint posts_queued;    /* length of post_queue, for liveness */
  evr__list_t work_done;       /* evr_work_t whose done is due */
  int pool_user;               /* this loop holds a reference on the pool */
};

/* ---- handles (reactor/handle.c) ---- */
void evr__handle_init(evr_loop_t *loop, evr_handle_t *h,
                      enum evr__handle_type type);
void evr__handle_start(evr_handle_t *h);   /* mark active, count the ref */
void evr__handle_stop(evr_handle_t *h);    /* mark inactive, drop the ref */
static inline int evr__handle_usable(const evr_handle_t *h) {
  return h && (h->flags & EVR__H_INIT) &&
         !(h->flags & (EVR__H_CLOSING | EVR__H_CLOSED));
}
/* Initialised as a handle of this type (it may be closing or closed). */
static inline int evr__handle_is(const evr_handle_t *h,
                                 enum evr__handle_type type) {
  return h && (h->flags & EVR__H_INIT) && h->type == type;
}
static inline int evr__handle_active(const evr_handle_t *h) {
  return (h->flags & EVR__H_ACTIVE) != 0;
}
void evr__run_closing(evr_loop_t *loop);

/* ---- requests: keep the loop alive while pending ---- */
static inline void evr__req_register(evr_loop_t *loop) { loop->active_reqs++; }
static inline void evr__req_unregister(evr_loop_t *loop) {
  assert(loop->active_reqs > 0);
  loop->active_reqs--;
}

/* ---- I/O (reactor/io.c) ---- */
/* Called by backends for each harvested event: revents is a mask of EVR_READ,
 * EVR_WRITE, EVR_ERR and EVR_HUP; err is a socket error (positive errno)
 * that the backend took from the socket with the event (kqueue's EV_EOF
 * under libkqueue, which clears it on the socket), else 0. Drops the event
 * if fd has no active node or the node no longer wants it; otherwise hands
 * it to the node's owner (node->kind). */
void evr__io_dispatch(evr_loop_t *loop, int fd, unsigned revents, int err);
/* The node last started on fd and not released since (active if
 * n->events, registered with the backend if n->registered), or NULL. */
static inline struct evr__ionode *evr__io_lookup(const evr_loop_t *loop, int fd) {
  return (fd >= 0 && (unsigned)fd < loop->nfds) ? loop->fds[fd] : NULL;
}
/* A stopped node of this kind for fd (-1: none yet), not in the map. */
void evr__io_init(struct evr__ionode *n, int fd, unsigned kind);
/* Start a stopped node with interest events (EVR_READ|EVR_WRITE, not 0).
 * same_file: the owner vouches that n->fd has stayed open since the node
 * stopped (no check of a lingering registration). 0, EVR_EEXIST (another
 * node is active on the fd), EVR_ENOMEM or the backend's error. */
int evr__io_start(evr_loop_t *loop, struct evr__ionode *n, unsigned events,
                  int same_file);
/* Change an active node's interest (not to 0). 0 or the backend's error. */
int evr__io_modify(evr_loop_t *loop, struct evr__ionode *n, unsigned events);
/* Stop a node (its registration may linger until the next poll). Events
 * already harvested for its fd are not dispatched. Idempotent. */
void evr__io_stop(evr_loop_t *loop, struct evr__ionode *n);
/* Make the interest of a node whose descriptor has stayed open `events`:
 * start, modify or (0) stop it. 0 or the error of start/modify. */
int evr__io_set(evr_loop_t *loop, struct evr__ionode *n, unsigned events);
/* Stop n, remove its registration now and take it out of the map: before
 * its fd is closed. Idempotent; a node with fd -1 is left as it is. */
void evr__io_release(evr_loop_t *loop, struct evr__ionode *n);
void evr__io_free_map(evr_loop_t *loop);
/* Apply the removals that evr__io_stop() put off (before each poll). */
void evr__io_flush(evr_loop_t *loop);
/* In a forked child: forget the pending removals without making them (the
 * registrations are in the parent's set; evr_loop_fork builds a new one). */
void evr__io_drop_lingering(evr_loop_t *loop);
/* The owners' entries of evr__io_dispatch(); ev as for a watcher. */
void evr__stream_io(struct evr__ionode *n, unsigned ev, int err); /* net/stream.c */
/* A completion of a stream's operation (a completion backend; see
 * reactor/backend.h): res and flags as there; buf is the buffer bid's
 * bytes with EVR__OPF_BUF. */
void evr__stream_done(void *owner, unsigned kind, int res, unsigned flags,
                      unsigned bid, char *buf);                   /* net/stream.c */
void evr__listener_io(struct evr__ionode *n);                     /* net/listener.c */
void evr__handoff_io(struct evr__ionode *n, unsigned ev);         /* net/handoff.c */
void evr__wake_io(evr_loop_t *loop);                              /* reactor/async.c */

/* ---- streams (net/stream.c) ---- */
/* Free the loop's stream context, if it has one (evr_loop_free). */
void evr__net_free(evr_loop_t *loop);
/* Completion path: submit the sends that streams queued (before a wait). */
void evr__net_flush(evr_loop_t *loop);
/* Completion path, in a forked child after the backend's reinit: the
 * streams make their operations again on the new ring. */
void evr__net_reinit(evr_loop_t *loop);

/* ---- deferred tasks (reactor/defer.c) ---- */
void evr__defer_run(evr_loop_t *loop);

/* ---- hooks (reactor/hook.c) ---- */
void evr__hooks_run(evr_loop_t *loop, evr__list_t *hooks);

/* ---- clock (reactor/clock.c) ---- */
uint64_t evr__hrtime(void);

/* ---- timers (timers/timer.c) ----
 * The loop knows the timer module only through these calls. */
int evr__timers_init(evr_loop_t *loop);    /* 0 or -ENOMEM */
void evr__timers_destroy(evr_loop_t *loop);
/* Nanoseconds until the earliest timer is due, relative to the cached time
 * (a clock reading may be taken first); 0 if one is already due; -1 if
 * there is none. */
int64_t evr__timers_next_timeout(evr_loop_t *loop);
/* Run every timer due at the cached time. */
void evr__timers_run(evr_loop_t *loop);
/* The cached time is about to move: settle the starts made since the last
 * clock reading against clock_ns (>= the cached time). */
void evr__timers_settle(evr_loop_t *loop, uint64_t clock_ns);
/* 1 if timers (active, referenced or not) or internal timeouts remain. */
int evr__timers_pending(const evr_loop_t *loop);

/* Internal timeouts: a wheel node inside a stream or listener, no handle.
 * Its expiry is delivered by kind, from the timer phase; it does not keep
 * the loop alive by itself. */
enum {
  EVR__TK_TIMER = 0,   /* the node of a public evr_timer_t */
  EVR__TK_STREAM,      /* evr__stream_timeout() */
  EVR__TK_LISTENER     /* evr__listener_timeout() */
};
void evr__tnode_start(evr_loop_t *loop, struct evr__tnode *n,
                      uint64_t timeout_ns); /* restart if pending; never early */
void evr__tnode_stop(evr_loop_t *loop, struct evr__tnode *n); /* idempotent */
void evr__stream_timeout(struct evr__tnode *n);    /* net/stream.c */
void evr__listener_timeout(struct evr__tnode *n);  /* net/listener.c */

/* ---- threads and signals (reactor/async.c, post.c, pool.c, signal.c) ----
 * The loop calls the first four; the rest is internal to those files, and
 * to a backend with a native wake channel (evr__wake_dispatch). */
int evr__async_loop_init(evr_loop_t *loop);     /* 0 or -errno */
void evr__async_loop_destroy(evr_loop_t *loop);
/* Wake the loop (thread-safe, async-signal-safe). */
void evr__wake(evr_loop_t *loop);
/* 1 if posted callbacks are queued. Thread-safe. */
int evr__post_pending(const evr_loop_t *loop);
/* Called by a backend with a native wake channel (backend->wake) when that
 * channel fired, after consuming it: runs what the wake-ups announced. */
void evr__wake_dispatch(evr_loop_t *loop);
/* Between those files only. */
void evr__post_run(evr_loop_t *loop);           /* post.c: run one batch */
void evr__work_run_done(evr_loop_t *loop);      /* pool.c: run one batch */
void evr__pool_loop_detach(evr_loop_t *loop);   /* pool.c: loop is freed */
void evr__pool_loop_fork(evr_loop_t *loop);     /* pool.c: in a child */
int evr__async_wake_reset(evr_loop_t *loop);    /* async.c: new wake fd */
int evr__fork_register(void);   /* fork.c: install the atfork handlers once */
/* Bumped in the child by every fork() (the atfork child handler). */
extern atomic_uint evr__fork_gen;
/* 1 in a forked child until evr_loop_fork(): the loop's epoll set, kqueue
 * and wake-up descriptor are then the parent's, and the loop must make no
 * control call on them (reactor/fork.c). Async-signal-safe. */
static inline int evr__loop_inherited(const evr_loop_t *loop) {
  return loop->fork_gen != atomic_load_explicit(&evr__fork_gen, memory_order_relaxed);
}
/* pthread_atfork() handlers of pool.c and signal.c, run in this order
 * (prepare: signal, then pool; parent and child: pool, then signal). */
void evr__signal_fork_prepare(void);
void evr__signal_fork_parent(void);
void evr__signal_fork_child(void);
void evr__pool_fork_prepare(void);
void evr__pool_fork_parent(void);
void evr__pool_fork_child(void);

/* ---- syscall helpers (reactor/util.c) ---- */
int evr__cloexec(int fd);
int evr__nonblock(int fd, int on);

#endif
