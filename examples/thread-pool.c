/* examples/thread-pool.c: blocking work off the loop thread.
 *
 * A loop thread must never block: while a callback waits, no other callback
 * runs. Blocking or CPU-heavy work goes to evr's thread pool instead:
 * evr_work_submit() runs work() on a pool thread and then done() back on
 * the loop thread, where the result can be used without locks. Meanwhile
 * the loop goes on (here a 10 ms ticker keeps running). A request that no
 * pool thread has picked up yet can be cancelled: its done() then runs with
 * EVR_ECANCELED and its work() never runs.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep() in strict C11 mode */
#include <evr/evr.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define JOBS 4

struct job {
  evr_work_t req;         /* first member: a pointer to it is a pointer to the job */
  int id;
  unsigned limit;         /* input: count the primes below this */
  unsigned primes;        /* output, written by the pool thread */
  int status;             /* done()'s status */
};

static struct job jobs[JOBS + 1]; /* zeroed: requests must be zeroed before use */
static evr_timer_t ticker;
static int ticks, remaining = JOBS + 1;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

/* Runs on a pool thread: it may block, and must not touch the loop. */
static void count_primes(evr_work_t *req) {
  struct job *j = (struct job *)req;
  /* A blocking call, as a file read or a database query would be. */
  struct timespec ts = {0, 50 * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
    /* EINTR: sleep the rest */
  }
  unsigned n = 0;
  for (unsigned x = 2; x < j->limit; x++) {
    unsigned d = 2;
    while (d * d <= x && x % d != 0) d++;
    if (d * d > x) n++;
  }
  j->primes = n;
}

/* Runs on the loop thread, in the poll phase, after the work (or after a
 * cancel). The request may be reused or freed from here on. */
static void job_done(evr_work_t *req, int status) {
  struct job *j = (struct job *)req;
  j->status = status;
  if (--remaining == 0) check(evr_timer_stop(&ticker), "evr_timer_stop");
}

static void on_tick(evr_timer_t *t) {
  (void)t;
  ticks++;
}

int main(void) {
  evr_loop_t *loop;
  /* One pool thread: the jobs run one after the other, so the last one is
   * surely still queued when it is cancelled below. */
  check(evr_threadpool_set_size(1), "evr_threadpool_set_size");
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  check(evr_timer_init(loop, &ticker), "evr_timer_init");
  check(evr_timer_start(&ticker, on_tick, 10, 10), "evr_timer_start");

  for (int i = 0; i <= JOBS; i++) {
    jobs[i].id = i;
    jobs[i].limit = 10000u * (unsigned)(i + 1);
    check(evr_work_submit(loop, &jobs[i].req, count_primes, job_done), "evr_work_submit");
  }
  /* Changed our mind about the last one. */
  int rc = evr_work_cancel(&jobs[JOBS].req);
  printf("cancel job %d: %s\n", JOBS, rc == 0 ? "cancelled before it started" : evr_strerror(rc));

  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");

  for (int i = 0; i <= JOBS; i++) {
    if (jobs[i].status == 0)
      printf("job %d: %u primes below %u\n", i, jobs[i].primes, jobs[i].limit);
    else
      printf("job %d: %s\n", i, evr_strerror(jobs[i].status));
  }
  /* The jobs took 200 ms or more on the pool; the 10 ms ticker ran meanwhile
   * (the exact count depends on the machine: only "some" is certain). */
  printf("the loop kept ticking while the pool worked: %s\n", ticks > 0 ? "yes" : "no");
  /* The last loop that used the pool is freed: its threads are joined. */
  check(evr_loop_free(loop), "evr_loop_free");
  return 0;
}
