/* backends/io_uring.c: readiness watchers on io_uring (liburing).
 *
 * Each registration is one multishot IORING_OP_POLL_ADD whose user_data is
 * fd | gen << 32, the generation kept in the node's backend_slot (as in
 * backends/epoll.c). A new registration (start, or a change of interest)
 * gets a new generation: the old poll is removed by its user_data and a new
 * one added, both as SQEs that go to the kernel with the next wait, so an
 * iteration costs one io_uring_enter (io_uring_submit_and_wait_timeout,
 * the timeout in nanoseconds). A completion whose generation is not its
 * fd's current one belongs to a removed or replaced registration (the fd
 * may have been closed and its number reused) and is dropped. Internal
 * SQEs (removals, re-polls) carry generation 0 and, where the kernel has
 * IOSQE_CQE_SKIP_SUCCESS, post nothing when they succeed.
 *
 * Level-triggered, as the other backends: a multishot poll posts on wake-ups
 * only, so after each event handed to a node that is still registered under
 * the same generation, a poll update of the same mask is queued; the kernel
 * polls the file again when it applies it and posts at once if it is still
 * ready. A poll that ends (no IORING_CQE_F_MORE: CQ overflow, a file that
 * cannot wait, such as a regular file) is added again under its generation;
 * one that fails (-EBADF: the descriptor was closed under its watcher) is
 * not. Several completions of one fd in a batch are merged into one event.
 *
 * Removal is submitted at once: a poll holds a reference on its file, and a
 * caller who closes the descriptor after stopping its watcher expects the
 * file to be closed (a peer to see EOF) without waiting for the next
 * iteration. So the lazy removal of reactor/io.c is not used here.
 *
 * The ring: CQ four times the SQ (IORING_SETUP_CQSIZE); SUBMIT_ALL and
 * COOP_TASKRUN, and SINGLE_ISSUER, each set dropped when the kernel
 * refuses it (EINVAL); not DEFER_TASKRUN (see UR_SOLO). A single-issuer ring is made disabled and
 * enabled by the first thread that submits; a loop that then runs on
 * another thread (allowed between runs) gets a new ring without those two
 * flags. A full SQ is submitted early; a CQ overflow (kept by the kernel,
 * IORING_FEAT_NODROP) is drained by the next harvests.
 *
 * Refusal: no io_uring_setup (ENOSYS), EPERM (seccomp, the
 * io_uring_disabled sysctl), or a kernel without POLL_ADD, POLL_REMOVE (updates) or ASYNC_CANCEL (the
 * probe), the wait with a timeout argument (IORING_FEAT_EXT_ARG, 5.11) or
 * multishot poll (5.13, the release of IORING_FEAT_RSRC_TAGS: the probe
 * lists opcodes, not flags) make init fail; evr_loop_new() then tries the
 * next backend, or fails with EVR_ENOTSUP for an explicit choice.
 *
 * Fork: the rings are memory shared with the kernel, so a child that
 * queued an SQE would change the parent's ring. reactor/io.c makes no
 * update in an inherited loop, and evr_loop_fork() calls reinit, which
 * makes a new ring holding every registered node and unmaps the old one
 * without touching it.
 */
#define _GNU_SOURCE
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "reactor/internal.h"

#define UR_SQ 256u
#define UR_CQ (4u * UR_SQ)

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL 0
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN 0
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER 0
#endif
/* Not IORING_SETUP_DEFER_TASKRUN: its completions are run in the wait, at
 * most 20 per wait on recent kernels (6.13+) when one event is awaited, so
 * ready descriptors beyond those were reported one or more iterations late
 * (measured: 40 of 100 ready socket pairs per iteration). Level-triggered
 * readiness needs them all. COOP_TASKRUN runs them all on each entry. */
#define UR_SOLO IORING_SETUP_SINGLE_ISSUER

/* One harvested completion (data 0 after forget()); flags: UR_ENDED. */
struct ur_ev {
  uint64_t data;
  int32_t res;
  uint32_t flags;
};
#define UR_ENDED 1u /* the multishot poll ended: add it again */

