/* evr/addr.h: socket addresses as text, and asynchronous name resolution.
 *
 * Text forms understood everywhere an address is written:
 *   1.2.3.4:80          IPv4
 *   [::1]:80            IPv6 (brackets required; a zone may follow: [fe80::1%eth0]:80)
 *   unix:/run/app.sock  Unix-domain socket path
 *   unix:@name          Linux abstract socket (no file)
 *   host.example:80     a host name: evr_addr_parse() refuses it with
 *                       EVR_EAI_NONAME; use evr_resolve() or
 *                       evr_stream_connect_host().
 * A host name is checked as RFC 1123 spells one: dot-separated labels of 1
 * to 63 ASCII letters, digits and hyphens, no label starting or ending with
 * a hyphen, at most 253 characters plus one optional trailing dot. Any other
 * host part ("a..b", "-x", "_", raw UTF-8) is EVR_EINVAL.
 */
#ifndef EVR_ADDR_H
#define EVR_ADDR_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "evr/loop.h"
#include "evr/work.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enough for any address evr_addr_format() writes, with its NUL. */
#define EVR_ADDR_STRLEN 128

/* A socket address of any family evr supports. Plain data: copy freely. */
typedef struct evr_addr {
  union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_un un;
    struct sockaddr_storage ss;
  } u;
  socklen_t len; /* length of the valid part of u (what bind/connect take) */
} evr_addr_t;

/** Parse a numeric address in one of the forms above into *out.
 *  @return 0; EVR_EINVAL (NULL, empty, no port, port not in 0..65535,
 *          unbalanced brackets, a host part that is neither a literal nor a
 *          well-formed host name); EVR_EAI_NONAME (the host part is a host
 *          name, not a literal); EVR_ENAMETOOLONG (Unix path too long for
 *          sun_path); EVR_ENOTSUP (abstract socket where not supported). */
EVR_API int evr_addr_parse(evr_addr_t *out, const char *text);

/** Split "host:port" or "[v6]:port" into its host (without brackets, written
 *  NUL-terminated to host[0..hostsz)) and port. The host is an IPv4 or
 *  (bracketed) IPv6 literal or a well-formed host name. Unix forms are
 *  refused.
 *  @return 0; EVR_EINVAL (malformed, as for evr_addr_parse);
 *          EVR_ENAMETOOLONG (host does not fit in hostsz). */
EVR_API int evr_addr_split(const char *text, char *host, size_t hostsz,
                           uint16_t *port);

/** Build an address from a numeric host ("1.2.3.4", "::1") and a port.
 *  @return 0; EVR_EINVAL (neither a literal nor a well-formed host name);
 *          EVR_EAI_NONAME (a host name, not a literal). */
EVR_API int evr_addr_from_ip(evr_addr_t *out, const char *ip, uint16_t port);

/** Build a Unix-domain address ("@name" for an abstract one on Linux).
 *  @return 0; EVR_EINVAL (NULL or empty); EVR_ENAMETOOLONG; EVR_ENOTSUP. */
EVR_API int evr_addr_from_path(evr_addr_t *out, const char *path);

/** Copy a struct sockaddr of length len. @return 0; EVR_EINVAL (NULL, bad
 *  length); EVR_EAFNOSUPPORT (not AF_INET, AF_INET6 or AF_UNIX). */
EVR_API int evr_addr_from_sockaddr(evr_addr_t *out, const struct sockaddr *sa,
                                   socklen_t len);

/** Write the address in the text form above ("unix:" alone for an unnamed
 *  Unix socket). Always NUL-terminates when size > 0.
 *  @return the length written (without NUL); EVR_EINVAL (NULL, unknown
 *          family); EVR_ENOSPC (buf too small: use EVR_ADDR_STRLEN). */
EVR_API int evr_addr_format(const evr_addr_t *addr, char *buf, size_t size);

/** AF_INET, AF_INET6 or AF_UNIX (0 for NULL). */
EVR_API int evr_addr_family(const evr_addr_t *addr);

/** The port in host order; 0 for Unix addresses. */
EVR_API uint16_t evr_addr_port(const evr_addr_t *addr);

/* ---- asynchronous name resolution (getaddrinfo on the thread pool) ---- */

/* A resolve request, caller-owned. Zero it before its first use. */
typedef struct evr_resolve evr_resolve_t;
/* Runs on the loop thread. On success status is the number of addresses
 * (>= 1) and addrs points to them, in the resolver's order; the array is
 * owned by req and valid until the callback returns. On failure status is
 * negative (EVR_EAI_*, EVR_ECANCELED, or a local shortage: EVR_EMFILE,
 * EVR_ENFILE, EVR_ENOMEM, EVR_ENOBUFS, never reported as an unknown name)
 * and addrs is NULL. */
typedef void (*evr_resolve_cb)(evr_resolve_t *req, int status,
                               const evr_addr_t *addrs);

struct evr_resolve {
  /* public */
  void *data;
  /* private */
  evr_work_t work;
  evr_resolve_cb cb;
  char *host;
  uint16_t port;
  int family;
  int cancelled;
  int status;
  evr_addr_t *addrs;
};

/** Resolve host (a name or a numeric literal) for a stream socket on port.
 *  family is AF_UNSPEC, AF_INET or AF_INET6. The request keeps the loop alive
 *  until cb has run. Allocates (a copy of host, the result array). Loop
 *  thread only.
 *  req must be zeroed before its first use (data may be set). It is pending
 *  from a successful call until just before cb runs, and may be used again
 *  from then on (also from inside cb), with any loop, not before; it needs
 *  no zeroing again.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL;
 *          EVR_EBUSY (req is pending: nothing changes, and its own cb still
 *          runs once); EVR_ENOMEM; the thread pool's errors. On error this
 *          call's cb never runs. */
EVR_API int evr_resolve(evr_loop_t *loop, evr_resolve_t *req, const char *host,
                        uint16_t port, int family, evr_resolve_cb cb);

/** Cancel a pending resolution: cb then runs with EVR_ECANCELED (later, from
 *  the loop; if getaddrinfo() is already running on a pool thread, once it
 *  returns, and its result is discarded). Cancelling twice is harmless.
 *  @return 0; EVR_EINVAL (NULL or not pending: zeroed and never used, or
 *          its cb has started). */
EVR_API int evr_resolve_cancel(evr_resolve_t *req);

#ifdef __cplusplus
}
#endif
#endif
