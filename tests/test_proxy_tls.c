/* tests/test_proxy_tls.c: evr-proxy with TLS, end to end, under every
 * backend (EVR_BACKEND is inherited by the daemons). Certificates are made
 * at test time (a CA, a server certificate for localhost and 127.0.0.1,
 * one for another name, one from a CA nobody trusts). Covered: a TLS
 * client relayed to plain evr-echo, 8 MiB byte-exact both ways with
 * close_notify mapped to FIN and back; the certificate chosen by SNI;
 * openssl s_client and Python's ssl module as clients; a PROXY header
 * before the ClientHello (--accept-proxy, v1 and v2); a plain client
 * relayed to a TLS upstream (this file's own OpenSSL echo server) by
 * address and by name, 8 MiB both ways; an upstream certificate that is
 * refused (untrusted CA, wrong --tls-sni) closing the client and counted;
 * plaintext on the TLS port refused and counted; a client stalled in its
 * handshake dropped at --tls-handshake-timeout; bounded buffering with a
 * TLS client that never reads; the command line. */
/* evr-test: backends novalgrind needs=evr-proxy,evr-echo timeout=600 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "e2e.h"
#include "helpers.h"
#include "tls_certs.h"

/* ---- certificates, made once per run ---- */

static char dir[64], ca_path[128], cert_path[128], key_path[128];
static char other_path[128], other_key_path[128]; /* CN other.test, DNS:other.test */
static char rogue_path[128];                      /* localhost, from an untrusted CA */

static int make_certs(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/evr-ptls-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  snprintf(ca_path, sizeof ca_path, "%s/ca.pem", dir);
  snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
  snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
  snprintf(other_path, sizeof other_path, "%s/other.pem", dir);
  snprintf(other_key_path, sizeof other_key_path, "%s/other-key.pem", dir);
  snprintf(rogue_path, sizeof rogue_path, "%s/rogue.pem", dir);
  EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
  EVP_PKEY *other_key = EVP_EC_gen("P-256"), *rogue_key = EVP_EC_gen("P-256");
  assert_non_null(ca_key);
  assert_non_null(key);
  assert_non_null(other_key);
  assert_non_null(rogue_key);
  X509 *ca = tls_make_cert(ca_key, "evr test CA", NULL, NULL, NULL, 1, 86400);
  X509 *cert =
      tls_make_cert(key, "localhost", "DNS:localhost,IP:127.0.0.1", ca, ca_key, 2, 86400);
  X509 *other = tls_make_cert(other_key, "other.test", "DNS:other.test", ca, ca_key, 3, 86400);
  X509 *rogue_ca = tls_make_cert(rogue_key, "evr rogue CA", NULL, NULL, NULL, 4, 86400);
  X509 *rogue = tls_make_cert(key, "localhost", "DNS:localhost,IP:127.0.0.1", rogue_ca,
                              rogue_key, 5, 86400);
  tls_write_pem(ca_path, ca, NULL);
  tls_write_pem(cert_path, cert, NULL);
  tls_write_pem(key_path, NULL, key);
  tls_write_pem(other_path, other, NULL);
  tls_write_pem(other_key_path, NULL, other_key);
  tls_write_pem(rogue_path, rogue, NULL);
  X509_free(ca);
  X509_free(cert);
  X509_free(other);
  X509_free(rogue_ca);
  X509_free(rogue);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(key);
  EVP_PKEY_free(other_key);
  EVP_PKEY_free(rogue_key);
  return 0;
}

static int remove_certs(void **state) {
  (void)state;
  unlink(ca_path);
  unlink(cert_path);
  unlink(key_path);
  unlink(other_path);
  unlink(other_key_path);
  unlink(rogue_path);
  rmdir(dir);
  return 0;
}

/* ---- daemons ---- */

static char proxy_log[64], echo_log[64];
static pid_t echo_pid, proxy_pid;
static int echo_port, proxy_port, metrics_port;

static int setup(void **state) {
  (void)state;
  evr_test_skip_if_backend_refused();
  snprintf(proxy_log, sizeof proxy_log, "/tmp/evr-ptls-test-%ld.log", (long)getpid());
  snprintf(echo_log, sizeof echo_log, "/tmp/evr-ptls-test-echo-%ld.log", (long)getpid());
  echo_pid = proxy_pid = 0;
  return 0;
}

static void dump_logs(void) {
  char *a = e2e_read_file(proxy_log), *b = e2e_read_file(echo_log);
  fprintf(stderr, "---- evr-proxy log ----\n%s\n---- evr-echo log ----\n%s\n", a ? a : "(none)",
          b ? b : "(none)");
  free(a);
  free(b);
}

static void stop_tls_echo(void);

