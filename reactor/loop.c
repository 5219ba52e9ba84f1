/* reactor/loop.c: loop creation, backend selection and the run phases.
 *
 * One iteration: time update, timers, prepare hooks, poll + I/O callbacks,
 * deferred tasks, check hooks, close callbacks (docs/loop.md). The poll phase
 * never blocks while deferred tasks, close callbacks or a stop are pending.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "reactor/internal.h"

/* The environment is ignored in setuid/setgid processes: a backend choice
 * must not be steerable by an unprivileged caller. secure_getenv() (glibc,
 * musl, FreeBSD 14) and issetugid() (the BSDs, macOS, musl) also cover
 * privileges gained through file capabilities or a MAC policy; the last
 * resort sees only set-user-ID and set-group-ID. */
static const char *env_backend(void) {
#if EVR_HAVE_SECURE_GETENV
  return secure_getenv("EVR_BACKEND");
#elif EVR_HAVE_ISSETUGID
  if (issetugid()) return NULL;
  return getenv("EVR_BACKEND");
#else
  if (getuid() != geteuid() || getgid() != getegid()) return NULL;
  return getenv("EVR_BACKEND");
#endif
}

static int loop_try_backend(evr_loop_t *loop, const evr__backend_t *b) {
  loop->backend = b;
  loop->backend_state = NULL;
  int rc = b->init(loop);
  if (rc) {
    b->destroy(loop);
    loop->backend = NULL;
    loop->backend_state = NULL;
  }
  return rc;
}

int evr_loop_new(evr_loop_t **out, const evr_loop_options_t *opts) {
  if (!out) return EVR_EINVAL;
  unsigned flags = opts ? opts->flags : 0;
  if (flags & ~EVR_LOOP_IGNORE_ENV) return EVR_EINVAL;
  unsigned nbufs = opts ? opts->io_buffers : 0;
  unsigned bufsize = opts ? opts->io_buffer_size : 0;
  if (nbufs && (nbufs > 32768 || (nbufs & (nbufs - 1)))) return EVR_EINVAL;
  if (bufsize && (bufsize < 1024 || bufsize > (1u << 24))) return EVR_EINVAL;
  const char *want = opts ? opts->backend : NULL;
  if (!want && !(flags & EVR_LOOP_IGNORE_ENV)) {
    want = env_backend();
    if (want && !*want) want = NULL;
  }

  evr_loop_t *loop = calloc(1, sizeof *loop);
  if (!loop) return EVR_ENOMEM;
  evr__list_init(&loop->handles);
  evr__list_init(&loop->closing);
  evr__list_init(&loop->prepare_hooks);
  evr__list_init(&loop->check_hooks);
  evr__list_init(&loop->deferred);
  loop->io_buffers = nbufs ? nbufs : 512;
  loop->io_buffer_size = bufsize ? bufsize : 8192;
  evr_update_time(loop);
  loop->fork_gen = atomic_load(&evr__fork_gen);

  int rc;
  if (want) {
    /* An explicit choice never falls back: a test must not pass silently
     * on the wrong backend. */
    const evr__backend_t *b = evr__backend_find(want);
    rc = b ? loop_try_backend(loop, b) : EVR_ENOTSUP;
    if (rc) rc = EVR_ENOTSUP;
  } else {
    rc = EVR_ENOTSUP;
    for (size_t i = 0; evr__backend_table[i]; i++) {
      rc = loop_try_backend(loop, evr__backend_table[i]);
      if (rc == 0) break;
    }
  }
  if (rc) goto fail_loop;
  rc = evr__timers_init(loop);
  if (rc) goto fail_backend;
  /* Registers the wake-up watcher: may grow the fd map. */
  rc = evr__async_loop_init(loop);
  if (rc) goto fail_timers;
  *out = loop;
  return 0;

fail_timers:
  evr__timers_destroy(loop);
fail_backend:
  loop->backend->destroy(loop);
  evr__io_free_map(loop);
fail_loop:
  free(loop);
  return rc;
}

