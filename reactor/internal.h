/* reactor/internal.h: the loop structure and the evr__ functions shared
 * across reactor/, backends/, timers/ and net/. Not installed.
 */
#ifndef EVR_REACTOR_INTERNAL_H
#define EVR_REACTOR_INTERNAL_H

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include "evr/evr.h"
#include "reactor/backend.h"
#include "reactor/list.h"

/* Handle flags. */
#define EVR__H_INIT 0x01u    /* initialised (guards use of zeroed memory) */
#define EVR__H_ACTIVE 0x02u
#define EVR__H_REF 0x04u
#define EVR__H_CLOSING 0x08u
#define EVR__H_CLOSED 0x10u

struct evr__timers; /* timers/timer.c */

struct evr_loop {
  const evr__backend_t *backend;
  void *backend_state;

  /* time */
  uint64_t now_ms;             /* cached monotonic ms */
  uint64_t now_ns;             /* the clock reading behind now_ms */

  /* liveness */
  unsigned active_refs;        /* active, referenced handles */
  unsigned active_reqs;        /* pending requests (work, connect, write) */
  evr__list_t handles;         /* every open handle */
  evr__list_t closing;         /* handles whose close_cb is due */

  /* fd -> watcher map, grown when a watcher starts on a larger fd */
  evr_io_t **fds;
  unsigned nfds;

  /* phases */
  evr__list_t prepare_hooks;
  evr__list_t check_hooks;
  evr__list_t deferred;

  struct evr__timers *timers;

  evr_loop_metrics_t metrics;
  int stop_flag;
  int running;
};

/* ---- handles (reactor/handle.c) ---- */
void evr__handle_init(evr_loop_t *loop, evr_handle_t *h,
                      const evr__handle_vt_t *vt);
void evr__handle_start(evr_handle_t *h);   /* mark active, count the ref */
void evr__handle_stop(evr_handle_t *h);    /* mark inactive, drop the ref */
static inline int evr__handle_usable(const evr_handle_t *h) {
  return h && (h->flags & EVR__H_INIT) &&
         !(h->flags & (EVR__H_CLOSING | EVR__H_CLOSED));
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
 * EVR_WRITE, EVR_ERR and EVR_HUP. Drops the event if fd has no active
 * watcher or the watcher no longer wants it. */
void evr__io_dispatch(evr_loop_t *loop, int fd, unsigned revents);
/* The active watcher of fd, or NULL. */
static inline evr_io_t *evr__io_lookup(const evr_loop_t *loop, int fd) {
  return (fd >= 0 && (unsigned)fd < loop->nfds) ? loop->fds[fd] : NULL;
}
void evr__io_free_map(evr_loop_t *loop);

/* ---- deferred tasks (reactor/defer.c) ---- */
void evr__defer_run(evr_loop_t *loop);

/* ---- hooks (reactor/hook.c) ---- */
void evr__hooks_run(evr_loop_t *loop, evr__list_t *hooks);

/* ---- clock (reactor/clock.c) ---- */
uint64_t evr__hrtime(void);

/* ---- timers (timers/timer.c) ----
 * The loop knows the timer module only through these four calls. */
int evr__timers_init(evr_loop_t *loop);    /* 0 or -ENOMEM */
void evr__timers_destroy(evr_loop_t *loop);
/* Milliseconds until the earliest active timer is due, relative to the cached
 * time, rounded up; 0 if one is already due; -1 if there is none. */
int64_t evr__timers_next_timeout(evr_loop_t *loop);
/* Run every timer due at the cached time. */
void evr__timers_run(evr_loop_t *loop);

/* ---- syscall helpers (reactor/util.c) ---- */
int evr__cloexec(int fd);
int evr__nonblock(int fd, int on);

#endif