static int teardown(void **state) {
  (void)state;
  if (proxy_pid > 0) e2e_stop(proxy_pid, SIGKILL, 5000);
  if (echo_pid > 0) e2e_stop(echo_pid, SIGKILL, 5000);
  stop_tls_echo();
  unlink(proxy_log);
  unlink(echo_log);
  return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static void start_echo(void) {
  echo_port = e2e_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", echo_port);
  char *argv[] = {(char *)e2e_bin("evr-echo"), "--listen", listen, "--threads", "1", NULL};
  echo_pid = e2e_spawn(argv, echo_log);
  if (e2e_wait_listening(echo_port, 10000) != 0) {
    dump_logs();
    fail_msg("evr-echo did not listen");
  }
}

/* Start evr-proxy on a fresh port with --metrics, the upstream (its text
 * as on the command line) and extra arguments (NULL-terminated). */
static void start_proxy(const char *upstream, const char *const *extra) {
  char listen[64], metrics[64];
  const char *argv[48];
  size_t n = 0;
  proxy_port = e2e_free_port();
  metrics_port = e2e_free_port();
  snprintf(listen, sizeof listen, "127.0.0.1:%d", proxy_port);
  snprintf(metrics, sizeof metrics, "127.0.0.1:%d", metrics_port);
  argv[n++] = e2e_bin("evr-proxy");
  argv[n++] = "--listen";
  argv[n++] = listen;
  argv[n++] = "--metrics";
  argv[n++] = metrics;
  argv[n++] = "--log-level";
  argv[n++] = "debug";
  argv[n++] = "--upstream";
  argv[n++] = upstream;
  for (int i = 0; extra && extra[i]; i++) {
    assert_true(n < 47);
    argv[n++] = extra[i];
  }
  argv[n] = NULL;
  proxy_pid = e2e_spawn((char *const *)argv, proxy_log);
  /* The metrics listener is bound last (see test_proxy.c). */
  if (e2e_wait_listening(metrics_port, 10000) != 0) {
    dump_logs();
    fail_msg("evr-proxy did not listen");
  }
}

/* evr-proxy terminating TLS with the localhost certificate, relaying to
 * evr-echo; extra arguments appended. */
static void start_tls_proxy_to_echo(const char *const *extra) {
  start_echo();
  char up[64];
  snprintf(up, sizeof up, "127.0.0.1:%d", echo_port);
  const char *args[32] = {"--tls-cert", cert_path, "--tls-key", key_path};
  size_t n = 4;
  for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
  args[n] = NULL;
  start_proxy(up, args);
}

static void expect_clean_exit(pid_t *pid, int sig) {
  int st = e2e_stop(*pid, sig, 30000);
  *pid = 0;
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    dump_logs();
    fail_msg("daemon did not exit 0 (status 0x%x)", st);
  }
}

/* The value of "name{labels} value" in a /metrics body; -1 if absent. */
static double metric(const char *body, const char *name_and_labels) {
  size_t n = strlen(name_and_labels);
  for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, name_and_labels, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
  }
  return -1;
}

static char *get_metrics(void) {
  char *resp = e2e_http_get(metrics_port, "/metrics");
  assert_non_null(resp);
  assert_non_null(strstr(resp, " 200 "));
  char *body = strstr(resp, "\r\n\r\n");
  assert_non_null(body);
  memmove(resp, body + 4, strlen(body + 4) + 1);
  return resp;
}

/* Poll /metrics (for at most 5 s) until the metric reaches at least want,
 * or with down until it falls to at most want: the proxy may count after
 * the client saw the effect (a session leaves connections_active once its
 * handles are closed). Its last value. */
static double wait_metric_to(const char *name, double want, int down) {
  double v = -1;
  for (int i = 0; i < 500; i++) {
    char *m = get_metrics();
    v = metric(m, name);
    free(m);
    if (down ? v >= 0 && v <= want : v >= want) break;
    usleep(10000);
  }
  return v;
}

static double wait_metric(const char *name, double want) { return wait_metric_to(name, want, 0); }

/* ---- sockets ---- */

static int wait_fd(int fd, short events, int ms) {
  struct pollfd p = {.fd = fd, .events = events};
  int rc;
  do rc = poll(&p, 1, ms);
  while (rc < 0 && errno == EINTR);
  return rc;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read and drop until EOF or an error, within ms: 0 when the connection
 * ended (EOF or reset), -1 if it stayed open. */
static int wait_closed(int fd, int ms) {
  int64_t end = now_ms() + ms;
  char buf[4096];
  for (;;) {
    int left = (int)(end - now_ms());
    if (left <= 0 || wait_fd(fd, POLLIN, left) <= 0) return -1;
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) return 0;
  }
}

static void set_timeouts(int fd, int seconds) {
  struct timeval tv = {.tv_sec = seconds};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
}

/* ---- a TLS client (OpenSSL, non-blocking socket and poll) ---- */

static SSL_CTX *client_ctx(void) {
  SSL_CTX *c = SSL_CTX_new(TLS_client_method());
  assert_non_null(c);
  assert_int_equal(SSL_CTX_load_verify_locations(c, ca_path, NULL), 1);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  return c;
}

struct tclient {
  SSL_CTX *ctx;
  SSL *ssl;
  int fd;
};

/* Wait for what the last SSL call wanted; -1 on timeout. */
static int ssl_wait(struct tclient *c, int ret, int64_t end) {
  int e = SSL_get_error(c->ssl, ret);
  short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
  if (!ev) return -1;
  int left = (int)(end - now_ms());
  return left > 0 && wait_fd(c->fd, ev, left) > 0 ? 0 : -1;
}

/* Handshake on a connected socket fd with SNI sni (NULL: none), checking
 * the server certificate against the CA and check_host (NULL: not
 * checked); prefix (if not NULL) is sent in the same send() as the
 * ClientHello, before it. 0, or -1 with the reason printed. */
