/* net/addr.c: socket addresses to and from text.
 *
 * Parsing is strict and never touches the network: a host part that is not
 * a numeric literal is reported as EVR_EAI_NONAME (it is a name, resolve it)
 * when it is a host name as RFC 1123 spells one, and as EVR_EINVAL
 * otherwise, so a malformed name never reaches a resolver. Every
 * evr_addr_t built here has u zero-filled beyond len, so two addresses of
 * the same text compare equal with memcmp.
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "reactor/internal.h"

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
#define EVR__HAVE_SA_LEN 1
#endif

#define SUN_OFF offsetof(struct sockaddr_un, sun_path)

/* "0".."65535", decimal digits only, s[0..n). */
static int parse_port(const char *s, size_t n, uint16_t *out) {
  if (n == 0 || n > 5) return EVR_EINVAL;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return EVR_EINVAL;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535) return EVR_EINVAL;
  *out = (uint16_t)v;
  return 0;
}

static int is_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A host name as RFC 1123 (2.1) spells it, h[0..n): labels of 1 to 63
 * letters, digits and hyphens, none starting or ending with a hyphen,
 * joined by dots; at most 253 characters, not counting one optional
 * trailing dot (the root). No underscore, no raw UTF-8: an internationalised
 * name goes in its ASCII form ("xn--..."), which is what DNS carries. */
static int is_host_name(const char *h, size_t n) {
  if (n > 0 && h[n - 1] == '.') n--;
  if (n == 0 || n > 253) return 0;
  size_t label = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)h[i];
    if (c == '.') {
      if (label == 0 || h[i - 1] == '-') return 0;
      label = 0;
    } else if (is_alnum(c) || (c == '-' && label > 0)) {
      if (++label > 63) return 0;
    } else {
      return 0;
    }
  }
  return label > 0 && h[n - 1] != '-';
}

/* What a host part that is not a literal is: a name (EVR_EAI_NONAME), or
 * garbage (EVR_EINVAL). Digits and dots alone are a malformed IPv4 literal,
 * not a name. */
static int classify_non_literal(const char *h, size_t n) {
  size_t digits_dots = 0;
  while (digits_dots < n && ((h[digits_dots] >= '0' && h[digits_dots] <= '9') ||
                             h[digits_dots] == '.'))
    digits_dots++;
  if (digits_dots == n) return EVR_EINVAL;
  return is_host_name(h, n) ? EVR_EAI_NONAME : EVR_EINVAL;
}

static void set_v4(evr_addr_t *out, const struct in_addr *a, uint16_t port) {
  memset(out, 0, sizeof *out);
  out->u.in.sin_family = AF_INET;
  out->u.in.sin_port = htons(port);
  out->u.in.sin_addr = *a;
#ifdef EVR__HAVE_SA_LEN
  out->u.in.sin_len = sizeof out->u.in;
#endif
  out->len = sizeof out->u.in;
}

/* An IPv6 literal with an optional %zone (interface name or number),
 * h[0..n), no brackets. 0, EVR_EINVAL, or 1 if it is not IPv6 at all (no
 * colon): the caller decides what else it may be. */
static int parse_v6(evr_addr_t *out, const char *h, size_t n, uint16_t port) {
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  if (!memchr(h, ':', n)) return 1;
  if (n == 0 || n >= sizeof buf) return EVR_EINVAL;
  memcpy(buf, h, n);
  buf[n] = '\0';
  uint32_t scope = 0;
  char *pct = strchr(buf, '%');
  if (pct) {
    *pct++ = '\0';
    if (*pct == '\0') return EVR_EINVAL;
    size_t zl = strlen(pct);
    if (strspn(pct, "0123456789") == zl) {
      unsigned long v = 0;
      for (size_t i = 0; i < zl; i++) {
        v = v * 10 + (unsigned long)(pct[i] - '0');
        if (v > UINT32_MAX) return EVR_EINVAL;
      }
      scope = (uint32_t)v;
    } else {
      scope = if_nametoindex(pct);
      if (scope == 0) return EVR_EINVAL; /* no such interface */
    }
  }
  struct in6_addr a6;
  if (inet_pton(AF_INET6, buf, &a6) != 1) return EVR_EINVAL;
  memset(out, 0, sizeof *out);
  out->u.in6.sin6_family = AF_INET6;
  out->u.in6.sin6_port = htons(port);
  out->u.in6.sin6_addr = a6;
  out->u.in6.sin6_scope_id = scope;
#ifdef EVR__HAVE_SA_LEN
  out->u.in6.sin6_len = sizeof out->u.in6;
#endif
  out->len = sizeof out->u.in6;
  return 0;
}

