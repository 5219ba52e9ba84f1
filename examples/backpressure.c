/* examples/backpressure.c: a fast producer, a slow consumer, bounded memory.
 *
 * The producer writes 2 MiB into one end of a socket pair as fast as evr
 * takes it; the consumer reads the other end slowly (at most 16 KiB per
 * read, then a 1 ms pause). The kernel's socket buffer fills, and what it
 * does not take waits in the producer stream's write queue, in memory.
 * Water marks keep that queue bounded: evr calls on_water(s, 1) from inside
 * the write that took the queue above the high mark -- the producer stops --
 * and on_water(s, 0) once the queue has drained to the low mark -- the
 * producer resumes, from a deferred task. The queue therefore never holds
 * more than the high mark plus one write. Without the marks, the whole 2 MiB
 * (or 2 GiB) would sit in the queue.
 */
#include <evr/evr.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOTAL (2u << 20)     /* bytes to send */
#define CHUNK (16u << 10)    /* bytes per write */
#define LOW (16u << 10)      /* resume at or below this many queued bytes */
#define HIGH (64u << 10)     /* pause above this many queued bytes */

static evr_loop_t *loop;
static evr_stream_t producer, consumer;
static evr_defer_t resume_task;
static evr_timer_t pause_timer;
static unsigned char chunk[CHUNK];
static size_t sent, received, max_queued;
static int paused, pauses, finished, ok = 1;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

/* ---- producer ---- */

static void produce(void) {
  while (!paused && sent < TOTAL) {
    /* Copies whatever the kernel does not take at once into the queue. */
    check(evr_stream_write_copy(&producer, chunk, CHUNK), "write");
    sent += CHUNK;
    size_t q = evr_stream_write_queue_size(&producer);
    if (q > max_queued) max_queued = q;
  }
  if (sent == TOTAL && !finished) {
    /* Everything is written or queued: FIN once the queue drains. */
    check(evr_stream_shutdown(&producer, NULL), "shutdown");
    finished = 1;
  }
}

static void on_resume(evr_defer_t *task) {
  (void)task;
  produce();
}

static void on_water(evr_stream_t *s, int above) {
  (void)s;
  if (above) {
    paused = 1; /* from inside evr_stream_write_copy(): the loop in produce() stops */
    pauses++;
  } else {
    paused = 0; /* from the loop, as the queue drains: produce again later */
    check(evr_defer(loop, &resume_task, on_resume), "evr_defer");
  }
}

/* ---- slow consumer ---- */

static void on_read(evr_stream_t *s, ssize_t n, const char *buf);

static void on_pause_over(evr_timer_t *t) {
  (void)t;
  check(evr_stream_read_start(&consumer, on_read), "read_start");
}

static void on_read(evr_stream_t *s, ssize_t n, const char *buf) {
  if (n == EVR_EOF) {
    evr_close(&s->base, NULL);
    evr_close(&producer.base, NULL);
    return;
  }
  check((int)(n < 0 ? n : 0), "read");
  for (ssize_t i = 0; i < n; i++, received++)
    if ((unsigned char)buf[i] != chunk[received % CHUNK]) ok = 0;
  /* Be slow: stop reading for 1 ms after every read. */
  check(evr_stream_read_stop(s), "read_stop");
  check(evr_timer_start(&pause_timer, on_pause_over, 1, 0), "timer");
}

int main(void) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
    perror("socketpair");
    return 1;
  }
  for (size_t i = 0; i < CHUNK; i++) chunk[i] = (unsigned char)(i % 251);
  check(evr_loop_new(&loop, NULL), "evr_loop_new");
  check(evr_stream_init(loop, &producer), "stream_init");
  check(evr_stream_init(loop, &consumer), "stream_init");
  check(evr_stream_open(&producer, sv[0]), "stream_open"); /* the streams own the fds */
  check(evr_stream_open(&consumer, sv[1]), "stream_open");
  check(evr_stream_set_water_marks(&producer, LOW, HIGH, on_water), "water_marks");
  check(evr_stream_set_read_max(&consumer, CHUNK), "read_max");
  check(evr_stream_read_start(&consumer, on_read), "read_start");
  check(evr_timer_init(loop, &pause_timer), "timer_init");
  evr_defer_init(&resume_task);

  produce(); /* the first burst, until the high mark */
  check(evr_loop_run(loop, EVR_RUN_DEFAULT), "evr_loop_run");
  check(evr_loop_free(loop), "evr_loop_free");

  printf("sent %u bytes, received %zu bytes, %s\n", TOTAL, received,
         ok && received == TOTAL ? "all in order" : "CORRUPTED");
  printf("producer paused %d times; at most %zu bytes were queued\n", pauses, max_queued);
  int bounded = max_queued <= HIGH + CHUNK;
  printf("queue stayed within the high mark (%u) plus one write (%u): %s\n",
         HIGH, CHUNK, bounded ? "yes" : "NO");
  return ok && bounded && received == TOTAL && pauses > 0 ? 0 : 1;
}
