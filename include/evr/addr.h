/** @file evr/addr.h
 *  Socket addresses as text, and asynchronous name resolution.
 *
 * Text forms understood everywhere an address is written:
 * @verbatim
   1.2.3.4:80          IPv4
   [::1]:80            IPv6 (brackets required; a zone may follow: [fe80::1%eth0]:80)
   unix:/run/app.sock  Unix-domain socket path
   unix:@name          Linux abstract socket (no file)
   host.example:80     a host name: evr_addr_parse() refuses it with
                       EVR_EAI_NONAME; use evr_resolve() or
                       evr_stream_connect_host().
   @endverbatim
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

/** Enough for any address evr_addr_format() writes, with its NUL. */
#define EVR_ADDR_STRLEN 128

/** A socket address of any family evr supports. Plain data: copy freely.
 *  The addresses evr builds are zero-filled beyond len, so two addresses
 *  of the same text compare equal with memcmp(). */
typedef struct evr_addr {
  /** The address, as whichever type its family needs. */
  union {
    struct sockaddr sa;          /**< Generic view: sa.sa_family. */
    struct sockaddr_in in;       /**< AF_INET. */
    struct sockaddr_in6 in6;     /**< AF_INET6. */
    struct sockaddr_un un;       /**< AF_UNIX. */
    struct sockaddr_storage ss;  /**< Room for any family. */
  } u;
  socklen_t len; /**< Length of the valid part of u (what bind/connect take). */
} evr_addr_t;

/** Parse a numeric address in one of the forms above into *out.
 *  @param out   receives the address.
 *  @param text  the address as text, NUL-terminated.
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
 *  @param text    "host:port" or "[v6]:port", NUL-terminated.
 *  @param host    receives the host, NUL-terminated.
 *  @param hostsz  the size of host in bytes.
 *  @param port    receives the port.
 *  @return 0; EVR_EINVAL (NULL, malformed, as for evr_addr_parse);
 *          EVR_ENAMETOOLONG (host does not fit in hostsz). */
EVR_API int evr_addr_split(const char *text, char *host, size_t hostsz,
                           uint16_t *port);

/** Build an address from a numeric host ("1.2.3.4", "::1", "[::1]",
 *  "fe80::1%eth0") and a port.
 *  @param out   receives the address.
 *  @param ip    the IPv4 or IPv6 literal, NUL-terminated.
 *  @param port  the port, in host order.
 *  @return 0; EVR_EINVAL (NULL or empty, neither a literal nor a
 *          well-formed host name, an unknown zone); EVR_EAI_NONAME (a host
 *          name, not a literal). */
EVR_API int evr_addr_from_ip(evr_addr_t *out, const char *ip, uint16_t port);

/** Build a Unix-domain address ("@name" for an abstract one on Linux).
 *  @param out   receives the address.
 *  @param path  the socket's path, or "@" and an abstract name.
 *  @return 0; EVR_EINVAL (NULL or empty path, or "@" alone);
 *          EVR_ENAMETOOLONG (too long for sun_path); EVR_ENOTSUP (an
 *          abstract name where the system has none). */
EVR_API int evr_addr_from_path(evr_addr_t *out, const char *path);

/** Copy a struct sockaddr of length len.
 *  @param out  receives the address.
 *  @param sa   the address, e.g. from getsockname() or accept().
 *  @param len  its length.
 *  @return 0; EVR_EINVAL (NULL, bad length for the family);
 *          EVR_EAFNOSUPPORT (not AF_INET, AF_INET6 or AF_UNIX). */
EVR_API int evr_addr_from_sockaddr(evr_addr_t *out, const struct sockaddr *sa,
                                   socklen_t len);

