/* reactor/handle.c: handle lifetime: init, active/ref accounting, the
 * asynchronous close and the close phase.
 *
 * Invariant: loop->active_refs counts exactly the handles that are ACTIVE and
 * REF at once; every transition goes through the functions below. A closing
 * handle sits on loop->closing (via its node) until the close phase takes
 * it off; then its type's finish function (if any) and its close_cb run.
 */
#include "reactor/internal.h"

/* Every handle type: its name, its close function (evr_close(): stop all
 * activity) and, for a type whose requests must complete before its close
 * callback, its finish function (the close phase, right before close_cb). A
 * handle stores the index (one byte), not a pointer to its entry. */
static const struct {
  const char *name;
  void (*close)(evr_handle_t *h);
  void (*finish)(evr_handle_t *h);
  /* Optional: the close phase reached the handle while the kernel still
   * has operations of it; 1: the type has taken it off and puts it back on
   * loop->closing once they are in. */
  int (*busy)(evr_handle_t *h);
} types[EVR__HT_COUNT] = {
    [EVR__HT_IO] = {"io", evr__io_close, NULL, NULL},
    [EVR__HT_PREPARE] = {"prepare", evr__hook_close, NULL, NULL},
    [EVR__HT_CHECK] = {"check", evr__hook_close, NULL, NULL},
    [EVR__HT_ASYNC] = {"async", evr__async_close, NULL, NULL},
    [EVR__HT_SIGNAL] = {"signal", evr__signal_close, NULL, NULL},
    [EVR__HT_STREAM] = {"stream", evr__stream_close, evr__stream_finish,
                         evr__stream_busy},
    [EVR__HT_LISTENER] = {"listener", evr__listener_close, NULL, NULL},
};

static inline int type_known(const evr_handle_t *h) {
  return h->type > EVR__HT_NONE && h->type < EVR__HT_COUNT;
}

void evr__handle_init(evr_loop_t *loop, evr_handle_t *h,
                      enum evr__handle_type type) {
  h->loop = loop;
  h->type = (uint8_t)type;
  h->close_cb = NULL;
  h->flags = EVR__H_INIT | EVR__H_REF;
  h->tflags = 0;
  h->tword = 0;
  evr__list_init(&h->node);
  evr__list_insert_tail(&loop->handles, &h->node);
}

void evr__handle_start(evr_handle_t *h) {
  if (h->flags & EVR__H_ACTIVE) return;
  h->flags |= EVR__H_ACTIVE;
  if (h->flags & EVR__H_REF) h->loop->active_refs++;
}

void evr__handle_stop(evr_handle_t *h) {
  if (!(h->flags & EVR__H_ACTIVE)) return;
  h->flags &= ~EVR__H_ACTIVE;
  if (h->flags & EVR__H_REF) {
    assert(h->loop->active_refs > 0);
    h->loop->active_refs--;
  }
}

void evr_ref(evr_handle_t *h) {
  if (!h || (h->flags & EVR__H_REF)) return;
  h->flags |= EVR__H_REF;
  if (h->flags & EVR__H_ACTIVE) h->loop->active_refs++;
}

void evr_unref(evr_handle_t *h) {
  if (!h || !(h->flags & EVR__H_REF)) return;
  h->flags &= ~EVR__H_REF;
  if (h->flags & EVR__H_ACTIVE) {
    assert(h->loop->active_refs > 0);
    h->loop->active_refs--;
  }
}

int evr_has_ref(const evr_handle_t *h) {
  return h && (h->flags & EVR__H_REF) ? 1 : 0;
}

int evr_is_active(const evr_handle_t *h) {
  return h && (h->flags & EVR__H_ACTIVE) ? 1 : 0;
}

int evr_is_closing(const evr_handle_t *h) {
  return h && (h->flags & (EVR__H_CLOSING | EVR__H_CLOSED)) ? 1 : 0;
}

const char *evr_handle_type_name(const evr_handle_t *h) {
  return h && type_known(h) ? types[h->type].name : "unknown";
}

int evr_close(evr_handle_t *h, evr_close_cb cb) {
  if (!h || !(h->flags & EVR__H_INIT) || !type_known(h)) return EVR_EINVAL;
  if (h->flags & (EVR__H_CLOSING | EVR__H_CLOSED)) return EVR_EALREADY;
  types[h->type].close(h);  /* type-specific stop: must leave it inactive */
  evr__handle_stop(h);
  h->flags |= EVR__H_CLOSING;
  h->close_cb = cb;
  evr__list_remove(&h->node);
  evr__list_insert_tail(&h->loop->closing, &h->node);
  return 0;
}

void evr__run_closing(evr_loop_t *loop) {
  evr__list_t batch;
  /* Handles closed by these callbacks wait for the next close phase. */
  evr__list_move(&loop->closing, &batch);
  while (!evr__list_empty(&batch)) {
    evr__list_t *n = evr__list_first(&batch);
    evr_handle_t *h = EVR_CONTAINER_OF(n, evr_handle_t, node);
    evr__list_remove(n);
    if (types[h->type].busy && types[h->type].busy(h)) continue;
    if (types[h->type].finish) types[h->type].finish(h);
    h->flags = (uint8_t)((h->flags & ~EVR__H_CLOSING) | EVR__H_CLOSED);
    if (h->close_cb) h->close_cb(h);
  }
}

void evr_loop_walk(evr_loop_t *loop, evr_walk_cb cb, void *arg) {
  if (!loop || !cb) return;
  evr__list_t batch;
  /* Walk a spliced copy so cb may close (unlink) the handle it is given;
   * handles still open are put back in order. */
  evr__list_move(&loop->handles, &batch);
  while (!evr__list_empty(&batch)) {
    evr__list_t *n = evr__list_first(&batch);
    evr_handle_t *h = EVR_CONTAINER_OF(n, evr_handle_t, node);
    evr__list_remove(n);
    evr__list_insert_tail(&loop->handles, n);
    cb(h, arg);
  }
}
