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
 * COOP_TASKRUN, dropped when the kernel refuses them (EINVAL); neither
 * DEFER_TASKRUN nor SINGLE_ISSUER (see below). A full SQ is submitted
 * early; a CQ overflow (kept by the kernel, IORING_FEAT_NODROP) is drained
 * by the next harvests.
 *
 * Refusal: no io_uring_setup (ENOSYS), EPERM (seccomp, the
 * io_uring_disabled sysctl), or a kernel without an opcode evr uses (the
 * probe: POLL_ADD, POLL_REMOVE for updates, ASYNC_CANCEL, RECV, SEND,
 * SENDMSG), the wait with a timeout argument (IORING_FEAT_EXT_ARG, 5.11),
 * multishot poll (5.13, the release of IORING_FEAT_RSRC_TAGS) or multishot
 * receive (6.0, the release of the SEND_ZC opcode; the probe lists opcodes,
 * not flags) make init fail; evr_loop_new() then tries the
 * next backend, or fails with EVR_ENOTSUP for an explicit choice.
 *
 * Streams (the completion path, EVR__CAP_COMPLETION): a stream reads
 * with one multishot IORING_OP_RECV into a ring of provided buffers
 * (registered with the ring on the first receive; its count and size are
 * loop options) and sends with IORING_OP_SEND, or SENDMSG for several
 * buffers; net/stream.c keeps at most one of each in flight per stream and
 * gets their completions through evr__stream_done(). Their user_data is
 * the stream's address with the operation in its two low bits (bit 63
 * clear), a readiness registration's has bit 63 set, an internal SQE's is
 * 0. A SENDMSG's msghdr and iovecs must stay until the SQE is submitted:
 * they are kept in a table of slots that is reused once the queue has
 * gone to the kernel (a full table submits first). The buffers' memory
 * is mapped (page-aligned, defined for memcheck, pages touched as used).
 *
 * Registered files: a stream's socket goes into the ring's file table
 * (slot = its descriptor, for descriptors below the table's size) when it
 * joins the completion path (attach()), and its operations name the slot
 * (IOSQE_FIXED_FILE), so the kernel does not look the descriptor up and
 * take a reference on its file for each send. The slot is emptied before the stream closes the
 * descriptor (release()): the table's reference would keep the socket open.
 * Without the table (a kernel that refuses a sparse one, a descriptor
 * beyond it, a failed update) operations name the descriptor.
 *
 * Fork: the rings are memory shared with the kernel, so a child that
 * queued an SQE would change the parent's ring. reactor/io.c makes no
 * update in an inherited loop, and the streams' operations (recv, send,
 * cancel, attach, release) do nothing in one either (evr__loop_inherited): a
 * child that closes or starts a stream before evr_loop_fork() must not
 * cancel the parent's receive or empty its file table. evr_loop_fork()
 * calls reinit, which makes a new ring holding every registered node and
 * unmaps the old one without touching it; the streams then make their
 * operations again on it (evr__net_reinit).
 */
#define _GNU_SOURCE
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "reactor/internal.h"

#define UR_SQ 256u
#define UR_CQ (16u * UR_SQ)

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL 0
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN 0
#endif
/* Not IORING_SETUP_DEFER_TASKRUN: its completions are run in the wait, at
 * most 20 per wait on recent kernels (6.13+) when one event is awaited, so
 * ready descriptors beyond those were reported one or more iterations late
 * (measured: 40 of 100 ready socket pairs per iteration). Level-triggered
 * readiness needs them all. COOP_TASKRUN runs them all on each entry. */
/* Nor IORING_SETUP_SINGLE_ISSUER: a loop may run on another thread between
 * runs, and moving it to a new ring would drop the streams' operations in
 * flight, whose progress (bytes sent) is then unknown. */

/* One harvested completion (data 0 after forget()). A readiness event's
 * flags: UR_ENDED; a stream operation's: the CQE's. */