int evr_loop_free(evr_loop_t *loop) {
  if (!loop) return EVR_EINVAL;
  if (loop->running || !evr__list_empty(&loop->handles) ||
      !evr__list_empty(&loop->closing) || !evr__list_empty(&loop->deferred) ||
      loop->active_reqs || evr__post_pending(loop) || evr__timers_pending(loop))
    return EVR_EBUSY;
  evr__async_loop_destroy(loop);
  evr__timers_destroy(loop);
  loop->backend->destroy(loop);
  evr__io_free_map(loop);
  evr__net_free(loop);
  free(loop);
  return 0;
}

const char *evr_loop_backend(const evr_loop_t *loop) {
  return loop ? loop->backend->name : NULL;
}

int evr_loop_alive(const evr_loop_t *loop) {
  if (!loop) return 0;
  return loop->active_refs > 0 || loop->active_reqs > 0 ||
         !evr__list_empty(&loop->deferred) || !evr__list_empty(&loop->closing) ||
         evr__post_pending(loop);
}

void evr_loop_stop(evr_loop_t *loop) {
  if (!loop) return;
  loop->stop_flag = 1;
  /* From another thread the loop may be blocked in poll: wake it. */
  evr__wake(loop);
}

int evr_loop_metrics(const evr_loop_t *loop, evr_loop_metrics_t *out) {
  if (!loop || !out) return EVR_EINVAL;
  *out = loop->metrics;
  return 0;
}

/* Nanoseconds the poll phase may block: -1 for no limit. */
static int64_t poll_timeout(evr_loop_t *loop, evr_run_mode_t mode) {
  if (mode == EVR_RUN_NOWAIT || loop->stop_flag) return 0;
  if (!evr__list_empty(&loop->deferred) || !evr__list_empty(&loop->closing))
    return 0;
  if (loop->active_refs == 0 && loop->active_reqs == 0) return 0;
  return evr__timers_next_timeout(loop);
}

/* The backend waits at most timeout_ns (never less: see reactor/backend.h). */
static int loop_poll(evr_loop_t *loop, int64_t timeout_ns) {
  if (loop->nlinger) evr__io_flush(loop);
  if (timeout_ns == 0) return loop->backend->poll(loop, 0);
  uint64_t t0 = evr__hrtime();
  int rc = loop->backend->poll(loop, timeout_ns);
  loop->metrics.idle_ns += evr__hrtime() - t0;
  /* The wait may have been long: I/O callbacks see the time they run at. */
  evr_update_time(loop);
  return rc;
}

int evr_loop_run(evr_loop_t *loop, evr_run_mode_t mode) {
  if (!loop) return EVR_EINVAL;
  if (mode != EVR_RUN_DEFAULT && mode != EVR_RUN_ONCE &&
      mode != EVR_RUN_NOWAIT)
    return EVR_EINVAL;
  if (loop->running) return EVR_EBUSY;
  if (evr__loop_inherited(loop)) {
    /* A forked child that did not call evr_loop_fork(): it must not poll
     * the parent's set. */
    int rc = evr_loop_fork(loop);
    if (rc) return rc;
  }
  loop->running = 1;

  int alive = evr_loop_alive(loop);
  if (!alive) evr_update_time(loop);
  int rc = 0;
  while (alive && !loop->stop_flag) {
    evr_update_time(loop);
    evr__timers_run(loop);
    evr__hooks_run(loop, &loop->prepare_hooks);
    if (loop->net && (loop->backend->caps & EVR__CAP_COMPLETION)) evr__net_flush(loop);
    rc = loop_poll(loop, poll_timeout(loop, mode));
    if (rc < 0) break;
    rc = 0;
    evr__defer_run(loop);
    evr__hooks_run(loop, &loop->check_hooks);
    evr__run_closing(loop);
    loop->metrics.iterations++;
    if (mode == EVR_RUN_ONCE) {
      /* A ONCE run that blocked until a timer was due should run it: that is
       * the progress the caller waited for. */
      evr_update_time(loop);
      evr__timers_run(loop);
    }
    alive = evr_loop_alive(loop);
    if (mode != EVR_RUN_DEFAULT) break;
  }
  loop->stop_flag = 0;
  loop->running = 0;
  return rc < 0 ? rc : alive;
}
