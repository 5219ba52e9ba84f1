/* samples/metrics_req.c: the /metrics request reader (metrics_req.h). */
#include "metrics_req.h"

#include <string.h>

enum metrics_req_result metrics_req_feed(struct metrics_req *r, const char *buf, size_t n) {
  if (memchr(buf, '\0', n)) return MREQ_NUL;
  if (n > sizeof r->head - 1 - r->len) return MREQ_TOO_LARGE;
  memcpy(r->head + r->len, buf, n);
  r->len += n;
  r->head[r->len] = '\0';
  if (!strstr(r->head, "\r\n\r\n") && !strstr(r->head, "\n\n")) return MREQ_MORE;
  if (strncmp(r->head, "GET /metrics ", 13) == 0 || strncmp(r->head, "GET /metrics?", 13) == 0)
    return MREQ_METRICS;
  if (strncmp(r->head, "GET ", 4) != 0) return MREQ_BAD_METHOD;
  return MREQ_NOT_FOUND;
}
