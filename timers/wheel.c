/* timers/wheel.c: the hierarchical timer wheel (see wheel.h).
 *
 * Invariant that everything rests on: a node in slots[L][s] was filed while
 * the wheel's time agreed with its due time above level L, so the slot's
 * start time (now's bits above level L, s at level L, zeros below) is > now
 * and <= the node's due time. Hence all occupied slots lie ahead of now,
 * every slot of level L starts before every slot of level L + 1, and the
 * lowest occupied slot of the lowest non-empty level is the next thing to
 * do. Advancing visits occupied slots in time order: it moves the wheel's
 * time to the slot's start, expires the nodes due exactly then and files the
 * others again relative to that time, which moves them to a lower level (or
 * anywhere, if they were pushed later since they were filed). So a node
 * expires only from a batch of nodes due in the same millisecond, and that
 * batch is sorted by seq: cascading appends nodes behind younger ones that
 * were filed directly, and the sort is what keeps start order.
 */
#include "timers/wheel.h"

#define LEVEL_MASK(l) ((UINT64_C(1) << (EVR__WHEEL_BITS * ((l) + 1))) - 1)
#define SPAN_MASK ((UINT64_C(1) << EVR__WHEEL_SPAN_BITS) - 1)

static inline struct evr__wnode *node_of(evr__list_t *l) {
  return EVR_CONTAINER_OF(l, struct evr__wnode, link);
}

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* (due, seq) order. */
static inline int before(const struct evr__wnode *a,
                         const struct evr__wnode *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

/* Start time of slot s of level l as seen from now. */
static inline uint64_t slot_start(uint64_t now, unsigned l, unsigned s) {
  return (now & ~LEVEL_MASK(l)) | ((uint64_t)s << (EVR__WHEEL_BITS * l));
}

/* Every overflow node is due at or after this time. */
static inline uint64_t overflow_bound(const struct evr__wheel *w) {
  uint64_t span_end = (w->pos | SPAN_MASK) + 1;
  uint64_t min_start = w->overflow_min & ~SPAN_MASK;
  return span_end > min_start ? span_end : min_start;
}

void evr__wheel_init(struct evr__wheel *w, uint64_t now) {
  w->now = now;
  w->pos = now;
  w->seq = 0;
  w->next = UINT64_MAX;
  w->next_valid = 1;
  w->count = 0;
  for (unsigned l = 0; l < EVR__WHEEL_LEVELS; l++) {
    w->occupied[l] = 0;
    for (unsigned s = 0; s < EVR__WHEEL_SLOTS; s++)
      evr__list_init(&w->slots[l][s]);
  }
  evr__list_init(&w->overflow);
  w->overflow_min = UINT64_MAX;
  evr__list_init(&w->ready);
  evr__list_init(&w->late);
}

/* File n (due > pos) into its slot or the overflow list. */
static void file(struct evr__wheel *w, struct evr__wnode *n) {
  uint64_t diff = n->due ^ w->pos;
  if (diff > SPAN_MASK) {
    evr__list_insert_tail(&w->overflow, &n->link);
    n->where = EVR__WN_OVERFLOW;
    if (n->due < w->overflow_min) w->overflow_min = n->due;
    w->next_valid = 0;
    return;
  }
  unsigned l = (unsigned)(63 - __builtin_clzll(diff)) / EVR__WHEEL_BITS;
  unsigned s = (unsigned)(n->due >> (EVR__WHEEL_BITS * l)) &
               (EVR__WHEEL_SLOTS - 1);
  evr__list_insert_tail(&w->slots[l][s], &n->link);
  w->occupied[l] |= UINT64_C(1) << s;
  n->where = l * EVR__WHEEL_SLOTS + s;
  if (w->next_valid) w->next = min_u64(w->next, slot_start(w->pos, l, s));
}

/* Insert n (due <= now) into the late list, keeping (due, seq) order. A new
 * start has the newest seq, so walking back from the tail is O(1) when due
 * times are equal, as they are for "run in the next phase" restarts. */
static void file_late(struct evr__wheel *w, struct evr__wnode *n) {
  evr__list_t *p = w->late.prev;
  while (p != &w->late && before(n, node_of(p))) p = p->prev;
  evr__list_insert_head(p, &n->link); /* i.e. after p */
  n->where = EVR__WN_LATE;
  if (w->next_valid) w->next = min_u64(w->next, n->due);
}

void evr__wheel_del(struct evr__wheel *w, struct evr__wnode *n) {
  unsigned where = n->where;
  if (where == EVR__WN_IDLE) return;
  evr__list_remove(&n->link);
  n->where = EVR__WN_IDLE;
  w->count--;
  if (where < EVR__WN_OVERFLOW) {
    unsigned l = where / EVR__WHEEL_SLOTS, s = where % EVR__WHEEL_SLOTS;
    /* The cached next is a slot start: it changes only when a slot empties. */
    if (evr__list_empty(&w->slots[l][s])) {
      w->occupied[l] &= ~(UINT64_C(1) << s);
      w->next_valid = 0;
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

void evr__wheel_add_slow(struct evr__wheel *w, struct evr__wnode *n,
                         uint64_t due) {
  evr__wheel_del(w, n);
  n->due = due;
  n->seq = w->seq++;
  w->count++;
  if (due > w->now)
    file(w, n);
  else
    file_late(w, n);
}

void evr__wheel_refile(struct evr__wheel *w, struct evr__wnode *n,
                       uint64_t due) {
  uint64_t seq = n->seq;
  int pending = evr__wnode_pending(n);
  evr__wheel_del(w, n);
  n->due = due;
  n->seq = pending ? seq : w->seq++;
  w->count++;
  if (due > w->now)
    file(w, n);
  else
    file_late(w, n);
}

static int cascade_one(struct evr__wheel *w);

uint64_t evr__wheel_next(struct evr__wheel *w) {
  if (w->next_valid) return w->next;
  /* Asked between pops: collect the rest now, so that the answer is exact
   * about "due by now" (the loop never asks then). */
  if (w->pos != w->now)
    while (cascade_one(w)) {
    }
  uint64_t r = UINT64_MAX;
  /* The lowest non-empty level holds the earliest slot; overflow nodes come
   * after every slot. */
  unsigned l;
  for (l = 0; l < EVR__WHEEL_LEVELS; l++) {
    if (w->occupied[l]) {
      r = slot_start(w->pos, l, (unsigned)__builtin_ctzll(w->occupied[l]));
      break;
    }
  }
  if (l == EVR__WHEEL_LEVELS && !evr__list_empty(&w->overflow))
    r = overflow_bound(w);
  /* Ready and late nodes are due by now; slots start after it. */
  if (!evr__list_empty(&w->ready)) r = min_u64(r, node_of(w->ready.next)->due);
  if (!evr__list_empty(&w->late)) r = min_u64(r, node_of(w->late.next)->due);
  w->next = r;
  w->next_valid = 1;
  return r;
}

/* ---- advancing ---- */

/* Sort a list by (due, seq): merge sort on the singly linked chain, then
 * rebuild the back links. Already sorted lists (the usual level-0 case) are
 * detected in one pass. */
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

static evr__list_t *sort_chain(evr__list_t *c, size_t n) {
  if (n < 2) return c;
  size_t half = n / 2;
  evr__list_t *mid = c;
  for (size_t i = 1; i < half; i++) mid = mid->next;
  evr__list_t *b = mid->next;
  mid->next = NULL;
  return merge_chain(sort_chain(c, half), sort_chain(b, n - half));
}

static void sort_list(evr__list_t *head) {
  size_t n = 0;
  int sorted = 1;
  for (evr__list_t *p = head->next; p != head; p = p->next) {
    if (p->next != head && before(node_of(p->next), node_of(p))) sorted = 0;
    n++;
  }
  if (sorted) return;
  head->prev->next = NULL;
  evr__list_t *c = sort_chain(head->next, n), *prev = head;
  head->next = c;
  for (; c; prev = c, c = c->next) c->prev = prev;
  prev->next = head;
  head->prev = prev;
}

/* Append every node of src (sorted) to dst (sorted), keeping the order;
 * src becomes empty. */
static void merge_into(evr__list_t *dst, evr__list_t *src) {
  evr__list_t *p = dst->next;
  while (!evr__list_empty(src)) {
    evr__list_t *n = src->next;
    while (p != dst && !before(node_of(n), node_of(p))) p = p->next;
    if (p == dst) {
      /* Everything left in src follows dst's tail. */
      evr__list_t rest;
      evr__list_move(src, &rest);
      rest.next->prev = dst->prev;
      dst->prev->next = rest.next;
      rest.prev->next = dst;
      dst->prev = rest.prev;
      return;
    }
    evr__list_remove(n);
    evr__list_insert_tail(p, n); /* i.e. before p */
  }
}

/* Take the nodes of `batch` whose due time is <= w->pos into the ready list
 * (they all follow what is already there) and file the others again. */
static void expire_batch(struct evr__wheel *w, evr__list_t *batch) {
  evr__list_t exp;
  evr__list_init(&exp);
  while (!evr__list_empty(batch)) {
    evr__list_t *l = batch->next;
    struct evr__wnode *n = node_of(l);
    evr__list_remove(l);
    if (n->due <= w->pos) {
      evr__list_insert_tail(&exp, l);
      n->where = EVR__WN_READY;
    } else {
      file(w, n);
    }
  }
  if (evr__list_empty(&exp)) return;
  sort_list(&exp);
  evr__list_t *first = exp.next, *last = exp.prev;
  first->prev = w->ready.prev;
  w->ready.prev->next = first;
  last->next = &w->ready;
  w->ready.prev = last;
}

/* Process the earliest occupied slot (or the overflow list) if it starts no
 * later than now: move pos to its start (every other slot starts later, so
 * this keeps the invariant) and cascade it: nodes due at the start expire,
 * the rest land in lower levels. Expiring whole slots at once would need a
 * sort by due time; cascading keeps each expired batch to one millisecond,
 * which arrives nearly sorted by seq. Returns 0 when nothing is left to do
 * up to now; pos is then now. */
static int cascade_one(struct evr__wheel *w) {
  unsigned l;
  for (l = 0; l < EVR__WHEEL_LEVELS && !w->occupied[l]; l++) {
  }
  evr__list_t batch;
  if (l < EVR__WHEEL_LEVELS) {
    unsigned s = (unsigned)__builtin_ctzll(w->occupied[l]);
    uint64_t start = slot_start(w->pos, l, s);
    if (start > w->now) goto done;
    w->pos = start;
    evr__list_move(&w->slots[l][s], &batch);
    w->occupied[l] &= ~(UINT64_C(1) << s);
  } else if (!evr__list_empty(&w->overflow)) {
    uint64_t start = overflow_bound(w);
    if (start > w->now) goto done;
    /* The levels are empty, so every node is in the overflow list: move
     * to its bound and file them all again, as above. */
    w->pos = start;
    evr__list_move(&w->overflow, &batch);
    w->overflow_min = UINT64_MAX;
  } else {
    goto done;
  }
  expire_batch(w, &batch);
  return 1;
done:
  /* Every occupied slot starts after now, so now agrees with each node
   * above its level: pos may jump there. */
  w->pos = w->now;
  w->next_valid = 0;
  return 0;
}

void evr__wheel_advance(struct evr__wheel *w, uint64_t target) {
  if (target < w->now) target = w->now;
  /* Finish the previous advance first: what was due by then precedes the
   * late starts and anything due later. */
  if (w->pos != w->now)
    while (cascade_one(w)) {
    }
  if (!evr__list_empty(&w->late)) {
    /* Started while already due: eligible from this advance on. They are
     * all due at or before the old now, so they precede anything that
     * expires from the slots. */
    for (evr__list_t *p = w->late.next; p != &w->late; p = p->next)
      node_of(p)->where = EVR__WN_READY;
    merge_into(&w->ready, &w->late);
  } else if (w->next_valid && w->next > target) {
    w->now = w->pos = target;
    return;
  }
  w->next_valid = 0;
  w->now = target; /* pos follows in evr__wheel_pop() */
}

struct evr__wnode *evr__wheel_pop(struct evr__wheel *w) {
  while (evr__list_empty(&w->ready)) {
    if (w->pos == w->now || !cascade_one(w)) return NULL;
  }
  evr__list_t *l = w->ready.next;
  struct evr__wnode *n = node_of(l);
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

static int check_sorted_list(const evr__list_t *head, unsigned where,
                             const struct evr__wheel *w, size_t *count) {
  const struct evr__wnode *prev = NULL;
  for (const evr__list_t *p = head->next; p != head; p = p->next) {
    const struct evr__wnode *n = EVR_CONTAINER_OF(p, struct evr__wnode, link);
    CHECK(p->next->prev == p);
    CHECK(n->where == where);
    CHECK(n->due <= w->now);
    CHECK(n->seq < w->seq);
    CHECK(!prev || before(prev, n));
    prev = n;
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
      if (start < earliest) earliest = start;
      for (const evr__list_t *p = head->next; p != head; p = p->next) {
        const struct evr__wnode *n =
            EVR_CONTAINER_OF(p, struct evr__wnode, link);
        CHECK(p->next->prev == p);
        CHECK(n->where == l * EVR__WHEEL_SLOTS + s);
        CHECK(n->due >= start);
        CHECK(n->seq < w->seq);
        count++;
      }
    }
  }
  CHECK(w->pos <= w->now);
  uint64_t span_end = (w->pos | SPAN_MASK) + 1;
  for (const evr__list_t *p = w->overflow.next; p != &w->overflow;
       p = p->next) {
    const struct evr__wnode *n = EVR_CONTAINER_OF(p, struct evr__wnode, link);
    CHECK(p->next->prev == p);
    CHECK(n->where == EVR__WN_OVERFLOW);
    CHECK(n->due >= span_end);
    CHECK(n->due >= w->overflow_min);
    CHECK(n->seq < w->seq);
    count++;
  }
  if (earliest == UINT64_MAX && !evr__list_empty(&w->overflow))
    earliest = overflow_bound(w);
  if ((rc = check_sorted_list(&w->ready, EVR__WN_READY, w, &count))) return rc;
  if ((rc = check_sorted_list(&w->late, EVR__WN_LATE, w, &count))) return rc;
  CHECK(count == w->count);
  /* Already due nodes come before anything filed after now. */
  if (!evr__list_empty(&w->ready))
    earliest = min_u64(
        earliest, EVR_CONTAINER_OF(w->ready.next, struct evr__wnode, link)->due);
  if (!evr__list_empty(&w->late))
    earliest = min_u64(
        earliest, EVR_CONTAINER_OF(w->late.next, struct evr__wnode, link)->due);
  CHECK(!w->next_valid || w->next == earliest);
  return 0;
}