struct ur_ev {
  uint64_t data;
  int32_t res;
  uint32_t flags;
};
#define UR_ENDED 1u /* the multishot poll ended: add it again */
#define UR_READY (UINT64_C(1) << 63) /* user_data of a readiness registration */
#define UR_OPMASK UINT64_C(3)        /* an operation's kind in its user_data */
#define UR_WAKE 3u /* the kind of the wake-up read (its owner is the loop) */

/* The provided buffers of the completion path (group 0). */
struct ur_bufs {
  struct io_uring_buf_ring *br;
  size_t br_len;
  char *mem;
  size_t mem_len;
  unsigned n, size, mask;
  uint8_t *out;        /* 1: handed to a stream, not in the ring */
  int registered;      /* with the current ring */
};

/* A SENDMSG's header and vector, kept until its SQE is submitted. */
struct ur_msg {
  struct msghdr m;
  struct iovec iov[EVR__SEND_IOV];
};
#define UR_MSGS 64u

/* Per fd: the batch that last saw it and its index there (merging). */
struct ur_mark {
  uint32_t batch;
  uint32_t idx;
};

struct ur_state {
  struct io_uring ring;
  int have_ring;
  unsigned flags;       /* the ring's setup flags */
  unsigned skip;        /* IOSQE_CQE_SKIP_SUCCESS if the kernel has it */
  uint32_t gen;         /* last generation handed out */
  uint32_t batch;       /* serial of the current batch */
  int cur, n;           /* dispatch position and batch size */
  struct ur_mark *marks;
  unsigned nmarks;
  struct ur_bufs bufs;
  uint8_t *fixed;       /* fixed[fd]: slot fd of the ring's file table holds fd */
  unsigned nfixed;      /* the table's size (0: none) */
  unsigned nmsgs;       /* slots of msgs used since the last submission */
  uint64_t wakebuf;     /* the wake-up read's 8 bytes */
  struct ur_msg msgs[UR_MSGS];
  struct ur_ev events[UR_CQ];
};

/* Generations are 31 bits: bit 63 marks a readiness user_data. */
static uint64_t ud(int fd, uint32_t gen) {
  return UR_READY | (uint64_t)(uint32_t)fd | (uint64_t)gen << 32;
}

static uint32_t ud_gen(uint64_t data) { return (uint32_t)(data >> 32) & 0x7fffffffu; }

static uint64_t op_ud(void *owner, unsigned kind) {
  return (uint64_t)(uintptr_t)owner | kind;
}

static unsigned to_poll(unsigned mask) {
  unsigned e = 0;
  if (mask & EVR_READ) e |= POLLIN;
  if (mask & EVR_WRITE) e |= POLLOUT;
  return e;
}

static uint32_t next_gen(struct ur_state *st) {
  if (++st->gen > 0x7fffffffu) st->gen = 1;
  return st->gen;
}

/* A ring with the best flags the kernel accepts. 0 or -errno. */
static int ring_make(struct io_uring *r, unsigned *flags, unsigned *features) {
  static const unsigned sets[] = {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN, 0};
  int rc = -EINVAL;
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE | sets[i];
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
  /* SEND_ZC came with multishot receive (6.0), which the probe cannot
   * show; provided-buffer rings are older (5.19). */
  int ok = io_uring_opcode_supported(p, IORING_OP_POLL_ADD) &&
           io_uring_opcode_supported(p, IORING_OP_POLL_REMOVE) &&
           io_uring_opcode_supported(p, IORING_OP_ASYNC_CANCEL) &&
           io_uring_opcode_supported(p, IORING_OP_RECV) &&
           io_uring_opcode_supported(p, IORING_OP_SEND) &&
           io_uring_opcode_supported(p, IORING_OP_SENDMSG) &&
           io_uring_opcode_supported(p, IORING_OP_SEND_ZC);
  io_uring_free_probe(p);
  return ok ? 0 : -ENOTSUP;
}

