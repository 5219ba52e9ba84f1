/* timers/wheel.c: the hierarchical timer wheel (see wheel.h).
 *
 * Invariant that everything rests on: a node in slots[L][s] was filed while
 * the wheel's position agreed with its due tick above level L, so the
 * slot's start tick (pos's bits above level L, s at level L, zeros below)
 * is > pos and <= the node's due tick. Hence all occupied slots lie ahead
 * of pos, every slot of level L starts before every slot of level L + 1,
 * and the lowest occupied slot of the lowest non-empty level is the next
 * thing to do. Nodes due within tick pos itself sit in `near`, sorted.
 * Collecting visits occupied slots in time order: it moves pos to the
 * slot's start, takes the nodes due within that tick (into `ready` if the
 * tick is over, else into `near`) and files the others again relative to
 * pos, which moves them to a lower level (or anywhere, if they were pushed
 * later since they were filed). So a node expires only from a batch of
 * nodes due within the same tick, and the batch is sorted by (due, seq):
 * cascading appends nodes behind younger ones that were filed directly,
 * and the sort is what keeps start order.
 */
#include <assert.h>
#include "timers/wheel.h"

#define LEVEL_MASK(l) ((UINT64_C(1) << (EVR__WHEEL_BITS * ((l) + 1))) - 1)
#define SPAN_MASK ((UINT64_C(1) << EVR__WHEEL_SPAN_BITS) - 1)

static inline struct evr__tnode *node_of(const evr__list_t *l) {
  return EVR_CONTAINER_OF(l, struct evr__tnode, link);
}

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static inline uint64_t tick_of(const struct evr__wheel *w, uint64_t ns) {
  return ns >> w->shift;
}

/* (due, seq) order; seq is a serial number (it wraps), and nodes whose
 * order it decides were started close together. */
static inline int before(const struct evr__tnode *a,
                         const struct evr__tnode *b) {
  return a->due < b->due ||
         (a->due == b->due && (int32_t)(a->seq - b->seq) < 0);
}

/* Start tick of slot s of level l as seen from pos. */
static inline uint64_t slot_start(uint64_t pos, unsigned l, unsigned s) {
  return (pos & ~LEVEL_MASK(l)) | ((uint64_t)s << (EVR__WHEEL_BITS * l));
}

/* Every overflow node is due at or after this tick. */
static inline uint64_t overflow_bound(const struct evr__wheel *w) {
  uint64_t span_end = (w->pos | SPAN_MASK) + 1;
  uint64_t min_start = tick_of(w, w->overflow_min) & ~SPAN_MASK;
  return span_end > min_start ? span_end : min_start;
}

void evr__wheel_init(struct evr__wheel *w, uint64_t now, unsigned shift) {
  w->now = now;
  w->shift = shift;
  w->pos = now >> shift;
  w->seq = 0;
  w->next = UINT64_MAX;
  w->next_valid = 1;
  w->collected = 1;
  w->count = 0;
  for (unsigned l = 0; l < EVR__WHEEL_LEVELS; l++) {
    w->occupied[l] = 0;
    for (unsigned s = 0; s < EVR__WHEEL_SLOTS; s++)
      evr__list_init(&w->slots[l][s]);
  }
  evr__list_init(&w->overflow);
  w->overflow_min = UINT64_MAX;
  evr__list_init(&w->near);
  evr__list_init(&w->ready);
  evr__list_init(&w->late);
  w->nfresh = 0;
}

/* Insert n into the sorted list head, walking back from the tail: a new
 * start has the newest seq, so this is O(1) when it is due last, as it is
 * for equal timeouts started in a row. */
static void insert_sorted(evr__list_t *head, struct evr__tnode *n) {
  evr__list_t *p = head->prev;
  while (p != head && before(n, node_of(p))) p = p->prev;
  evr__list_insert_head(p, &n->link); /* i.e. after p */
}

