/* reactor/backend.h: the interface between the loop core and a backend.
 *
 * A backend is a const table of operations. It never calls user code: it
 * reports readiness with evr__io_dispatch(), which re-validates every event
 * against the loop's current watchers before calling the user. A completion
 * backend (io_uring) sets EVR__CAP_COMPLETION and adds the stream
 * operations below (recv, send, cancel, buffers), whose completions it
 * hands to evr__stream_done(); the readiness entries stay valid for
 * watchers, listeners and connecting sockets.
 */
#ifndef EVR_REACTOR_BACKEND_H
#define EVR_REACTOR_BACKEND_H

#include <stdint.h>
#include <time.h>
#include "evr/io.h"

/* Capability bits. */
#define EVR__CAP_EDGE 0x01u            /* can deliver edge-triggered events */
#define EVR__CAP_BATCH 0x02u           /* queues interest changes until poll */
#define EVR__CAP_NATIVE_WAKE 0x04u     /* wake() is implemented natively */
#define EVR__CAP_REINIT_AFTER_FORK 0x08u /* kernel object must be rebuilt in a child */
#define EVR__CAP_COMPLETION 0x10u      /* the stream operations are implemented */
/* A stopped watcher's registration may stay until the next poll (see
 * reactor/io.c): safe when closing an fd can leave nothing stale behind, or
 * when the backend repairs what it leaves. */
#define EVR__CAP_LAZY_REMOVE 0x20u

/* The operations of a stream on the completion path. A completion names
 * its stream and operation; the stream's memory must stay valid until the
 * last completion of each operation has been handed over. */
enum evr__op_kind {
  EVR__OP_RECV = 1, /* multishot receive into the loop's buffer ring */
  EVR__OP_SEND = 2  /* one send of up to EVR__SEND_IOV buffers */
};
#define EVR__SEND_IOV 16
/* evr__stream_done() flags */
#define EVR__OPF_MORE 0x1u   /* a multishot operation goes on */
#define EVR__OPF_BUF 0x2u    /* bid/buf carry a buffer of the ring */
struct iovec;

typedef struct evr__backend {
  const char *name;
  unsigned caps;
  /* Create the kernel object (CLOEXEC) and event buffer; state goes in
   * loop->backend_state. 0 or -errno. */
  int (*init)(evr_loop_t *loop);
  /* Release everything; safe after a failed init. */
  void (*destroy)(evr_loop_t *loop);
  /* Apply (or queue until poll) an interest change of node n from old_mask to
   * new_mask (EVR_READ|EVR_WRITE; 0 means remove). 0 or -errno; on error the
   * backend's registration is unchanged. */
  int (*update)(evr_loop_t *loop, struct evr__ionode *n, unsigned old_mask,
                unsigned new_mask);
  /* Wait at most timeout_ns nanoseconds (-1 forever, 0 not at all), then
   * report each ready fd with evr__io_dispatch(). A wait that ends for lack
   * of events must not end before timeout_ns: a system call that counts in
   * coarser units gets the timeout rounded up (evr__ns_to_ms_up). Returns
   * the number of events harvested or -errno; EINTR counts as 0 events. */
  int (*poll)(evr_loop_t *loop, int64_t timeout_ns);
  /* The watcher of fd is gone: events already harvested for fd in the batch
   * being dispatched must not be reported. */
  void (*forget)(evr_loop_t *loop, int fd);
  /* Optional (NULL: generic path). */
  int (*reinit)(evr_loop_t *loop);      /* rebuild state in a forked child */
  /* Native cross-thread wake-up: make the next (or current) wait return
   * and call evr__wake_dispatch() once for it. Called from any thread and
   * from signal handlers, so it must be async-signal-safe. */
  int (*wake)(evr_loop_t *loop);
  /* The completion path (EVR__CAP_COMPLETION; NULL otherwise). Each
   * queues its request for the next wait (a full queue is submitted
   * early) and returns 0 or -errno.
   * recv: a multishot receive on fd into the loop's buffer ring, made on
   * first use; each chunk completes with EVR__OPF_BUF, the last completion
   * lacks EVR__OPF_MORE (0: end of file, <0: error, -ENOBUFS: the ring was
   * empty, -ECANCELED). */
  int (*recv)(evr_loop_t *loop, int fd, void *owner);
  /* send: the bytes of iov[0..n) (n <= EVR__SEND_IOV, copied: the array
   * may go at once; the bytes must stay until the completion), in one
   * send. res: bytes sent (maybe fewer) or -errno. */
  int (*send)(evr_loop_t *loop, int fd, const struct iovec *iov, int n,
              void *owner);
  /* cancel: end owner's operation of this kind (its completion comes).
   * now: submit at once, and let the kernel finish the cancellation, so
   * that the operation no longer holds the descriptor's file (a close of
   * the descriptor right after closes the socket). */
  int (*cancel)(evr_loop_t *loop, void *owner, unsigned kind, int now);
  /* buf_put: a buffer handed over with EVR__OPF_BUF goes back to the ring. */
  void (*buf_put)(evr_loop_t *loop, unsigned bid);
  /* bufs: the ring's buffer count and size (0 before the first recv). */
  unsigned (*bufs)(evr_loop_t *loop, unsigned *size);
  /* attach: a stream's socket joins the completion path: the backend may
   * hold its file for the stream's operations (io_uring: a registered
   * file), replacing whatever it held under that number. 0, or -errno
   * when it does not (the operations then name the descriptor).
   * release: the stream closes fd next (its operations are cancelled):
   * drop whatever the backend holds of its file. */
  int (*attach)(evr_loop_t *loop, int fd);
  void (*release)(evr_loop_t *loop, int fd);
} evr__backend_t;

/* A poll timeout in whole milliseconds for poll() and epoll_wait(): -1
 * stays -1 (forever), anything else is rounded up, so that the wait is
 * never shorter than asked; capped at INT32_MAX. */
static inline int evr__ns_to_ms_up(int64_t ns) {
  if (ns < 0) return -1;
  int64_t ms = ns / 1000000 + (ns % 1000000 != 0);
  return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* A poll timeout (>= 0) as a timespec, exact. */
static inline struct timespec evr__ns_to_timespec(int64_t ns) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ns / 1000000000);
  ts.tv_nsec = (long)(ns % 1000000000);
  return ts;
}

/* Built backends, best first, NULL-terminated (backends/registry.c). */
extern const evr__backend_t *const evr__backend_table[];

/* Find a built backend by name; NULL if not built. */
const evr__backend_t *evr__backend_find(const char *name);

#endif
