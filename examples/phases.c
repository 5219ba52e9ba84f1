/* examples/phases.c: the order in which evr runs callbacks.
 *
 * One loop iteration runs its phases in a fixed order (docs/loop.md):
 *   1 time, 2 timers, 3 prepare, 4 poll + I/O callbacks,
 *   5 deferred tasks + check hooks, 6 close callbacks.
 * So three things that are all ready "now" -- a timer of 0 ms, a deferred
 * task and a readable socket -- run in an order that depends on where they
 * were started:
 *   - from main(), before the loop runs: timer (phase 2), then the I/O
 *     callback (phase 4), then the deferred task (phase 5);
 *   - from inside an I/O callback (phase 4): the deferred task runs later in
 *     the same iteration (phase 5), the timer in the next iteration's phase
 *     2, and the new I/O in that iteration's phase 4.
 * Finally a callback that keeps the thread busy makes a timer late: nothing
 * interrupts a running callback, a timer only waits for its turn. The loop
 * measures by how much (evr_loop_metrics()).
 */
#include <evr/evr.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static evr_loop_t *loop;
static int pa[2], pb[2], pc[2];   /* three socket pairs: [0] watched, [1] written */
static evr_io_t io_a, io_b, io_c;
static evr_timer_t t_main, t_io, t_late;
static evr_defer_t d_main, d_io;
static uint64_t busy_end_ns;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

/* Make the watched end of a pair readable. */
static void poke(int fd) {
  if (write(fd, "x", 1) != 1) {
    perror("write");
    exit(1);
  }
}

/* Read the byte poke() sent, then close the watcher: each fires once. The
 * watcher does not own the descriptor; main() closes the pairs at the end. */
static void consume(evr_io_t *io) {
  char c;
  if (read(evr_io_fd(io), &c, 1) != 1) {
    perror("read");
    exit(1);
  }
  check(evr_close(&io->base, NULL), "evr_close");
}

/* ---- part 3: a busy callback makes a timer late ---- */

static void on_late(evr_timer_t *t) {
  (void)t;
  /* Due 10 ms after it was started, but a callback of the same iteration
   * kept the thread for 50 ms: the timer could only run after that. */
  printf("busy: the 10 ms timer ran %s\n",
         evr_hrtime() >= busy_end_ns ? "late, after the busy callback returned"
                                     : "during the busy callback (impossible)");
}

static void busy_for_ms(uint64_t ms) {
  uint64_t until = evr_hrtime() + ms * 1000000;
  while (evr_hrtime() < until) {
    /* spin: a stand-in for CPU-heavy work that belongs on the thread pool */
  }
  busy_end_ns = evr_hrtime();
}

/* ---- part 2: started from inside an I/O callback ---- */

static void on_c(evr_io_t *io, unsigned events) {
  (void)events;
  consume(io);
  puts("io: I/O callback");
  puts("-- a 10 ms timer is running; this callback keeps the thread 50 ms:");
  busy_for_ms(50);
  puts("busy: callback returns after 50 ms");
}

static void on_io_timer(evr_timer_t *t) {
  (void)t;
  puts("io: timer (0 ms)");
  /* For part 3: due in 10 ms; the I/O callback of this same iteration
   * (on_c) will hold the thread longer than that. */
  check(evr_timer_start(&t_late, on_late, 10, 0), "evr_timer_start");
}

static void on_io_deferred(evr_defer_t *d) {
  (void)d;
  puts("io: deferred task");
}

static void on_b(evr_io_t *io, unsigned events) {
  (void)events;
  consume(io);
  puts("-- started from inside an I/O callback:");
  check(evr_timer_start(&t_io, on_io_timer, 0, 0), "evr_timer_start");
  check(evr_defer(loop, &d_io, on_io_deferred), "evr_defer");
  poke(pc[1]);
}

/* ---- part 1: started from main() ---- */

static void on_main_timer(evr_timer_t *t) {
  (void)t;
  puts("main: timer (0 ms)");
}

static void on_a(evr_io_t *io, unsigned events) {
  (void)events;
  consume(io);
  puts("main: I/O callback");
}

static void on_main_deferred(evr_defer_t *d) {
  (void)d;
  puts("main: deferred task");
  poke(pb[1]); /* part 2 starts in the next I/O phase */
}

int main(void) {
  int *pairs[3] = {pa, pb, pc};
  for (int i = 0; i < 3; i++) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]) != 0) {
      perror("socketpair");
      return 1;
    }
  }
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  printf("backend: %s\n", evr_loop_backend(loop));

  check(evr_io_init(loop, &io_a, pa[0]), "evr_io_init");
  check(evr_io_init(loop, &io_b, pb[0]), "evr_io_init");
  check(evr_io_init(loop, &io_c, pc[0]), "evr_io_init");
  check(evr_io_start(&io_a, EVR_READ, on_a), "evr_io_start");
  check(evr_io_start(&io_b, EVR_READ, on_b), "evr_io_start");
  check(evr_io_start(&io_c, EVR_READ, on_c), "evr_io_start");
  check(evr_timer_init(loop, &t_main), "evr_timer_init");
  check(evr_timer_init(loop, &t_io), "evr_timer_init");
  check(evr_timer_init(loop, &t_late), "evr_timer_init");
  evr_defer_init(&d_main);
  evr_defer_init(&d_io);

  /* Part 1: all three are ready before the first iteration starts. The
   * order of these calls does not matter; the phases decide. */
  puts("-- started from main(), before the loop runs:");
  check(evr_defer(loop, &d_main, on_main_deferred), "evr_defer");
  poke(pa[1]);
  check(evr_timer_start(&t_main, on_main_timer, 0, 0), "evr_timer_start");

  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");

  evr_loop_metrics_t m;
  check(evr_loop_metrics(loop, &m), "evr_loop_metrics");
  printf("largest timer lateness seen: %llu ms\n",
         (unsigned long long)(m.timer_lateness_max_ns / 1000000));
  /* Every watcher was closed and its close phase has run: free succeeds. */
  check(evr_loop_free(loop), "evr_loop_free");
  for (int i = 0; i < 3; i++) {
    if (close(pairs[i][0]) != 0 || close(pairs[i][1]) != 0) {
      perror("close");
      return 1;
    }
  }
  return 0;
}
