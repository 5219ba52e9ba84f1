/* bench/overhead_evr.c: evr for the loop-overhead driver (overhead.c). */
#define _GNU_SOURCE
#include <stdlib.h>
#include "evr/evr.h"
#include "overhead.h"

static evr_loop_t *loop;
static evr_io_t *ios;

static void on_read(evr_io_t *io, unsigned events) {
  (void)events;
  ovh_on_read((int)(io - ios));
}

static int init(int n) {
  if (evr_loop_new(&loop, NULL) < 0) return -1;
  ios = calloc((size_t)n, sizeof *ios);
  return ios ? 0 : -1;
}

static void arm(int i, int fd) {
  if (!ios[i].base.loop) (void)evr_io_init(loop, &ios[i], fd);
  (void)evr_io_stop(&ios[i]);
  /* The descriptor stays open: evr's call for one-shot re-arming (the
   * contract of libev's ev_io_start). evr_io_start() would also check the
   * descriptor, one epoll_ctl per watcher (docs/benchmarks.md). */
  (void)evr_io_resume(&ios[i], EVR_READ, on_read);
}

static void run_nowait(void) { (void)evr_loop_run(loop, EVR_RUN_NOWAIT); }

static void fini(int n) {
  for (int i = 0; i < n; i++)
    if (ios[i].base.loop) (void)evr_close(&ios[i].base, NULL);
  (void)evr_loop_run(loop, EVR_RUN_NOWAIT); /* close callbacks */
  (void)evr_loop_free(loop);
  free(ios);
}

const struct ovh_lib ovh_lib = {"evr", init, arm, run_nowait, fini};
