/* net/resolve.c: getaddrinfo() on the thread pool.
 *
 * The request's work function runs on a pool thread and touches only the
 * request's own fields (host, port, family in; status, addrs out); the loop
 * thread reads them in done(), after the pool's hand-over. `cancelled` is
 * written and read on the loop thread only: a cancel that comes too late to
 * stop getaddrinfo() just makes done() discard the result.
 * Pending is marked by req->cb != NULL (the owner zeroes a request before
 * its first use), set by a successful evr_resolve() and cleared just before
 * the callback runs, so the callback may start a new resolution with the
 * same request. Every call reads it before writing anything: a pending
 * request is refused whole (its host, work request and callback stay).
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* EAI_NODATA, EAI_ADDRFAMILY in glibc */
#endif
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "reactor/internal.h"

/* A lookup that failed for lack of local resources: glibc's getaddrinfo()
 * says EAI_NONAME (the name "is not known") with errno telling why when it
 * cannot open its configuration, /etc/hosts or a socket. That is not the
 * name's fault, and a daemon must not hold it against the host. */
static int local_failure(int saved_errno) {
  return saved_errno == EMFILE || saved_errno == ENFILE || saved_errno == ENOMEM ||
         saved_errno == ENOBUFS;
}

static int map_eai(int rc, int saved_errno) {
  if ((rc == EAI_NONAME || rc == EAI_AGAIN || rc == EAI_FAIL) && local_failure(saved_errno))
    return -saved_errno;
  switch (rc) {
    case EAI_AGAIN: return EVR_EAI_AGAIN;
    case EAI_FAIL: return EVR_EAI_FAIL;
    case EAI_FAMILY: return EVR_EAI_FAMILY;
    case EAI_MEMORY: return EVR_EAI_MEMORY;
    case EAI_NONAME: return EVR_EAI_NONAME;
    case EAI_SERVICE: return EVR_EAI_SERVICE;
#ifdef EAI_NODATA
#if !defined(EAI_NONAME) || EAI_NODATA != EAI_NONAME
    case EAI_NODATA: return EVR_EAI_NONAME; /* the name has no address */
#endif
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: return EVR_EAI_NONAME; /* none in this family */
#endif
#ifdef EAI_SYSTEM
    case EAI_SYSTEM: return saved_errno > 0 ? -saved_errno : EVR_EAI_FAIL;
#endif
    case EAI_BADFLAGS:
    case EAI_SOCKTYPE: return EVR_EINVAL;
    default: return EVR_EAI_FAIL;
  }
}

static void resolve_work(evr_work_t *w) {
  evr_resolve_t *req = EVR_CONTAINER_OF(w, evr_resolve_t, work);
  struct addrinfo hints, *res = NULL;
  char service[8];
  memset(&hints, 0, sizeof hints);
  hints.ai_family = req->family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV;
  snprintf(service, sizeof service, "%u", (unsigned)req->port);

  errno = 0;
  int rc = getaddrinfo(req->host, service, &hints, &res);
  if (rc != 0) {
    req->status = map_eai(rc, errno);
    return;
  }
  size_t n = 0;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
    if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) n++;
  if (n == 0) {
    freeaddrinfo(res);
    req->status = EVR_EAI_NONAME;
    return;
  }
  evr_addr_t *addrs = calloc(n, sizeof *addrs);
  if (!addrs) {
    freeaddrinfo(res);
    req->status = EVR_ENOMEM;
    return;
  }
  size_t k = 0;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    if (evr_addr_from_sockaddr(&addrs[k], ai->ai_addr, ai->ai_addrlen) == 0)
      k++;
  }
  freeaddrinfo(res);
  if (k == 0) {
    free(addrs);
    req->status = EVR_EAI_NONAME;
    return;
  }
  req->addrs = addrs;
  req->status = (int)k;
}

static void resolve_done(evr_work_t *w, int status) {
  evr_resolve_t *req = EVR_CONTAINER_OF(w, evr_resolve_t, work);
  evr_resolve_cb cb = req->cb;
  char *host = req->host;
  evr_addr_t *addrs = req->addrs;
  int result = req->cancelled || status == EVR_ECANCELED ? EVR_ECANCELED
               : status < 0                             ? status
                                                        : req->status;
  if (result <= 0) {
    /* Failed or cancelled: a result computed anyway is dropped here. */
    free(addrs);
    addrs = NULL;
    if (result == 0) result = EVR_EAI_FAIL; /* cannot happen: defensive */
  }
  req->cb = NULL;
  req->host = NULL;
  req->addrs = NULL;
  req->cancelled = 0;
  req->status = result;
  /* The callback may reuse req for a new resolution: nothing of req is
   * touched after it returns. */
  cb(req, result, addrs);
  free(addrs);
  free(host);
}

int evr_resolve(evr_loop_t *loop, evr_resolve_t *req, const char *host,
                uint16_t port, int family, evr_resolve_cb cb) {
  if (!loop || !req || !host || !*host || !cb) return EVR_EINVAL;
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
    return EVR_EINVAL;
  /* "[::1]" is accepted as the literal inside the brackets. */
  size_t n = strlen(host);
  if (host[0] == '[') {
    if (n < 3 || host[n - 1] != ']') return EVR_EINVAL;
    host++;
    n -= 2;
  }
  /* Pending: its work request is in the pool or its callback is due, and
   * host, cb and the rest belong to that resolution. Nothing is touched. */
  if (req->cb) return EVR_EBUSY;
  char *copy = malloc(n + 1);
  if (!copy) return EVR_ENOMEM;
  memcpy(copy, host, n);
  copy[n] = '\0';
  req->host = copy;
  req->port = port;
  req->family = family;
  req->cancelled = 0;
  req->status = 0;
  req->addrs = NULL;
  req->cb = cb;
  int rc = evr_work_submit(loop, &req->work, resolve_work, resolve_done);
  if (rc) {
    req->cb = NULL;
    req->host = NULL;
    free(copy);
    return rc;
  }
  return 0;
}

int evr_resolve_cancel(evr_resolve_t *req) {
  if (!req || !req->cb) return EVR_EINVAL;
  if (req->cancelled) return 0;
  req->cancelled = 1;
  /* EVR_EBUSY: getaddrinfo() runs or has run; done() discards its result.
   * Either way done() runs later, from the loop, exactly once. */
  (void)evr_work_cancel(&req->work);
  return 0;
}
