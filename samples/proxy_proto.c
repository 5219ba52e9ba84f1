/* samples/proxy_proto.c: the PROXY protocol header parser (proxy_proto.h).
 *
 * A v1 line is checked as far as it has arrived, so that garbage is refused
 * at once rather than when the line is complete or the reader gives up:
 * each field is checked when the space or CRLF after it is in, and the
 * field still arriving is checked for what it may start with. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int invalid(struct pproto_header *h, const char *why) {
  h->error = why;
  return PPROTO_INVALID;
}

static int need_more(struct pproto_header *h, size_t need) {
  h->need = need;
  return PPROTO_NEED_MORE;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static void set_v4(evr_addr_t *a, const unsigned char ip[4], uint16_t port) {
  memset(a, 0, sizeof *a);
  a->u.in.sin_family = AF_INET;
  a->u.in.sin_port = htons(port);
  memcpy(&a->u.in.sin_addr, ip, 4);
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
  a->u.in.sin_len = sizeof a->u.in;
#endif
  a->len = sizeof a->u.in;
}

static void set_v6(evr_addr_t *a, const unsigned char ip[16], uint16_t port) {
  memset(a, 0, sizeof *a);
  a->u.in6.sin6_family = AF_INET6;
  a->u.in6.sin6_port = htons(port);
  memcpy(&a->u.in6.sin6_addr, ip, 16);
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
  a->u.in6.sin6_len = sizeof a->u.in6;
#endif
  a->len = sizeof a->u.in6;
}

/* ---- version 1 ---- */

/* Dotted-quad IPv4 s[0..n). With partial set, s may be the start of one:
 * only what is there is judged. 1 if acceptable, else 0. */
static int ip4_text(const unsigned char *s, size_t n, int partial, unsigned char out[4]) {
  size_t i = 0;
  int parts = 0;
  for (;;) {
    if (i == n) return partial; /* empty, or ends after a dot */
    size_t start = i;
    unsigned v = 0;
    while (i < n && is_digit(s[i])) {
      if (i - start == 3) return 0;
      v = v * 10 + (unsigned)(s[i] - '0');
      i++;
    }
    if (i == start || v > 255) return 0;
    if (i - start > 1 && s[start] == '0') return 0; /* no leading zero */
    out[parts++] = (unsigned char)v;
    if (i == n) return partial || parts == 4;
    if (s[i] != '.' || parts == 4) return 0;
    i++;
  }
}

/* IPv6 s[0..n): groups of 1 to 4 hex digits separated by colons, one "::"
 * at most standing for one or more zero groups, and optionally a dotted
 * IPv4 address as the last 32 bits. 1 if valid, else 0. */
static int ip6_text(const unsigned char *s, size_t n, unsigned char out[16]) {
  uint16_t w[8];
  int nw = 0, gap = -1;
  size_t i = 0;
  if (n < 2 || n > 45) return 0;
  if (s[0] == ':') {
    if (s[1] != ':') return 0;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    size_t start = i;
    unsigned v = 0;
    int d;
    while (i < n && (d = hex_value(s[i])) >= 0) {
      if (i - start == 4) return 0;
      v = v * 16 + (unsigned)d;
      i++;
    }
    if (i == start) return 0; /* an empty group: ":::" or a stray character */
    if (i < n && s[i] == '.') { /* the IPv4 tail: the rest of the text */
      unsigned char q[4];
      if (nw > 6 || !ip4_text(s + start, n - start, 0, q)) return 0;
      w[nw++] = (uint16_t)(q[0] << 8 | q[1]);
      w[nw++] = (uint16_t)(q[2] << 8 | q[3]);
      break;
    }
    if (nw == 8) return 0;
    w[nw++] = (uint16_t)v;
    if (i == n) break;
    if (s[i] != ':') return 0;
    i++;
    if (i < n && s[i] == ':') {
      if (gap >= 0) return 0; /* a second "::" */
      gap = nw;
      i++;
    } else if (i == n) {
      return 0; /* ends with a single colon */
    }
  }
  if (gap < 0 ? nw != 8 : nw > 7) return 0;
  memset(out, 0, 16);
  int tail = gap < 0 ? 0 : nw - gap; /* groups after the "::" */
  for (int k = 0; k < nw; k++) {
    int at = k < nw - tail ? k : 8 - (nw - k);
    out[2 * at] = (unsigned char)(w[k] >> 8);
    out[2 * at + 1] = (unsigned char)w[k];
  }
  return 1;
}