/* Per fd: the batch that last saw it and its index there (merging). */
struct ur_mark {
  uint32_t batch;
  uint32_t idx;
};

struct ur_state {
  struct io_uring ring;
  int have_ring;
  unsigned flags;       /* the ring's setup flags */
  int enabled;          /* a SINGLE_ISSUER ring made disabled is enabled */
  pthread_t owner;      /* the thread that enabled it */
  unsigned skip;        /* IOSQE_CQE_SKIP_SUCCESS if the kernel has it */
  uint32_t gen;         /* last generation handed out */
  uint32_t batch;       /* serial of the current batch */
  int cur, n;           /* dispatch position and batch size */
  struct ur_mark *marks;
  unsigned nmarks;
  struct ur_ev events[UR_CQ];
};

static uint64_t ud(int fd, uint32_t gen) {
  return (uint64_t)(uint32_t)fd | (uint64_t)gen << 32;
}

static unsigned to_poll(unsigned mask) {
  unsigned e = 0;
  if (mask & EVR_READ) e |= POLLIN;
  if (mask & EVR_WRITE) e |= POLLOUT;
  return e;
}

static uint32_t next_gen(struct ur_state *st) {
  if (++st->gen == 0) st->gen = 1;
  return st->gen;
}

/* A ring with the best flags the kernel accepts (allowed: which optional
 * flags may be tried). 0 or -errno. */
static int ring_make(struct io_uring *r, unsigned allowed, unsigned *flags, unsigned *features) {
  static const unsigned sets[] = {
      IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | UR_SOLO,
      IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN, 0};
  int rc = -EINVAL;
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
    unsigned f = sets[i] & allowed;
    if (i > 0 && f == (sets[i - 1] & allowed)) continue;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE | f;
    if (f & IORING_SETUP_SINGLE_ISSUER) p.flags |= IORING_SETUP_R_DISABLED;
    p.cq_entries = UR_CQ;
    rc = io_uring_queue_init_params(UR_SQ, r, &p);
    if (rc == 0) {
      *flags = p.flags;
      *features = p.features;
      return 0;
    }
    if (rc != -EINVAL) return rc;
  }
  return rc;
}

/* What evr needs from the kernel: -ENOTSUP where it is missing. */
static int ring_check(struct io_uring *r, unsigned features) {
  if (!(features & IORING_FEAT_EXT_ARG) || !(features & IORING_FEAT_NODROP) ||
      !(features & IORING_FEAT_RSRC_TAGS))
    return -ENOTSUP;
  struct io_uring_probe *p = io_uring_get_probe_ring(r);
  if (!p) return -ENOTSUP;
  int ok = io_uring_opcode_supported(p, IORING_OP_POLL_ADD) &&
           io_uring_opcode_supported(p, IORING_OP_POLL_REMOVE) &&
           io_uring_opcode_supported(p, IORING_OP_ASYNC_CANCEL);
  io_uring_free_probe(p);
  return ok ? 0 : -ENOTSUP;
}

static int ur_init(evr_loop_t *loop) {
  struct ur_state *st = malloc(sizeof *st);
  if (!st) return EVR_ENOMEM;
  memset(st, 0, sizeof *st);
  loop->backend_state = st;
  unsigned features;
  int rc = ring_make(&st->ring, ~0u, &st->flags, &features);
  if (rc) return rc;
  st->have_ring = 1;
  rc = ring_check(&st->ring, features);
  if (rc) return rc;
  st->skip = (features & IORING_FEAT_CQE_SKIP) ? IOSQE_CQE_SKIP_SUCCESS : 0;
  st->enabled = !(st->flags & IORING_SETUP_R_DISABLED);
  return 0;
}

static void ur_destroy(evr_loop_t *loop) {
  struct ur_state *st = loop->backend_state;
  if (!st) return;
  /* Unmaps and closes: never writes to the rings (safe in a forked child). */
  if (st->have_ring) io_uring_queue_exit(&st->ring);
  free(st->marks);
  free(st);
  loop->backend_state = NULL;
}

