/* timers/wheel.h: hierarchical timer wheel, a pure data structure.
 *
 * The wheel knows nothing of loops or clocks: time is a uint64_t count of
 * nanoseconds handed in by the caller, and nodes are caller-owned
 * (struct evr__tnode, embedded in evr_timer_t and in streams and
 * listeners), so nothing here allocates.
 *
 * Layout: due times are exact (ns); slots are coarser. A tick is 2^shift ns
 * (evr__wheel_init; the loop uses 2^20 ns, about 1.05 ms). 6 levels of 64
 * slots: a node whose due tick differs from the wheel's position `pos` (a
 * tick, at most the current tick) is filed at the level of the highest
 * 6-bit group in which they differ, in the slot given by the due tick's
 * bits of that group; anything that differs above bit 35 (with 1.05 ms
 * ticks: about 2.2 years away) waits in an overflow list. Nodes due within
 * the tick `pos` itself, but not yet due, wait in a short list sorted by
 * due time (`near`), which is what makes expiry exact below a tick: the
 * earliest due time is always known to the nanosecond once its tick is
 * current. A 64-bit occupancy mask per level finds the earliest slot with
 * one ctz per level. See docs/timers.md for the invariants.
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
 *  - Fresh starts (evr__wheel_add_fresh): a node may be started with a
 *    provisional due time that is settled later (evr__wheel_settle) by a
 *    common shift; until then it is never expired. Start order among them
 *    is the order of their fresh starts.
 *  - The expired nodes are collected lazily: evr__wheel_advance() only sets
 *    the target, and evr__wheel_pop() processes the next slot when it has
 *    nothing ready, so each batch of callbacks runs while its nodes are
 *    still in the CPU cache. Changes made between pops follow the contract
 *    above as if everything had been collected at once.
 *  - Times must stay below 2^63 ns (about 292 years).
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
/* Nodes whose due tick differs from pos above this many bits overflow. */
#define EVR__WHEEL_SPAN_BITS (EVR__WHEEL_BITS * EVR__WHEEL_LEVELS)
/* The loop's tick: 2^20 ns. */
#define EVR__WHEEL_LOOP_SHIFT 20

/* Values of evr__tnode.where. Slots are numbered level * 64 + slot. */
#define EVR__WN_OVERFLOW (EVR__WHEEL_LEVELS * EVR__WHEEL_SLOTS)
#define EVR__WN_NEAR (EVR__WN_OVERFLOW + 1)  /* due within tick pos */
#define EVR__WN_READY (EVR__WN_OVERFLOW + 2) /* expired, waiting for pop */
#define EVR__WN_LATE (EVR__WN_OVERFLOW + 3)  /* started already due */
#define EVR__WN_IDLE 0xffffu                  /* not in the wheel */

/* evr__tnode.flags owned by the wheel. */
#define EVR__TN_FRESH 0x80u /* provisional due time; seq is its fresh index */

/* Unsettled fresh starts the wheel can hold (evr__wheel_add_fresh). */
#define EVR__WHEEL_FRESH_MAX 4096

struct evr__wheel {
  uint64_t now;        /* time of the last advance, ns */
  uint64_t pos;        /* tick up to which slots are processed (<= the tick
                          of now): slots are filed relative to it;
                          evr__wheel_pop() moves it up one slot at a time */
  unsigned shift;      /* a tick is 2^shift ns */
  uint32_t seq;        /* next start sequence number (wraps; compared as a
                          serial number) */
  int next_valid;
  int collected;       /* everything due by now is in `ready` */
  uint64_t next;       /* cached evr__wheel_next() while next_valid */
  size_t count;        /* nodes in the wheel (any list) */
  uint64_t occupied[EVR__WHEEL_LEVELS]; /* bit s: slots[level][s] non-empty */
  evr__list_t slots[EVR__WHEEL_LEVELS][EVR__WHEEL_SLOTS];
  evr__list_t overflow;
  uint64_t overflow_min; /* lower bound of the due times in overflow */
  evr__list_t near;    /* due tick == pos, sorted (due, seq) */
  evr__list_t ready;   /* expired by the last advance, sorted (due, seq) */
  evr__list_t late;    /* started with due <= now, sorted (due, seq) */
  uint32_t nfresh;
  /* Fresh nodes, in start order; NULL where one was removed since. */
  struct evr__tnode *fresh[EVR__WHEEL_FRESH_MAX];
};

void evr__wheel_init(struct evr__wheel *w, uint64_t now, unsigned shift);