/* File n, whose due tick is > pos, or == pos with due > now. */
static void file(struct evr__wheel *w, struct evr__tnode *n) {
  uint64_t t = tick_of(w, n->due);
  if (t == w->pos) {
    insert_sorted(&w->near, n);
    n->where = EVR__WN_NEAR;
    if (w->next_valid) w->next = min_u64(w->next, n->due);
    return;
  }
  uint64_t diff = t ^ w->pos;
  if (diff > SPAN_MASK) {
    evr__list_insert_tail(&w->overflow, &n->link);
    n->where = EVR__WN_OVERFLOW;
    if (n->due < w->overflow_min) w->overflow_min = n->due;
    w->next_valid = 0;
    return;
  }
  unsigned l = (unsigned)(63 - __builtin_clzll(diff)) / EVR__WHEEL_BITS;
  unsigned s = (unsigned)(t >> (EVR__WHEEL_BITS * l)) & (EVR__WHEEL_SLOTS - 1);
  evr__list_insert_tail(&w->slots[l][s], &n->link);
  w->occupied[l] |= UINT64_C(1) << s;
  n->where = (uint16_t)(l * EVR__WHEEL_SLOTS + s);
  /* A level-0 slot's next is the exact due time; a higher slot's, the tick
   * at which it must cascade. */
  if (w->next_valid)
    w->next = min_u64(w->next, l == 0 ? n->due
                                      : slot_start(w->pos, l, s) << w->shift);
}

/* File n (due <= now) into the late list, keeping (due, seq) order. */
static void file_late(struct evr__wheel *w, struct evr__tnode *n) {
  insert_sorted(&w->late, n);
  n->where = EVR__WN_LATE;
  if (w->next_valid) w->next = min_u64(w->next, n->due);
}

static void file_any(struct evr__wheel *w, struct evr__tnode *n) {
  if (n->due > w->now)
    file(w, n);
  else
    file_late(w, n);
}

/* Take n off its list; it stays counted and keeps its fresh state. */
static void unlink_node(struct evr__wheel *w, struct evr__tnode *n) {
  unsigned where = n->where;
  evr__list_remove(&n->link);
  n->where = EVR__WN_IDLE;
  if (where < EVR__WN_OVERFLOW) {
    unsigned l = where / EVR__WHEEL_SLOTS, s = where % EVR__WHEEL_SLOTS;
    if (evr__list_empty(&w->slots[l][s])) {
      w->occupied[l] &= ~(UINT64_C(1) << s);
      w->next_valid = 0;
    } else if (l == 0 && n->due == w->next) {
      w->next_valid = 0; /* it may have been the exact earliest */
    }
  } else if (where == EVR__WN_OVERFLOW) {
    /* overflow_min stays a valid lower bound; reset it when empty. */
    if (evr__list_empty(&w->overflow)) {
      w->overflow_min = UINT64_MAX;
      w->next_valid = 0;
    }
  } else {
    w->next_valid = 0;
  }
}

void evr__wheel_del(struct evr__wheel *w, struct evr__tnode *n) {
  if (n->where == EVR__WN_IDLE) return;
  if (n->flags & EVR__TN_FRESH) {
    w->fresh[n->seq] = NULL;
    n->flags &= (uint8_t)~EVR__TN_FRESH;
  }
  unlink_node(w, n);
  w->count--;
}

void evr__wheel_add_slow(struct evr__wheel *w, struct evr__tnode *n,
                         uint64_t due) {
  evr__wheel_del(w, n);
  n->due = due;
  n->seq = w->seq++;
  w->count++;
  file_any(w, n);
}

int evr__wheel_add_fresh(struct evr__wheel *w, struct evr__tnode *n,
                         uint64_t due) {
  assert(due > w->now);
  if (n->flags & EVR__TN_FRESH) {
    /* Fresh already: only its provisional due time changes. */
    if (evr__wheel_keeps(w, n, due)) {
      n->due = due;
      return 0;
    }
    unlink_node(w, n);
    n->due = due;
    file(w, n);
    return 0;
  }
  if (w->nfresh == EVR__WHEEL_FRESH_MAX) return -1;
  if (evr__wheel_keeps(w, n, due)) {
    n->due = due; /* lazy re-filing, as in evr__wheel_add() */
  } else {
    if (n->where != EVR__WN_IDLE)
      unlink_node(w, n);
    else
      w->count++;
    n->due = due;
    file(w, n);
  }
  n->seq = w->nfresh;
  n->flags |= EVR__TN_FRESH;
  w->fresh[w->nfresh++] = n;
  return 0;
}