static int ur_init(evr_loop_t *loop) {
  struct ur_state *st = malloc(sizeof *st);
  if (!st) return EVR_ENOMEM;
  memset(st, 0, sizeof *st);
  loop->backend_state = st;
  unsigned features;
  int rc = ring_make(&st->ring, &st->flags, &features);
  if (rc) return rc;
  st->have_ring = 1;
  rc = ring_check(&st->ring, features);
  if (rc) return rc;
  st->skip = (features & IORING_FEAT_CQE_SKIP) ? IOSQE_CQE_SKIP_SUCCESS : 0;
  return 0;
}

static void ur_destroy(evr_loop_t *loop) {
  struct ur_state *st = loop->backend_state;
  if (!st) return;
  /* Unmaps and closes: never writes to the rings (safe in a forked child). */
  if (st->have_ring) io_uring_queue_exit(&st->ring);
  if (st->bufs.br) munmap(st->bufs.br, st->bufs.br_len);
  if (st->bufs.mem) munmap(st->bufs.mem, st->bufs.mem_len);
  free(st->bufs.out);
  free(st->fixed);
  free(st->marks);
  free(st);
  loop->backend_state = NULL;
}

/* After a submission: the SENDMSG slots are free once the SQ is empty. */
static void submitted(struct ur_state *st) {
  if (io_uring_sq_ready(&st->ring) == 0) st->nmsgs = 0;
}

