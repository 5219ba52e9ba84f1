/* examples/workers.c: more cores through more loops, one per thread.
 *
 * One loop uses one core. To use several, run several loops, each on its
 * own thread with its own handles: nothing is shared, so nothing is locked.
 * Here each of four loops has its own listener on the same port
 * (EVR_LISTEN_REUSEPORT: SO_REUSEPORT), and the Linux kernel spreads new
 * connections among them. Each connection is answered with the number of
 * the loop that took it. (Where the system does not spread connections --
 * macOS, OpenBSD -- accept on one loop and hand descriptors to the others
 * with evr_post(); the same shape works with worker processes after
 * fork().)
 *
 * The main thread then plays the client: it makes 40 connections, counts
 * the answers, and stops every loop through an async handle -- the one
 * thread-safe way in -- so each thread's evr_loop_run() returns.
 */
#define _POSIX_C_SOURCE 200809L
#include <evr/evr.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOOPS 4
#define CONNECTIONS 40

struct worker {
  int id;
  evr_loop_t *loop;
  evr_listener_t listener;
  evr_async_t stop;
  pthread_t thread;
  int served;             /* written by the worker's thread, read after join */
};

static struct worker workers[LOOPS];

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, evr_strerror(rc));
    exit(1);
  }
}

static void freed(evr_handle_t *h) { free(h); }

/* ---- on each worker's loop thread ---- */

static void on_accept(evr_listener_t *l, int fd) {
  struct worker *w = l->base.data;
  if (fd < 0) {
    fprintf(stderr, "accept: %s\n", evr_strerror(fd));
    return;
  }
  evr_stream_t *s = malloc(sizeof *s);
  if (!s || evr_stream_init(w->loop, s) < 0) {
    free(s);
    close(fd);
    return;
  }
  if (evr_stream_open(s, fd) < 0) {
    close(fd);                 /* refused: still ours */
    evr_close(&s->base, freed); /* an initialised stream is closed, not just freed */
    return;
  }
  char line[32];
  int n = snprintf(line, sizeof line, "loop %d\n", w->id);
  if (evr_stream_write_copy(s, line, (size_t)n) < 0) {
    evr_close(&s->base, freed);
    return;
  }
  evr_stream_end(s, freed); /* send, FIN, close */
  w->served++;
}

static void on_stop(evr_async_t *a) {
  struct worker *w = a->base.data;
  evr_close(&w->listener.base, NULL);
  evr_close(&w->stop.base, NULL); /* then nothing is left: the run returns */
}

static void *run_worker(void *arg) {
  struct worker *w = arg;
  int rc = evr_loop_run(w->loop, EVR_RUN_DEFAULT);
  if (rc < 0) fprintf(stderr, "loop %d: %s\n", w->id, evr_strerror(rc));
  return NULL;
}

/* ---- the main thread: set-up, then a plain blocking client ---- */

static int ask(uint16_t port) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) { perror("socket"); exit(1); }
  if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) { perror("connect"); exit(1); }
  char buf[32];
  size_t len = 0;
  ssize_t n;
  while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)n;
  if (n < 0) { perror("read"); exit(1); }
  if (close(fd) != 0) { perror("close"); exit(1); }
  buf[len] = '\0';
  int id;
  if (sscanf(buf, "loop %d", &id) != 1 || id < 0 || id >= LOOPS) {
    fprintf(stderr, "unexpected answer: %s\n", buf);
    exit(1);
  }
  return id;
}

int main(void) {
  evr_listen_options_t opts = {.flags = EVR_LISTEN_REUSEPORT};
  evr_addr_t addr;
  check(evr_addr_parse(&addr, "127.0.0.1:0"), "address");
  for (int i = 0; i < LOOPS; i++) {
    struct worker *w = &workers[i];
    w->id = i;
    check(evr_loop_new(&w->loop, NULL), "evr_loop_new");
    check(evr_listener_init(w->loop, &w->listener), "evr_listener_init");
    w->listener.base.data = w;
    /* The first listener picks a free port; the others bind the same one. */
    check(evr_listen(&w->listener, &addr, &opts, on_accept), "listen");
    if (i == 0) check(evr_listener_sockname(&w->listener, &addr), "sockname");
    check(evr_async_init(w->loop, &w->stop, on_stop), "evr_async_init");
    w->stop.base.data = w;
  }
  /* A loop may move to another thread between runs: these were made here,
   * and from now on each belongs to its thread. */
  for (int i = 0; i < LOOPS; i++) {
    int rc = pthread_create(&workers[i].thread, NULL, run_worker, &workers[i]);
    if (rc != 0) { fprintf(stderr, "pthread_create: %s\n", strerror(rc)); return 1; }
  }
  printf("%d loops listening on 127.0.0.1 port %u with SO_REUSEPORT\n", LOOPS,
         (unsigned)evr_addr_port(&addr));

  int answers[LOOPS] = {0};
  for (int i = 0; i < CONNECTIONS; i++) answers[ask(evr_addr_port(&addr))]++;

  for (int i = 0; i < LOOPS; i++) check(evr_async_send(&workers[i].stop), "evr_async_send");
  int served = 0, agree = 1;
  for (int i = 0; i < LOOPS; i++) {
    int rc = pthread_join(workers[i].thread, NULL);
    if (rc != 0) { fprintf(stderr, "pthread_join: %s\n", strerror(rc)); return 1; }
    /* Back on this thread after the join: the loop may be freed here. */
    check(evr_loop_free(workers[i].loop), "evr_loop_free");
    printf("loop %d answered %d connection(s)\n", i, workers[i].served);
    served += workers[i].served;
    if (workers[i].served != answers[i]) agree = 0;
  }
  printf("%d connections answered in all; the counts agree: %s\n", served, agree ? "yes" : "no");
  return served == CONNECTIONS && agree ? 0 : 1;
}