void evr__wheel_settle(struct evr__wheel *w, uint64_t shift) {
  uint32_t n = w->nfresh;
  for (uint32_t i = 0; i < n; i++) {
    struct evr__tnode *t = w->fresh[i];
    /* Far enough ahead to cover a miss to memory at this loop's pace. */
    if (i + 32 < n && w->fresh[i + 32]) __builtin_prefetch(w->fresh[i + 32]);
    if (!t) continue;
    t->flags &= (uint8_t)~EVR__TN_FRESH;
    t->seq = w->seq++;
    uint64_t due = t->due + shift;
    if (t->where <= EVR__WN_OVERFLOW) {
      t->due = due; /* later: the slot still starts no later than it */
    } else {
      /* near, sorted by (due, seq): it had no seq of its own until now. */
      unlink_node(w, t);
      t->due = due;
      file(w, t);
    }
  }
  w->nfresh = 0;
  /* A provisional due time may have been the earliest. */
  if (shift) w->next_valid = 0;
}

/* ---- collecting ---- */

/* Sort a list by (due, seq): merge sort on the singly linked chain, then
 * rebuild the back links. Already sorted lists are detected in one pass. */
static evr__list_t *merge_chain(evr__list_t *a, evr__list_t *b) {
  evr__list_t head, *t = &head;
  while (a && b) {
    if (before(node_of(b), node_of(a))) {
      t->next = b;
      b = b->next;
    } else {
      t->next = a;
      a = a->next;
    }
    t = t->next;
  }
  t->next = a ? a : b;
  return head.next;
}

/* Append the whole of src to dst's tail; src becomes empty. */
static void append_list(evr__list_t *dst, evr__list_t *src) {
  if (evr__list_empty(src)) return;
  evr__list_t *first = src->next, *last = src->prev;
  first->prev = dst->prev;
  dst->prev->next = first;
  last->next = dst;
  dst->prev = last;
  evr__list_init(src);
}

/* Bottom-up merge sort of a NULL-terminated chain: runs of 2^k nodes wait
 * in part[k] like the digits of a binary counter, so no pass walks the
 * chain to split it. Stable: part[k] always holds earlier nodes. */
static evr__list_t *sort_chain(evr__list_t *c) {
  evr__list_t *part[64] = {0};
  unsigned top = 0;
  while (c) {
    evr__list_t *run = c;
    c = c->next;
    run->next = NULL;
    unsigned k;
    for (k = 0; part[k]; k++) {
      run = merge_chain(part[k], run);
      part[k] = NULL;
    }
    part[k] = run;
    if (k > top) top = k;
  }
  evr__list_t *r = NULL;
  for (unsigned k = 0; k <= top; k++)
    if (part[k]) r = r ? merge_chain(part[k], r) : part[k];
  return r;
}

static void sort_list(evr__list_t *head) {
  int sorted = 1;
  for (evr__list_t *p = head->next; p->next != head; p = p->next) {
    if (before(node_of(p->next), node_of(p))) {
      sorted = 0;
      break;
    }
  }
  if (sorted) return;
  head->prev->next = NULL;
  evr__list_t *c = sort_chain(head->next), *prev = head;
  head->next = c;
  for (; c; prev = c, c = c->next) c->prev = prev;
  prev->next = head;
  head->prev = prev;
}


/* Merge every node of src (sorted) into dst (sorted), keeping the order;
 * src becomes empty. */
static void merge_into(evr__list_t *dst, evr__list_t *src) {
  evr__list_t *p = dst->next;
  while (!evr__list_empty(src)) {
    evr__list_t *n = src->next;
    while (p != dst && !before(node_of(n), node_of(p))) p = p->next;
    if (p == dst) {
      append_list(dst, src); /* everything left follows dst's tail */
      return;
    }
    evr__list_remove(n);
    evr__list_insert_tail(p, n); /* i.e. before p */
  }
}

static void mark(evr__list_t *head, unsigned where) {
  for (evr__list_t *p = head->next; p != head; p = p->next)
    node_of(p)->where = (uint16_t)where;
}

