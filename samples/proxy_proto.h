/* samples/proxy_proto.h: reading the PROXY protocol header a load balancer
 * (HAProxy's send-proxy, nginx, another evr-proxy) puts in front of a
 * relayed connection: version 1 (one text line) or version 2 (binary).
 *
 * pproto_parse() looks at the bytes a connection has sent so far and says
 * whether they begin with a complete, valid header (and how long it is),
 * cannot be one whatever follows, or could still become one. It keeps no
 * state and does no I/O, so a reader calls it again on the whole buffer
 * each time more bytes arrive, and tests and fuzzers call it on any bytes.
 *
 * Validation is strict; anything not listed here is invalid:
 *  - v1: "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF,
 *    or "PROXY UNKNOWN" then CRLF or SP and any text up to CRLF; at most
 *    107 bytes, CRLF included; printable ASCII only; single spaces; IPv4
 *    as four decimal numbers 0..255 without leading zeros, IPv6 as 1 to 4
 *    hex digits per group with at most one "::" (a dotted IPv4 tail is
 *    allowed), both addresses of the announced family; ports 0..65535
 *    without leading zeros.
 *  - v2: the 12-byte signature; version 2; command LOCAL or PROXY; one of
 *    the address family / transport pairs the protocol defines (0x00,
 *    0x11, 0x12, 0x21, 0x22, 0x31, 0x32); a length that covers the address
 *    block of the family (PROXY command); the TLVs that follow the address
 *    block (type, 16-bit length, value) must end exactly at the end of the
 *    header. Their contents are not interpreted.
 * A v1 UNKNOWN line, the v2 LOCAL command, and a v2 PROXY command for
 * anything but TCP over IPv4 or IPv6 (unspecified, UDP, Unix sockets) are
 * valid but carry no address to use: the connection's own addresses stand.
 */
#ifndef EVR_SAMPLES_PROXY_PROTO_H
#define EVR_SAMPLES_PROXY_PROTO_H

#include <stddef.h>
#include "evr/addr.h"

#define PPROTO_V1_MAX 107         /* the longest v1 line, CRLF included */
#define PPROTO_V2_MIN 16          /* signature, command, family, length */
#define PPROTO_V2_MAX (16 + 65535)

enum { PPROTO_INVALID = -1, PPROTO_NEED_MORE = 0, PPROTO_DONE = 1 };

struct pproto_header {
  int version;       /* 1 or 2; 0 until the first byte says which */
  int has_addrs;     /* DONE: src and dst are the relayed connection's
                        (AF_INET or AF_INET6, both the same); 0: use the
                        connection's own addresses */
  size_t len;        /* DONE: bytes of the header; the application's data
                        begins after them */
  size_t need;       /* NEED_MORE: the buffer must grow to at least this
                        many bytes before the answer can change; for v2 once
                        its length field is in, the exact header length */
  const char *error; /* INVALID: what is wrong (static text) */
  evr_addr_t src, dst;
};

/* Parse the header at the start of data[0..n). Returns PPROTO_DONE,
 * PPROTO_NEED_MORE or PPROTO_INVALID and fills *h accordingly. The answer
 * depends only on the bytes it needs: once DONE with length L, the same
 * first L bytes give DONE whatever follows; once INVALID, no longer buffer
 * with the same start is valid. data may be NULL when n is 0. */
int pproto_parse(const void *data, size_t n, struct pproto_header *h);

#endif
