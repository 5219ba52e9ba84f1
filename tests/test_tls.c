/* tests/test_tls.c: TLS connections over socket pairs under every backend:
 * handshake with a CA and server certificates made at test time, 1 MiB
 * and 64 MiB byte-exact both ways, close_notify as EVR_EOF, certificate
 * and host name verification, SNI, ALPN, session resumption, plaintext
 * sent to a TLS server, truncated records, aborted handshakes and the
 * handshake timeout. */
/* evr-test: backends timeout=300 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include "helpers.h"
#include "tls_certs.h"
#include "evr/tls.h"

/* ---- certificates, made once per run ---- */

static char dir[64], ca_path[128], cert_path[128], key_path[128];
static char expired_path[128], rogue_path[128]; /* bad server certificates */
static char other_path[128]; /* for other.example and *.wild.example */

/* A certificate valid until not_after seconds from now, for "localhost"
 * and 127.0.0.1 when issuer signs it. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       long serial, long not_after) {
  return tls_make_cert(key, cn, "DNS:localhost,IP:127.0.0.1", issuer, issuer_key, serial,
                       not_after);
}

static int make_certs(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/evr-tls-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  snprintf(ca_path, sizeof ca_path, "%s/ca.pem", dir);
  snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
  snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
  snprintf(expired_path, sizeof expired_path, "%s/expired.pem", dir);
  snprintf(rogue_path, sizeof rogue_path, "%s/rogue.pem", dir);
  snprintf(other_path, sizeof other_path, "%s/other.pem", dir);
  EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
  EVP_PKEY *rogue_key = EVP_EC_gen("P-256");
  assert_non_null(ca_key);
  assert_non_null(key);
  assert_non_null(rogue_key);
  X509 *ca = make_cert(ca_key, "evr test CA", NULL, NULL, 1, 86400);
  X509 *cert = make_cert(key, "localhost", ca, ca_key, 2, 86400);
  /* Expired a minute ago; and one from a CA the clients do not trust. */
  X509 *expired = make_cert(key, "localhost", ca, ca_key, 3, -60);
  X509 *rogue_ca = make_cert(rogue_key, "evr rogue CA", NULL, NULL, 4, 86400);
  X509 *rogue = make_cert(key, "localhost", rogue_ca, rogue_key, 5, 86400);
  tls_write_pem(ca_path, ca, NULL);
  tls_write_pem(cert_path, cert, NULL);
  tls_write_pem(key_path, NULL, key);
  tls_write_pem(expired_path, expired, NULL);
  tls_write_pem(rogue_path, rogue, NULL);
  X509 *other = tls_make_cert(key, "other.example", "DNS:other.example,DNS:*.wild.example", ca,
                               ca_key, 6, 86400);
  tls_write_pem(other_path, other, NULL);
  X509_free(other);
  X509_free(ca);
  X509_free(cert);
  X509_free(expired);
  X509_free(rogue_ca);
  X509_free(rogue);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(key);
  EVP_PKEY_free(rogue_key);
  return 0;
}

static int remove_certs(void **state) {
  (void)state;
  unlink(ca_path);
  unlink(cert_path);
  unlink(key_path);
  unlink(expired_path);
  unlink(rogue_path);
  unlink(other_path);
  rmdir(dir);
  return 0;
}

/* ---- a peer: a TLS connection that collects what it reads ---- */

struct peer {
  evr_tls_t t;
  int hs_done, hs_status;
  char *buf;
  size_t len, cap;
  ssize_t end; /* 0, or the negative value that ended reading */
  int closed;
};

static void on_hs(evr_tls_t *t, int status) {
  struct peer *p = t->data;
  p->hs_done = 1;
  p->hs_status = status;
}

