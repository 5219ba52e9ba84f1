/* samples/evr-tour.c: one pass through the phases of an evr iteration.
 *
 * A pipe carries three messages written by a repeating timer; each read
 * defers a task (it runs after this iteration's I/O callbacks); the last
 * message closes everything and the loop ends because nothing keeps it
 * alive. Prints what happens and the loop metrics, exits 0 on success.
 *
 *   evr-tour [--backend NAME]
 */
#define _GNU_SOURCE
#include <evr/evr.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct tour {
  evr_loop_t *loop;
  int fds[2];
  evr_io_t reader;
  evr_timer_t ticker;
  evr_defer_t after_read;
  int sent, received;
  uint64_t t0;
};

static void after_read(evr_defer_t *task) {
  struct tour *t = task->data;
  printf("  +%3llu ms  deferred task after read #%d\n",
         (unsigned long long)(evr_now(t->loop) - t->t0), t->received);
}

static void on_readable(evr_io_t *io, unsigned events) {
  struct tour *t = io->base.data;
  char buf[64];
  ssize_t n = read(evr_io_fd(io), buf, sizeof buf - 1);
  if (n <= 0) {
    fprintf(stderr, "read: %s\n", n == 0 ? "unexpected end of stream" : strerror(errno));
    evr_loop_stop(t->loop);
    return;
  }
  buf[n] = '\0';
  t->received++;
  printf("  +%3llu ms  read %zd bytes (events 0x%x): %s\n",
         (unsigned long long)(evr_now(t->loop) - t->t0), n, events, buf);
  int rc = evr_defer(t->loop, &t->after_read, after_read);
  if (rc) fprintf(stderr, "defer: %s\n", evr_strerror(rc));
  if (t->received == 3) {
    evr_close(&t->reader.base, NULL);
    evr_timer_stop(&t->ticker);
  }
}

static void on_tick(evr_timer_t *timer) {
  struct tour *t = timer->data;
  char msg[32];
  int len = snprintf(msg, sizeof msg, "tick %d", ++t->sent);
  if (write(t->fds[1], msg, (size_t)len) != len) perror("write");
  if (t->sent == 3) evr_timer_stop(timer);
}

int main(int argc, char **argv) {
  evr_loop_options_t opts = {0};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
      opts.backend = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--backend NAME]\n", argv[0]);
      return 2;
    }
  }
  struct tour t = {0};
  int rc = evr_loop_new(&t.loop, &opts);
  if (rc) {
    fprintf(stderr, "evr_loop_new: %s\n", evr_strerror(rc));
    return 1;
  }
  if (pipe(t.fds) != 0 || fcntl(t.fds[0], F_SETFL, O_NONBLOCK) != 0) {
    perror("pipe");
    return 1;
  }
  printf("evr %s, backend %s\n", EVR_VERSION_STRING, evr_loop_backend(t.loop));
  t.t0 = evr_now(t.loop);
  evr_defer_init(&t.after_read);
  t.after_read.data = &t;
  if ((rc = evr_io_init(t.loop, &t.reader, t.fds[0])) ||
      (rc = evr_io_start(&t.reader, EVR_READ, on_readable)) ||
      (rc = evr_timer_init(t.loop, &t.ticker)) ||
      (rc = evr_timer_start(&t.ticker, on_tick, 10, 20))) {
    fprintf(stderr, "setup: %s\n", evr_strerror(rc));
    return 1;
  }
  t.reader.base.data = &t;
  t.ticker.data = &t;
  rc = evr_loop_run(t.loop, EVR_RUN_DEFAULT);
  if (rc < 0) {
    fprintf(stderr, "evr_loop_run: %s\n", evr_strerror(rc));
    return 1;
  }
  evr_loop_metrics_t m;
  evr_loop_metrics(t.loop, &m);
  printf("done: %llu iterations, %llu events, %.1f ms idle in poll, max timer lateness %.3f ms\n",
         (unsigned long long)m.iterations, (unsigned long long)m.events, (double)m.idle_ns / 1e6,
         (double)m.timer_lateness_max_ns / 1e6);
  close(t.fds[0]);
  close(t.fds[1]);
  rc = evr_loop_free(t.loop);
  if (rc) {
    fprintf(stderr, "evr_loop_free: %s\n", evr_strerror(rc));
    return 1;
  }
  return t.received == 3 ? 0 : 1;
}
