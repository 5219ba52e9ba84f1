/* tests/test_tls.c: TLS connections over socket pairs under every backend:
 * handshake with a CA and server certificate made at test time, 1 MiB
 * byte-exact both ways, close_notify as EVR_EOF, host name verification,
 * plaintext sent to a TLS server and the handshake timeout. */
/* evr-test: backends timeout=300 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "helpers.h"
#include "evr/tls.h"

/* ---- certificates, made once per run ---- */

static char dir[64], ca_path[128], cert_path[128], key_path[128];
static char expired_path[128], rogue_path[128]; /* bad server certificates */

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
  assert_non_null(ext);
  assert_int_equal(X509_add_ext(cert, ext, -1), 1);
  X509_EXTENSION_free(ext);
}

/* A certificate for key, valid from an hour ago until not_after seconds
 * from now, signed by issuer (NULL: a self-signed CA). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer,
                       EVP_PKEY *issuer_key, long serial, long not_after) {
  X509 *c = X509_new();
  assert_non_null(c);
  X509_set_version(c, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c), serial);
  X509_gmtime_adj(X509_getm_notBefore(c), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c), not_after);
  X509_set_pubkey(c, key);
  X509_NAME *name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
  if (!issuer) {
    add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(c, issuer, NID_basic_constraints, "CA:FALSE");
    add_ext(c, issuer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  }
  assert_true(X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return c;
}

static void write_pem(const char *path, X509 *cert, EVP_PKEY *key) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  if (cert) assert_int_equal(PEM_write_X509(f, cert), 1);
  if (key) assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
  assert_int_equal(fclose(f), 0);
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
  write_pem(ca_path, ca, NULL);
  write_pem(cert_path, cert, NULL);
  write_pem(key_path, NULL, key);
  write_pem(expired_path, expired, NULL);
  write_pem(rogue_path, rogue, NULL);
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
  evr_tls_ctx_free(sc); /* the connections keep what they need */
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
  peer_open(&s, sc, NULL, sv[0]);
  /* Half a record header, then nothing. */
  assert_int_equal(write(sv[1], "\x16\x03", 2), 2);
  run_until(test_loop, &s.hs_done, 1000);
  assert_int_equal(s.hs_status, EVR_ETIMEDOUT);
  assert_string_equal(evr_tls_reason(&s.t), "handshake timed out");
  peer_close(&s);
  close(sv[1]);
  evr_tls_ctx_free(sc);
  assert_fds_back_to(base);
}

static void test_tls_api_errors(void **state) {
  (void)state;
  evr_tls_ctx_t *c;
  assert_int_equal(evr_tls_ctx_new_server(&c, "/nonexistent/cert.pem", key_path), EVR_ETLS);
  assert_int_equal(evr_tls_ctx_new_server(NULL, cert_path, key_path), EVR_EINVAL);
  assert_int_equal(evr_tls_ctx_new_client(&c, "/nonexistent/ca.pem"), EVR_ETLS);
  c = client_ctx();
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
      EVR_TEST(test_tls_api_errors),
  };
  const char *only = getenv("EVR_TEST_FILTER");
  if (only && *only) cmocka_set_test_filter(only);
  return cmocka_run_group_tests_name("tls", tests, make_certs, remove_certs);
}
