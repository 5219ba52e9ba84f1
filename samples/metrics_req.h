/* samples/metrics_req.h: the request reader of evr-proxy's /metrics
 * endpoint. It gathers the bytes of one HTTP/1.0 request head, as they
 * arrive, and says what to answer once the head is complete (or at once,
 * when nothing that follows could make the request acceptable). No I/O and
 * no allocation, so it can be tested and fuzzed on its own. */
#ifndef EVR_SAMPLES_METRICS_REQ_H
#define EVR_SAMPLES_METRICS_REQ_H

#include <stddef.h>

#define METRICS_REQ_MAX 2048 /* the head, with a terminating NUL */

enum metrics_req_result {
  MREQ_MORE,       /* the head is not complete yet */
  MREQ_METRICS,    /* GET /metrics or GET /metrics?... : 200 */
  MREQ_NOT_FOUND,  /* GET of another path: 404 */
  MREQ_BAD_METHOD, /* not GET: 405 */
  MREQ_NUL,        /* a NUL byte, never part of a head: 400 */
  MREQ_TOO_LARGE,  /* the head does not fit: 431 */
};

struct metrics_req {
  char head[METRICS_REQ_MAX]; /* head[0..len) received, NUL-terminated */
  size_t len;
};

/* Add buf[0..n) to the head (zero the struct before the first call). A
 * head is complete at the first empty line (CRLF CRLF, or LF LF). Once
 * the result is not MREQ_MORE, the request is answered: do not feed more. */
enum metrics_req_result metrics_req_feed(struct metrics_req *r, const char *buf, size_t n);

#endif
