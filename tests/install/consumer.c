/* Uses only the installed headers: one loop, one timer, then exit 0. */
#include <evr/evr.h>
#include <stdio.h>

static int fired;
static void on_timer(evr_timer_t *t) {
  fired = 1;
  evr_timer_stop(t);
}

int main(void) {
  evr_loop_t *loop;
  evr_timer_t t;
  if (evr_loop_new(&loop, NULL) != 0) return 1;
  if (evr_timer_init(loop, &t) != 0 || evr_timer_start(&t, on_timer, 1, 0) != 0) return 1;
  if (evr_loop_run(loop, EVR_RUN_DEFAULT) != 0) return 1;
  printf("consumer: backend %s, timer fired %d\n", evr_loop_backend(loop), fired);
  return evr_loop_free(loop) == 0 && fired ? 0 : 1;
}
