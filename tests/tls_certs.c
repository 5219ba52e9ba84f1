/* tests/tls_certs.c: see tls_certs.h. */
#include "tls_certs.h"
#include <stdio.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "helpers.h"

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
  assert_non_null(ext);
  assert_int_equal(X509_add_ext(cert, ext, -1), 1);
  X509_EXTENSION_free(ext);
}

X509 *tls_make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer,
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
    add_ext(c, issuer, NID_subject_alt_name, san);
  }
  assert_true(X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return c;
}

void tls_write_pem(const char *path, X509 *cert, EVP_PKEY *key) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  if (cert) assert_int_equal(PEM_write_X509(f, cert), 1);
  if (key) assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
  assert_int_equal(fclose(f), 0);
}