/* Make a node idle (not in any wheel) and give it its kind (EVR__TK_*).
 * Call once before first use. */
static inline void evr__tnode_init(struct evr__tnode *n, unsigned kind) {
  evr__list_init(&n->link);
  n->due = 0;
  n->seq = 0;
  n->where = EVR__WN_IDLE;
  n->flags = 0;
  n->kind = (uint8_t)kind;
}

static inline int evr__tnode_pending(const struct evr__tnode *n) {
  return n->where != EVR__WN_IDLE;
}

void evr__wheel_add_slow(struct evr__wheel *w, struct evr__tnode *n,
                         uint64_t due);

/* 1 if n, filed in a slot or the overflow list, may keep its place with
 * due time `due` (> now): its slot starts no later than that tick, so the
 * wheel meets the node again before it is due and files it then. Moving a
 * node earlier within its slot then costs a write, like pushing it later;
 * only the cached earliest time of a level-0 slot may need lowering. */
static inline int evr__wheel_keeps(struct evr__wheel *w, struct evr__tnode *n,
                                   uint64_t due) {
  unsigned where = n->where;
  if (where > EVR__WN_OVERFLOW) return 0;
  if (due >= n->due) return 1; /* later: the usual case */
  if (where == EVR__WN_OVERFLOW) return 0;
  unsigned l = where / EVR__WHEEL_SLOTS, sh = EVR__WHEEL_BITS * l;
  uint64_t mask = ((uint64_t)1 << (sh + EVR__WHEEL_BITS)) - 1;
  uint64_t start = (w->pos & ~mask) |
                   ((uint64_t)(where % EVR__WHEEL_SLOTS) << sh);
  if ((due >> w->shift) < start) return 0;
  if (l == 0 && due < w->next) w->next = due; /* exact for level 0 */
  return 1;
}

/* Start n, due at `due`, or restart it if it is pending. O(1). Restarting a
 * node that sits in a slot to a due time no earlier than the slot's start
 * (the idle-timeout pattern pushes it later) just rewrites the node: see
 * evr__wheel_keeps(). */
static inline void evr__wheel_add(struct evr__wheel *w, struct evr__tnode *n,
                                  uint64_t due) {
  if (!(n->flags & EVR__TN_FRESH) && due > w->now &&
      evr__wheel_keeps(w, n, due)) {
    n->due = due;
    n->seq = w->seq++;
    return;
  }
  evr__wheel_add_slow(w, n, due);
}

/* Start or restart n with a provisional due time `due` > now: the next
 * evr__wheel_settle() adds its shift to it. Its start order is that of this
 * call among fresh starts. @return 0, or -1 when the fresh table is full
 * (settle, then call again); n is then unchanged. */
int evr__wheel_add_fresh(struct evr__wheel *w, struct evr__tnode *n,
                         uint64_t due);

/* Add `shift` ns to the due time of every fresh node and make them plain
 * nodes, in fresh start order. */
void evr__wheel_settle(struct evr__wheel *w, uint64_t shift);

/* 1 if evr__wheel_pop() has a node to return without more work. */
static inline int evr__wheel_has_ready(const struct evr__wheel *w) {
  return !evr__list_empty(&w->ready);
}

/* Remove n from the wheel. Idempotent. O(1). */
void evr__wheel_del(struct evr__wheel *w, struct evr__tnode *n);

/* A lower bound of the earliest due time in the wheel, UINT64_MAX if empty;
 * <= now if something is already due. It is exact when the earliest node's
 * tick is current or next in level 0 and no node was pushed later or
 * removed since it was computed; otherwise it is the time at which the
 * wheel must next cascade or re-file, so a caller that sleeps until it may
 * wake with nothing to run. Fresh nodes count with their provisional due
 * time. Cached: O(1) between changes. */
uint64_t evr__wheel_next(struct evr__wheel *w);

/* Move the wheel's time to now (ignored if earlier than the current time);
 * what expired is collected by the pops that follow (see the contract
 * above). Costs O(expired + cascaded nodes + occupied slots visited), spread
 * over the pops: a jump of years visits occupied slots only, never every
 * tick. */
void evr__wheel_advance(struct evr__wheel *w, uint64_t now);

/* The next expired node in (due, seq) order, removed from the wheel and
 * idle; NULL when none is left. */
struct evr__tnode *evr__wheel_pop(struct evr__wheel *w);

/* Walk the whole wheel and check its invariants. Returns 0, or the source
 * line of the first failed check. For tests: O(nodes + slots). */
int evr__wheel_check(const struct evr__wheel *w);

#endif