static int tclient_handshake_after(struct tclient *c, int fd, const char *sni,
                                   const char *check_host, const void *prefix, size_t plen) {
  c->ctx = client_ctx();
  c->ssl = SSL_new(c->ctx);
  c->fd = fd;
  assert_non_null(c->ssl);
  set_nonblock(fd);
  assert_int_equal(SSL_set_fd(c->ssl, fd), 1);
  if (sni) assert_int_equal(SSL_set_tlsext_host_name(c->ssl, sni), 1);
  if (check_host) assert_int_equal(SSL_set1_host(c->ssl, check_host), 1);
  if (prefix) {
    /* The ClientHello into memory first, then both at once. */
    BIO *mem = BIO_new(BIO_s_mem()), *sock = SSL_get_rbio(c->ssl);
    assert_non_null(mem);
    assert_int_equal(BIO_up_ref(sock), 1);
    SSL_set0_wbio(c->ssl, mem);
    assert_true(SSL_connect(c->ssl) <= 0);
    char *hello;
    long hlen = BIO_get_mem_data(mem, &hello);
    assert_true(hlen > 0);
    char *both = malloc(plen + (size_t)hlen);
    assert_non_null(both);
    memcpy(both, prefix, plen);
    memcpy(both + plen, hello, (size_t)hlen);
    assert_int_equal(send(fd, both, plen + (size_t)hlen, 0), (ssize_t)(plen + (size_t)hlen));
    free(both);
    SSL_set0_wbio(c->ssl, sock); /* frees mem; the socket's write side again */
  }
  int64_t end = now_ms() + 10000;
  for (;;) {
    int r = SSL_connect(c->ssl);
    if (r == 1) return 0;
    if (ssl_wait(c, r, end) != 0) {
      fprintf(stderr, "TLS handshake: %s (verify: %s)\n",
              ERR_reason_error_string(ERR_peek_last_error()),
              X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
      return -1;
    }
  }
}

static int tclient_handshake(struct tclient *c, int fd, const char *sni, const char *check_host) {
  return tclient_handshake_after(c, fd, sni, check_host, NULL, 0);
}

static void tclient_free(struct tclient *c) {
  SSL_free(c->ssl);
  SSL_CTX_free(c->ctx);
  if (c->fd >= 0) close(c->fd);
  c->ssl = NULL;
  c->ctx = NULL;
  c->fd = -1;
}

static unsigned char pattern(size_t i, unsigned seed) {
  uint32_t x = (uint32_t)i * 2654435761u + seed * 40503u;
  return (unsigned char)(x >> 13);
}

/* Send n bytes of a pattern while reading their echo, byte-exact; then
 * close_notify, and expect close_notify back with nothing more. 0, or -1
 * with the problem printed. */
static int tclient_echo(struct tclient *c, size_t n, unsigned seed, int timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  size_t sent = 0, got = 0;
  unsigned char out[16384], in[16384];
  size_t outlen = 0; /* a write to repeat after WANT_*: same bytes, same length */
  while (got < n) {
    int progress = 0, wr = 1, rd;
    if (sent < n) {
      if (!outlen) {
        outlen = n - sent < sizeof out ? n - sent : sizeof out;
        for (size_t i = 0; i < outlen; i++) out[i] = pattern(sent + i, seed);
      }
      wr = SSL_write(c->ssl, out, (int)outlen);
      if (wr > 0) {
        sent += (size_t)wr;
        outlen = 0;
        progress = 1;
      } else {
        int e = SSL_get_error(c->ssl, wr);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          fprintf(stderr, "SSL_write: error %d at %zu\n", e, sent);
          return -1;
        }
      }
    }
    rd = SSL_read(c->ssl, in, (int)sizeof in);
    if (rd > 0) {
      for (int i = 0; i < rd; i++)
        if (in[i] != pattern(got + (size_t)i, seed)) {
          fprintf(stderr, "byte %zu differs\n", got + (size_t)i);
          return -1;
        }
      got += (size_t)rd;
      progress = 1;
    } else {
      int e = SSL_get_error(c->ssl, rd);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        fprintf(stderr, "SSL_read: error %d after %zu of %zu bytes\n", e, got, n);
        return -1;
      }
    }
    if (!progress) {
      short ev = POLLIN;
      if (sent < n && SSL_get_error(c->ssl, wr) == SSL_ERROR_WANT_WRITE) ev |= POLLOUT;
      int left = (int)(end - now_ms());
      if (left <= 0 || wait_fd(c->fd, ev, left) <= 0) {
        fprintf(stderr, "timed out: sent %zu, got %zu of %zu\n", sent, got, n);
        return -1;
      }
    }
  }
  /* close_notify (and FIN) one way; close_notify must come back. */
  int r;
  while ((r = SSL_shutdown(c->ssl)) < 0)
    if (ssl_wait(c, r, end) != 0) return -1;
  if (shutdown(c->fd, SHUT_WR) != 0) return -1;
  for (;;) {
    r = SSL_read(c->ssl, in, (int)sizeof in);
    if (r > 0) {
      fprintf(stderr, "%d bytes after the echo\n", r);
      return -1;
    }
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN) return 0;
    if (ssl_wait(c, r, end) != 0) {
      fprintf(stderr, "no close_notify back\n");
      return -1;
    }
  }
}