static void on_read(evr_tls_t *t, ssize_t n, const char *buf) {
  struct peer *p = t->data;
  assert_true(n != 0);
  if (n < 0) {
    p->end = n;
    return;
  }
  if (p->len + (size_t)n > p->cap) {
    p->cap = (p->len + (size_t)n) * 2;
    p->buf = realloc(p->buf, p->cap);
    assert_non_null(p->buf);
  }
  memcpy(p->buf + p->len, buf, (size_t)n);
  p->len += (size_t)n;
}

static void on_closed(evr_tls_t *t) {
  struct peer *p = t->data;
  p->closed = 1;
  free(p->buf);
  p->buf = NULL;
}

static void peer_open(struct peer *p, evr_tls_ctx_t *ctx, const char *name, int fd) {
  memset(p, 0, sizeof *p);
  assert_evr_ok(evr_tls_init(test_loop, &p->t, ctx, name));
  p->t.data = p;
  assert_evr_ok(evr_stream_open(&p->t.stream, fd));
  assert_evr_ok(evr_tls_start(&p->t, on_hs));
}

static void peer_close(struct peer *p) {
  assert_evr_ok(evr_tls_close(&p->t, on_closed));
  run_until(test_loop, &p->closed, 1000);
}

static evr_tls_ctx_t *server_ctx(void) {
  evr_tls_ctx_t *c;
  assert_evr_ok(evr_tls_ctx_new_server(&c, cert_path, key_path));
  return c;
}

static evr_tls_ctx_t *client_ctx(void) {
  evr_tls_ctx_t *c;
  assert_evr_ok(evr_tls_ctx_new_client(&c, ca_path));
  return c;
}

/* ---- tests ---- */

static void test_tls_megabyte_both_ways_and_close_notify(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_tls_ctx_t *sc = server_ctx(), *cc = client_ctx();
  int sv[2];
  make_socketpair(sv);
  struct peer s, c;
  peer_open(&s, sc, NULL, sv[0]);
  peer_open(&c, cc, "localhost", sv[1]);
  /* The connections keep what they need, the client's session store too:
   * its ticket comes after the handshake. */
  assert_evr_ok(evr_tls_ctx_set_resumption(cc, 1));
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  assert_null(evr_tls_version(&c.t));
  assert_evr_ok(evr_tls_read_start(&s.t, on_read));
  assert_evr_ok(evr_tls_read_start(&c.t, on_read));
  run_until(test_loop, &s.hs_done, 1000);
  run_until(test_loop, &c.hs_done, 1000);
  assert_evr_ok(s.hs_status);
  assert_evr_ok(c.hs_status);
  assert_string_equal(evr_tls_version(&c.t), "TLSv1.3");

  size_t n = 1u << 20;
  char *a = malloc(n), *b = malloc(n);
  assert_non_null(a);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++) {
    a[i] = (char)(i * 7 + 1);
    b[i] = (char)(i * 13 + 5);
  }
  /* In pieces of odd sizes, to cross record boundaries. */
  for (size_t off = 0; off < n;) {
    size_t k = n - off < 30001 ? n - off : 30001;
    assert_evr_ok(evr_tls_write(&c.t, a + off, k));
    assert_evr_ok(evr_tls_write(&s.t, b + off, k));
    off += k;
  }
  while (s.len < n || c.len < n) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(s.len, n);
  assert_int_equal(c.len, n);
  assert_memory_equal(s.buf, a, n);
  assert_memory_equal(c.buf, b, n);
  free(a);
  free(b);

  /* close_notify: the server reads EVR_EOF and can still answer. */
  assert_evr_ok(evr_tls_shutdown(&c.t, NULL));
  assert_int_equal(evr_tls_write(&c.t, "x", 1), EVR_EPIPE);
  while (s.end == 0) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(s.end, EVR_EOF);
  assert_evr_ok(evr_tls_write(&s.t, "bye", 3));
  assert_evr_ok(evr_tls_shutdown(&s.t, NULL));
  while (c.end == 0) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
  assert_int_equal(c.end, EVR_EOF);
  assert_memory_equal(c.buf + n, "bye", 3);
  assert_int_equal(evr_tls_read_start(&c.t, on_read), EVR_EOF);
  peer_close(&s);
  peer_close(&c);
  assert_fds_back_to(base);
}

