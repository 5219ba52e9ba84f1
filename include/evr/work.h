/** @file evr/work.h
 *  The thread pool: blocking work off the loop thread.
 *
 * evr_work_submit() queues req; a pool thread runs work(req); then done(req,
 * status) runs on the loop thread of the loop the request was submitted to,
 * in the poll phase, when the loop's internal wake-up channel fires.
 * A pending request keeps its loop alive.
 *
 * The pool is shared by every loop of the process. Its threads start at the
 * first submit; their number comes from evr_threadpool_set_size(), else from
 * the EVR_THREADPOOL_SIZE environment variable, else 4 (clamped to 1..1024).
 * The threads are joined when the last loop that used the pool is freed and
 * at process exit. In a child created with fork(), the pool starts afresh
 * (requests queued in the parent are not inherited; see evr_loop_fork()).
 *
 * Requests are caller-owned: submitting never allocates. Zero a request
 * before its first submission (= {0}, calloc, memset); evr keeps its state
 * from then on. The request memory must stay valid until done has run; it
 * may be reused (resubmitted) from done itself, never earlier.
 */
#ifndef EVR_WORK_H
#define EVR_WORK_H

#include "evr/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A work request: see struct evr_work. */
typedef struct evr_work evr_work_t;
/** The work itself. Runs on a pool thread. It must not call loop functions
 *  (evr_post() and evr_async_send() excepted).
 *  @param req  the request. */
typedef void (*evr_work_fn)(evr_work_t *req);
/** Runs on the loop thread once the work is over; the request may then be
 *  submitted again or freed.
 *  @param req     the request.
 *  @param status  0, or EVR_ECANCELED if the request was cancelled before
 *                 it started (work did not run). */
typedef void (*evr_work_done_fn)(evr_work_t *req, int status);

/** A work request, caller-owned. Zero it before its first submission. */
struct evr_work {
  void *data;         /**< For the user; evr never reads it. */
  /** @cond PRIVATE */
  evr_loop_t *loop;
  evr_work_fn work;
  evr_work_done_fn done;
  evr__qnode_t node;  /* pool queue, then the loop's completion list */
  int state;          /* W_* in reactor/pool.c; guarded by the pool lock */
  int status;
  /** @endcond */
};

/** Queue req: work(req) runs on a pool thread, then done(req, status) on the
 *  loop thread. Starts the pool threads at the first call. Loop thread only.
 *  req must be zeroed before its first submission (data may be set). It is
 *  pending from a successful call until just before its done runs (queued,
 *  running, or finished with done still due), and may be submitted again
 *  from then on (also from inside done), to any loop, not before; it needs
 *  no zeroing again.
 *  @param loop  the loop whose thread runs done.
 *  @param req   the request.
 *  @param work  runs on a pool thread.
 *  @param done  runs on the loop thread afterwards.
 *  @return 0 (done will run exactly once); EVR_EINVAL (NULL loop, req, work
 *          or done); EVR_EBUSY (req is pending, to this loop or another:
 *          nothing changes, and its own done still runs once); EVR_EAGAIN,
 *          EVR_ENOMEM or another error of pthread_create() (no pool thread
 *          could be started). On error this call's done never runs. */
EVR_API int evr_work_submit(evr_loop_t *loop, evr_work_t *req, evr_work_fn work,
                            evr_work_done_fn done);

/** Cancel a request that no pool thread has picked up yet. Loop thread only.
 *  @param req  a submitted request.
 *  @return 0 (work will not run; done runs later, from the loop, with
 *          EVR_ECANCELED, never inside this call); EVR_EBUSY (work is running
 *          or has finished: done runs with its normal status); EVR_EINVAL
 *          (NULL, or req is not pending). */
EVR_API int evr_work_cancel(evr_work_t *req);

/** Set the number of threads the pool starts with (clamped to 1..1024); 0
 *  goes back to the default (EVR_THREADPOOL_SIZE, else 4). It takes effect
 *  when the pool starts: at the first submit, or the first one after the
 *  last loop that used the pool was freed. Thread-safe.
 *  @param n  the number of threads; 0 for the default.
 *  @return 0; EVR_EBUSY (the pool is running: its size cannot change). */
EVR_API int evr_threadpool_set_size(unsigned n);

/** The number of pool threads running: 0 before the first submit and after
 *  the pool was stopped, else the size it started with (fewer if the system
 *  refused some threads). Thread-safe.
 *  @return the number of threads. */
EVR_API unsigned evr_threadpool_threads(void);

#ifdef __cplusplus
}
#endif
#endif
