/* samples/health.h: active health checks of evr-proxy's upstreams
 * (--check-interval MS --check-timeout MS --rise N --fall N
 *  [--check-send STR --check-expect STR]), with HAProxy's meanings.
 *
 * A checker runs on one loop and checks a fixed set of targets (addresses).
 * Every interval, for each target: a non-blocking TCP connect
 * (evr_stream_connect()), bounded by the timeout on the loop's timer wheel
 * (the timeout covers the whole check: connect, send and reply). With a
 * send string, it is written once connected; with an expect string, the
 * reply is read until the expected bytes appear within its first 4 KiB
 * (a substring match). The check connection is then closed with a
 * reset (SO_LINGER 0, as HAProxy does), so frequent checks leave no
 * TIME_WAIT sockets behind.
 *
 * A check passes when the connect succeeds, the send string (if any) is
 * handed to the kernel, and the expected bytes (if any) arrive. It fails on
 * a connect error, the timeout, a send or read error, EOF before the
 * expected bytes, or 4 KiB without them. Failure reasons (passed to the
 * change callback and kept as the target's last reason):
 *   "connect: <error>"   e.g. "connect: connection refused"
 *   "connect timeout"    the timeout passed while connecting
 *   "reply timeout"      connected, the expected bytes did not come in time
 *   "send: <error>", "read: <error>"
 *   "unexpected reply"   4 KiB, or EOF after some bytes, without a match
 *   "closed without reply"  EOF before any byte
 *   "failure reported"   a passive report (health_report_failure())
 * The reason of a change to up is "check passed".
 *
 * States. A target is up or down. An up target goes down after `fall`
 * consecutive failed checks, a down one up after `rise` consecutive passed
 * checks (a pass resets the failure count, a failure the pass count).
 * Initial state: up, as in HAProxy, but unconfirmed until its first check
 * passes: a failure before that takes it down at once. Starting up means
 * a proxy that restarts serves at once instead of refusing every client for
 * rise intervals; taking an unconfirmed target down at its first failure
 * means a target dead at start-up is found after one check, not `fall`.
 * With start_down set, targets start down and need `rise` passes.
 *
 * Checks of different targets are spread evenly over the interval (target
 * i of n first at i * interval / n), and each target's next check is due
 * one interval after its previous one began (or at once when that check
 * took longer). Everything a check needs is allocated by health_new(): no
 * allocation per check.
 *
 * Threads: everything is for the checker's loop thread, except
 * health_is_up(), health_target_stats() and health_report_failure(), which
 * any thread may call (other loops of the proxy read the states).
 */
#ifndef EVR_SAMPLES_HEALTH_H
#define EVR_SAMPLES_HEALTH_H

#include <stddef.h>
#include <stdint.h>
#include "evr/evr.h"

/* How much of a reply is searched for the expected bytes. */
#define HEALTH_REPLY_MAX 4096

typedef struct health_checker health_checker_t;
typedef struct health_target health_target_t;

/* A target changed state. Runs on the checker's loop.
 * t: the target; up: its new state (1 up, 0 down); reason: why (see
 * above), valid during the call; arg: the options' arg. The callback may
 * call health_free(). */
typedef void (*health_change_cb)(health_target_t *t, int up, const char *reason, void *arg);

/* Options of health_new(); zero-initialise, then set what you need. */
typedef struct health_options {
  unsigned interval_ms;     /* between check starts; 0: 2000 */
  unsigned timeout_ms;      /* bound of one check; 0: interval_ms */
  unsigned rise;            /* passes to go up; 0: 2 */
  unsigned fall;            /* failures to go down; 0: 3 */
  const char *send;         /* written once connected; NULL: nothing */
  size_t send_len;          /* its length; 0: strlen(send) */
  const char *expect;       /* must appear in the reply; NULL: no reply read */
  size_t expect_len;        /* its length (1..HEALTH_REPLY_MAX); 0: strlen */
  int start_down;           /* targets start down (see above) */
  health_change_cb on_change; /* may be NULL */
  void *arg;                /* passed to on_change */
} health_options_t;

/* Counters of a target (health_target_stats()). */
typedef struct health_stats {
  int up;                    /* the state now: 1 up, 0 down */
  uint64_t checks;           /* checks completed (passed or failed) */
  uint64_t failures;         /* checks failed, plus passive reports applied */
  uint64_t state_changes;    /* up -> down and down -> up */
  uint64_t last_duration_ns; /* the last completed check, start to result */
} health_stats_t;

/* Make a checker of the n targets addrs[0..n) (copied) on loop, with
 * opts (copied, with the send and expect strings). Allocates everything
 * its checks need. Nothing runs before health_start().
 * Returns 0 and *out; EVR_EINVAL (NULL argument, n == 0, an expect string
 * longer than HEALTH_REPLY_MAX, a timeout or interval above 24 days);
 * EVR_ENOMEM; the error of evr_timer_init(). */
int health_new(health_checker_t **out, evr_loop_t *loop, const health_options_t *opts,
               const evr_addr_t *addrs, size_t n);

/* Start checking (the first checks spread over the first interval).
 * Returns 0; EVR_EINVAL (NULL, or being freed); EVR_EALREADY (started). */
int health_start(health_checker_t *hc);

/* The number of targets, and target i (NULL when i is out of range). */
size_t health_count(const health_checker_t *hc);
health_target_t *health_target(health_checker_t *hc, size_t i);

/* A target's index in the checker, its address, and a pointer for the
 * caller (NULL until set). */
size_t health_target_index(const health_target_t *t);
const evr_addr_t *health_target_addr(const health_target_t *t);
void health_target_set_data(health_target_t *t, void *data);
void *health_target_data(const health_target_t *t);

/* The reason of the target's last failure ("" if none yet); loop thread. */
const char *health_target_reason(const health_target_t *t);

/* 1 while a check of the target is under way (connecting, talking, or its
 * connection closing), else 0. Loop thread. */
int health_target_checking(const health_target_t *t);

/* 1 if the target is up, else 0. Any thread. */
int health_is_up(const health_target_t *t);

/* Copy the target's counters. Any thread (each field read on its own). */
void health_target_stats(const health_target_t *t, health_stats_t *out);

/* A passive failure, seen by the daemon (e.g. a client's connect to the
 * target failed): it counts as one failed check towards `fall`, applied
 * when the target's next check begins (before it runs; a passing check
 * then resets the count as usual). Any thread. */
void health_report_failure(health_target_t *t);

/* Stop and free the checker, also in the middle of checks: timers stop at
 * once, check connections are closed (their pending connects, writes and
 * reads are cancelled and not counted), and once every close callback has
 * run the memory is freed and done(arg) runs from the loop (never inside
 * this call; done may be NULL). Any callback of the checker may call it;
 * no change callback runs after it. The loop must run for the memory to
 * be freed.
 * Returns 0; EVR_EINVAL (NULL); EVR_EALREADY (already being freed). */
int health_free(health_checker_t *hc, void (*done)(void *arg), void *arg);

#endif