/* Submit what is queued now. 0 or -errno. */
static int submit_now(struct ur_state *st) {
  int rc;
  do
    rc = io_uring_submit(&st->ring);
  while (rc == -EINTR);
  return rc < 0 ? rc : 0;
}

/* A free SQE, submitting the queue first when it is full; NULL when the
 * kernel takes nothing now (errno-style code in *err). */
static struct io_uring_sqe *sqe_get(struct ur_state *st, int *err) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
  if (sqe) return sqe;
  *err = submit_now(st);
  sqe = io_uring_get_sqe(&st->ring);
  if (!sqe && !*err) *err = -EBUSY;
  return sqe;
}

/* Queue a multishot poll for fd with mask under gen. */
static int queue_add(struct ur_state *st, int fd, unsigned mask, uint32_t gen) {
  int err = 0;
  struct io_uring_sqe *sqe = sqe_get(st, &err);
  if (!sqe) return err;
  io_uring_prep_poll_multishot(sqe, fd, to_poll(mask));
  io_uring_sqe_set_data64(sqe, ud(fd, gen));
  return 0;
}

/* Queue the removal of the poll with this user_data (its CQE is dropped).
 * IORING_OP_ASYNC_CANCEL, not POLL_REMOVE: the latter fails (-EALREADY)
 * while the poll is completing, e.g. right after a re-poll found the file
 * ready, and the poll would then keep its file open. */
static int queue_remove(struct ur_state *st, uint64_t data) {
  int err = 0;
  struct io_uring_sqe *sqe = sqe_get(st, &err);
  if (!sqe) return err;
  io_uring_prep_cancel64(sqe, data, 0);
  io_uring_sqe_set_data64(sqe, 0);
  io_uring_sqe_set_flags(sqe, (unsigned char)st->skip);
  return 0;
}

/* Queue a poll update that keeps the mask: the kernel polls the file
 * again and posts if it is ready (level-triggered re-arm). */
static int queue_repoll(struct ur_state *st, int fd, unsigned mask, uint32_t gen) {
  int err = 0;
  struct io_uring_sqe *sqe = sqe_get(st, &err);
  if (!sqe) return err;
  io_uring_prep_poll_update(sqe, ud(fd, gen), 0, to_poll(mask),
                            IORING_POLL_UPDATE_EVENTS | IORING_POLL_ADD_MULTI);
  io_uring_sqe_set_data64(sqe, 0);
  io_uring_sqe_set_flags(sqe, (unsigned char)st->skip);
  return 0;
}

static int ring_rebuild(evr_loop_t *loop, unsigned allowed);

/* The calling thread may submit: enable a single-issuer ring for it on
 * first use; on another thread, move to a ring without that restriction. */