/** Write the address in the text form above ("unix:" alone for an unnamed
 *  Unix socket). Always NUL-terminates when size > 0.
 *  @param addr  the address.
 *  @param buf   receives the text.
 *  @param size  the size of buf in bytes (EVR_ADDR_STRLEN is enough).
 *  @return the length written (without NUL); EVR_EINVAL (NULL, unknown
 *          family); EVR_ENOSPC (buf too small, or size 0: what fits is
 *          written). */
EVR_API int evr_addr_format(const evr_addr_t *addr, char *buf, size_t size);

/** The address family.
 *  @param addr  the address.
 *  @return AF_INET, AF_INET6 or AF_UNIX (0 for NULL). */
EVR_API int evr_addr_family(const evr_addr_t *addr);

/** The port of an IPv4 or IPv6 address.
 *  @param addr  the address.
 *  @return the port in host order; 0 for Unix addresses and NULL. */
EVR_API uint16_t evr_addr_port(const evr_addr_t *addr);

/* ---- asynchronous name resolution (getaddrinfo on the thread pool) ---- */

/** A resolve request: see struct evr_resolve. */
typedef struct evr_resolve evr_resolve_t;
/** A resolution's callback. Runs on the loop thread.
 *  @param req     the request; it may be used again from here.
 *  @param status  on success the number of addresses (>= 1); on failure a
 *                 negative code: EVR_EAI_*, EVR_ECANCELED, or a local
 *                 shortage (EVR_EMFILE, EVR_ENFILE, EVR_ENOMEM,
 *                 EVR_ENOBUFS, never reported as an unknown name).
 *  @param addrs   on success the addresses, in the resolver's order (an
 *                 array owned by req and valid until the callback
 *                 returns); NULL on failure. */
typedef void (*evr_resolve_cb)(evr_resolve_t *req, int status,
                               const evr_addr_t *addrs);

/** A resolve request, caller-owned. Zero it before its first use. */
struct evr_resolve {
  void *data;           /**< For the user; evr never reads it. */
  /** @cond PRIVATE */
  evr_work_t work;
  evr_resolve_cb cb;
  char *host;
  uint16_t port;
  int family;
  int cancelled;
  int status;
  evr_addr_t *addrs;
  /** @endcond */
};

/** Resolve host (a name or a numeric literal) for a stream socket on port.
 *  family is AF_UNSPEC, AF_INET or AF_INET6. The request keeps the loop alive
 *  until cb has run. Allocates (a copy of host, the result array). Loop
 *  thread only.
 *  req must be zeroed before its first use (data may be set). It is pending
 *  from a successful call until just before cb runs, and may be used again
 *  from then on (also from inside cb), with any loop, not before; it needs
 *  no zeroing again.
 *  @param loop    the loop whose thread runs cb.
 *  @param req     the request.
 *  @param host    a host name or a numeric literal (an IPv6 one may be in
 *                 brackets), NUL-terminated; copied.
 *  @param port    the port the addresses carry, in host order.
 *  @param family  AF_UNSPEC, AF_INET or AF_INET6.
 *  @param cb      the callback.
 *  @return 0 (cb runs exactly once, never inside this call); EVR_EINVAL
 *          (NULL or empty argument, another family, unbalanced brackets);
 *          EVR_EBUSY (req is pending: nothing changes, and its own cb still
 *          runs once); EVR_ENOMEM; the thread pool's errors (see
 *          evr_work_submit()). On error this call's cb never runs. */
EVR_API int evr_resolve(evr_loop_t *loop, evr_resolve_t *req, const char *host,
                        uint16_t port, int family, evr_resolve_cb cb);

/** Cancel a pending resolution: cb then runs with EVR_ECANCELED (later, from
 *  the loop; if getaddrinfo() is already running on a pool thread, once it
 *  returns, and its result is discarded). Cancelling twice is harmless.
 *  @param req  the request.
 *  @return 0; EVR_EINVAL (NULL or not pending: zeroed and never used, or
 *          its cb has started). */
EVR_API int evr_resolve_cancel(evr_resolve_t *req);

#ifdef __cplusplus
}
#endif
#endif
