/* tests/fuzz/fuzz_addr.c: libFuzzer harness of the text forms of
 * addresses (include/evr/addr.h, net/addr.c): evr_addr_parse(),
 * evr_addr_split(), evr_addr_from_ip() and evr_addr_format().
 *
 * The input is the text (up to its first NUL), from a heap copy of exactly
 * its size. Besides what ASan and UBSan catch, it checks that each call
 * returns 0 or one of its documented errors; that a parsed address formats
 * into EVR_ADDR_STRLEN and parses back to the same bytes (addr.c keeps the
 * unused part zeroed; an IPv6 zone is left out of that check, as it goes
 * through the interface table); that a buffer one byte too small gives
 * EVR_ENOSPC and still a terminated string; and that split agrees with
 * parse on the port. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "evr/addr.h"
#include "evr/error.h"

static void check(int ok) {
  if (!ok) abort();
}

static void check_format(const evr_addr_t *a) {
  char buf[EVR_ADDR_STRLEN];
  int n = evr_addr_format(a, buf, sizeof buf);
  check(n > 0 && (size_t)n < sizeof buf && strlen(buf) == (size_t)n);
  /* Too small by one, and by all: cut, terminated, refused. */
  char *small = malloc((size_t)n);
  check(small != NULL);
  check(evr_addr_format(a, small, (size_t)n) == EVR_ENOSPC);
  check(strlen(small) == (size_t)n - 1);
  check(evr_addr_format(a, small, 0) == EVR_ENOSPC);
  free(small);
  if (a->u.sa.sa_family == AF_INET6 && a->u.in6.sin6_scope_id != 0) return;
  evr_addr_t b;
  check(evr_addr_parse(&b, buf) == 0);
  check(memcmp(a, &b, sizeof b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  char *s = malloc(size + 1);
  check(s != NULL);
  memcpy(s, data, size);
  s[size] = '\0';
  size_t len = strlen(s);
  char *text = malloc(len + 1); /* exactly the string */
  check(text != NULL);
  memcpy(text, s, len + 1);
  free(s);

  evr_addr_t a;
  int rc = evr_addr_parse(&a, text);
  if (rc == 0) {
    int fam = evr_addr_family(&a);
    check(fam == AF_INET || fam == AF_INET6 || fam == AF_UNIX);
    check(a.len > 0 && a.len <= sizeof a.u);
    check_format(&a);
  } else {
    check(rc == EVR_EINVAL || rc == EVR_EAI_NONAME || rc == EVR_ENAMETOOLONG ||
          rc == EVR_ENOTSUP);
  }

  char host[256];
  uint16_t port = 0;
  int rs = evr_addr_split(text, host, sizeof host, &port);
  check(rs == 0 || rs == EVR_EINVAL || rs == EVR_ENAMETOOLONG);
  if (rs == 0) check(strlen(host) < sizeof host && strlen(host) > 0);
  if (rc == 0 && evr_addr_family(&a) != AF_UNIX) check(rs == 0 && port == evr_addr_port(&a));
  if (rc == EVR_EAI_NONAME) check(rs == 0 || rs == EVR_ENAMETOOLONG);
  if (rs == EVR_EINVAL) check(rc != 0 || evr_addr_family(&a) == AF_UNIX);

  evr_addr_t c;
  int ri = evr_addr_from_ip(&c, text, 4242);
  check(ri == 0 || ri == EVR_EINVAL || ri == EVR_EAI_NONAME);
  if (ri == 0) {
    check(evr_addr_port(&c) == 4242);
    check_format(&c);
  }
  free(text);
  return 0;
}