/* A server certificate the client must refuse when it connects to name:
 * EVR_ETLS, and a reason that says why. */
static void check_refused_certificate(const char *cert_file, const char *name,
                                      const char *why) {
  int base = count_open_fds();
  evr_tls_ctx_t *sc, *cc = client_ctx();
  assert_evr_ok(evr_tls_ctx_new_server(&sc, cert_file, key_path));
  int sv[2];
  make_socketpair(sv);
  struct peer s, c;
  peer_open(&s, sc, NULL, sv[0]);
  peer_open(&c, cc, name, sv[1]);
  run_until(test_loop, &c.hs_done, 1000);
  assert_int_equal(c.hs_status, EVR_ETLS);
  assert_string_equal(evr_err_name(EVR_ETLS), "ETLS");
  if (!strstr(evr_tls_reason(&c.t), "certificate verify failed") ||
      !strstr(evr_tls_reason(&c.t), why))
    fail_msg("reason \"%s\" lacks \"%s\"", evr_tls_reason(&c.t), why);
  run_until(test_loop, &s.hs_done, 1000); /* the alert, or the close */
  assert_true(s.hs_status < 0);
  peer_close(&s);
  peer_close(&c);
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  assert_fds_back_to(base);
}

static void test_tls_wrong_host_name_fails_verification(void **state) {
  (void)state;
  check_refused_certificate(cert_path, "other.example", "hostname");
}

static void test_tls_expired_certificate_fails_verification(void **state) {
  (void)state;
  check_refused_certificate(expired_path, "localhost", "certificate has expired");
}

static void test_tls_untrusted_certificate_fails_verification(void **state) {
  (void)state;
  check_refused_certificate(rogue_path, "localhost", "unable to get local issuer certificate");
}

static void test_tls_plaintext_to_server_fails_handshake(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_tls_ctx_t *sc = server_ctx();
  int sv[2];
  make_socketpair(sv);
  struct peer s;
  peer_open(&s, sc, NULL, sv[0]);
  const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  assert_int_equal(write(sv[1], req, sizeof req - 1), (ssize_t)(sizeof req - 1));
  run_until(test_loop, &s.hs_done, 1000);
  assert_int_equal(s.hs_status, EVR_ETLS);
  assert_true(evr_tls_reason(&s.t)[0] != '\0');
  peer_close(&s);
  close(sv[1]);
  evr_tls_ctx_free(sc);
  assert_fds_back_to(base);
}

static void test_tls_stalled_client_cut_by_handshake_timeout(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_tls_ctx_t *sc = server_ctx();
  assert_evr_ok(evr_tls_ctx_set_handshake_timeout(sc, 50));
  int sv[2];
  make_socketpair(sv);
  struct peer s;
  memset(&s, 0, sizeof s);
  assert_evr_ok(evr_tls_init(test_loop, &s.t, sc, NULL));
  s.t.data = &s;
  /* The connection holds the context: freed now, its timeout still
   * applies when the handshake starts. */
  evr_tls_ctx_free(sc);
  assert_evr_ok(evr_stream_open(&s.t.stream, sv[0]));
  assert_evr_ok(evr_tls_start(&s.t, on_hs));
  /* Half a record header, then nothing. */
  assert_int_equal(write(sv[1], "\x16\x03", 2), 2);
  run_until(test_loop, &s.hs_done, 1000);
  assert_int_equal(s.hs_status, EVR_ETIMEDOUT);
  assert_string_equal(evr_tls_reason(&s.t), "handshake timed out");
  peer_close(&s);
  close(sv[1]);
  assert_fds_back_to(base);
}


/* A server and a client over a socket pair, both reading, handshake run
 * to its end on both sides. */