/* Sort the nodes of one tick (all due within tick pos): a large batch is
 * first distributed by the next 6 bits of the due time below the tick, a
 * radix step that is cheaper than the comparisons it saves, then each
 * bucket is sorted and the buckets are joined in order. */
#define TICK_BUCKET_MIN 256

static void sort_tick(struct evr__wheel *w, evr__list_t *head, size_t n) {
  if (n < TICK_BUCKET_MIN || w->shift < EVR__WHEEL_BITS) {
    sort_list(head);
    return;
  }
  evr__list_t bucket[EVR__WHEEL_SLOTS];
  uint64_t used = 0;
  unsigned sub = w->shift - EVR__WHEEL_BITS;
  for (unsigned b = 0; b < EVR__WHEEL_SLOTS; b++) evr__list_init(&bucket[b]);
  while (!evr__list_empty(head)) {
    evr__list_t *l = head->next;
    unsigned b = (unsigned)(node_of(l)->due >> sub) & (EVR__WHEEL_SLOTS - 1);
    evr__list_remove(l);
    evr__list_insert_tail(&bucket[b], l);
    used |= UINT64_C(1) << b;
  }
  while (used) {
    unsigned b = (unsigned)__builtin_ctzll(used);
    used &= used - 1;
    sort_list(&bucket[b]);
    append_list(head, &bucket[b]);
  }
}

/* pos just moved to the start of the slot whose nodes are in batch: take
 * those due within tick pos (expired if that tick is over, else into near)
 * and file the others again. */
static void collect_batch(struct evr__wheel *w, evr__list_t *batch) {
  evr__list_t cur;
  size_t ncur = 0;
  evr__list_init(&cur);
  while (!evr__list_empty(batch)) {
    evr__list_t *l = batch->next;
    struct evr__tnode *n = node_of(l);
    evr__list_remove(l);
    if (tick_of(w, n->due) == w->pos) {
      evr__list_insert_tail(&cur, l);
      ncur++;
    } else {
      file(w, n);
    }
  }
  if (evr__list_empty(&cur)) return;
  sort_tick(w, &cur, ncur);
  if (w->pos < tick_of(w, w->now)) {
    mark(&cur, EVR__WN_READY);
    append_list(&w->ready, &cur); /* the whole tick is over */
  } else {
    mark(&cur, EVR__WN_NEAR);
    merge_into(&w->near, &cur);
  }
}

/* One step of collecting what is due by now. Returns 1 if it did
 * something, 0 when everything due by now is in ready (pos is then the
 * tick of now). */
static int collect_step(struct evr__wheel *w) {
  uint64_t now_t = tick_of(w, w->now);
  if (w->pos < now_t && !evr__list_empty(&w->near)) {
    /* Tick pos is over: all of near is due, before any slot. */
    mark(&w->near, EVR__WN_READY);
    append_list(&w->ready, &w->near);
    w->next_valid = 0;
    return 1;
  }
  unsigned l;
  for (l = 0; l < EVR__WHEEL_LEVELS && !w->occupied[l]; l++) {
  }
  evr__list_t batch;
  if (l < EVR__WHEEL_LEVELS) {
    unsigned s = (unsigned)__builtin_ctzll(w->occupied[l]);
    uint64_t start = slot_start(w->pos, l, s);
    if (start <= now_t) {
      w->pos = start;
      evr__list_move(&w->slots[l][s], &batch);
      w->occupied[l] &= ~(UINT64_C(1) << s);
      w->next_valid = 0;
      collect_batch(w, &batch);
      return 1;
    }
  } else if (!evr__list_empty(&w->overflow)) {
    uint64_t start = overflow_bound(w);
    if (start <= now_t) {
      /* The levels are empty, so every node is in the overflow list: move
       * to its bound and file them all again, as above. */
      w->pos = start;
      evr__list_move(&w->overflow, &batch);
      w->overflow_min = UINT64_MAX;
      w->next_valid = 0;
      collect_batch(w, &batch);
      return 1;
    }
  }
  /* Every occupied slot starts after now's tick, so now agrees with each
   * node above its level: pos may jump there. */
  if (w->pos != now_t) {
    w->pos = now_t;
    w->next_valid = 0;
  }
  int moved = 0;
  while (!evr__list_empty(&w->near) && node_of(w->near.next)->due <= w->now) {
    evr__list_t *p = w->near.next;
    evr__list_remove(p);
    node_of(p)->where = EVR__WN_READY;
    evr__list_insert_tail(&w->ready, p);
    moved = 1;
  }
  if (moved) w->next_valid = 0;
  return moved;
}

