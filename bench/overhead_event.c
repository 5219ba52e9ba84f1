/* bench/overhead_event.c: libevent (raw events) for the loop-overhead
 * driver. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <event2/event.h>
#include "overhead.h"

static struct event_base *base;
static struct event **evs;

static void on_read(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ovh_on_read((int)(intptr_t)arg);
}

static int init(int n) {
  base = event_base_new();
  evs = calloc((size_t)n, sizeof *evs);
  return base && evs ? 0 : -1;
}

static void arm(int i, int fd) {
  if (!evs[i])
    evs[i] = event_new(base, fd, EV_READ | EV_PERSIST, on_read,
                       (void *)(intptr_t)i);
  (void)event_del(evs[i]);
  (void)event_add(evs[i], NULL);
}

static void run_nowait(void) {
  (void)event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void fini(int n) {
  for (int i = 0; i < n; i++)
    if (evs[i]) event_free(evs[i]);
  event_base_free(base);
  free(evs);
}

const struct ovh_lib ovh_lib = {"libevent", init, arm, run_nowait, fini};