static void connect_pair(struct peer *s, struct peer *c, evr_tls_ctx_t *sc, evr_tls_ctx_t *cc,
                         const char *name) {
  int sv[2];
  make_socketpair(sv);
  peer_open(s, sc, NULL, sv[0]);
  peer_open(c, cc, name, sv[1]);
  assert_evr_ok(evr_tls_read_start(&s->t, on_read));
  assert_evr_ok(evr_tls_read_start(&c->t, on_read));
  run_until(test_loop, &s->hs_done, 1000);
  run_until(test_loop, &c->hs_done, 1000);
}

/* One byte each way: the client has read the server's tickets (TLS 1.3
 * sends them after the handshake) once it reads the byte. */
static void ping(struct peer *s, struct peer *c) {
  size_t sl = s->len, cl = c->len;
  assert_evr_ok(evr_tls_write(&c->t, "?", 1));
  assert_evr_ok(evr_tls_write(&s->t, "!", 1));
  while (s->len == sl || c->len == cl) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
}

/* SNI picks the certificate that names the server: verification of the
 * name passes only with the right one. */
static void test_tls_sni_picks_the_certificate(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_tls_ctx_t *sc = server_ctx(), *cc = client_ctx();
  assert_evr_ok(evr_tls_ctx_add_server_cert(sc, other_path, key_path));
  const char *names[] = {"other.example", "a.wild.example", "localhost", "127.0.0.1"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    struct peer s, c;
    connect_pair(&s, &c, sc, cc, names[i]);
    if (s.hs_status || c.hs_status)
      fail_msg("%s: server %s, client %s (%s)", names[i], evr_err_name(s.hs_status),
               evr_err_name(c.hs_status), evr_tls_reason(&c.t));
    /* An IP address is verified but not sent as SNI. */
    if (i < 3) assert_string_equal(evr_tls_server_name(&s.t), names[i]);
    else assert_null(evr_tls_server_name(&s.t));
    peer_close(&s);
    peer_close(&c);
  }
  /* A name no certificate has: the first pair, which the client refuses. */
  struct peer s, c;
  connect_pair(&s, &c, sc, cc, "nowhere.example");
  assert_int_equal(c.hs_status, EVR_ETLS);
  assert_non_null(strstr(evr_tls_reason(&c.t), "hostname"));
  peer_close(&s);
  peer_close(&c);
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  assert_fds_back_to(base);
}

static void check_alpn(evr_tls_t *t, const char *want) {
  size_t len = 99;
  const char *p = evr_tls_alpn(t, &len);
  if (!want) {
    assert_null(p);
    assert_int_equal(len, 0);
    return;
  }
  assert_non_null(p);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(p, want, len);
}

/* ALPN: the first of the server's protocols the client offers; none in
 * common is no protocol, not a failed handshake. Pairs chosen by SNI
 * negotiate the same way. */
static void test_tls_alpn(void **state) {
  (void)state;
  evr_tls_ctx_t *sc = server_ctx(), *cc = client_ctx(), *cc2 = client_ctx();
  assert_evr_ok(evr_tls_ctx_add_server_cert(sc, other_path, key_path));
  assert_evr_ok(evr_tls_ctx_set_alpn(sc, "h2,http/1.1,evr"));
  assert_evr_ok(evr_tls_ctx_set_alpn(cc, "evr,http/1.1"));
  assert_evr_ok(evr_tls_ctx_set_alpn(cc2, "smtp"));
  const char *names[] = {"localhost", "other.example"};
  for (int i = 0; i < 2; i++) {
    struct peer s, c;
    connect_pair(&s, &c, sc, cc, names[i]);
    assert_evr_ok(s.hs_status);
    assert_evr_ok(c.hs_status);
    check_alpn(&s.t, "http/1.1");
    check_alpn(&c.t, "http/1.1");
    peer_close(&s);
    peer_close(&c);
  }
  struct peer s, c;
  connect_pair(&s, &c, sc, cc2, "localhost");
  assert_evr_ok(s.hs_status);
  assert_evr_ok(c.hs_status);
  check_alpn(&s.t, NULL);
  check_alpn(&c.t, NULL);
  peer_close(&s);
  peer_close(&c);
  assert_null(evr_tls_alpn(NULL, NULL));
  /* Bad lists. */
  assert_int_equal(evr_tls_ctx_set_alpn(cc, ""), EVR_EINVAL);
  assert_int_equal(evr_tls_ctx_set_alpn(cc, "a,,b"), EVR_EINVAL);
  assert_int_equal(evr_tls_ctx_set_alpn(cc, "a,"), EVR_EINVAL);
  char big[300];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(evr_tls_ctx_set_alpn(cc, big), EVR_EINVAL);
  assert_int_equal(evr_tls_ctx_set_alpn(NULL, "h2"), EVR_EINVAL);
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  evr_tls_ctx_free(cc2);
}