static void collect_all(struct evr__wheel *w) {
  while (collect_step(w)) {
  }
  w->collected = 1;
}

uint64_t evr__wheel_next(struct evr__wheel *w) {
  if (w->next_valid) return w->next;
  /* Asked between pops: collect the rest now, so that the answer is exact
   * about "due by now" (the loop never asks then). */
  if (!w->collected) collect_all(w);
  uint64_t r = UINT64_MAX;
  if (!evr__list_empty(&w->near)) {
    /* Tick pos comes before every slot. */
    r = node_of(w->near.next)->due;
  } else {
    unsigned l;
    for (l = 0; l < EVR__WHEEL_LEVELS; l++) {
      if (!w->occupied[l]) continue;
      unsigned s = (unsigned)__builtin_ctzll(w->occupied[l]);
      if (l == 0) {
        /* The slot holds one tick: its earliest node is exact, except a
         * node pushed later past the tick, which must be re-filed when the
         * tick starts. */
        const evr__list_t *head = &w->slots[0][s];
        uint64_t start = slot_start(w->pos, 0, s);
        for (const evr__list_t *p = head->next; p != head; p = p->next) {
          uint64_t due = node_of(p)->due;
          r = min_u64(r, tick_of(w, due) == start ? due : start << w->shift);
        }
      } else {
        r = slot_start(w->pos, l, s) << w->shift;
      }
      break;
    }
    if (l == EVR__WHEEL_LEVELS && !evr__list_empty(&w->overflow))
      r = overflow_bound(w) << w->shift;
  }
  /* Ready and late nodes are due by now; slots start after it. */
  if (!evr__list_empty(&w->ready)) r = min_u64(r, node_of(w->ready.next)->due);
  if (!evr__list_empty(&w->late)) r = min_u64(r, node_of(w->late.next)->due);
  w->next = r;
  w->next_valid = 1;
  return r;
}

void evr__wheel_advance(struct evr__wheel *w, uint64_t target) {
  assert(w->nfresh == 0); /* settle first */
  if (target < w->now) target = w->now;
  /* Finish the previous advance first: what was due by then precedes the
   * late starts and anything due later. */
  if (!w->collected) collect_all(w);
  if (!evr__list_empty(&w->late)) {
    /* Started while already due: eligible from this advance on. They are
     * all due at or before the old now, so they precede anything that
     * expires from the slots or near. */
    mark(&w->late, EVR__WN_READY);
    merge_into(&w->ready, &w->late);
  } else if (w->next_valid && w->next > target) {
    /* Nothing is due: move without collecting. The earliest node is due
     * after target, so no slot starts at or before target's tick (a
     * level-0 slot's next is its earliest node, a higher slot's its start)
     * unless that node sits in near, whose tick is then target's. */
    uint64_t t = tick_of(w, target);
    if (tick_of(w, w->next) > t || t == w->pos) {
      w->now = target;
      w->pos = t;
      return;
    }
  }
  w->next_valid = 0;
  w->now = target; /* pos follows in evr__wheel_pop() */
  w->collected = 0;
}

struct evr__tnode *evr__wheel_pop(struct evr__wheel *w) {
  while (evr__list_empty(&w->ready)) {
    if (w->collected) return NULL;
    if (!collect_step(w)) w->collected = 1;
  }
  evr__list_t *l = w->ready.next;
  struct evr__tnode *n = node_of(l);
  evr__list_remove(l);
  n->where = EVR__WN_IDLE;
  w->count--;
  w->next_valid = 0;
  return n;
}

/* ---- invariant checker ---- */

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) return __LINE__;                                              \
  } while (0)

