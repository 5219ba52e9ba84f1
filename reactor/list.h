/* reactor/list.h: circular doubly linked list with a sentinel.
 *
 * A detached node links to itself, so evr__list_remove() is idempotent and
 * evr__list_linked() is O(1). All functions are typed static inlines.
 */
#ifndef EVR_REACTOR_LIST_H
#define EVR_REACTOR_LIST_H

#include <stddef.h>
#include "evr/loop.h"

typedef evr__qnode_t evr__list_t;

#define EVR_CONTAINER_OF(ptr, type, member)                                    \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void evr__list_init(evr__list_t *n) { n->next = n->prev = n; }

static inline int evr__list_empty(const evr__list_t *head) {
  return head->next == head;
}

/* A node is linked when it is not self-linked. Valid only for nodes that were
 * initialised with evr__list_init() or have been removed. */
static inline int evr__list_linked(const evr__list_t *n) { return n->next != n; }

static inline void evr__list_insert_tail(evr__list_t *head, evr__list_t *n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

static inline void evr__list_insert_head(evr__list_t *head, evr__list_t *n) {
  n->next = head->next;
  n->prev = head;
  head->next->prev = n;
  head->next = n;
}

static inline void evr__list_remove(evr__list_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}

static inline evr__list_t *evr__list_first(const evr__list_t *head) {
  return head->next;
}

/* Move every node of `from` to the (empty) list `to`; `from` becomes empty.
 * This is "splice out, then run": work queued while `to` is drained lands in
 * `from` and waits for the next round. */
static inline void evr__list_move(evr__list_t *from, evr__list_t *to) {
  if (evr__list_empty(from)) {
    evr__list_init(to);
    return;
  }
  to->next = from->next;
  to->prev = from->prev;
  to->next->prev = to;
  to->prev->next = to;
  evr__list_init(from);
}

#endif