/* A client with resumption resumes its next connection to the same
 * server with the ticket it got; to another name, or without resumption,
 * it makes a full handshake. */
static void test_tls_session_resumption(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_tls_ctx_t *sc = server_ctx(), *cc = client_ctx(), *plain = client_ctx();
  assert_evr_ok(evr_tls_ctx_add_server_cert(sc, other_path, key_path));
  assert_evr_ok(evr_tls_ctx_set_resumption(cc, 1));
  struct {
    evr_tls_ctx_t *ctx;
    const char *name;
    int resumed;
  } steps[] = {
      {cc, "localhost", 0},     {cc, "localhost", 1},     {cc, "other.example", 0},
      {cc, "other.example", 1}, {cc, "localhost", 1},     {plain, "localhost", 0},
      {plain, "localhost", 0},
  };
  for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
    struct peer s, c;
    connect_pair(&s, &c, sc, steps[i].ctx, steps[i].name);
    assert_evr_ok(s.hs_status);
    assert_evr_ok(c.hs_status);
    ping(&s, &c);
    if (evr_tls_resumed(&c.t) != steps[i].resumed || evr_tls_resumed(&s.t) != steps[i].resumed)
      fail_msg("step %zu (%s): resumed client %d server %d, want %d", i, steps[i].name,
               evr_tls_resumed(&c.t), evr_tls_resumed(&s.t), steps[i].resumed);
    /* The client first: the server's end without close_notify would be
     * a truncation to the client, which then drops the session. */
    peer_close(&c);
    peer_close(&s);
  }
  /* Turned off, the client forgets what it kept. */
  assert_evr_ok(evr_tls_ctx_set_resumption(cc, 0));
  struct peer s, c;
  connect_pair(&s, &c, sc, cc, "localhost");
  assert_evr_ok(c.hs_status);
  assert_int_equal(evr_tls_resumed(&c.t), 0);
  peer_close(&s);
  peer_close(&c);
  assert_int_equal(evr_tls_resumed(NULL), 0);
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  evr_tls_ctx_free(plain);
  assert_fds_back_to(base);
}

/* ---- a relay between two socket pairs, for cutting records ---- */

/* Every byte readable on from now, as much as max. */
static size_t drain_raw(int from, char *buf, size_t max) {
  size_t n = 0;
  for (;;) {
    ssize_t r = read(from, buf + n, max - n);
    if (r > 0) {
      n += (size_t)r;
      continue;
    }
    assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    return n;
  }
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    assert_true(w > 0);
    p += w;
    n -= (size_t)w;
  }
}

/* Server s on one pair and client c on another; the test carries the
 * bytes between raw ends rs (the server's peer) and rc (the client's). */
struct relay {
  struct peer s, c;
  int rs, rc;
};