/* A numeric host h[0..n) (no brackets) plus port. */
static int from_host(evr_addr_t *out, const char *h, size_t n, uint16_t port) {
  char buf[INET_ADDRSTRLEN];
  if (n == 0) return EVR_EINVAL;
  int rc = parse_v6(out, h, n, port);
  if (rc <= 0) return rc;
  if (n < sizeof buf) {
    struct in_addr a4;
    memcpy(buf, h, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
      set_v4(out, &a4, port);
      return 0;
    }
  }
  return classify_non_literal(h, n);
}

/* Locate host and port in "host:port" or "[v6]:port". Bracketed hosts must
 * be IPv6 literals (checked by the caller); an unbracketed host must not
 * contain a colon. */
static int split_parts(const char *text, const char **host, size_t *hostlen,
                       uint16_t *port, int *bracketed) {
  const char *colon;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close) return EVR_EINVAL;
    *host = text + 1;
    *hostlen = (size_t)(close - text - 1);
    *bracketed = 1;
    if (close[1] != ':') return EVR_EINVAL; /* missing port, or garbage */
    colon = close + 1;
    if (*hostlen == 0 || memchr(*host, '[', *hostlen)) return EVR_EINVAL;
  } else {
    colon = strrchr(text, ':');
    if (!colon) return EVR_EINVAL; /* no port */
    *host = text;
    *hostlen = (size_t)(colon - text);
    *bracketed = 0;
    if (*hostlen == 0) return EVR_EINVAL;
    if (memchr(text, ':', *hostlen) || memchr(text, ']', *hostlen))
      return EVR_EINVAL; /* IPv6 without brackets, or garbage */
  }
  return parse_port(colon + 1, strlen(colon + 1), port);
}

static int has_prefix(const char *s, const char *p) {
  return strncmp(s, p, strlen(p)) == 0;
}

int evr_addr_parse(evr_addr_t *out, const char *text) {
  if (!out || !text || !*text) return EVR_EINVAL;
  if (has_prefix(text, "unix:")) return evr_addr_from_path(out, text + 5);
  const char *host;
  size_t hostlen;
  uint16_t port;
  int bracketed;
  int rc = split_parts(text, &host, &hostlen, &port, &bracketed);
  if (rc) return rc;
  if (bracketed) {
    rc = parse_v6(out, host, hostlen, port);
    return rc == 1 ? EVR_EINVAL : rc;
  }
  return from_host(out, host, hostlen, port);
}

int evr_addr_split(const char *text, char *host, size_t hostsz,
                   uint16_t *port) {
  if (!text || !*text || !host || !port) return EVR_EINVAL;
  if (has_prefix(text, "unix:")) return EVR_EINVAL;
  const char *h;
  size_t hl;
  uint16_t p;
  int bracketed;
  int rc = split_parts(text, &h, &hl, &p, &bracketed);
  if (rc) return rc;
  if (bracketed) {
    evr_addr_t tmp;
    rc = parse_v6(&tmp, h, hl, p);
    if (rc) return EVR_EINVAL;
  } else {
    /* An IPv4 literal or a host name: what evr_addr_parse() takes. */
    evr_addr_t tmp;
    rc = from_host(&tmp, h, hl, p);
    if (rc != 0 && rc != EVR_EAI_NONAME) return EVR_EINVAL;
  }
  if (hl >= hostsz) {
    if (hostsz > 0) host[0] = '\0';
    return EVR_ENAMETOOLONG;
  }
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = p;
  return 0;
}

int evr_addr_from_ip(evr_addr_t *out, const char *ip, uint16_t port) {
  if (!out || !ip || !*ip) return EVR_EINVAL;
  size_t n = strlen(ip);
  if (ip[0] == '[') {
    if (n < 3 || ip[n - 1] != ']') return EVR_EINVAL;
    int rc = parse_v6(out, ip + 1, n - 2, port);
    return rc == 1 ? EVR_EINVAL : rc;
  }
  return from_host(out, ip, n, port);
}

int evr_addr_from_path(evr_addr_t *out, const char *path) {
  if (!out || !path || !*path) return EVR_EINVAL;
  size_t n = strlen(path);
  if (path[0] == '@') {
#ifdef __linux__
    /* Abstract namespace: sun_path[0] == 0, the name follows without a
     * terminator and its length is carried by the address length. */
    if (n == 1) return EVR_EINVAL;
    if (n > sizeof out->u.un.sun_path) return EVR_ENAMETOOLONG;
    memset(out, 0, sizeof *out);
    out->u.un.sun_family = AF_UNIX;
    memcpy(out->u.un.sun_path + 1, path + 1, n - 1);
    out->len = (socklen_t)(SUN_OFF + n);
    return 0;
#else
    return EVR_ENOTSUP;
#endif
  }
  if (n >= sizeof out->u.un.sun_path) return EVR_ENAMETOOLONG;
  memset(out, 0, sizeof *out);
  out->u.un.sun_family = AF_UNIX;
  memcpy(out->u.un.sun_path, path, n);
  out->len = (socklen_t)(SUN_OFF + n + 1);
#ifdef EVR__HAVE_SA_LEN
  out->u.un.sun_len = (unsigned char)out->len;
#endif
  return 0;
}