/* The CN of the server certificate of a handshake done. */
static void peer_cn(struct tclient *c, char *out, size_t size) {
  X509 *cert = SSL_get1_peer_certificate(c->ssl);
  assert_non_null(cert);
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, out, (int)size);
  assert_true(n > 0);
  X509_free(cert);
}

/* ---- a TLS echo server (the upstream), one connection at a time ---- */

static struct {
  pthread_t thread;
  int running;
  atomic_int stop;
  int lfd, port;
  SSL_CTX *ctx;
  char sni[256]; /* the name the last client sent, "" if none */
  atomic_int handshakes, failures;
} techo;

static void techo_serve(int fd) {
  set_timeouts(fd, 20);
  SSL *ssl = SSL_new(techo.ctx);
  assert_non_null(ssl);
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) != 1) {
    atomic_fetch_add(&techo.failures, 1);
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return;
  }
  const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  snprintf(techo.sni, sizeof techo.sni, "%s", sni ? sni : "");
  atomic_fetch_add(&techo.handshakes, 1);
  char buf[16384];
  for (;;) {
    int n = SSL_read(ssl, buf, (int)sizeof buf);
    if (n <= 0) {
      if (SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN) SSL_shutdown(ssl);
      break;
    }
    if (SSL_write(ssl, buf, n) != n) break;
  }
  ERR_clear_error();
  SSL_free(ssl);
  close(fd);
}

static void *techo_main(void *arg) {
  (void)arg;
  while (!atomic_load(&techo.stop)) {
    struct pollfd p = {.fd = techo.lfd, .events = POLLIN};
    if (poll(&p, 1, 50) <= 0) continue;
    int fd = accept(techo.lfd, NULL, NULL);
    if (fd >= 0) techo_serve(fd);
  }
  return NULL;
}