static void relay_open(struct relay *r, evr_tls_ctx_t *sc, evr_tls_ctx_t *cc) {
  int a[2], b[2];
  make_socketpair(a);
  make_socketpair(b);
  peer_open(&r->s, sc, NULL, a[0]);
  peer_open(&r->c, cc, "localhost", b[0]);
  assert_evr_ok(evr_tls_read_start(&r->s.t, on_read));
  assert_evr_ok(evr_tls_read_start(&r->c.t, on_read));
  r->rs = a[1];
  r->rc = b[1];
}

/* Run the loop once and carry everything both ways. */
static void relay_step(struct relay *r) {
  char buf[65536];
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  size_t n = drain_raw(r->rc, buf, sizeof buf);
  write_all(r->rs, buf, n);
  n = drain_raw(r->rs, buf, sizeof buf);
  write_all(r->rc, buf, n);
}

static void relay_until(struct relay *r, const int *flag) {
  for (int i = 0; i < 100000 && !*flag; i++) relay_step(r);
  assert_true(*flag);
}

/* What the server's stream sends next, at least one byte, not carried. */
static size_t take_from(struct relay *r, int raw, char *buf, size_t max) {
  size_t n = 0;
  for (int i = 0; i < 100000 && n == 0; i++) {
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    n = drain_raw(raw, buf, max);
  }
  (void)r;
  assert_true(n > 0);
  return n;
}

static void relay_close(struct relay *r) {
  peer_close(&r->s);
  peer_close(&r->c);
  if (r->rs >= 0) close(r->rs);
  if (r->rc >= 0) close(r->rc);
}

/* Records cut short: the server's last record loses its tail and the
 * connection ends; the client reads none of that record and EVR_ETLS,
 * never EVR_EOF (which only close_notify gives). An end without
 * close_notify after whole records is EVR_ETLS too, after their data. */
static void test_tls_truncated_records_are_errors(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_tls_ctx_t *sc = server_ctx(), *cc = client_ctx();
  for (int whole = 0; whole < 2; whole++) {
    struct relay r;
    relay_open(&r, sc, cc);
    relay_until(&r, &r.s.hs_done);
    relay_until(&r, &r.c.hs_done);
    assert_evr_ok(r.s.hs_status);
    assert_evr_ok(r.c.hs_status);
    /* Carry the tickets and one byte each way. */
    assert_evr_ok(evr_tls_write(&r.c.t, "?", 1));
    assert_evr_ok(evr_tls_write(&r.s.t, "!", 1));
    for (int i = 0; i < 100000 && (r.s.len == 0 || r.c.len == 0); i++) relay_step(&r);
    assert_int_equal(r.c.len, 1);
    char rec[256];
    assert_evr_ok(evr_tls_write(&r.s.t, "0123456789", 10));
    size_t n = take_from(&r, r.rs, rec, sizeof rec);
    assert_true(n > 10 + 5); /* one record: header, data, tag */
    write_all(r.rc, rec, whole ? n : n - 5);
    close(r.rc);
    r.rc = -1;
    while (r.c.end == 0) assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
    assert_int_equal(r.c.end, EVR_ETLS);
    assert_true(evr_tls_reason(&r.c.t)[0] != '\0');
    assert_int_equal(r.c.len, whole ? 11 : 1);
    if (whole) assert_memory_equal(r.c.buf + 1, "0123456789", 10);
    relay_close(&r);
  }
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  assert_fds_back_to(base);
}

/* A handshake cut off: half the client's hello and then the end, at the
 * server; half the server's answer and then the end, at the client. Both
 * fail, and closing frees everything. */