static int own_ring(evr_loop_t *loop) {
  struct ur_state *st = loop->backend_state;
  if (!(st->flags & IORING_SETUP_SINGLE_ISSUER)) return 0;
  if (!st->enabled) {
    /* io_uring_enable_rings(), which liburing 2.3 does not export. */
    int rc = io_uring_register(st->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (rc < 0) return rc;
    st->enabled = 1;
    st->owner = pthread_self();
    return 0;
  }
  if (pthread_equal(st->owner, pthread_self())) return 0;
  return ring_rebuild(loop, ~(unsigned)UR_SOLO);
}

static int ur_update(evr_loop_t *loop, struct evr__ionode *n, unsigned old_mask,
                     unsigned new_mask) {
  struct ur_state *st = loop->backend_state;
  /* A removal is submitted below, and room for two SQEs is made now (so
   * that a failure changes nothing): the ring must be this thread's first,
   * before anything is read or queued (a new ring takes only the
   * registered nodes, under new generations). */
  int full = io_uring_sq_space_left(&st->ring) < 2;
  if (!new_mask || full) {
    int rc = own_ring(loop);
    if (!rc && full) rc = submit_now(st);
    if (rc) return rc;
  }
  if (old_mask) {
    int rc = queue_remove(st, ud(n->fd, n->backend_slot));
    if (rc) return rc;
  }
  if (new_mask) {
    uint32_t gen = next_gen(st);
    int rc = queue_add(st, n->fd, new_mask, gen);
    if (rc) return rc;
    n->backend_slot = gen;
    return 0;
  }
  /* The poll holds the file: release it now (see the top of the file).
   * GETEVENTS: the removal's completion (which drops the file) runs as
   * task work of this call. */
  int rc;
  do
    rc = io_uring_submit_and_get_events(&st->ring);
  while (rc == -EINTR);
  return rc < 0 ? rc : 0;
}

static void ur_forget(evr_loop_t *loop, int fd) {
  struct ur_state *st = loop->backend_state;
  for (int i = st->cur + 1; i < st->n; i++)
    if (st->events[i].data && (int)(uint32_t)st->events[i].data == fd) st->events[i].data = 0;
}

/* Copy the ready CQEs of current registrations into the batch, merging
 * those of one registration: the masks are or'ed, and the entry is marked
 * ended (UR_ENDED) if any of them ended the poll. Returns the entries. */
static int harvest(evr_loop_t *loop) {
  struct ur_state *st = loop->backend_state;
  struct io_uring_cqe *cqe;
  unsigned head, seen = 0;
  int n = 0;
  if (++st->batch == 0) st->batch = 1;
  if (st->nmarks < loop->nfds) {
    struct ur_mark *m = realloc(st->marks, loop->nfds * sizeof *m);
    if (m) {
      memset(m + st->nmarks, 0, (loop->nfds - st->nmarks) * sizeof *m);
      st->marks = m;
      st->nmarks = loop->nfds;
    }
  }
  io_uring_for_each_cqe(&st->ring, head, cqe) {
    if (n == (int)UR_CQ) break;
    seen++;
    uint64_t data = cqe->user_data;
    if ((data >> 32) == 0) continue; /* an internal SQE's failure */
    int fd = (int)(uint32_t)data;
    /* Stale (a removed or replaced registration), or a failed poll (the
     * descriptor was closed under its watcher: adding it again would fail
     * again): nothing to report. */
    struct evr__ionode *io = evr__io_lookup(loop, fd);
    if (!io || !io->registered || io->backend_slot != (uint32_t)(data >> 32) || cqe->res < 0)
      continue;
    uint32_t ended = (cqe->flags & IORING_CQE_F_MORE) ? 0 : UR_ENDED;
    if ((unsigned)fd < st->nmarks && st->marks[fd].batch == st->batch &&
        st->events[st->marks[fd].idx].data == data) {
      struct ur_ev *e = &st->events[st->marks[fd].idx];
      e->res |= cqe->res;
      e->flags |= ended;
      continue;
    }
    st->events[n] = (struct ur_ev){data, cqe->res, ended};
    if ((unsigned)fd < st->nmarks) st->marks[fd] = (struct ur_mark){st->batch, (uint32_t)n};
    n++;
  }
  io_uring_cq_advance(&st->ring, seen);
  return n;
}

/* Wait (submitting what is queued), at most timeout_ns. 0; 1 when a
 * signal interrupted it; or -errno for a failure that is not a timeout, an
 * interruption or a busy CQ (its overflow is drained by the harvests). */
static int ur_wait(struct ur_state *st, int64_t timeout_ns) {
  struct __kernel_timespec ts, *tsp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tsp = &ts;
  }
  struct io_uring_cqe *cqe;
  int rc = io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, tsp, NULL);
  if (rc == -EINTR) return 1;
  if (rc >= 0 || rc == -ETIME || rc == -EBUSY || rc == -EAGAIN) return 0;
  return rc;
}

