/* reactor/hook.c: prepare hooks (before poll) and check hooks (after the
 * deferred tasks). A hook started during its own phase first runs in the next
 * iteration; a hook stopped during the phase does not run again. */
#include "reactor/internal.h"

void evr__hook_close(evr_handle_t *h) {
  struct evr_hook *hook = EVR_CONTAINER_OF(h, struct evr_hook, base);
  evr__list_remove(&hook->hook_node);
  evr__handle_stop(h);
}

static int hook_init(evr_loop_t *loop, struct evr_hook *hook,
                     enum evr__handle_type type) {
  if (!loop || !hook) return EVR_EINVAL;
  evr__handle_init(loop, &hook->base, type);
  evr__list_init(&hook->hook_node);
  hook->cb = NULL;
  return 0;
}

static int hook_start(struct evr_hook *hook, evr_hook_cb cb,
                      enum evr__handle_type type) {
  if (!hook || !cb || !evr__handle_usable(&hook->base) || hook->base.type != type)
    return EVR_EINVAL;
  if (evr__handle_active(&hook->base)) return EVR_EALREADY;
  evr_loop_t *loop = hook->base.loop;
  hook->cb = cb;
  evr__list_insert_tail(type == EVR__HT_PREPARE ? &loop->prepare_hooks
                                          : &loop->check_hooks,
                        &hook->hook_node);
  evr__handle_start(&hook->base);
  return 0;
}

static int hook_stop(struct evr_hook *hook, enum evr__handle_type type) {
  if (!hook || !evr__handle_is(&hook->base, type)) return EVR_EINVAL;
  evr__hook_close(&hook->base);
  return 0;
}

int evr_prepare_init(evr_loop_t *loop, evr_prepare_t *h) {
  return hook_init(loop, h, EVR__HT_PREPARE);
}
int evr_check_init(evr_loop_t *loop, evr_check_t *h) {
  return hook_init(loop, h, EVR__HT_CHECK);
}
int evr_prepare_start(evr_prepare_t *h, evr_hook_cb cb) {
  return hook_start(h, cb, EVR__HT_PREPARE);
}
int evr_check_start(evr_check_t *h, evr_hook_cb cb) {
  return hook_start(h, cb, EVR__HT_CHECK);
}
int evr_prepare_stop(evr_prepare_t *h) { return hook_stop(h, EVR__HT_PREPARE); }
int evr_check_stop(evr_check_t *h) { return hook_stop(h, EVR__HT_CHECK); }

void evr__hooks_run(evr_loop_t *loop, evr__list_t *hooks) {
  (void)loop;
  evr__list_t batch;
  evr__list_move(hooks, &batch);
  while (!evr__list_empty(&batch)) {
    evr__list_t *n = evr__list_first(&batch);
    struct evr_hook *hook = EVR_CONTAINER_OF(n, struct evr_hook, hook_node);
    /* Put it back before the call, so the callback may stop it. */
    evr__list_remove(n);
    evr__list_insert_tail(hooks, n);
    hook->cb(hook);
  }
}