static void test_tls_handshake_cut_off(void **state) {
  (void)state;
  int base = count_open_fds();
  evr_tls_ctx_t *sc = server_ctx(), *cc = client_ctx();
  char buf[65536];
  for (int at_client = 0; at_client < 2; at_client++) {
    struct relay r;
    relay_open(&r, sc, cc);
    size_t n = take_from(&r, r.rc, buf, sizeof buf); /* the ClientHello */
    if (!at_client) {
      write_all(r.rs, buf, n / 2);
      close(r.rs);
      r.rs = -1;
      run_until(test_loop, &r.s.hs_done, 1000);
      if (r.s.hs_status != EVR_ECONNRESET && r.s.hs_status != EVR_ETLS)
        fail_msg("server: %s", evr_err_name(r.s.hs_status));
      assert_true(evr_tls_reason(&r.s.t)[0] != '\0');
      assert_int_equal(r.c.hs_done, 0);
    } else {
      write_all(r.rs, buf, n);
      n = take_from(&r, r.rs, buf, sizeof buf); /* ServerHello and on */
      write_all(r.rc, buf, n / 2);
      close(r.rc);
      r.rc = -1;
      run_until(test_loop, &r.c.hs_done, 1000);
      if (r.c.hs_status != EVR_ECONNRESET && r.c.hs_status != EVR_ETLS)
        fail_msg("client: %s", evr_err_name(r.c.hs_status));
      assert_true(evr_tls_reason(&r.c.t)[0] != '\0');
    }
    relay_close(&r);
  }
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  assert_fds_back_to(base);
}

/* ---- 64 MiB each way, checked as it comes ---- */

static unsigned char pattern(size_t i, unsigned seed) {
  return (unsigned char)(((i + seed) * 2654435761u) >> 13);
}

struct bulk {
  struct peer p;
  size_t got, sent, bad_at;
  unsigned seed; /* of what it receives */
  int bad;
};

static void on_bulk_read(evr_tls_t *t, ssize_t n, const char *buf) {
  struct bulk *b = (struct bulk *)t->data;
  if (n < 0) {
    b->p.end = n;
    return;
  }
  for (ssize_t i = 0; i < n && !b->bad; i++)
    if ((unsigned char)buf[i] != pattern(b->got + (size_t)i, b->seed)) {
      b->bad = 1;
      b->bad_at = b->got + (size_t)i;
    }
  b->got += (size_t)n;
}

/* Write the next piece while less than 256 KiB of records wait. */
static void bulk_feed(struct bulk *b, size_t total, unsigned seed) {
  unsigned char piece[40000];
  while (b->sent < total && evr_tls_write_queue_size(&b->p.t) < 256 * 1024) {
    size_t k = total - b->sent < sizeof piece ? total - b->sent : sizeof piece;
    for (size_t i = 0; i < k; i++) piece[i] = pattern(b->sent + i, seed);
    assert_evr_ok(evr_tls_write(&b->p.t, piece, k));
    b->sent += k;
  }
}

static void test_tls_64_mib_both_ways(void **state) {
  (void)state;
  int base = count_open_fds();
  const size_t total = (size_t)64 << 20;
  evr_tls_ctx_t *sc = server_ctx(), *cc = client_ctx();
  int sv[2];
  make_socketpair(sv);
  struct bulk s = {.seed = 1}, c = {.seed = 2};
  peer_open(&s.p, sc, NULL, sv[0]);
  peer_open(&c.p, cc, "localhost", sv[1]);
  s.p.t.data = &s; /* the peer is the first member */
  c.p.t.data = &c;
  assert_evr_ok(evr_tls_read_start(&s.p.t, on_bulk_read));
  assert_evr_ok(evr_tls_read_start(&c.p.t, on_bulk_read));
  run_until(test_loop, &s.p.hs_done, 1000);
  run_until(test_loop, &c.p.hs_done, 1000);
  assert_evr_ok(s.p.hs_status);
  assert_evr_ok(c.p.hs_status);
  while (s.got < total || c.got < total) {
    bulk_feed(&c, total, 1); /* the server checks seed 1 */
    bulk_feed(&s, total, 2);
    assert_true(evr_loop_run(test_loop, EVR_RUN_ONCE) >= 0);
    if (s.bad || c.bad) fail_msg("wrong byte at %zu", s.bad ? s.bad_at : c.bad_at);
    assert_int_equal(s.p.end, 0);
    assert_int_equal(c.p.end, 0);
  }
  assert_int_equal(s.got, total);
  assert_int_equal(c.got, total);
  peer_close(&s.p);
  peer_close(&c.p);
  evr_tls_ctx_free(sc);
  evr_tls_ctx_free(cc);
  assert_fds_back_to(base);
}

