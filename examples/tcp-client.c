/* examples/tcp-client.c: connect to a host by name, send a message,
 * half-close, print what comes back until the server closes.
 *
 *   tcp-client HOST PORT [MESSAGE]
 *
 * evr_stream_connect_host() resolves HOST on the thread pool (getaddrinfo)
 * and tries each address in turn -- "localhost" may give ::1 before
 * 127.0.0.1 -- within one timeout for the whole operation. After sending,
 * evr_stream_shutdown() half-closes: the server reads EOF, while this side
 * can still read the reply. Exits 0 once the server has closed its side, 1
 * on any error (printed with the name of the failed step).
 */
#include <evr/evr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_TIMEOUT_MS 2000

static const char *message = "hello, evr\n";
static evr_write_t write_req;          /* zeroed (static): ready for use */
static char reply[4096];
static size_t reply_len;
static int status = 1;                 /* the exit status */

static void fail(evr_stream_t *s, const char *what, int rc) {
  fprintf(stderr, "%s: %s (%s)\n", what, evr_strerror(rc), evr_err_name(rc));
  if (!evr_is_closing(&s->base))
    evr_close(&s->base, NULL); /* queued writes, the shutdown: EVR_ECANCELED */
}

static void on_read(evr_stream_t *s, ssize_t n, const char *buf) {
  if (n == EVR_EOF) {
    printf("received %zu bytes: %.*s", reply_len, (int)reply_len, reply);
    puts("the server closed its side: done");
    status = 0;
    evr_close(&s->base, NULL);
    return;
  }
  if (n < 0) {
    fail(s, "read", (int)n);
    return;
  }
  /* buf is valid only during this call: copy what we keep. */
  if ((size_t)n > sizeof reply - reply_len) {
    fail(s, "read", EVR_ENOSPC);
    return;
  }
  memcpy(reply + reply_len, buf, (size_t)n);
  reply_len += (size_t)n;
}

static void on_shutdown(evr_stream_t *s, int rc) {
  if (rc < 0) {
    if (rc != EVR_ECANCELED) fail(s, "shutdown", rc);
    return;
  }
  puts("half-closed: the server reads EOF, we keep reading");
}

static void on_written(evr_write_t *req, int rc) {
  if (rc < 0) {
    if (rc != EVR_ECANCELED) fail(req->stream, "write", rc);
    return;
  }
  printf("sent %zu bytes\n", strlen(message));
}

static void on_connect(evr_stream_t *s, int rc) {
  if (rc < 0) {
    /* The stream has no socket again; closing it frees nothing of ours. */
    fail(s, "connect", rc);
    return;
  }
  evr_addr_t peer;
  char text[EVR_ADDR_STRLEN];
  rc = evr_stream_peername(s, &peer);
  if (rc == 0 && evr_addr_format(&peer, text, sizeof text) < 0) rc = EVR_EINVAL;
  if (rc < 0) {
    fail(s, "peername", rc);
    return;
  }
  printf("connected to %s\n", text);
  /* The message is a string literal: it outlives the write, so it can be
   * written without a copy (evr_stream_write_copy() would copy). */
  evr_buf_t buf = {message, strlen(message)};
  if ((rc = evr_stream_write(&write_req, s, &buf, 1, on_written)) < 0 ||
      (rc = evr_stream_shutdown(s, on_shutdown)) < 0 ||
      (rc = evr_stream_read_start(s, on_read)) < 0)
    fail(s, "start", rc);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: tcp-client HOST PORT [MESSAGE]\n");
    return 2;
  }
  char *end;
  long port = strtol(argv[2], &end, 10);
  if (*end != '\0' || port < 1 || port > 65535) {
    fprintf(stderr, "bad port: %s\n", argv[2]);
    return 2;
  }
  if (argc > 3) message = argv[3];

  evr_loop_t *loop;
  evr_stream_t s;
  int rc = evr_loop_new(&loop, NULL);
  if (rc < 0) {
    fprintf(stderr, "evr_loop_new: %s\n", evr_strerror(rc));
    return 1;
  }
  rc = evr_stream_init(loop, &s);
  if (rc == 0)
    rc = evr_stream_connect_host(&s, argv[1], (uint16_t)port, CONNECT_TIMEOUT_MS, on_connect);
  if (rc < 0) {
    /* The callback never runs after an error return. */
    fprintf(stderr, "connect %s:%ld: %s\n", argv[1], port, evr_strerror(rc));
    return 1;
  }
  rc = evr_loop_run(loop, EVR_RUN_DEFAULT);
  if (rc < 0) {
    fprintf(stderr, "evr_loop_run: %s\n", evr_strerror(rc));
    return 1;
  }
  rc = evr_loop_free(loop);
  if (rc < 0) {
    fprintf(stderr, "evr_loop_free: %s\n", evr_strerror(rc));
    return 1;
  }
  return status;
}