static int ur_poll(evr_loop_t *loop, int64_t timeout_ns) {
  struct ur_state *st = loop->backend_state;
  int rc = own_ring(loop);
  if (rc) return rc;
  uint64_t deadline = timeout_ns > 0 ? evr__hrtime() + (uint64_t)timeout_ns : 0;
  int n;
  for (;;) {
    if (io_uring_cq_ready(&st->ring)) {
      /* Completions posted since the last harvest (a removal's, a stale
       * poll's): liburing would neither wait for more nor ask the kernel
       * for the ones pending. Take those first, without waiting. */
      do
        rc = io_uring_submit_and_get_events(&st->ring);
      while (rc == -EINTR);
      if (rc < 0 && rc != -EBUSY && rc != -EAGAIN) return rc;
      rc = 0;
    } else {
      rc = ur_wait(st, timeout_ns);
      if (rc < 0) return rc;
    }
    n = harvest(loop);
    if (n > 0 || timeout_ns == 0 || rc == 1) break;
    /* Only stale or internal completions: wait out the rest. */
    if (timeout_ns > 0) {
      uint64_t now = evr__hrtime();
      if (now >= deadline) break;
      timeout_ns = (int64_t)(deadline - now);
    }
  }
  int events = 0;
  st->n = n;
  for (st->cur = 0; st->cur < n; st->cur++) {
    struct ur_ev *e = &st->events[st->cur];
    if (!e->data) continue; /* forgotten during this batch */
    int fd = (int)(uint32_t)e->data;
    uint32_t gen = (uint32_t)(e->data >> 32);
    struct evr__ionode *io = evr__io_lookup(loop, fd);
    if (!io || !io->registered || io->backend_slot != gen) continue; /* stale */
    unsigned m = 0;
    if (e->res & POLLIN) m |= EVR_READ;
    if (e->res & POLLOUT) m |= EVR_WRITE;
    if (e->res & POLLERR) m |= EVR_ERR;
    if (e->res & POLLHUP) m |= EVR_HUP;
    int ended = (e->flags & UR_ENDED) != 0;
    events++;
    evr__io_dispatch(loop, fd, m, 0);
    /* Still this registration: poll again (level-triggered), or add it
     * again if the multishot ended. */
    io = evr__io_lookup(loop, fd);
    if (!io || !io->registered || io->backend_slot != gen) continue;
    if (ended)
      (void)queue_add(st, fd, io->registered, gen);
    else
      (void)queue_repoll(st, fd, io->registered, gen);
  }
  st->n = st->cur = 0;
  return events;
}

/* A new ring (optional flags limited to allowed) holding every registered
 * node under a new generation; the old ring is unmapped and closed without
 * a write to it. 0, or the error that kept the new ring from being made
 * (the old one is then kept). */
static int ring_rebuild(evr_loop_t *loop, unsigned allowed) {
  struct ur_state *st = loop->backend_state;
  struct io_uring r;
  unsigned flags, features;
  int rc = ring_make(&r, allowed, &flags, &features);
  if (rc) return rc;
  if (flags & IORING_SETUP_R_DISABLED) {
    /* Enabled by this thread now: the nodes may not fit in one SQ. */
    rc = io_uring_register(r.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (rc < 0) {
      io_uring_queue_exit(&r);
      return rc;
    }
    st->owner = pthread_self();
  }
  struct io_uring old = st->ring;
  st->ring = r;
  st->flags = flags;
  st->enabled = 1;
  st->skip = (features & IORING_FEAT_CQE_SKIP) ? IOSQE_CQE_SKIP_SUCCESS : 0;
  for (unsigned i = 0; i < loop->nfds; i++) {
    struct evr__ionode *io = loop->fds[i];
    if (!io || !io->registered) continue;
    uint32_t gen = next_gen(st);
    if (queue_add(st, io->fd, io->registered, gen) == 0) io->backend_slot = gen;
  }
  io_uring_queue_exit(&old);
  /* Harvested events of the old ring now carry old generations. */
  return 0;
}

/* A forked child shares the parent's ring: make a private one. The child
 * is another task, so a single-issuer ring is enabled by its first use. */
static int ur_reinit(evr_loop_t *loop) { return ring_rebuild(loop, ~0u); }

const evr__backend_t evr__backend_io_uring = {
    .name = "io_uring",
    .caps = EVR__CAP_BATCH | EVR__CAP_REINIT_AFTER_FORK,
    .init = ur_init,
    .destroy = ur_destroy,
    .update = ur_update,
    .poll = ur_poll,
    .forget = ur_forget,
    .reinit = ur_reinit,
};
