/* samples/health.c: active health checks (health.h).
 *
 * Each target owns one stream, one write request, one timer and (with an
 * expect string) a reply buffer, all allocated by health_new(). A target
 * is in one phase at a time: IDLE (the timer waits for the next check),
 * CONNECTING or TALKING (the timer is the check's deadline), or CLOSING
 * (the stream's close callback is due; it schedules the next check). A
 * check's result is recorded once (`done`); callbacks that arrive after it
 * (EVR_ECANCELED from the close) are ignored. The checker counts the close
 * callbacks it waits for, so health_free() frees only after the last.
 */
#define _GNU_SOURCE
#include "health.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_INTERVAL_MS 2000u
#define DEFAULT_RISE 2u
#define DEFAULT_FALL 3u
#define MAX_MS (24u * 24u * 3600u * 1000u) /* 24 days: well inside the wheel */

enum { IDLE, CONNECTING, TALKING, CLOSING };

struct health_target {
  health_checker_t *hc;
  size_t index;
  evr_addr_t addr;
  void *data;
  evr_stream_t s;
  evr_write_t wreq;
  evr_timer_t timer;
  int phase;
  int done;             /* this check's result is recorded */
  int connected;        /* this check's connect succeeded */
  uint64_t start_ns;    /* when this check began (evr_now_ns) */
  char *reply;          /* HEALTH_REPLY_MAX bytes, with an expect string */
  size_t rlen;
  unsigned passes, fails; /* consecutive */
  int confirmed;        /* a check has passed since the start */
  atomic_int up;
  _Atomic uint64_t checks, failures, changes, last_ns, reported;
  char reason[96];
};

struct health_checker {
  evr_loop_t *loop;
  health_options_t opt;   /* send and expect point into strings below */
  char *send, *expect;
  size_t n;
  health_target_t *t;
  int started, stopping;
  unsigned nclosing;      /* stream close callbacks still due */
  evr_defer_t final;      /* frees the checker, then done(arg) */
  void (*done)(void *arg);
  void *done_arg;
};

