/* bench/overhead_ev.c: libev (ev_io) for the loop-overhead driver. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <ev.h>
#include "overhead.h"

static struct ev_loop *loop;
static ev_io *ios;

static void on_read(struct ev_loop *l, ev_io *io, int revents) {
  (void)l;
  (void)revents;
  ovh_on_read((int)(io - ios));
}

static int init(int n) {
  loop = ev_default_loop(0);
  ios = calloc((size_t)n, sizeof *ios);
  return loop && ios ? 0 : -1;
}

static void arm(int i, int fd) {
  /* Set up once: ev_io_set() marks the fd as changed, which would make
   * libev re-register it with the kernel on every run. */
  if (!ios[i].cb) ev_io_init(&ios[i], on_read, fd, EV_READ);
  ev_io_stop(loop, &ios[i]);
  ev_io_start(loop, &ios[i]);
}

static void run_nowait(void) { (void)ev_run(loop, EVRUN_NOWAIT); }

static void fini(int n) {
  for (int i = 0; i < n; i++) ev_io_stop(loop, &ios[i]);
  ev_loop_destroy(loop);
  free(ios);
}

const struct ovh_lib ovh_lib = {"libev", init, arm, run_nowait, fini};
