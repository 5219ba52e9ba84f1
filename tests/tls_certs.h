/* tests/tls_certs.h: certificates made at test time with OpenSSL, for the
 * TLS tests (test_tls.c, test_proxy_tls.c). Each call fails the test on
 * error. */
#ifndef EVR_TESTS_TLS_CERTS_H
#define EVR_TESTS_TLS_CERTS_H

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A certificate for key, valid from an hour ago until not_after seconds
 * from now (negative: already expired), signed by issuer with issuer_key
 * (issuer NULL: a self-signed CA, san unused), with the subject
 * alternative names san (e.g. "DNS:localhost,IP:127.0.0.1"). */
X509 *tls_make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer,
                    EVP_PKEY *issuer_key, long serial, long not_after);

/* Write cert and/or key (either may be NULL) to path as PEM. */
void tls_write_pem(const char *path, X509 *cert, EVP_PKEY *key);

#endif