static uint64_t load(const _Atomic uint64_t *v) {
  return atomic_load_explicit(v, memory_order_relaxed);
}
static void add(_Atomic uint64_t *v, uint64_t n) {
  atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

/* ---- results and states ---- */

static void set_state(health_target_t *t, int up, const char *reason) {
  atomic_store_explicit(&t->up, up, memory_order_relaxed);
  add(&t->changes, 1);
  health_checker_t *hc = t->hc;
  if (hc->opt.on_change) hc->opt.on_change(t, up, reason, hc->opt.arg);
}

static void record_failure(health_target_t *t, const char *reason) {
  add(&t->failures, 1);
  snprintf(t->reason, sizeof t->reason, "%s", reason);
  t->passes = 0;
  if (t->fails < UINT32_MAX) t->fails++;
  if (atomic_load_explicit(&t->up, memory_order_relaxed) &&
      t->fails >= (t->confirmed ? t->hc->opt.fall : 1u))
    set_state(t, 0, t->reason);
}

static void record_pass(health_target_t *t) {
  t->fails = 0;
  t->confirmed = 1;
  if (t->passes < UINT32_MAX) t->passes++;
  if (!atomic_load_explicit(&t->up, memory_order_relaxed) && t->passes >= t->hc->opt.rise)
    set_state(t, 1, "check passed");
}

/* ---- one check ---- */

static void on_timer(evr_timer_t *timer);
static void on_closed(evr_handle_t *h);

/* The check is over: record it (unless the checker is being freed), close
 * the connection (a reset once connected), wait for the close callback. */
static void end_check(health_target_t *t, int ok, const char *reason) {
  if (t->done) return;
  t->done = 1;
  health_checker_t *hc = t->hc;
  evr_timer_stop(&t->timer);
  t->phase = CLOSING;
  hc->nclosing++;
  if (t->connected)
    evr_stream_abort(&t->s, on_closed);
  else
    evr_close(&t->s.base, on_closed);
  if (hc->stopping) return;
  add(&t->checks, 1);
  atomic_store_explicit(&t->last_ns, evr_now_ns(hc->loop) - t->start_ns,
                        memory_order_relaxed);
  if (ok)
    record_pass(t);
  else
    record_failure(t, reason);
}

static void fail_err(health_target_t *t, const char *what, int status) {
  char why[96];
  snprintf(why, sizeof why, "%s: %s", what, evr_strerror(status));
  end_check(t, 0, why);
}

static void finalize(evr_defer_t *task) {
  health_checker_t *hc = task->data;
  void (*done)(void *) = hc->done;
  void *arg = hc->done_arg;
  for (size_t i = 0; i < hc->n; i++) free(hc->t[i].reply);
  free(hc->t);
  free(hc->send);
  free(hc->expect);
  free(hc);
  if (done) done(arg);
}

static void on_closed(evr_handle_t *h) {
  health_target_t *t = h->data;
  health_checker_t *hc = t->hc;
  hc->nclosing--;
  t->phase = IDLE;
  if (hc->stopping) {
    if (hc->nclosing == 0) evr_defer(hc->loop, &hc->final, finalize);
    return;
  }
  /* Next check: one interval after this one began, or at once. */
  uint64_t now = evr_now_ns(hc->loop), due = t->start_ns + hc->opt.interval_ms * 1000000ull;
  uint64_t delay = due > now ? (due - now + 999999u) / 1000000u : 0;
  evr_timer_start(&t->timer, on_timer, delay, 0);
}

/* The expected bytes in the reply so far? */
static int reply_matches(const health_target_t *t) {
  const health_options_t *o = &t->hc->opt;
  if (t->rlen < o->expect_len) return 0;
  for (size_t i = 0; i + o->expect_len <= t->rlen; i++)
    if (t->reply[i] == o->expect[0] && memcmp(t->reply + i, o->expect, o->expect_len) == 0)
      return 1;
  return 0;
}

static void on_read(evr_stream_t *s, ssize_t nread, const char *buf) {
  health_target_t *t = s->base.data;
  if (t->done) return;
  if (nread == EVR_EOF) {
    end_check(t, 0, t->rlen ? "unexpected reply" : "closed without reply");
    return;
  }
  if (nread < 0) {
    fail_err(t, "read", (int)nread);
    return;
  }
  size_t n = (size_t)nread, room = HEALTH_REPLY_MAX - t->rlen;
  if (n > room) n = room;
  memcpy(t->reply + t->rlen, buf, n);
  t->rlen += n;
  if (reply_matches(t))
    end_check(t, 1, NULL);
  else if (t->rlen == HEALTH_REPLY_MAX)
    end_check(t, 0, "unexpected reply");
}

static void on_write(evr_write_t *req, int status) {
  health_target_t *t = req->data;
  if (t->done) return;
  if (status) {
    fail_err(t, "send", status);
    return;
  }
  if (!t->hc->opt.expect) end_check(t, 1, NULL);
}

static void on_connect(evr_stream_t *s, int status) {
  health_target_t *t = s->base.data;
  if (t->done) return;
  if (status) {
    fail_err(t, "connect", status);
    return;
  }
  t->connected = 1;
  t->phase = TALKING;
  const health_options_t *o = &t->hc->opt;
  if (o->expect) {
    int rc = evr_stream_read_start(&t->s, on_read);
    if (rc) {
      fail_err(t, "read", rc);
      return;
    }
  }
  if (o->send) {
    evr_buf_t b = {o->send, o->send_len};
    int rc = evr_stream_write(&t->wreq, &t->s, &b, 1, on_write);
    if (rc) fail_err(t, "send", rc);
    return;
  }
  if (!o->expect) end_check(t, 1, NULL);
}

static void begin_check(health_target_t *t) {
  health_checker_t *hc = t->hc;
  t->start_ns = evr_now_ns(hc->loop);
  t->done = 0;
  t->connected = 0;
  t->rlen = 0;
  /* Passive reports since the last check count first. */
  uint64_t reported = atomic_exchange_explicit(&t->reported, 0, memory_order_relaxed);
  for (; reported > 0 && !hc->stopping; reported--) record_failure(t, "failure reported");
  if (hc->stopping) return; /* a change callback freed the checker */
  int rc = evr_stream_init(hc->loop, &t->s);
  if (rc) {
    /* No stream to close: count it and try again next interval. */
    add(&t->checks, 1);
    char why[96];
    snprintf(why, sizeof why, "connect: %s", evr_strerror(rc));
    record_failure(t, why);
    if (!hc->stopping) evr_timer_start(&t->timer, on_timer, hc->opt.interval_ms, 0);
    return;
  }
  t->s.base.data = t;
  t->phase = CONNECTING;
  rc = evr_stream_connect(&t->s, &t->addr, 0, on_connect);
  if (rc) {
    fail_err(t, "connect", rc);
    return;
  }
  evr_timer_start(&t->timer, on_timer, hc->opt.timeout_ms, 0);
}

static void on_timer(evr_timer_t *timer) {
  health_target_t *t = timer->data;
  switch (t->phase) {
    case IDLE: begin_check(t); break;
    case CONNECTING: end_check(t, 0, "connect timeout"); break;
    case TALKING: end_check(t, 0, "reply timeout"); break;
    default: break;
  }
}

/* ---- the checker ---- */

static char *dup_bytes(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

int health_new(health_checker_t **out, evr_loop_t *loop, const health_options_t *opts,
               const evr_addr_t *addrs, size_t n) {
  if (!out || !loop || !opts || !addrs || n == 0) return EVR_EINVAL;
  health_options_t o = *opts;
  if (!o.interval_ms) o.interval_ms = DEFAULT_INTERVAL_MS;
  if (!o.timeout_ms) o.timeout_ms = o.interval_ms;
  if (!o.rise) o.rise = DEFAULT_RISE;
  if (!o.fall) o.fall = DEFAULT_FALL;
  if (o.interval_ms > MAX_MS || o.timeout_ms > MAX_MS) return EVR_EINVAL;
  if (o.send && !o.send_len) o.send_len = strlen(o.send);
  if (o.expect && !o.expect_len) o.expect_len = strlen(o.expect);
  if (o.expect && (o.expect_len == 0 || o.expect_len > HEALTH_REPLY_MAX)) return EVR_EINVAL;
  if (o.send && o.send_len == 0) o.send = NULL;
  health_checker_t *hc = calloc(1, sizeof *hc);
  if (!hc) return EVR_ENOMEM;
  hc->loop = loop;
  hc->n = n;
  hc->t = calloc(n, sizeof *hc->t);
  if (!hc->t) goto nomem;
  if (o.send && !(hc->send = dup_bytes(o.send, o.send_len))) goto nomem;
  if (o.expect && !(hc->expect = dup_bytes(o.expect, o.expect_len))) goto nomem;
  o.send = hc->send;
  o.expect = hc->expect;
  hc->opt = o;
  evr_defer_init(&hc->final);
  hc->final.data = hc;
  for (size_t i = 0; i < n; i++) {
    health_target_t *t = &hc->t[i];
    t->hc = hc;
    t->index = i;
    t->addr = addrs[i];
    t->wreq.data = t;
    t->timer.data = NULL;
    atomic_init(&t->up, !o.start_down);
    if (o.expect && !(t->reply = malloc(HEALTH_REPLY_MAX))) goto nomem;
    int rc = evr_timer_init(loop, &t->timer);
    if (rc) {
      for (size_t j = 0; j < n; j++) free(hc->t[j].reply);
      free(hc->t);
      free(hc->send);
      free(hc->expect);
      free(hc);
      return rc;
    }
    t->timer.data = t;
  }
  *out = hc;
  return 0;
nomem:
  if (hc->t)
    for (size_t j = 0; j < n; j++) free(hc->t[j].reply);
  free(hc->t);
  free(hc->send);
  free(hc->expect);
  free(hc);
  return EVR_ENOMEM;
}

int health_start(health_checker_t *hc) {
  if (!hc || hc->stopping) return EVR_EINVAL;
  if (hc->started) return EVR_EALREADY;
  hc->started = 1;
  for (size_t i = 0; i < hc->n; i++) {
    uint64_t offset = (uint64_t)hc->opt.interval_ms * i / hc->n;
    evr_timer_start(&hc->t[i].timer, on_timer, offset, 0);
  }
  return 0;
}

size_t health_count(const health_checker_t *hc) { return hc ? hc->n : 0; }

health_target_t *health_target(health_checker_t *hc, size_t i) {
  return hc && i < hc->n ? &hc->t[i] : NULL;
}

size_t health_target_index(const health_target_t *t) { return t->index; }
const evr_addr_t *health_target_addr(const health_target_t *t) { return &t->addr; }
void health_target_set_data(health_target_t *t, void *data) { t->data = data; }
void *health_target_data(const health_target_t *t) { return t->data; }
const char *health_target_reason(const health_target_t *t) { return t->reason; }

int health_target_checking(const health_target_t *t) { return t->phase != IDLE; }

int health_is_up(const health_target_t *t) {
  return atomic_load_explicit(&t->up, memory_order_relaxed);
}

void health_target_stats(const health_target_t *t, health_stats_t *out) {
  out->up = health_is_up(t);
  out->checks = load(&t->checks);
  out->failures = load(&t->failures);
  out->state_changes = load(&t->changes);
  out->last_duration_ns = load(&t->last_ns);
}

void health_report_failure(health_target_t *t) {
  if (t) add(&t->reported, 1);
}

int health_free(health_checker_t *hc, void (*done)(void *arg), void *arg) {
  if (!hc) return EVR_EINVAL;
  if (hc->stopping) return EVR_EALREADY;
  hc->stopping = 1;
  hc->done = done;
  hc->done_arg = arg;
  for (size_t i = 0; i < hc->n; i++) {
    health_target_t *t = &hc->t[i];
    evr_timer_stop(&t->timer);
    if (t->phase == CONNECTING || t->phase == TALKING) end_check(t, 0, NULL);
  }
  if (hc->nclosing == 0) evr_defer(hc->loop, &hc->final, finalize);
  return 0;
}