/* What an IPv6 address still arriving may start with. */
static int ip6_start(const unsigned char *s, size_t n) {
  if (n > 45) return 0;
  for (size_t i = 0; i < n; i++) {
    if (hex_value(s[i]) < 0 && s[i] != ':' && s[i] != '.') return 0;
    if (i >= 2 && s[i] == ':' && s[i - 1] == ':' && s[i - 2] == ':') return 0;
  }
  return 1;
}

/* A port s[0..n): 0..65535, decimal, no leading zero. With partial set,
 * what it may start with. */
static int port_text(const unsigned char *s, size_t n, int partial, uint16_t *out) {
  if (n == 0) return partial;
  if (n > 5 || (n > 1 && s[0] == '0')) return 0;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit(s[i])) return 0;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535) return 0;
  *out = (uint16_t)v;
  return 1;
}

/* One field of the line p[0..end): from *pos to the next space or to end.
 * Returns how it ends: FIELD_SP (a space: *pos moves past it), FIELD_EOL
 * (the CRLF of a complete line) or FIELD_CUT (the bytes received so far). */
enum { FIELD_SP, FIELD_EOL, FIELD_CUT };

static int field(const unsigned char *p, size_t end, int complete, size_t *pos,
                 const unsigned char **f, size_t *flen) {
  size_t i = *pos;
  while (i < end && p[i] != ' ') i++;
  *f = p + *pos;
  *flen = i - *pos;
  if (i < end) {
    *pos = i + 1;
    return FIELD_SP;
  }
  *pos = i;
  return complete ? FIELD_EOL : FIELD_CUT;
}

static int starts(const unsigned char *f, size_t n, const char *word) {
  return n <= strlen(word) && memcmp(f, word, n) == 0;
}

static int equals(const unsigned char *f, size_t n, const char *word) {
  return n == strlen(word) && memcmp(f, word, n) == 0;
}

/* The fields of a line p[0..end), which ends there (complete) or is cut
 * there (more to come). 0 if acceptable so far, else INVALID. */
