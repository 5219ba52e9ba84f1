/* examples/tcp-echo-server.c: echo every byte back; stop on SIGTERM/SIGINT.
 * Usage: tcp-echo-server [ADDRESS]   (default 127.0.0.1:7000; port 0: any) */
#include <evr/evr.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static evr_listener_t listener;
static evr_signal_t sigterm, sigint;

static void freed(evr_handle_t *h) { free(h); } /* the stream was malloc'ed */

static void on_read(evr_stream_t *s, ssize_t n, const char *buf) {
  if (n > 0 && evr_stream_write_copy(s, buf, (size_t)n) == 0)
    return;                               /* buf is only valid until we return */
  if (n == EVR_EOF) evr_stream_end(s, freed);     /* flush, FIN, then close */
  else evr_close(&s->base, freed);          /* a read or write error: drop it */
}

static void on_accept(evr_listener_t *l, int fd) {
  if (fd < 0) { fprintf(stderr, "accept: %s\n", evr_strerror(fd)); return; }
  evr_stream_t *s = malloc(sizeof *s);
  if (!s || evr_stream_init(l->base.loop, s) < 0) { free(s); close(fd); return; }
  int rc = evr_stream_open(s, fd);                      /* s now owns fd */
  if (rc == 0) rc = evr_stream_read_start(s, on_read);
  if (rc < 0) {
    if (evr_stream_fd(s) < 0) close(fd);     /* not adopted: still ours */
    evr_close(&s->base, freed);
  }
}

static void on_signal(evr_signal_t *sig, int signum) {
  printf("%s: closing the listener\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  evr_close(&listener.base, NULL);  /* open connections finish by themselves */
  evr_close(&sigterm.base, NULL);
  evr_close(&sigint.base, NULL);
  (void)sig;
}

int main(int argc, char **argv) {
  evr_loop_t *loop;
  evr_addr_t addr;
  char text[EVR_ADDR_STRLEN];
  int rc = evr_loop_new(&loop, NULL);
  if (rc == 0) rc = evr_addr_parse(&addr, argc > 1 ? argv[1] : "127.0.0.1:7000");
  if (rc == 0) rc = evr_listener_init(loop, &listener);
  if (rc == 0) rc = evr_listen(&listener, &addr, NULL, on_accept);
  if (rc == 0) rc = evr_listener_sockname(&listener, &addr);
  if (rc == 0) rc = evr_addr_format(&addr, text, sizeof text) < 0 ? EVR_EINVAL : 0;
  if (rc == 0) rc = evr_signal_init(loop, &sigterm);
  if (rc == 0) rc = evr_signal_init(loop, &sigint);
  if (rc == 0) rc = evr_signal_start(&sigterm, SIGTERM, on_signal);
  if (rc == 0) rc = evr_signal_start(&sigint, SIGINT, on_signal);
  if (rc != 0) { fprintf(stderr, "setup: %s\n", evr_strerror(rc)); return 1; }
  printf("listening %s\n", text);
  fflush(stdout);
  rc = evr_loop_run(loop, EVR_RUN_DEFAULT);   /* until the last handle closes */
  return rc < 0 || evr_loop_free(loop) != 0;
}