int evr_addr_from_sockaddr(evr_addr_t *out, const struct sockaddr *sa,
                           socklen_t len) {
  if (!out || !sa) return EVR_EINVAL;
  if (len < offsetof(struct sockaddr, sa_family) + sizeof sa->sa_family ||
      len > sizeof out->u)
    return EVR_EINVAL;
  switch (sa->sa_family) {
    case AF_INET:
      if (len < sizeof(struct sockaddr_in)) return EVR_EINVAL;
      len = sizeof(struct sockaddr_in);
      break;
    case AF_INET6:
      if (len < sizeof(struct sockaddr_in6)) return EVR_EINVAL;
      len = sizeof(struct sockaddr_in6);
      break;
    case AF_UNIX:
      if (len > sizeof(struct sockaddr_un)) return EVR_EINVAL;
      break;
    default:
      return EVR_EAFNOSUPPORT;
  }
  memset(out, 0, sizeof *out);
  memcpy(&out->u, sa, len);
  out->len = len;
  return 0;
}

/* Append s[0..n) to buf at *pos; keeps the NUL; ENOSPC if it does not fit
 * (what fits is written). */
static int put(char *buf, size_t size, size_t *pos, const char *s, size_t n) {
  size_t room = size - 1 - *pos;
  size_t k = n < room ? n : room;
  memcpy(buf + *pos, s, k);
  *pos += k;
  buf[*pos] = '\0';
  return k == n ? 0 : EVR_ENOSPC;
}

int evr_addr_format(const evr_addr_t *addr, char *buf, size_t size) {
  if (!addr || !buf) return EVR_EINVAL;
  if (size == 0) return EVR_ENOSPC;
  buf[0] = '\0';
  char tmp[INET6_ADDRSTRLEN + IF_NAMESIZE + 16];
  size_t pos = 0;
  int rc = 0;
  switch (addr->u.sa.sa_family) {
    case AF_INET: {
      char a[INET_ADDRSTRLEN];
      if (!inet_ntop(AF_INET, &addr->u.in.sin_addr, a, sizeof a))
        return EVR_EINVAL;
      int n = snprintf(tmp, sizeof tmp, "%s:%u", a,
                       (unsigned)ntohs(addr->u.in.sin_port));
      rc = put(buf, size, &pos, tmp, (size_t)n);
      break;
    }
    case AF_INET6: {
      char a[INET6_ADDRSTRLEN];
      char zone[IF_NAMESIZE + 1] = "";
      if (!inet_ntop(AF_INET6, &addr->u.in6.sin6_addr, a, sizeof a))
        return EVR_EINVAL;
      uint32_t scope = addr->u.in6.sin6_scope_id;
      if (scope != 0) {
        char name[IF_NAMESIZE];
        if (if_indextoname(scope, name))
          snprintf(zone, sizeof zone, "%%%s", name);
        else
          snprintf(zone, sizeof zone, "%%%u", (unsigned)scope);
      }
      int n = snprintf(tmp, sizeof tmp, "[%s%s]:%u", a, zone,
                       (unsigned)ntohs(addr->u.in6.sin6_port));
      rc = put(buf, size, &pos, tmp, (size_t)n);
      break;
    }
    case AF_UNIX: {
      rc = put(buf, size, &pos, "unix:", 5);
      if (rc || addr->len <= SUN_OFF) break; /* unnamed */
      size_t max = addr->len - SUN_OFF;
      if (max > sizeof addr->u.un.sun_path) max = sizeof addr->u.un.sun_path;
      const char *p = addr->u.un.sun_path;
      if (p[0] == '\0') {
        /* Abstract: the name runs to the end of the address (text cannot
         * carry an embedded NUL, so stop at one). */
        rc = put(buf, size, &pos, "@", 1);
        if (rc) break;
        size_t n = strnlen(p + 1, max - 1);
        rc = put(buf, size, &pos, p + 1, n);
      } else {
        rc = put(buf, size, &pos, p, strnlen(p, max));
      }
      break;
    }
    default:
      return EVR_EINVAL;
  }
  return rc ? rc : (int)pos;
}

int evr_addr_family(const evr_addr_t *addr) {
  return addr ? addr->u.sa.sa_family : 0;
}

uint16_t evr_addr_port(const evr_addr_t *addr) {
  if (!addr) return 0;
  switch (addr->u.sa.sa_family) {
    case AF_INET: return ntohs(addr->u.in.sin_port);
    case AF_INET6: return ntohs(addr->u.in6.sin6_port);
    default: return 0;
  }
}