static int v1_fields(const unsigned char *p, size_t end, int complete, struct pproto_header *h) {
  size_t pos = 6;
  const unsigned char *f;
  size_t fl;
  int how = field(p, end, complete, &pos, &f, &fl);
  int v6;
  if (how == FIELD_CUT) {
    if (starts(f, fl, "TCP4") || starts(f, fl, "TCP6") || starts(f, fl, "UNKNOWN")) return 0;
    return invalid(h, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
  }
  if (equals(f, fl, "UNKNOWN")) return 0; /* whatever follows, up to CRLF */
  if (equals(f, fl, "TCP4")) v6 = 0;
  else if (equals(f, fl, "TCP6")) v6 = 1;
  else return invalid(h, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
  if (how == FIELD_EOL) return invalid(h, "v1: addresses and ports missing");

  static const char *const names[4] = {"v1: bad source address", "v1: bad destination address",
                                       "v1: bad source port", "v1: bad destination port"};
  unsigned char ip[2][16];
  uint16_t port[2] = {0, 0};
  for (int k = 0; k < 4; k++) {
    how = field(p, end, complete, &pos, &f, &fl);
    int last = k == 3;
    if (how == FIELD_EOL && !last) return invalid(h, "v1: fields missing");
    if (how == FIELD_SP && last) return invalid(h, "v1: text after the destination port");
    int cut = how == FIELD_CUT, ok;
    if (k < 2) ok = v6 ? (cut ? ip6_start(f, fl) : ip6_text(f, fl, ip[k]))
                       : ip4_text(f, fl, cut, ip[k]);
    else ok = port_text(f, fl, cut, &port[k - 2]);
    if (!ok) return invalid(h, names[k]);
    if (cut) return 0;
  }
  h->has_addrs = 1;
  if (v6) {
    set_v6(&h->src, ip[0], port[0]);
    set_v6(&h->dst, ip[1], port[1]);
  } else {
    set_v4(&h->src, ip[0], port[0]);
    set_v4(&h->dst, ip[1], port[1]);
  }
  return 0;
}

static int parse_v1(const unsigned char *p, size_t n, struct pproto_header *h) {
  static const char prefix[] = "PROXY ";
  size_t k = n < 6 ? n : 6;
  if (memcmp(p, prefix, k) != 0) return invalid(h, "v1: does not start with \"PROXY \"");
  /* The line's end: a CR whose LF is in the first 107 bytes. */
  size_t lim = n < PPROTO_V1_MAX ? n : PPROTO_V1_MAX, end = lim;
  int complete = 0;
  for (size_t i = 0; i < lim; i++) {
    if (p[i] == '\r') {
      end = i;
      if (i + 1 == n) break; /* its LF is still to come */
      if (p[i + 1] != '\n') return invalid(h, "v1: CR without LF");
      if (i + 2 > PPROTO_V1_MAX) break; /* too long: said below */
      complete = 1;
      break;
    }
    if (p[i] == '\n') return invalid(h, "v1: LF without CR");
    if (p[i] < 0x20 || p[i] > 0x7e) return invalid(h, "v1: a byte that is not printable ASCII");
  }
  if (!complete && n >= PPROTO_V1_MAX) return invalid(h, "v1: no CRLF in the first 107 bytes");
  if (end < 6) {
    if (complete) return invalid(h, "v1: protocol missing");
    return need_more(h, n + 1);
  }
  if (v1_fields(p, end, complete, h) != 0) {
    h->has_addrs = 0;
    return PPROTO_INVALID;
  }
  if (!complete) {
    h->has_addrs = 0;
    return need_more(h, n + 1);
  }
  h->len = end + 2;
  return PPROTO_DONE;
}

/* ---- version 2 ---- */

static int parse_v2(const unsigned char *p, size_t n, struct pproto_header *h) {
  h->version = 2;
  size_t k = n < sizeof v2_sig ? n : sizeof v2_sig;
  if (memcmp(p, v2_sig, k) != 0) return invalid(h, "v2: bad signature");
  if (n > 12) {
    if ((p[12] >> 4) != 2) return invalid(h, "v2: version is not 2");
    if ((p[12] & 0x0F) > 1) return invalid(h, "v2: command is not LOCAL or PROXY");
  }
  size_t addr_len = 0;
  if (n > 13) {
    switch (p[13]) {
      case 0x00: addr_len = 0; break;
      case 0x11: case 0x12: addr_len = 12; break;
      case 0x21: case 0x22: addr_len = 36; break;
      case 0x31: case 0x32: addr_len = 216; break;
      default: return invalid(h, "v2: unknown address family or transport");
    }
  }
  if (n < PPROTO_V2_MIN) return need_more(h, PPROTO_V2_MIN);
  size_t len = (size_t)p[14] << 8 | p[15];
  int proxy = (p[12] & 0x0F) == 1;
  /* LOCAL: the address block is ignored, whatever its family says. */
  if (proxy && len < addr_len) return invalid(h, "v2: length shorter than the addresses");
  if (n < PPROTO_V2_MIN + len) return need_more(h, PPROTO_V2_MIN + len);
  /* TLVs fill the rest exactly (LOCAL without a full address block: the
   * block is opaque, nothing to check). */
  if (len >= addr_len) {
    size_t at = PPROTO_V2_MIN + addr_len, end = PPROTO_V2_MIN + len;
    while (at < end) {
      if (end - at < 3) return invalid(h, "v2: truncated TLV");
      size_t vlen = (size_t)p[at + 1] << 8 | p[at + 2];
      if (vlen > end - at - 3) return invalid(h, "v2: TLV runs past the header");
      at += 3 + vlen;
    }
  }
  h->len = PPROTO_V2_MIN + len;
  if (proxy && (p[13] == 0x11 || p[13] == 0x21)) {
    const unsigned char *a = p + PPROTO_V2_MIN;
    size_t alen = p[13] == 0x11 ? 4 : 16;
    uint16_t sport = (uint16_t)(a[2 * alen] << 8 | a[2 * alen + 1]);
    uint16_t dport = (uint16_t)(a[2 * alen + 2] << 8 | a[2 * alen + 3]);
    if (alen == 4) {
      set_v4(&h->src, a, sport);
      set_v4(&h->dst, a + 4, dport);
    } else {
      set_v6(&h->src, a, sport);
      set_v6(&h->dst, a + 16, dport);
    }
    h->has_addrs = 1;
  }
  return PPROTO_DONE;
}

int pproto_parse(const void *data, size_t n, struct pproto_header *h) {
  const unsigned char *p = data;
  memset(h, 0, sizeof *h);
  if (n == 0) return need_more(h, 1);
  if (p[0] == 'P') {
    h->version = 1;
    return parse_v1(p, n, h);
  }
  if (p[0] == 0x0D) return parse_v2(p, n, h);
  return invalid(h, "not a PROXY protocol header");
}
