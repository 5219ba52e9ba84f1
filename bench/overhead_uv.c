/* bench/overhead_uv.c: libuv (uv_poll_t) for the loop-overhead driver. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <uv.h>
#include "overhead.h"

static uv_loop_t *loop;
static uv_poll_t *polls;
static unsigned char *ready; /* uv_poll_init done */

static void on_read(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  ovh_on_read((int)(p - polls));
}

static int init(int n) {
  loop = uv_default_loop();
  polls = calloc((size_t)n, sizeof *polls);
  ready = calloc((size_t)n, 1);
  return polls && ready ? 0 : -1;
}

static void arm(int i, int fd) {
  if (!ready[i]) {
    (void)uv_poll_init_socket(loop, &polls[i], fd);
    ready[i] = 1;
  }
  (void)uv_poll_stop(&polls[i]);
  (void)uv_poll_start(&polls[i], UV_READABLE, on_read);
}

static void run_nowait(void) { (void)uv_run(loop, UV_RUN_NOWAIT); }

static void fini(int n) {
  for (int i = 0; i < n; i++)
    if (ready[i]) uv_close((uv_handle_t *)&polls[i], NULL);
  (void)uv_run(loop, UV_RUN_DEFAULT); /* close callbacks */
  (void)uv_loop_close(loop);
  free(polls);
  free(ready);
}

const struct ovh_lib ovh_lib = {"libuv", init, arm, run_nowait, fini};