static void test_tls_api_errors(void **state) {
  (void)state;
  evr_tls_ctx_t *c;
  assert_int_equal(evr_tls_ctx_new_server(&c, "/nonexistent/cert.pem", key_path), EVR_ETLS);
  assert_non_null(strstr(evr_tls_ctx_error(), "certificate /nonexistent/cert.pem"));
  assert_int_equal(evr_tls_ctx_new_server(&c, cert_path, "/nonexistent/key.pem"), EVR_ETLS);
  assert_non_null(strstr(evr_tls_ctx_error(), "private key /nonexistent/key.pem"));
  /* A key that is not the certificate's. */
  assert_int_equal(evr_tls_ctx_new_server(&c, cert_path, ca_path), EVR_ETLS);
  assert_true(evr_tls_ctx_error()[0] != '\0');
  c = server_ctx();
  assert_int_equal(evr_tls_ctx_add_server_cert(c, "/nonexistent/o.pem", key_path), EVR_ETLS);
  assert_non_null(strstr(evr_tls_ctx_error(), "/nonexistent/o.pem"));
  assert_int_equal(evr_tls_ctx_add_server_cert(NULL, other_path, key_path), EVR_EINVAL);
  evr_tls_ctx_free(c);
  assert_int_equal(evr_tls_ctx_new_server(NULL, cert_path, key_path), EVR_EINVAL);
  assert_int_equal(evr_tls_ctx_new_client(&c, "/nonexistent/ca.pem"), EVR_ETLS);
  assert_non_null(strstr(evr_tls_ctx_error(), "CA file /nonexistent/ca.pem"));
  c = client_ctx();
  /* Only servers have certificate pairs. */
  assert_int_equal(evr_tls_ctx_add_server_cert(c, other_path, key_path), EVR_EINVAL);
  assert_int_equal(evr_tls_ctx_set_resumption(NULL, 1), EVR_EINVAL);
  struct peer p;
  memset(&p, 0, sizeof p);
  assert_evr_ok(evr_tls_init(test_loop, &p.t, c, "localhost"));
  p.t.data = &p;
  assert_int_equal(evr_tls_write(&p.t, "x", 1), EVR_ENOTCONN);
  assert_int_equal(evr_tls_shutdown(&p.t, NULL), EVR_ENOTCONN);
  assert_int_equal(evr_tls_start(&p.t, on_hs), EVR_ENOTCONN);
  peer_close(&p);
  evr_tls_ctx_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_tls_megabyte_both_ways_and_close_notify),
      EVR_TEST(test_tls_wrong_host_name_fails_verification),
      EVR_TEST(test_tls_expired_certificate_fails_verification),
      EVR_TEST(test_tls_untrusted_certificate_fails_verification),
      EVR_TEST(test_tls_plaintext_to_server_fails_handshake),
      EVR_TEST(test_tls_stalled_client_cut_by_handshake_timeout),
      EVR_TEST(test_tls_sni_picks_the_certificate),
      EVR_TEST(test_tls_alpn),
      EVR_TEST(test_tls_session_resumption),
      EVR_TEST(test_tls_truncated_records_are_errors),
      EVR_TEST(test_tls_handshake_cut_off),
      EVR_TEST(test_tls_64_mib_both_ways),
      EVR_TEST(test_tls_api_errors),
  };
  const char *only = getenv("EVR_TEST_FILTER");
  if (only && *only) cmocka_set_test_filter(only);
  return cmocka_run_group_tests_name("tls", tests, make_certs, remove_certs);
}