static int check_node(const struct evr__wheel *w, const struct evr__tnode *n) {
  if (n->flags & EVR__TN_FRESH) {
    CHECK(n->seq < w->nfresh);
    CHECK(w->fresh[n->seq] == n);
  } else {
    CHECK((int32_t)(n->seq - w->seq) < 0);
  }
  return 0;
}

static int check_sorted_list(const evr__list_t *head, unsigned where,
                             const struct evr__wheel *w, size_t *count) {
  const struct evr__tnode *prev = NULL;
  int rc;
  for (const evr__list_t *p = head->next; p != head; p = p->next) {
    const struct evr__tnode *n = node_of(p);
    CHECK(p->next->prev == p);
    CHECK(n->where == where);
    if (where == EVR__WN_NEAR)
      CHECK(tick_of(w, n->due) == w->pos);
    else
      CHECK(n->due <= w->now);
    if ((rc = check_node(w, n))) return rc;
    if (!(n->flags & EVR__TN_FRESH)) {
      CHECK(!prev || before(prev, n));
      prev = n;
    }
    (*count)++;
  }
  return 0;
}

int evr__wheel_check(const struct evr__wheel *w) {
  size_t count = 0;
  int rc;
  uint64_t earliest = UINT64_MAX;
  for (unsigned l = 0; l < EVR__WHEEL_LEVELS; l++) {
    for (unsigned s = 0; s < EVR__WHEEL_SLOTS; s++) {
      const evr__list_t *head = &w->slots[l][s];
      int bit = (w->occupied[l] >> s) & 1;
      CHECK(bit == !evr__list_empty(head));
      if (!bit) continue;
      uint64_t start = slot_start(w->pos, l, s);
      CHECK(start > w->pos);
      for (const evr__list_t *p = head->next; p != head; p = p->next) {
        const struct evr__tnode *n = node_of(p);
        CHECK(p->next->prev == p);
        CHECK(n->where == l * EVR__WHEEL_SLOTS + s);
        CHECK(tick_of(w, n->due) >= start);
        if ((rc = check_node(w, n))) return rc;
        earliest = min_u64(earliest, l == 0 ? n->due : start << w->shift);
        count++;
      }
    }
  }
  CHECK(w->pos <= tick_of(w, w->now));
  CHECK(w->nfresh <= EVR__WHEEL_FRESH_MAX);
  uint64_t span_end = (w->pos | SPAN_MASK) + 1;
  for (const evr__list_t *p = w->overflow.next; p != &w->overflow;
       p = p->next) {
    const struct evr__tnode *n = node_of(p);
    CHECK(p->next->prev == p);
    CHECK(n->where == EVR__WN_OVERFLOW);
    CHECK(tick_of(w, n->due) >= span_end);
    CHECK(n->due >= w->overflow_min);
    if ((rc = check_node(w, n))) return rc;
    count++;
  }
  if (earliest == UINT64_MAX && !evr__list_empty(&w->overflow))
    earliest = overflow_bound(w) << w->shift;
  if (!evr__list_empty(&w->near)) {
    /* near's tick precedes every slot. */
    CHECK(tick_of(w, earliest) > w->pos || earliest == UINT64_MAX);
    earliest = node_of(w->near.next)->due;
  }
  if ((rc = check_sorted_list(&w->near, EVR__WN_NEAR, w, &count))) return rc;
  if ((rc = check_sorted_list(&w->ready, EVR__WN_READY, w, &count))) return rc;
  if ((rc = check_sorted_list(&w->late, EVR__WN_LATE, w, &count))) return rc;
  CHECK(count == w->count);
  for (uint32_t i = 0; i < w->nfresh; i++)
    CHECK(!w->fresh[i] || (w->fresh[i]->flags & EVR__TN_FRESH));
  if (!evr__list_empty(&w->ready))
    earliest = min_u64(earliest, node_of(w->ready.next)->due);
  if (!evr__list_empty(&w->late))
    earliest = min_u64(earliest, node_of(w->late.next)->due);
  /* The cache is a lower bound; exact while nothing moved later. */
  CHECK(!w->next_valid || w->next <= earliest);
  return 0;
}
