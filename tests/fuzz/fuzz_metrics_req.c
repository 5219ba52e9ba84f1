/* tests/fuzz/fuzz_metrics_req.c: libFuzzer harness of evr-proxy's /metrics
 * request reader (samples/metrics_req.c).
 *
 * The input is a request cut in pieces: one byte gives the length of the
 * next piece (1 to 64), that many bytes follow, and so on. Each piece is
 * fed from a heap copy of exactly its size. Besides what ASan and UBSan
 * catch, it checks that the head stays NUL-terminated within its buffer,
 * grows by exactly what was fed while more is needed, and that each answer
 * matches the head: 200 only for GET /metrics, 405 only for another
 * method, 400 only for a piece with a NUL byte, 431 only when the piece
 * does not fit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "metrics_req.h"

static void check(int ok) {
  if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct metrics_req *r = calloc(1, sizeof *r);
  check(r != NULL);
  enum metrics_req_result res = MREQ_MORE;
  size_t i = 0;
  while (i < size && res == MREQ_MORE) {
    size_t n = (size_t)(data[i++] % 64) + 1;
    if (n > size - i) n = size - i;
    if (n == 0) break;
    char *piece = malloc(n);
    check(piece != NULL);
    memcpy(piece, data + i, n);
    i += n;
    size_t before = r->len;
    res = metrics_req_feed(r, piece, n);
    check(r->len < sizeof r->head && r->head[r->len] == '\0' && strlen(r->head) == r->len);
    int complete = strstr(r->head, "\r\n\r\n") != NULL || strstr(r->head, "\n\n") != NULL;
    switch (res) {
      case MREQ_MORE:
        check(r->len == before + n && !complete);
        break;
      case MREQ_NUL:
        check(memchr(piece, '\0', n) != NULL && r->len == before);
        break;
      case MREQ_TOO_LARGE:
        check(before + n > sizeof r->head - 1 && r->len == before);
        break;
      case MREQ_METRICS:
        check(complete && strncmp(r->head, "GET /metrics", 12) == 0 &&
              (r->head[12] == ' ' || r->head[12] == '?'));
        break;
      case MREQ_NOT_FOUND:
        check(complete && strncmp(r->head, "GET ", 4) == 0);
        break;
      case MREQ_BAD_METHOD:
        check(complete && strncmp(r->head, "GET ", 4) != 0);
        break;
      default:
        check(0);
    }
    free(piece);
  }
  free(r);
  return 0;
}
