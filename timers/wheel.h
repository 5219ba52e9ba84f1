/* timers/wheel.h: hierarchical timer wheel, a pure data structure.
 *
 * The wheel knows nothing of loops or clocks: time is a uint64_t count of
 * milliseconds handed in by the caller, and nodes are caller-owned
 * (struct evr__wnode, embedded in evr_timer_t), so nothing here allocates.
 *
 * Layout: 6 levels of 64 slots. A node due at `due` is filed, relative to the
 * wheel's position `pos` (its time `now` except while expired nodes are being
 * collected), at the level of the highest 6-bit group in which `due` and
 * `pos` differ, in the slot given by due's bits of that group. Level 0
 * slots are single milliseconds, level 5 slots span 2^30 ms; anything that
 * differs from `pos` above bit 35 (more than ~2.2 years away) waits in an
 * overflow list. A 64-bit occupancy mask per level finds the earliest slot
 * with one ctz per level. See docs/timers.md for the invariants.
 *
 * Contract:
 *  - evr__wheel_advance(w, t) moves time to t. Every node started before the
 *    call with due <= t becomes available to evr__wheel_pop(), in (due, start
 *    order) order. A node (re)started after the call with due <= t is kept
 *    for the next advance, so expiry processing can never loop forever.
 *  - A node never expires before its due time, and always expires at the
 *    first advance to a time >= its due time.
 *  - Restarting a filed node to a later due time only rewrites the node; it
 *    is re-filed when the wheel reaches its old slot (lazy re-filing).
 *  - The expired nodes are collected lazily: evr__wheel_advance() only sets
 *    the target, and evr__wheel_pop() processes the next slot when it has
 *    nothing ready, so each batch of callbacks runs while its nodes are
 *    still in the CPU cache. Changes made between pops follow the contract
 *    above as if everything had been collected at once.
 *  - Times must stay below 2^63 (about 292 million years of milliseconds).
 */
#ifndef EVR_TIMERS_WHEEL_H
#define EVR_TIMERS_WHEEL_H

#include <stddef.h>
#include <stdint.h>
#include "evr/timer.h"
#include "reactor/list.h"

#define EVR__WHEEL_BITS 6
#define EVR__WHEEL_SLOTS 64
#define EVR__WHEEL_LEVELS 6
/* Nodes whose due time differs from now above this many bits overflow. */
#define EVR__WHEEL_SPAN_BITS (EVR__WHEEL_BITS * EVR__WHEEL_LEVELS)

/* Values of evr__wnode.where. Slots are numbered level * 64 + slot. */
#define EVR__WN_OVERFLOW (EVR__WHEEL_LEVELS * EVR__WHEEL_SLOTS)
#define EVR__WN_READY (EVR__WN_OVERFLOW + 1) /* expired, waiting for pop */
#define EVR__WN_LATE (EVR__WN_OVERFLOW + 2)  /* started already due */
#define EVR__WN_IDLE 0xffffu                  /* not in the wheel */

struct evr__wheel {
  uint64_t now;        /* time of the last advance, ms */
  uint64_t pos;        /* how far slots are processed (<= now): slots are
                          filed relative to it; evr__wheel_pop() moves it up
                          to now one slot at a time */
  uint64_t seq;        /* next start sequence number */
  uint64_t next;       /* cached evr__wheel_next() while next_valid */
  int next_valid;
  size_t count;        /* nodes in the wheel (any list) */
  uint64_t occupied[EVR__WHEEL_LEVELS]; /* bit s: slots[level][s] non-empty */
  evr__list_t slots[EVR__WHEEL_LEVELS][EVR__WHEEL_SLOTS];
  evr__list_t overflow;
  uint64_t overflow_min; /* lower bound of the due times in overflow */
  evr__list_t ready;   /* expired by the last advance, sorted (due, seq) */
  evr__list_t late;    /* started with due <= now, sorted (due, seq) */
};

void evr__wheel_init(struct evr__wheel *w, uint64_t now);

/* Make a node idle (not in any wheel). Call once before first use. */
static inline void evr__wnode_init(struct evr__wnode *n) {
  evr__list_init(&n->link);
  n->due = 0;
  n->seq = 0;
  n->where = EVR__WN_IDLE;
}

static inline int evr__wnode_pending(const struct evr__wnode *n) {
  return n->where != EVR__WN_IDLE;
}

void evr__wheel_add_slow(struct evr__wheel *w, struct evr__wnode *n,
                         uint64_t due);

/* Start n, due at `due`, or restart it if it is pending. O(1). Restarting a
 * node that sits in a slot or the overflow list to a due time no earlier
 * than its current one just rewrites the node: the slot it sits in starts
 * no later than the new due time, so the wheel meets the node again before
 * it is due and files it then. */
static inline void evr__wheel_add(struct evr__wheel *w, struct evr__wnode *n,
                                  uint64_t due) {
  if (n->where <= EVR__WN_OVERFLOW && due >= n->due && due > w->now) {
    n->due = due;
    n->seq = w->seq++;
    return;
  }
  evr__wheel_add_slow(w, n, due);
}

void evr__wheel_refile(struct evr__wheel *w, struct evr__wnode *n,
                       uint64_t due);

/* Move a pending node's due time to `due` without making it a new start: it
 * keeps its seq, so its place among equal due times stays that of its
 * start. O(1); a plain write when the node is filed and due is not earlier. */
static inline void evr__wheel_push_later(struct evr__wheel *w,
                                         struct evr__wnode *n, uint64_t due) {
  if (n->where <= EVR__WN_OVERFLOW && due >= n->due && due > w->now) {
    n->due = due;
    return;
  }
  evr__wheel_refile(w, n, due);
}

/* 1 if evr__wheel_pop() has a node to return. */
static inline int evr__wheel_has_ready(const struct evr__wheel *w) {
  return !evr__list_empty(&w->ready);
}

/* Remove n from the wheel. Idempotent. O(1). */
void evr__wheel_del(struct evr__wheel *w, struct evr__wnode *n);

/* A lower bound of the earliest due time in the wheel, UINT64_MAX if empty;
 * <= now if something is already due. It is exact when the earliest node
 * sits in level 0 and was not pushed later; otherwise it is the time at
 * which the wheel must next cascade or re-file, so a caller that sleeps until
 * it may wake with nothing to run. Cached: O(1) between changes. */
uint64_t evr__wheel_next(struct evr__wheel *w);

/* Move the wheel's time to now (ignored if earlier than the current time);
 * what expired is collected by the pops that follow (see the contract
 * above). Costs O(expired + cascaded nodes + occupied slots visited), spread
 * over the pops: a jump of years visits occupied slots only, never every
 * millisecond. */
void evr__wheel_advance(struct evr__wheel *w, uint64_t now);

/* The next expired node in (due, seq) order, removed from the wheel and
 * idle; NULL when none is left. */
struct evr__wnode *evr__wheel_pop(struct evr__wheel *w);

/* Walk the whole wheel and check its invariants. Returns 0, or the source
 * line of the first failed check. For tests: O(nodes + slots). */
int evr__wheel_check(const struct evr__wheel *w);

#endif