/* Submit what is queued now. 0 or -errno. */
static int submit_now(struct ur_state *st) {
  int rc;
  do
    rc = io_uring_submit(&st->ring);
  while (rc == -EINTR);
  submitted(st);
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

/* The loop's wake-up channel, when it is an eventfd, is read by a read
 * request on the ring instead of a poll: its completion is the wake-up,
 * with the counter consumed, and no read() follows. */
static int is_wake(const evr_loop_t *loop, const struct evr__ionode *n) {
  return n->kind == EVR__IO_WAKE && loop->wake_rfd == loop->wake_wfd;
}

static int queue_wake_read(evr_loop_t *loop, struct ur_state *st, int fd) {
  int err = 0;
  struct io_uring_sqe *sqe = sqe_get(st, &err);
  if (!sqe) return err;
  io_uring_prep_read(sqe, fd, &st->wakebuf, sizeof st->wakebuf, 0);
  io_uring_sqe_set_data64(sqe, op_ud(loop, UR_WAKE));
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

static int ur_update(evr_loop_t *loop, struct evr__ionode *n, unsigned old_mask,
                     unsigned new_mask) {
  struct ur_state *st = loop->backend_state;
  /* Room for two SQEs is made now, so that a failure changes nothing. */
  if (io_uring_sq_space_left(&st->ring) < 2) {
    int rc = submit_now(st);
    if (rc) return rc;
  }
  if (is_wake(loop, n)) {
    if (old_mask && new_mask) return 0; /* a read either way */
    if (new_mask) return queue_wake_read(loop, st, n->fd);
    int rc = queue_remove(st, op_ud(loop, UR_WAKE));
    if (rc) return rc;
  } else if (old_mask) {
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
  submitted(st);
  return rc < 0 ? rc : 0;
}

static void ur_forget(evr_loop_t *loop, int fd) {
  struct ur_state *st = loop->backend_state;
  for (int i = st->cur + 1; i < st->n; i++)
    if ((st->events[i].data & UR_READY) && (int)(uint32_t)st->events[i].data == fd)
      st->events[i].data = 0;
}

/* ---- the completion path ---- */

/* Put every buffer that no stream holds into the ring (a new ring, or the
 * first registration), and register it with the current io_uring. */
static int bufs_register(struct ur_state *st) {
  struct ur_bufs *b = &st->bufs;
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)b->br;
  reg.ring_entries = b->n;
  reg.bgid = 0;
  int rc = io_uring_register_buf_ring(&st->ring, &reg, 0);
  if (rc < 0) return rc;
  io_uring_buf_ring_init(b->br);
  int added = 0;
  for (unsigned i = 0; i < b->n; i++) {
    if (b->out[i]) continue;
    io_uring_buf_ring_add(b->br, b->mem + (size_t)i * b->size, b->size,
                          (unsigned short)i, b->mask, added++);
  }
  io_uring_buf_ring_advance(b->br, added);
  b->registered = 1;
  /* The file table (see the top of the file), with the buffers; a ring
   * that refuses it (before 5.19) goes without. */
  if (st->nfixed && io_uring_register_files_sparse(&st->ring, st->nfixed) != 0) st->nfixed = 0;
  return 0;
}

/* The size of the file table: the descriptors the process may have, up to
 * UR_FIXED_MAX (8 bytes of kernel memory per slot). */
#define UR_FIXED_MAX 16384u
static unsigned fixed_size(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > UR_FIXED_MAX) return UR_FIXED_MAX;
  return (unsigned)rl.rlim_cur;
}

/* The slot of fd's file (see attach), or -1: name fd itself. */
static int fixed_slot(const struct ur_state *st, int fd) {
  return fd >= 0 && (unsigned)fd < st->nfixed && st->fixed[fd] ? fd : -1;
}

static int bufs_get(evr_loop_t *loop);

/* A stream's socket: its file goes into slot fd, replacing whatever the
 * slot held (a file left there by a failed release). */
static int ur_attach(evr_loop_t *loop, int fd) {
  struct ur_state *st = loop->backend_state;
  if (evr__loop_inherited(loop)) return -EAGAIN; /* attached again after the fork */
  int rc = bufs_get(loop); /* the table is made with the buffer ring */
  if (rc) return rc;
  if (fd < 0 || (unsigned)fd >= st->nfixed) return -ENOSPC;
  st->fixed[fd] = 0;
  rc = io_uring_register_files_update(&st->ring, (unsigned)fd, &fd, 1);
  if (rc != 1) return rc < 0 ? rc : -EIO;
  st->fixed[fd] = 1;
  return 0;
}

/* The stream is done with fd: empty its slot before the descriptor closes. */
static void ur_release(evr_loop_t *loop, int fd) {
  struct ur_state *st = loop->backend_state;
  if (evr__loop_inherited(loop) || fixed_slot(st, fd) < 0) return;
  int none = -1;
  /* A failure (none is expected) leaves the socket open until the slot is
   * used again; the operations of this number name the descriptor
   * meanwhile, and the next attach replaces the file. */
  (void)io_uring_register_files_update(&st->ring, (unsigned)fd, &none, 1);
  st->fixed[fd] = 0;
}

/* The buffer ring, made on the first receive. 0 or -errno. */
static int bufs_get(evr_loop_t *loop) {
  struct ur_state *st = loop->backend_state;
  struct ur_bufs *b = &st->bufs;
  if (b->registered) return 0;
  if (!b->mem) {
    b->n = loop->io_buffers;
    b->size = loop->io_buffer_size;
    b->mask = b->n - 1;
    b->br_len = (size_t)b->n * sizeof(struct io_uring_buf);
    b->mem_len = (size_t)b->n * b->size;
    b->out = calloc(b->n, 1);
    if (b->out && !st->fixed) {
      unsigned n = fixed_size();
      st->fixed = calloc(n, 1);
      st->nfixed = st->fixed ? n : 0;
    }
    void *br = mmap(NULL, b->br_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *mem = mmap(NULL, b->mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!b->out || br == MAP_FAILED || mem == MAP_FAILED) {
      if (br != MAP_FAILED) munmap(br, b->br_len);
      if (mem != MAP_FAILED) munmap(mem, b->mem_len);
      free(b->out);
      memset(b, 0, sizeof *b);
      return EVR_ENOMEM;
    }
    b->br = br;
    b->mem = mem;
  }
  return bufs_register(st);
}

static int ur_recv(evr_loop_t *loop, int fd, void *owner) {
  struct ur_state *st = loop->backend_state;
  if (evr__loop_inherited(loop)) return 0; /* made on the child's ring by the fork */
  int rc = bufs_get(loop);
  if (rc) return rc;
  int slot = fixed_slot(st, fd);
  struct io_uring_sqe *sqe = sqe_get(st, &rc);
  if (!sqe) return rc;
  io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0); /* the slot is fd's number */
  io_uring_sqe_set_flags(sqe, IOSQE_BUFFER_SELECT | (slot >= 0 ? IOSQE_FIXED_FILE : 0));
  sqe->buf_group = 0;
  io_uring_sqe_set_data64(sqe, op_ud(owner, EVR__OP_RECV));
  return 0;
}

static int ur_send(evr_loop_t *loop, int fd, const struct iovec *iov, int n,
                   void *owner) {
  struct ur_state *st = loop->backend_state;
  if (n < 1 || n > EVR__SEND_IOV) return -EINVAL;
  if (evr__loop_inherited(loop)) return 0; /* made on the child's ring by the fork */
  int rc = 0;
  if (n > 1 && st->nmsgs == UR_MSGS) {
    rc = submit_now(st); /* frees the slots */
    if (rc) return rc;
    if (st->nmsgs == UR_MSGS) return -EBUSY;
  }
  struct io_uring_sqe *sqe = sqe_get(st, &rc);
  if (!sqe) return rc;
  int slot = fixed_slot(st, fd);
  if (n == 1) {
    io_uring_prep_send(sqe, fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
  } else {
    struct ur_msg *m = &st->msgs[st->nmsgs++];
    memset(&m->m, 0, sizeof m->m);
    memcpy(m->iov, iov, (size_t)n * sizeof *iov);
    m->m.msg_iov = m->iov;
    m->m.msg_iovlen = (size_t)n;
    io_uring_prep_sendmsg(sqe, fd, &m->m, MSG_NOSIGNAL);
  }
  if (slot >= 0) io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
  io_uring_sqe_set_data64(sqe, op_ud(owner, EVR__OP_SEND));
  return 0;
}

static int ur_cancel(evr_loop_t *loop, void *owner, unsigned kind, int now) {
  struct ur_state *st = loop->backend_state;
  if (evr__loop_inherited(loop)) return 0; /* the parent's operation: not ours to end */
  int rc = queue_remove(st, op_ud(owner, kind));
  if (rc || !now) return rc;
  /* GETEVENTS: the completions (which drop the file) run as task work of
   * this call; they are harvested by the next poll. */
  do
    rc = io_uring_submit_and_get_events(&st->ring);
  while (rc == -EINTR);
  submitted(st);
  return rc < 0 ? rc : 0;
}

static void ur_buf_put(evr_loop_t *loop, unsigned bid) {
  struct ur_bufs *b = &((struct ur_state *)loop->backend_state)->bufs;
  assert(bid < b->n && b->out[bid]);
  b->out[bid] = 0;
  io_uring_buf_ring_add(b->br, b->mem + (size_t)bid * b->size, b->size,
                        (unsigned short)bid, b->mask, 0);
  io_uring_buf_ring_advance(b->br, 1);
}

static unsigned ur_bufs(evr_loop_t *loop, unsigned *size) {
  struct ur_bufs *b = &((struct ur_state *)loop->backend_state)->bufs;
  if (size) *size = b->size;
  return b->mem ? b->n : 0;
}

/* Hand a stream operation's completion to its stream. */
static void op_done(evr_loop_t *loop, const struct ur_ev *e) {
  struct ur_state *st = loop->backend_state;
  struct ur_bufs *b = &st->bufs;
  if ((e->data & UR_OPMASK) == UR_WAKE) {
    if (e->res == -ECANCELED) return; /* the channel's watch was removed */
    /* Read again while the channel is watched; a failed read (none is
     * expected) leaves the wake-up to the next one. */
    if (loop->wake_node.registered && loop->wake_rfd >= 0)
      (void)queue_wake_read(loop, st, loop->wake_rfd);
    if (e->res > 0) evr__wake_dispatch(loop);
    return;
  }
  unsigned flags = (e->flags & IORING_CQE_F_MORE) ? EVR__OPF_MORE : 0;
  unsigned bid = 0;
  char *buf = NULL;
  if (e->flags & IORING_CQE_F_BUFFER) {
    bid = e->flags >> IORING_CQE_BUFFER_SHIFT;
    if (bid < b->n) {
      b->out[bid] = 1;
      buf = b->mem + (size_t)bid * b->size;
      flags |= EVR__OPF_BUF;
    }
  }
  evr__stream_done((void *)(uintptr_t)(e->data & ~UR_OPMASK),
                   (unsigned)(e->data & UR_OPMASK), e->res, flags, bid, buf);
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
    if (data == 0) continue; /* an internal SQE's failure */
    if (!(data & UR_READY)) { /* a stream operation's */
      st->events[n++] = (struct ur_ev){data, cqe->res, cqe->flags};
      continue;
    }
    int fd = (int)(uint32_t)data;
    /* Stale (a removed or replaced registration), or a failed poll (the
     * descriptor was closed under its watcher: adding it again would fail
     * again): nothing to report. */
    struct evr__ionode *io = evr__io_lookup(loop, fd);
    if (!io || !io->registered || io->backend_slot != ud_gen(data) || cqe->res < 0)
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
  submitted(st);
  if (rc == -EINTR) return 1;
  if (rc >= 0 || rc == -ETIME || rc == -EBUSY || rc == -EAGAIN) return 0;
  return rc;
}

static int ur_poll(evr_loop_t *loop, int64_t timeout_ns) {
  struct ur_state *st = loop->backend_state;
  int rc;
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
      submitted(st);
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
    if (!(e->data & UR_READY)) {
      events++;
      op_done(loop, e);
      continue;
    }
    int fd = (int)(uint32_t)e->data;
    uint32_t gen = ud_gen(e->data);
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

/* A forked child shares the parent's ring: make a private one, holding
 * every registered node under a new generation; the old ring is unmapped
 * and closed without a write to it. 0, or the error that kept the new ring
 * from being made (the old one is then kept). */
static int ur_reinit(evr_loop_t *loop) {
  struct ur_state *st = loop->backend_state;
  struct io_uring r;
  unsigned flags, features;
  int rc = ring_make(&r, &flags, &features);
  if (rc) return rc;
  struct io_uring old = st->ring;
  st->ring = r;
  st->flags = flags;
  st->skip = (features & IORING_FEAT_CQE_SKIP) ? IOSQE_CQE_SKIP_SUCCESS : 0;
  for (unsigned i = 0; i < loop->nfds; i++) {
    struct evr__ionode *io = loop->fds[i];
    if (!io || !io->registered) continue;
    /* Not the wake-up channel: in a child it is the parent's eventfd, and
     * a read would take the parent's wake-ups. evr_loop_fork() makes a new
     * channel right after this, and registers it. */
    if (is_wake(loop, io)) continue;
    uint32_t gen = next_gen(st);
    if (queue_add(st, io->fd, io->registered, gen) == 0) io->backend_slot = gen;
  }
  io_uring_queue_exit(&old);
  /* The stream operations were the old ring's: the streams make them
   * again (evr__net_reinit). The buffer ring goes to the new ring, with the
   * buffers no stream holds. */
  st->nmsgs = 0;
  st->bufs.registered = 0;
  /* The new ring's table is empty: the streams put their sockets in again. */
  if (st->fixed) memset(st->fixed, 0, st->nfixed);
  if (st->bufs.mem && bufs_register(st) != 0) {
    /* Kept unregistered: the next receive tries again. */
    st->bufs.registered = 0;
  }
  /* Harvested events of the old ring now carry old generations. */
  return 0;
}

const evr__backend_t evr__backend_io_uring = {
    .name = "io_uring",
    .caps = EVR__CAP_BATCH | EVR__CAP_REINIT_AFTER_FORK | EVR__CAP_COMPLETION,
    .init = ur_init,
    .destroy = ur_destroy,
    .update = ur_update,
    .poll = ur_poll,
    .forget = ur_forget,
    .reinit = ur_reinit,
    .recv = ur_recv,
    .send = ur_send,
    .cancel = ur_cancel,
    .buf_put = ur_buf_put,
    .attach = ur_attach,
    .release = ur_release,
    .bufs = ur_bufs,
};
