/* tests/fuzz/fuzz_proxy_proto.c: libFuzzer harness of evr-proxy's PROXY
 * protocol header parser (samples/proxy_proto.c).
 *
 * Besides what ASan and UBSan catch, it checks what proxy_proto.h
 * promises for any input:
 *  - DONE: 0 < len <= n, a v1 line of at most 107 bytes or a v2 header of
 *    16 to 16 + 65535; addresses, when given, of one family, IPv4 or IPv6;
 *  - NEED_MORE: need > n (and a v1 line never needs more past 107 bytes);
 *  - INVALID: a reason, and no addresses;
 *  - the answer does not depend on how the bytes arrive: over the growing
 *    prefixes of the input the answers are NEED_MORE, then either INVALID
 *    for good or DONE for good with the same header.
 * Each prefix is parsed from a heap copy of exactly its size, so a read
 * past the bytes received is an ASan report. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "proxy_proto.h"

static void check(int ok) {
  if (!ok) abort();
}

static int same_addr(const evr_addr_t *a, const evr_addr_t *b) {
  return a->len == b->len && memcmp(&a->u, &b->u, sizeof a->u) == 0;
}

static int parse(const uint8_t *data, size_t n, struct pproto_header *h) {
  uint8_t *copy = malloc(n ? n : 1);
  check(copy != NULL);
  if (n) memcpy(copy, data, n);
  int rc = pproto_parse(n ? copy : NULL, n, h);
  free(copy);
  switch (rc) {
    case PPROTO_DONE:
      check(h->len > 0 && h->len <= n);
      if (h->version == 1) check(h->len <= PPROTO_V1_MAX);
      else check(h->version == 2 && h->len >= PPROTO_V2_MIN && h->len <= PPROTO_V2_MAX);
      if (h->has_addrs) {
        int fam = h->src.u.sa.sa_family;
        check(fam == AF_INET || fam == AF_INET6);
        check(h->dst.u.sa.sa_family == fam && h->src.len == h->dst.len);
      }
      break;
    case PPROTO_NEED_MORE:
      check(h->need > n);
      if (h->version == 1) check(n < PPROTO_V1_MAX);
      if (h->version == 2) check(h->need <= PPROTO_V2_MAX);
      break;
    case PPROTO_INVALID:
      check(h->error != NULL && h->error[0] != '\0' && !h->has_addrs);
      break;
    default:
      check(0);
  }
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct pproto_header full, h;
  int rc = parse(data, size, &full);
  /* Every prefix of a short input; of a long one, a sample plus the
   * lengths around the header's end. */
  size_t step = size <= 300 ? 1 : size / 200;
  int state = PPROTO_NEED_MORE;
  for (size_t k = 0; k < size; k += step) {
    int r = parse(data, k, &h);
    if (rc == PPROTO_NEED_MORE) check(r == PPROTO_NEED_MORE);
    if (rc == PPROTO_INVALID) check(r != PPROTO_DONE);
    if (rc == PPROTO_DONE) check(r == (k < full.len ? PPROTO_NEED_MORE : PPROTO_DONE));
    if (state == PPROTO_INVALID) check(r == PPROTO_INVALID);
    state = r;
  }
  if (rc == PPROTO_DONE) {
    check(parse(data, full.len - 1, &h) == PPROTO_NEED_MORE);
    check(parse(data, full.len, &h) == PPROTO_DONE);
    check(h.len == full.len && h.version == full.version && h.has_addrs == full.has_addrs);
    if (h.has_addrs) check(same_addr(&h.src, &full.src) && same_addr(&h.dst, &full.dst));
  }
  return 0;
}