/* Serve TLS echo on 127.0.0.1 with cert (and the localhost key). */
static void start_tls_echo(const char *cert) {
  techo.ctx = SSL_CTX_new(TLS_server_method());
  assert_non_null(techo.ctx);
  assert_int_equal(SSL_CTX_use_certificate_chain_file(techo.ctx, cert), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey_file(techo.ctx, key_path, SSL_FILETYPE_PEM), 1);
  techo.lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(techo.lfd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  assert_int_equal(bind(techo.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(techo.lfd, 16), 0);
  assert_int_equal(getsockname(techo.lfd, (struct sockaddr *)&sa, &len), 0);
  techo.port = ntohs(sa.sin_port);
  techo.sni[0] = '\0';
  atomic_store(&techo.stop, 0);
  atomic_store(&techo.handshakes, 0);
  atomic_store(&techo.failures, 0);
  assert_int_equal(pthread_create(&techo.thread, NULL, techo_main, NULL), 0);
  techo.running = 1;
}

static void stop_tls_echo(void) {
  if (!techo.running) return;
  atomic_store(&techo.stop, 1);
  pthread_join(techo.thread, NULL);
  close(techo.lfd);
  SSL_CTX_free(techo.ctx);
  techo.running = 0;
}

/* ---- child processes with their stdin and stdout on pipes ---- */

static int have_program(const char *name) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
  return system(cmd) == 0;
}

/* Run argv with input on its stdin, keeping stdin open until its stdout
 * holds want_len bytes (or it ends), then closing it. The output (NUL
 * terminated, malloc'd) in *out, its length in *out_len. Returns the wait
 * status, or -1 if it did not end within timeout_ms (it is killed). */
static int run_piped(char *const argv[], const void *input, size_t in_len, size_t want_len,
                     char **out, size_t *out_len, int timeout_ms) {
  int in[2], outp[2];
  assert_int_equal(pipe(in), 0);
  assert_int_equal(pipe(outp), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(outp[1], 1);
    close(in[0]);
    close(in[1]);
    close(outp[0]);
    close(outp[1]);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  close(outp[1]);
  set_nonblock(in[1]);
  size_t cap = want_len + 65536, len = 0, written = 0;
  char *buf = malloc(cap + 1);
  assert_non_null(buf);
  int64_t end = now_ms() + timeout_ms;
  int wfd = in[1], rfd = outp[0];
  while (rfd >= 0 && now_ms() < end) {
    if (wfd >= 0 && len >= want_len) {
      close(wfd);
      wfd = -1;
    }
    struct pollfd p[2] = {{.fd = rfd, .events = POLLIN},
                          {.fd = wfd, .events = written < in_len ? POLLOUT : 0}};
    int left = (int)(end - now_ms());
    if (poll(p, 2, left > 0 ? left : 0) <= 0) continue;
    if (p[1].revents & (POLLOUT | POLLERR)) {
      ssize_t w = write(wfd, (const char *)input + written, in_len - written);
      if (w > 0) written += (size_t)w;
    }
    if (p[0].revents & (POLLIN | POLLHUP)) {
      if (len == cap) {
        cap *= 2;
        buf = realloc(buf, cap + 1);
        assert_non_null(buf);
      }
      ssize_t r = read(rfd, buf + len, cap - len);
      if (r > 0) len += (size_t)r;
      else if (r == 0) {
        close(rfd);
        rfd = -1;
      }
    }
  }
  if (wfd >= 0) close(wfd);
  if (rfd >= 0) close(rfd);
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  int left = (int)(end - now_ms());
  int st = e2e_wait_exit(pid, left > 0 ? left : 1);
  if (st == -1) e2e_stop(pid, SIGKILL, 5000);
  return st;
}

/* ---- tests ---- */

static void test_tls_client_to_plain_upstream_8_mib(void **state) {
  (void)state;
  start_tls_proxy_to_echo(NULL);
  struct tclient c = {.fd = -1};
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  assert_int_equal(tclient_handshake(&c, fd, "localhost", "localhost"), 0);
  int rc = tclient_echo(&c, 8u << 20, 1, 120000);
  if (rc) dump_logs();
  assert_int_equal(rc, 0);
  tclient_free(&c);
  /* Again with no SNI: the default certificate, checked by address. */
  fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  assert_int_equal(tclient_handshake(&c, fd, NULL, NULL), 0);
  assert_int_equal(tclient_echo(&c, 100000, 2, 60000), 0);
  tclient_free(&c);
  char *m = get_metrics();
  assert_true(metric(m, "evr_proxy_tls_handshakes_total") == 2);
  assert_true(metric(m, "evr_proxy_bytes_in_total") == (double)((8u << 20) + 100000));
  assert_true(metric(m, "evr_proxy_bytes_out_total") == (double)((8u << 20) + 100000));
  assert_true(metric(m, "evr_proxy_tls_handshake_failures_total{reason=\"invalid\"}") == 0);
  free(m);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_tls_several_clients_at_once(void **state) {
  (void)state;
  const char *extra[] = {"--threads", "2", NULL};
  start_tls_proxy_to_echo(extra);
  enum { N = 8 };
  struct tclient c[N];
  for (int i = 0; i < N; i++) {
    int fd = e2e_connect(proxy_port);
    assert_true(fd >= 0);
    c[i].fd = -1;
    assert_int_equal(tclient_handshake(&c[i], fd, "localhost", "localhost"), 0);
  }
  /* Every session is open at once; each is then driven in turn. */
  for (int i = 0; i < N; i++) {
    assert_int_equal(tclient_echo(&c[i], 1u << 20, (unsigned)i + 10, 60000), 0);
    tclient_free(&c[i]);
  }
  assert_true(wait_metric("evr_proxy_tls_handshakes_total", N) == N);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_tls_sni_picks_the_certificate(void **state) {
  (void)state;
  const char *extra[] = {"--tls-cert", other_path, "--tls-key", other_key_path, NULL};
  start_tls_proxy_to_echo(extra);
  static const struct {
    const char *sni, *cn;
  } cases[] = {{"other.test", "other.test"}, {"localhost", "localhost"}, {NULL, "localhost"},
               {"unknown.test", "localhost"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct tclient c = {.fd = -1};
    int fd = e2e_connect(proxy_port);
    assert_true(fd >= 0);
    assert_int_equal(tclient_handshake(&c, fd, cases[i].sni, NULL), 0);
    char cn[128];
    peer_cn(&c, cn, sizeof cn);
    if (strcmp(cn, cases[i].cn) != 0)
      fail_msg("SNI %s: certificate for %s, expected %s", cases[i].sni ? cases[i].sni : "(none)",
               cn, cases[i].cn);
    assert_int_equal(tclient_echo(&c, 1000, 3, 10000), 0);
    tclient_free(&c);
  }
  /* openssl s_client -servername shows the subject it was given. */
  if (have_program("openssl")) {
    char port[32];
    snprintf(port, sizeof port, "127.0.0.1:%d", proxy_port);
    char *argv[] = {"openssl", "s_client", "-connect", port, "-servername", "other.test",
                    "-CAfile", ca_path, "-verify_return_error", NULL};
    char *out;
    size_t len;
    int st = run_piped(argv, "", 0, 0, &out, &len, 30000);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !strstr(out, "CN = other.test"))
      fail_msg("openssl s_client -servername other.test (status 0x%x):\n%s", st, out);
    free(out);
  }
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_tls_openssl_s_client_exchanges_data(void **state) {
  (void)state;
  if (!have_program("openssl")) {
    print_message("skipped: the openssl command is not installed\n");
    skip();
  }
  start_tls_proxy_to_echo(NULL);
  char port[32];
  snprintf(port, sizeof port, "127.0.0.1:%d", proxy_port);
  /* -nocommands: a line read from stdin that starts with Q, R or K is
   * data, not a command. */
  char *argv[] = {"openssl", "s_client", "-quiet", "-no_ign_eof", "-nocommands", "-connect", port,
                  "-servername", "localhost", "-verify_hostname", "localhost", "-CAfile",
                  ca_path, "-verify_return_error", NULL};
  size_t n = 200000;
  char *input = malloc(n);
  assert_non_null(input);
  for (size_t i = 0; i < n; i++) input[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
  char *out;
  size_t len;
  int st = run_piped(argv, input, n, n, &out, &len, 60000);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || len != n || memcmp(out, input, n)) {
    dump_logs();
    fail_msg("openssl s_client: status 0x%x, %zu of %zu bytes back", st, len, n);
  }
  free(out);
  free(input);
  assert_true(wait_metric("evr_proxy_tls_handshakes_total", 1) == 1);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static const char python_client[] =
    "import socket, ssl, sys\n"
    "port, ca = int(sys.argv[1]), sys.argv[2]\n"
    "ctx = ssl.create_default_context(cafile=ca)\n"
    "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=20),\n"
    "                    server_hostname='localhost')\n"
    "total = 0\n"
    "for i in range(32):\n"
    "    chunk = bytes((i * 8192 + j) * 7 % 251 for j in range(8192))\n"
    "    s.sendall(chunk)\n"
    "    got = b''\n"
    "    while len(got) < len(chunk):\n"
    "        b = s.recv(len(chunk) - len(got))\n"
    "        if not b: sys.exit('early EOF after %d bytes' % (total + len(got)))\n"
    "        got += b\n"
    "    if got != chunk: sys.exit('data differ in chunk %d' % i)\n"
    "    total += len(got)\n"
    "version = s.version()\n"
    "s.unwrap().close()\n"
    "print('ok', total, version)\n";

static void test_tls_python_ssl_client_exchanges_data(void **state) {
  (void)state;
  if (!have_program("python3")) {
    print_message("skipped: python3 is not installed\n");
    skip();
  }
  start_tls_proxy_to_echo(NULL);
  char port[16];
  snprintf(port, sizeof port, "%d", proxy_port);
  char *argv[] = {"python3", "-c", (char *)python_client, port, ca_path, NULL};
  char *out;
  size_t len;
  int st = run_piped(argv, "", 0, 1u << 20, &out, &len, 60000);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || strncmp(out, "ok 262144 TLS", 13)) {
    dump_logs();
    fail_msg("python3 ssl client: status 0x%x, output: %s", st, out);
  }
  free(out);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

/* A PROXY header in the clear, then the handshake on the same connection
 * (header and ClientHello in one send(): the proxy must not read past the
 * header, or the TLS layer misses the start of the ClientHello). */
static void check_accept_proxy_then_tls(int version) {
  const char *extra[] = {"--accept-proxy", NULL};
  start_tls_proxy_to_echo(extra);
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  static const char v1[] = "PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n";
  static const unsigned char v2[28] = {'\r', '\n', '\r', '\n', 0,   '\r', '\n', 'Q', 'U', 'I',
                                       'T',  '\n', 0x21, 0x11, 0,   12,   192,  0,   2,   1,
                                       198,  51,   100,  2,    0x9c, 0x40, 1,    0xbb};
  struct tclient c = {.fd = -1};
  int rc = version == 1
               ? tclient_handshake_after(&c, fd, "localhost", "localhost", v1, sizeof v1 - 1)
               : tclient_handshake_after(&c, fd, "localhost", "localhost", v2, sizeof v2);
  if (rc) dump_logs();
  assert_int_equal(rc, 0);
  assert_int_equal(tclient_echo(&c, 1u << 20, 4, 60000), 0);
  tclient_free(&c);
  char *m = get_metrics();
  assert_true(metric(m, version == 1 ? "evr_proxy_inbound_proxy_headers_total{version=\"v1\"}"
                                     : "evr_proxy_inbound_proxy_headers_total{version=\"v2\"}") ==
              1);
  assert_true(metric(m, "evr_proxy_tls_handshakes_total") == 1);
  free(m);
  char *log = e2e_read_file(proxy_log);
  assert_non_null(log);
  assert_non_null(strstr(log, "client 192.0.2.1:40000"));
  free(log);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_tls_accept_proxy_v1_header_before_client_hello(void **state) {
  (void)state;
  check_accept_proxy_then_tls(1);
}

static void test_tls_accept_proxy_v2_header_before_client_hello(void **state) {
  (void)state;
  check_accept_proxy_then_tls(2);
}

static void check_upstream_metric(const char *name, int port, double want) {
  char full[160];
  snprintf(full, sizeof full, "%s{upstream=\"%s:%d\"}", name, "127.0.0.1", port);
  double v = wait_metric(full, want);
  if (v != want) {
    dump_logs();
    fail_msg("%s is %g, expected %g", full, v, want);
  }
}

static void test_tls_plain_client_to_tls_upstream_8_mib(void **state) {
  (void)state;
  start_tls_echo(cert_path);
  char up[64];
  snprintf(up, sizeof up, "127.0.0.1:%d", techo.port);
  const char *extra[] = {"--upstream-tls", "--tls-ca", ca_path, NULL};
  start_proxy(up, extra);
  /* Half-close: the client's FIN becomes close_notify, the upstream's
   * close_notify a FIN. Verified by address (no SNI sent). */
  int failed = e2e_echo_traffic(proxy_port, 1, 8u << 20, 1, 120000);
  if (failed) dump_logs();
  assert_int_equal(failed, 0);
  assert_string_equal(techo.sni, "");
  /* The first session ended with close_notify both ways: its ticket is
   * offered (and may be offered again) to the next ones. How many of the
   * 4 concurrent ones resume depends on their order (tickets replace one
   * another as they come, and OpenSSL drops a session whose connection
   * ended in an error); the first to start does: 1 to 4 (seen: 1 and 4). */
  check_upstream_metric("evr_proxy_upstream_tls_resumed_total", techo.port, 0);
  assert_int_equal(e2e_echo_traffic(proxy_port, 4, 256 * 1024, 1, 60000), 0);
  check_upstream_metric("evr_proxy_upstream_tls_handshakes_total", techo.port, 5);
  check_upstream_metric("evr_proxy_upstream_tls_handshake_failures_total", techo.port, 0);
  char resumed[160];
  snprintf(resumed, sizeof resumed,
           "evr_proxy_upstream_tls_resumed_total{upstream=\"127.0.0.1:%d\"}", techo.port);
  double r = wait_metric(resumed, 1);
  if (r < 1 || r > 4) {
    dump_logs();
    fail_msg("%s is %g, expected 1 to 4", resumed, r);
  }
  expect_clean_exit(&proxy_pid, SIGTERM);

  /* By name: SNI and the name checked. */
  snprintf(up, sizeof up, "localhost:%d", techo.port);
  start_proxy(up, extra);
  assert_int_equal(e2e_echo_traffic(proxy_port, 1, 1u << 20, 1, 60000), 0);
  assert_string_equal(techo.sni, "localhost");
  expect_clean_exit(&proxy_pid, SIGTERM);
}

static void test_tls_both_sides(void **state) {
  (void)state;
  start_tls_echo(cert_path);
  char up[64];
  snprintf(up, sizeof up, "127.0.0.1:%d", techo.port);
  const char *extra[] = {"--tls-cert", cert_path, "--tls-key", key_path, "--upstream-tls",
                         "--tls-ca", ca_path, "--tls-sni", "localhost", NULL};
  start_proxy(up, extra);
  struct tclient c = {.fd = -1};
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  assert_int_equal(tclient_handshake(&c, fd, "localhost", "localhost"), 0);
  int rc = tclient_echo(&c, 8u << 20, 5, 120000);
  if (rc) dump_logs();
  assert_int_equal(rc, 0);
  tclient_free(&c);
  assert_string_equal(techo.sni, "localhost");
  expect_clean_exit(&proxy_pid, SIGTERM);
}

/* The upstream's certificate is refused: the client is closed, the
 * failure counted and its reason logged. */
static void check_upstream_refused(const char *cert, const char *sni, const char *reason) {
  start_tls_echo(cert);
  char up[64];
  snprintf(up, sizeof up, "127.0.0.1:%d", techo.port);
  const char *extra[] = {"--upstream-tls", "--tls-ca", ca_path, sni ? "--tls-sni" : NULL, sni,
                         NULL};
  start_proxy(up, extra);
  for (int i = 0; i < 2; i++) {
    int fd = e2e_connect(proxy_port);
    assert_true(fd >= 0);
    (void)send(fd, "hello", 5, MSG_NOSIGNAL);
    if (wait_closed(fd, 20000) != 0) {
      dump_logs();
      fail_msg("the client was not closed");
    }
    close(fd);
  }
  check_upstream_metric("evr_proxy_upstream_tls_handshake_failures_total", techo.port, 2);
  check_upstream_metric("evr_proxy_upstream_tls_handshakes_total", techo.port, 0);
  char *log = e2e_read_file(proxy_log);
  assert_non_null(log);
  if (!strstr(log, reason)) {
    dump_logs();
    fail_msg("no \"%s\" in the log", reason);
  }
  free(log);
  expect_clean_exit(&proxy_pid, SIGTERM);
}

static void test_tls_upstream_from_untrusted_ca_refused(void **state) {
  (void)state;
  check_upstream_refused(rogue_path, NULL, "certificate verify failed");
}

static void test_tls_upstream_with_wrong_sni_refused(void **state) {
  (void)state;
  check_upstream_refused(cert_path, "wrong.test", "hostname mismatch");
}

static void test_tls_plaintext_client_refused(void **state) {
  (void)state;
  start_tls_proxy_to_echo(NULL);
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  const char *req = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
  assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
  if (wait_closed(fd, 20000) != 0) {
    dump_logs();
    fail_msg("a plaintext client was not closed");
  }
  close(fd);
  assert_true(wait_metric("evr_proxy_tls_handshake_failures_total{reason=\"invalid\"}", 1) == 1);
  char *m = get_metrics();
  char name[128];
  snprintf(name, sizeof name, "evr_proxy_upstream_connections_total{upstream=\"127.0.0.1:%d\"}",
           echo_port);
  assert_true(metric(m, name) == 0); /* no upstream for it */
  assert_true(metric(m, "evr_proxy_tls_handshakes_total") == 0);
  free(m);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_tls_stalled_handshake_dropped_at_timeout(void **state) {
  (void)state;
  const char *extra[] = {"--tls-handshake-timeout", "300", NULL};
  start_tls_proxy_to_echo(extra);
  /* The start of a ClientHello record, then nothing. */
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  static const unsigned char part[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc};
  assert_int_equal(send(fd, part, sizeof part, 0), (ssize_t)sizeof part);
  /* And a client that sends nothing at all. */
  int fd2 = e2e_connect(proxy_port);
  assert_true(fd2 >= 0);
  if (wait_closed(fd, 20000) != 0 || wait_closed(fd2, 20000) != 0) {
    dump_logs();
    fail_msg("a stalled client was not dropped");
  }
  close(fd);
  close(fd2);
  assert_true(wait_metric("evr_proxy_tls_handshake_failures_total{reason=\"timeout\"}", 2) == 2);
  assert_true(wait_metric_to("evr_proxy_connections_active", 0, 1) == 0);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

static void test_tls_buffering_bounded_with_client_that_never_reads(void **state) {
  (void)state;
  const char *extra[] = {"--buffer-size", "65536", "--threads", "1", NULL};
  start_tls_proxy_to_echo(extra);
  int fd = e2e_connect(proxy_port);
  assert_true(fd >= 0);
  int small = 64 * 1024;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  struct tclient c = {.fd = -1};
  assert_int_equal(tclient_handshake(&c, fd, "localhost", NULL), 0);
  static unsigned char chunk[16384];
  memset(chunk, 'z', sizeof chunk);
  size_t sent = 0, limit = 256u << 20;
  /* Send until every buffer on the way is full and sending stalls. */
  while (sent < limit) {
    int n = SSL_write(c.ssl, chunk, (int)sizeof chunk);
    if (n > 0) {
      sent += (size_t)n;
      continue;
    }
    assert_int_equal(SSL_get_error(c.ssl, n), SSL_ERROR_WANT_WRITE);
    if (wait_fd(fd, POLLOUT, 1000) == 0) break; /* stalled for a second */
  }
  assert_true(sent < limit); /* backpressure reached the client */
  char *m = get_metrics();
  double maxq = metric(m, "evr_proxy_buffered_bytes_max_per_direction");
  /* --buffer-size, and a TLS record (16 KiB and its framing) at most more. */
  assert_true(maxq >= 0 && maxq <= 65536 + 16384 + 1024);
  free(m);
  tclient_free(&c);
  expect_clean_exit(&proxy_pid, SIGTERM);
  expect_clean_exit(&echo_pid, SIGTERM);
}

/* Exit status and log of evr-proxy run with args (it is to stop by itself). */
static int run_proxy_expect_exit(const char *const *args, char **log) {
  const char *argv[24];
  size_t n = 0;
  argv[n++] = e2e_bin("evr-proxy");
  for (int i = 0; args[i]; i++) argv[n++] = args[i];
  argv[n] = NULL;
  pid_t pid = e2e_spawn((char *const *)argv, proxy_log);
  int st = e2e_wait_exit(pid, 10000);
  if (st == -1) e2e_stop(pid, SIGKILL, 5000);
  *log = e2e_read_file(proxy_log);
  assert_non_null(*log);
  return st;
}

static void test_tls_command_line(void **state) {
  (void)state;
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", e2e_free_port());
  static const struct {
    const char *args[8];
    int status;
    const char *says;
  } cases[] = {
      {{"--tls-cert", "x.pem", NULL}, 2, "pairs"},
      {{"--tls-sni", "a.test", NULL}, 2, "--tls-sni needs --upstream-tls"},
      {{"--tls-ca", "ca.pem", NULL}, 2, "--tls-ca needs --upstream-tls"},
      {{"--tls-handshake-timeout", "0", NULL}, 2, "--tls-handshake-timeout"},
      {{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem", NULL}, 1,
       "/nonexistent.pem"},
      {{"--upstream-tls", "--tls-ca", "/nonexistent-ca.pem", NULL}, 1, "/nonexistent-ca.pem"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *args[16] = {"--listen", listen, "--upstream", "127.0.0.1:9"};
    size_t n = 4;
    for (int j = 0; cases[i].args[j]; j++) args[n++] = cases[i].args[j];
    args[n] = NULL;
    char *log;
    int st = run_proxy_expect_exit(args, &log);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != cases[i].status ||
        !strstr(log, cases[i].says))
      fail_msg("case %zu: status 0x%x, expected exit %d saying \"%s\"; output:\n%s", i, st,
               cases[i].status, cases[i].says, log);
    free(log);
  }
  /* A key that does not match its certificate. */
  const char *args[] = {"--listen", listen, "--upstream", "127.0.0.1:9", "--tls-cert",
                        other_path, "--tls-key", key_path, NULL};
  char *log;
  int st = run_proxy_expect_exit(args, &log);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 1 || !strstr(log, other_path))
    fail_msg("mismatched key: status 0x%x; output:\n%s", st, log);
  free(log);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      T(test_tls_client_to_plain_upstream_8_mib),
      T(test_tls_several_clients_at_once),
      T(test_tls_sni_picks_the_certificate),
      T(test_tls_openssl_s_client_exchanges_data),
      T(test_tls_python_ssl_client_exchanges_data),
      T(test_tls_accept_proxy_v1_header_before_client_hello),
      T(test_tls_accept_proxy_v2_header_before_client_hello),
      T(test_tls_plain_client_to_tls_upstream_8_mib),
      T(test_tls_both_sides),
      T(test_tls_upstream_from_untrusted_ca_refused),
      T(test_tls_upstream_with_wrong_sni_refused),
      T(test_tls_plaintext_client_refused),
      T(test_tls_stalled_handshake_dropped_at_timeout),
      T(test_tls_buffering_bounded_with_client_that_never_reads),
      T(test_tls_command_line),
  };
  return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
