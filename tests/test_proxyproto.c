/* tests/test_proxyproto.c: the PROXY protocol header parser of evr-proxy
 * (samples/proxy_proto.c) on its own: valid v1 and v2 headers of every
 * family, every malformed case, delivery in pieces down to one byte at a
 * time, and the bytes after a header left alone. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include "helpers.h"
#include "proxy_proto.h"

static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header into out: signature, ver_cmd, fam, then body[0..blen) as
 * the address block and TLVs (len = blen). Returns its length. */
static size_t v2(unsigned char *out, unsigned char ver_cmd, unsigned char fam,
                 const unsigned char *body, size_t blen) {
  memcpy(out, sig, 12);
  out[12] = ver_cmd;
  out[13] = fam;
  out[14] = (unsigned char)(blen >> 8);
  out[15] = (unsigned char)blen;
  if (blen) memcpy(out + 16, body, blen);
  return 16 + blen;
}

/* An address block for TCP over IPv4: src, dst, ports. */
static size_t inet_block(unsigned char *b, const char *src, const char *dst, uint16_t sp,
                         uint16_t dp) {
  assert_int_equal(inet_pton(AF_INET, src, b), 1);
  assert_int_equal(inet_pton(AF_INET, dst, b + 4), 1);
  b[8] = (unsigned char)(sp >> 8);
  b[9] = (unsigned char)sp;
  b[10] = (unsigned char)(dp >> 8);
  b[11] = (unsigned char)dp;
  return 12;
}

static size_t inet6_block(unsigned char *b, const char *src, const char *dst, uint16_t sp,
                          uint16_t dp) {
  assert_int_equal(inet_pton(AF_INET6, src, b), 1);
  assert_int_equal(inet_pton(AF_INET6, dst, b + 16), 1);
  b[32] = (unsigned char)(sp >> 8);
  b[33] = (unsigned char)sp;
  b[34] = (unsigned char)(dp >> 8);
  b[35] = (unsigned char)dp;
  return 36;
}

/* The address as "ip port" text, for comparisons. */
static const char *text(const evr_addr_t *a) {
  static char buf[4][80];
  static int next;
  char *out = buf[next++ % 4], ip[INET6_ADDRSTRLEN];
  if (a->u.sa.sa_family == AF_INET) {
    inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof ip);
    snprintf(out, sizeof buf[0], "%s %u", ip, ntohs(a->u.in.sin_port));
  } else if (a->u.sa.sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip);
    snprintf(out, sizeof buf[0], "%s %u", ip, ntohs(a->u.in6.sin6_port));
  } else {
    snprintf(out, sizeof buf[0], "family %d", a->u.sa.sa_family);
  }
  return out;
}

/* Every way of receiving data[0..n), whose header is `hlen` bytes long
 * (n - hlen bytes of application data follow): each shorter prefix of
 * the header needs more (and says so with need > its length, and for v2
 * need <= hlen), and every prefix from hlen on is done with length hlen
 * and the same addresses. */
static void check_prefixes(const unsigned char *data, size_t n, size_t hlen) {
  struct pproto_header full, h;
  assert_int_equal(pproto_parse(data, n, &full), PPROTO_DONE);
  assert_int_equal(full.len, hlen);
  for (size_t k = 0; k <= n; k++) {
    int rc = pproto_parse(data, k, &h);
    if (k < hlen) {
      if (rc != PPROTO_NEED_MORE)
        fail_msg("prefix of %zu bytes of a %zu-byte header: %d (%s)", k, hlen, rc,
                 h.error ? h.error : "");
      assert_true(h.need > k);
      if (full.version == 2) assert_true(h.need <= hlen);
      continue;
    }
    assert_int_equal(rc, PPROTO_DONE);
    assert_int_equal(h.len, hlen);
    assert_int_equal(h.version, full.version);
    assert_int_equal(h.has_addrs, full.has_addrs);
    if (h.has_addrs) {
      assert_string_equal(text(&h.src), text(&full.src));
      assert_string_equal(text(&h.dst), text(&full.dst));
    }
  }
}

/* A valid v1 line: done, its length, and the addresses, with and without
 * bytes after it, delivered in every way. */
static void v1_ok(const char *line, int has_addrs, int family, const char *src, const char *dst) {
  char buf[256];
  size_t hlen = strlen(line);
  int n = snprintf(buf, sizeof buf, "%sGET / HTTP/1.0\r\n\r\n", line);
  assert_true(n > 0);
  struct pproto_header h;
  int rc = pproto_parse(line, hlen, &h);
  if (rc != PPROTO_DONE) fail_msg("\"%s\": %d (%s)", line, rc, h.error ? h.error : "");
  assert_int_equal(h.version, 1);
  assert_int_equal(h.len, hlen);
  assert_int_equal(h.has_addrs, has_addrs);
  if (has_addrs) {
    assert_int_equal(h.src.u.sa.sa_family, family);
    assert_int_equal(h.dst.u.sa.sa_family, family);
    assert_string_equal(text(&h.src), src);
    assert_string_equal(text(&h.dst), dst);
    assert_int_equal(h.src.len, family == AF_INET ? sizeof(struct sockaddr_in)
                                                  : sizeof(struct sockaddr_in6));
  }
  check_prefixes((const unsigned char *)buf, (size_t)n, hlen);
}

static void test_pproto_v1_tcp4(void **state) {
  (void)state;
  v1_ok("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", 1, AF_INET, "192.168.0.1 56324",
        "192.168.0.11 443");
  v1_ok("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 1, AF_INET, "0.0.0.0 0",
        "255.255.255.255 65535");
  v1_ok("PROXY TCP4 10.0.0.1 10.0.0.2 1 9\r\n", 1, AF_INET, "10.0.0.1 1", "10.0.0.2 9");
}

static void test_pproto_v1_tcp6(void **state) {
  (void)state;
  v1_ok("PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\n", 1, AF_INET6, "2001:db8::1 40000",
        "2001:db8::2 443");
  v1_ok("PROXY TCP6 ::1 :: 1 2\r\n", 1, AF_INET6, "::1 1", ":: 2");
  v1_ok("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF 65535 65535\r\n",
        1, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535");
  v1_ok("PROXY TCP6 1:2:3:4:5:6:7:8 0001:0:0:0:0:0:0:1 5 6\r\n", 1, AF_INET6,
        "1:2:3:4:5:6:7:8 5", "1::1 6");
  v1_ok("PROXY TCP6 ::ffff:192.0.2.1 64:ff9b::198.51.100.7 7 8\r\n", 1, AF_INET6,
        "::ffff:192.0.2.1 7", "64:ff9b::c633:6407 8");
  v1_ok("PROXY TCP6 fe80:: 1:2:3:4:5:6:7:: 7 8\r\n", 1, AF_INET6, "fe80:: 7", "1:2:3:4:5:6:7:0 8");
  v1_ok("PROXY TCP6 1:2:3:4:5:6:1.2.3.4 a::b 9 10\r\n", 1, AF_INET6, "1:2:3:4:5:6:102:304 9",
        "a::b 10");
}

static void test_pproto_v1_unknown(void **state) {
  (void)state;
  v1_ok("PROXY UNKNOWN\r\n", 0, 0, NULL, NULL);
  v1_ok("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", 0, 0, NULL, NULL);
  v1_ok("PROXY UNKNOWN anything at all, even  double spaces\r\n", 0, 0, NULL, NULL);
  /* The longest line the specification foresees: 107 bytes. */
  const char *worst = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  assert_int_equal(strlen(worst), PPROTO_V1_MAX);
  v1_ok(worst, 0, 0, NULL, NULL);
}

/* The longest line is 107 bytes, CRLF included: one more is refused as
 * soon as the 107th byte is in without a CRLF; 106 bytes without one
 * still need more. */
static void test_pproto_v1_length_limit(void **state) {
  (void)state;
  char line[200];
  memset(line, 'x', sizeof line);
  memcpy(line, "PROXY UNKNOWN ", 14);
  struct pproto_header h;
  memcpy(line + 105, "\r\n", 2);
  assert_int_equal(pproto_parse(line, 107, &h), PPROTO_DONE);
  assert_int_equal(h.len, 107);
  memset(line + 105, 'x', 2);
  memcpy(line + 106, "\r\n", 2); /* 108 bytes */
  assert_int_equal(pproto_parse(line, 106, &h), PPROTO_NEED_MORE);
  assert_int_equal(pproto_parse(line, 107, &h), PPROTO_INVALID);
  assert_non_null(h.error);
  assert_int_equal(pproto_parse(line, 108, &h), PPROTO_INVALID);
  memset(line + 106, 'x', 2);
  assert_int_equal(pproto_parse(line, 106, &h), PPROTO_NEED_MORE);
  assert_int_equal(pproto_parse(line, 107, &h), PPROTO_INVALID);
  assert_int_equal(pproto_parse(line, sizeof line, &h), PPROTO_INVALID);
}

/* Lines that must be refused, whole (CRLF included). */
static const char *const v1_bad[] = {
    "PROXY\r\n",
    "PROXY \r\n",
    "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY UNKNOWNX\r\n",
    "PROXY UNKNOWN\r\r\n",
    "PROXY TCP4\r\n",
    "PROXY TCP4 \r\n",
    "PROXY TCP4 1.2.3.4\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r",
    "PROXY TCP4 1.2.3.4 5.6.7.8\t1 2\r\n",
    "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n",
    "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.999 1 2\r\n",
    "PROXY TCP4 1.2.3.1000 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2..4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.-4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 a.b.c.d 5.6.7.8 1 2\r\n",
    "PROXY TCP4 ::1 ::1 1 2\r\n",
    "PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
    "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
    "PROXY TCP6 1::2::3 ::1 1 2\r\n",
    "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
    "PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n",
    "PROXY TCP6 1:2:3:4:5:6:7:8:: ::1 1 2\r\n",
    "PROXY TCP6 1:2:3:4::5:6:7:8 ::1 1 2\r\n",
    "PROXY TCP6 12345::1 ::1 1 2\r\n",
    "PROXY TCP6 :1 ::1 1 2\r\n",
    "PROXY TCP6 1: ::1 1 2\r\n",
    "PROXY TCP6 ::1: ::1 1 2\r\n",
    "PROXY TCP6 ::: ::1 1 2\r\n",
    "PROXY TCP6 1:::2 ::1 1 2\r\n",
    "PROXY TCP6 : ::1 1 2\r\n",
    "PROXY TCP6 g::1 ::1 1 2\r\n",
    "PROXY TCP6 [::1] ::1 1 2\r\n",
    "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "PROXY TCP6 ::ffff:1.2.3 ::1 1 2\r\n",
    "PROXY TCP6 ::ffff:1.2.3.256 ::1 1 2\r\n",
    "PROXY TCP6 ::1.2.3.4:5 ::1 1 2\r\n",
    "PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1x 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n",
    " PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "GET / HTTP/1.1\r\n",
};

static void test_pproto_v1_malformed(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof v1_bad / sizeof v1_bad[0]; i++) {
    struct pproto_header h;
    int rc = pproto_parse(v1_bad[i], strlen(v1_bad[i]), &h);
    if (rc != PPROTO_INVALID) fail_msg("accepted (%d): \"%s\"", rc, v1_bad[i]);
    assert_non_null(h.error);
    assert_int_equal(h.has_addrs, 0);
  }
}

/* Bytes that are never part of a line: NUL, other controls, 8-bit. */
static void test_pproto_v1_refuses_bytes_outside_printable_ascii(void **state) {
  (void)state;
  static const unsigned char bytes[] = {0x00, 0x01, 0x09, 0x0B, 0x1F, 0x7F, 0x80, 0xC3, 0xFF};
  for (size_t i = 0; i < sizeof bytes; i++) {
    char line[64];
    int n = snprintf(line, sizeof line, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    assert_true(n > 0);
    for (int at = 6; at < n - 2; at += 7) {
      char copy[64];
      memcpy(copy, line, (size_t)n);
      copy[at] = (char)bytes[i];
      struct pproto_header h;
      if (pproto_parse(copy, (size_t)n, &h) != PPROTO_INVALID)
        fail_msg("byte 0x%02x at %d accepted", bytes[i], at);
    }
    char unk[32];
    memcpy(unk, "PROXY UNKNOWN x\r\n", 17);
    unk[14] = (char)bytes[i];
    struct pproto_header h;
    assert_int_equal(pproto_parse(unk, 17, &h), PPROTO_INVALID);
  }
}

/* A line is refused as soon as what has come cannot start a valid one,
 * without waiting for its CRLF. */
static void test_pproto_v1_refused_early(void **state) {
  (void)state;
  static const char *const starts[] = {
      "G",
      "PROXX",
      "PROXY  ",
      "PROXY TCP5",
      "PROXY UNKNOWNX",
      "PROXY TCP4 1.2.3.4.5",
      "PROXY TCP4 256",
      "PROXY TCP4 01",
      "PROXY TCP4 1.2.3.4  ",
      "PROXY TCP4 1..",
      "PROXY TCP4 ::",
      "PROXY TCP6 ::g",
      "PROXY TCP6 1:::",
      "PROXY TCP6 1:2:3:4:5:6:7:8:1:2:3:4:5:6:7:8:1:2:3:4:5:6:7:8:",
      "PROXY TCP4 1.2.3.4 5.6.7.8 655369",
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 02",
  };
  for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++) {
    struct pproto_header h;
    int rc = pproto_parse(starts[i], strlen(starts[i]), &h);
    if (rc != PPROTO_INVALID) fail_msg("\"%s\": %d, expected invalid", starts[i], rc);
  }
  /* Port 0 is a whole port: a space may follow, a digit may not. */
  struct pproto_header h;
  assert_int_equal(pproto_parse("PROXY TCP4 1.2.3.4 5.6.7.8 0", 28, &h), PPROTO_NEED_MORE);
  assert_int_equal(pproto_parse("PROXY TCP4 1.2.3.4 5.6.7.8 0 ", 29, &h), PPROTO_NEED_MORE);
  assert_int_equal(pproto_parse("PROXY TCP4 1.2.3.4 5.6.7.8 00", 29, &h), PPROTO_INVALID);
  /* What may still become a valid line needs more. */
  assert_int_equal(pproto_parse("PROXY TCP4 1.2.3.4 ", 19, &h), PPROTO_NEED_MORE);
  assert_int_equal(pproto_parse("PROXY TCP6 ::ffff:1.2.", 22, &h), PPROTO_NEED_MORE);
  assert_int_equal(pproto_parse("PROXY UNK", 9, &h), PPROTO_NEED_MORE);
}

/* ---- version 2 ---- */

static void v2_ok(const unsigned char *hdr, size_t hlen, int has_addrs, const char *src,
                  const char *dst) {
  unsigned char buf[1024];
  assert_true(hlen + 5 <= sizeof buf);
  memcpy(buf, hdr, hlen);
  memcpy(buf + hlen, "\r\nXY\0", 5); /* application bytes that look like anything */
  struct pproto_header h;
  int rc = pproto_parse(hdr, hlen, &h);
  if (rc != PPROTO_DONE) fail_msg("v2 header: %d (%s)", rc, h.error ? h.error : "");
  assert_int_equal(h.version, 2);
  assert_int_equal(h.len, hlen);
  assert_int_equal(h.has_addrs, has_addrs);
  if (has_addrs) {
    assert_string_equal(text(&h.src), src);
    assert_string_equal(text(&h.dst), dst);
  }
  check_prefixes(buf, hlen + 5, hlen);
}

static void test_pproto_v2_inet_and_inet6(void **state) {
  (void)state;
  unsigned char b[256], hdr[512];
  size_t n = inet_block(b, "203.0.113.7", "198.51.100.9", 40000, 443);
  v2_ok(hdr, v2(hdr, 0x21, 0x11, b, n), 1, "203.0.113.7 40000", "198.51.100.9 443");
  n = inet6_block(b, "2001:db8::1", "2001:db8::2", 1, 65535);
  v2_ok(hdr, v2(hdr, 0x21, 0x21, b, n), 1, "2001:db8::1 1", "2001:db8::2 65535");
  n = inet_block(b, "0.0.0.0", "255.255.255.255", 0, 0);
  v2_ok(hdr, v2(hdr, 0x21, 0x11, b, n), 1, "0.0.0.0 0", "255.255.255.255 0");
}

/* TLVs after the addresses are skipped, whatever their type. */
static void test_pproto_v2_tlvs_are_skipped(void **state) {
  (void)state;
  unsigned char b[512], hdr[1024];
  size_t n = inet_block(b, "10.1.2.3", "10.4.5.6", 1000, 2000);
  static const unsigned char tlvs[] = {
      0x04, 0x00, 0x00,                          /* NOOP, empty */
      0x01, 0x00, 0x02, 'h', '2',                /* ALPN */
      0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,  /* CRC32C (not checked) */
      0x20, 0x00, 0x0c, 0x01, 0, 0, 0, 0,        /* SSL: client, verify */
      0x21, 0x00, 0x04, 'T', 'L', 'S', '1',      /* SSL version sub-TLV */
      0xE0, 0x00, 0x01, 0x00,                    /* custom */
  };
  memcpy(b + n, tlvs, sizeof tlvs);
  v2_ok(hdr, v2(hdr, 0x21, 0x11, b, n + sizeof tlvs), 1, "10.1.2.3 1000", "10.4.5.6 2000");
  /* A long TLV: the header may be up to 16 + 65535 bytes; 300 here. */
  static unsigned char big[600];
  n = inet6_block(big, "::1", "::2", 3, 4);
  big[n] = 0x05;
  big[n + 1] = 0x01;
  big[n + 2] = 0x00;
  memset(big + n + 3, 'u', 256);
  static unsigned char bighdr[700];
  v2_ok(bighdr, v2(bighdr, 0x21, 0x21, big, n + 3 + 256), 1, "::1 3", "::2 4");
}

/* LOCAL, and PROXY for what evr-proxy does not relay (unspecified, UDP,
 * Unix): valid, no addresses to use. */
static void test_pproto_v2_local_and_other_families(void **state) {
  (void)state;
  unsigned char b[512], hdr[1024];
  v2_ok(hdr, v2(hdr, 0x20, 0x00, NULL, 0), 0, NULL, NULL);
  static const unsigned char noop[] = {0x04, 0x00, 0x01, 0x00};
  v2_ok(hdr, v2(hdr, 0x20, 0x00, noop, sizeof noop), 0, NULL, NULL);
  /* LOCAL: the family is ignored, the address block skipped. */
  size_t n = inet_block(b, "1.2.3.4", "5.6.7.8", 1, 2);
  v2_ok(hdr, v2(hdr, 0x20, 0x11, b, n), 0, NULL, NULL);
  v2_ok(hdr, v2(hdr, 0x20, 0x11, NULL, 0), 0, NULL, NULL);
  v2_ok(hdr, v2(hdr, 0x20, 0x21, b, 5), 0, NULL, NULL);
  /* PROXY, unspecified family: the connection's addresses stand. */
  v2_ok(hdr, v2(hdr, 0x21, 0x00, NULL, 0), 0, NULL, NULL);
  /* UDP over IPv4 and IPv6. */
  v2_ok(hdr, v2(hdr, 0x21, 0x12, b, n), 0, NULL, NULL);
  n = inet6_block(b, "::1", "::2", 1, 2);
  v2_ok(hdr, v2(hdr, 0x21, 0x22, b, n), 0, NULL, NULL);
  /* Unix stream and datagram: 2 x 108 bytes of paths. */
  memset(b, 0, 216);
  memcpy(b, "/run/a.sock", 11);
  memcpy(b + 108, "/run/b.sock", 11);
  v2_ok(hdr, v2(hdr, 0x21, 0x31, b, 216), 0, NULL, NULL);
  v2_ok(hdr, v2(hdr, 0x21, 0x32, b, 216), 0, NULL, NULL);
}

static void expect_v2_invalid(const unsigned char *hdr, size_t n, const char *what) {
  struct pproto_header h;
  int rc = pproto_parse(hdr, n, &h);
  if (rc != PPROTO_INVALID) fail_msg("%s: %d, expected invalid", what, rc);
  assert_non_null(h.error);
  assert_int_equal(h.has_addrs, 0);
}

static void test_pproto_v2_malformed(void **state) {
  (void)state;
  unsigned char b[512], hdr[1024], copy[1024];
  size_t n = inet_block(b, "1.2.3.4", "5.6.7.8", 1, 2);
  size_t len = v2(hdr, 0x21, 0x11, b, n);
  /* Each byte of the signature. */
  for (size_t i = 0; i < 12; i++) {
    memcpy(copy, hdr, len);
    copy[i] ^= 0x20;
    expect_v2_invalid(copy, len, "signature");
  }
  /* Version: only 2. */
  static const unsigned char vers[] = {0x01, 0x11, 0x31, 0xF1, 0x00};
  for (size_t i = 0; i < sizeof vers; i++) {
    memcpy(copy, hdr, len);
    copy[12] = vers[i];
    expect_v2_invalid(copy, len, "version");
  }
  /* Command: LOCAL (0) or PROXY (1) only. */
  for (unsigned c = 2; c < 16; c++) {
    memcpy(copy, hdr, len);
    copy[12] = (unsigned char)(0x20 | c);
    expect_v2_invalid(copy, len, "command");
  }
  /* Family and transport: the defined pairs only, for either command. */
  for (unsigned f = 0; f < 256; f++) {
    if (f == 0x00 || f == 0x11 || f == 0x12 || f == 0x21 || f == 0x22 || f == 0x31 ||
        f == 0x32)
      continue;
    for (unsigned c = 0; c < 2; c++) {
      memcpy(copy, hdr, len);
      copy[12] = (unsigned char)(0x20 | c);
      copy[13] = (unsigned char)f;
      expect_v2_invalid(copy, len, "family/transport");
    }
  }
  /* A length too short for the addresses of a PROXY command. */
  expect_v2_invalid(hdr, v2(hdr, 0x21, 0x11, b, 11), "INET, 11 bytes");
  expect_v2_invalid(hdr, v2(hdr, 0x21, 0x11, NULL, 0), "INET, no addresses");
  expect_v2_invalid(hdr, v2(hdr, 0x21, 0x21, b, 35), "INET6, 35 bytes");
  expect_v2_invalid(hdr, v2(hdr, 0x21, 0x12, b, 4), "UDP4, 4 bytes");
  expect_v2_invalid(hdr, v2(hdr, 0x21, 0x31, b, 215), "UNIX, 215 bytes");
  expect_v2_invalid(hdr, v2(hdr, 0x21, 0x32, b, 108), "UNIX dgram, 108 bytes");
  /* TLVs that do not fill the rest exactly. */
  n = inet_block(b, "1.2.3.4", "5.6.7.8", 1, 2);
  static const struct {
    unsigned char t[8];
    size_t n;
    const char *what;
  } bad_tlv[] = {
      {{0x04}, 1, "one byte of a TLV"},
      {{0x04, 0x00}, 2, "two bytes of a TLV"},
      {{0x04, 0x00, 0x01}, 3, "a TLV without its value"},
      {{0x04, 0x00, 0x05, 1, 2, 3, 4}, 7, "a TLV one byte short"},
      {{0x04, 0x00, 0x00, 0x04, 0x00}, 5, "a second TLV cut"},
      {{0x04, 0xFF, 0xFF, 0}, 4, "a TLV of 65535 bytes"},
  };
  for (size_t i = 0; i < sizeof bad_tlv / sizeof bad_tlv[0]; i++) {
    memcpy(b + n, bad_tlv[i].t, bad_tlv[i].n);
    expect_v2_invalid(hdr, v2(hdr, 0x21, 0x11, b, n + bad_tlv[i].n), bad_tlv[i].what);
    /* LOCAL: after a whole address block, TLVs are checked too. */
    expect_v2_invalid(hdr, v2(hdr, 0x20, 0x11, b, n + bad_tlv[i].n), bad_tlv[i].what);
    expect_v2_invalid(hdr, v2(hdr, 0x20, 0x00, bad_tlv[i].t, bad_tlv[i].n), bad_tlv[i].what);
  }
}

/* Refused as soon as the offending byte is in: no need to wait for the
 * rest (nor for a length field that may announce 64 KiB). */
static void test_pproto_v2_refused_early(void **state) {
  (void)state;
  unsigned char hdr[64];
  size_t len = v2(hdr, 0x21, 0x11, (const unsigned char *)"123456789012", 12);
  struct pproto_header h;
  for (size_t k = 1; k <= 12; k++) {
    unsigned char copy[64];
    memcpy(copy, hdr, len);
    copy[k - 1] ^= 1;
    assert_int_equal(pproto_parse(copy, k, &h), PPROTO_INVALID);
    assert_int_equal(pproto_parse(hdr, k, &h), PPROTO_NEED_MORE);
    assert_int_equal(h.need, PPROTO_V2_MIN);
  }
  hdr[12] = 0x31;
  assert_int_equal(pproto_parse(hdr, 13, &h), PPROTO_INVALID);
  hdr[12] = 0x23;
  assert_int_equal(pproto_parse(hdr, 13, &h), PPROTO_INVALID);
  hdr[12] = 0x21;
  hdr[13] = 0x13;
  assert_int_equal(pproto_parse(hdr, 14, &h), PPROTO_INVALID);
  /* PROXY, INET, length 4: wrong before the 4 bytes are there. */
  hdr[13] = 0x11;
  hdr[14] = 0;
  hdr[15] = 4;
  assert_int_equal(pproto_parse(hdr, 16, &h), PPROTO_INVALID);
  /* A valid length announces how much is needed. */
  hdr[14] = 0xFF;
  hdr[15] = 0xFF;
  assert_int_equal(pproto_parse(hdr, 16, &h), PPROTO_NEED_MORE);
  assert_int_equal(h.need, PPROTO_V2_MAX);
}

/* The longest header, 16 + 65535 bytes: one TLV filling the rest. */
static void test_pproto_v2_longest_header(void **state) {
  (void)state;
  static unsigned char hdr[PPROTO_V2_MAX + 10];
  unsigned char b[12];
  inet_block(b, "192.0.2.1", "192.0.2.2", 80, 8080);
  memcpy(hdr, sig, 12);
  hdr[12] = 0x21;
  hdr[13] = 0x11;
  hdr[14] = 0xFF;
  hdr[15] = 0xFF;
  memcpy(hdr + 16, b, 12);
  size_t vlen = 65535 - 12 - 3;
  hdr[28] = 0xE1;
  hdr[29] = (unsigned char)(vlen >> 8);
  hdr[30] = (unsigned char)vlen;
  memset(hdr + 31, 0xAA, vlen);
  struct pproto_header h;
  assert_int_equal(pproto_parse(hdr, PPROTO_V2_MAX - 1, &h), PPROTO_NEED_MORE);
  assert_int_equal(h.need, PPROTO_V2_MAX);
  assert_int_equal(pproto_parse(hdr, sizeof hdr, &h), PPROTO_DONE);
  assert_int_equal(h.len, PPROTO_V2_MAX);
  assert_string_equal(text(&h.src), "192.0.2.1 80");
  assert_string_equal(text(&h.dst), "192.0.2.2 8080");
}

/* Neither version: refused at the first byte. */
static void test_pproto_neither_version(void **state) {
  (void)state;
  struct pproto_header h;
  assert_int_equal(pproto_parse(NULL, 0, &h), PPROTO_NEED_MORE);
  assert_int_equal(h.need, 1);
  for (unsigned c = 0; c < 256; c++) {
    unsigned char b = (unsigned char)c;
    int rc = pproto_parse(&b, 1, &h);
    if (c == 'P' || c == 0x0D) assert_int_equal(rc, PPROTO_NEED_MORE);
    else assert_int_equal(rc, PPROTO_INVALID);
  }
  static const char tls[] = "\x16\x03\x01\x02\x00\x01";
  assert_int_equal(pproto_parse(tls, sizeof tls - 1, &h), PPROTO_INVALID);
}

/* Malformed headers delivered a byte at a time: need more until the
 * offending byte, invalid from then on, never done. */
static void test_pproto_malformed_byte_by_byte(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof v1_bad / sizeof v1_bad[0]; i++) {
    size_t n = strlen(v1_bad[i]);
    int seen_invalid = 0;
    for (size_t k = 1; k <= n; k++) {
      struct pproto_header h;
      int rc = pproto_parse(v1_bad[i], k, &h);
      assert_int_not_equal(rc, PPROTO_DONE);
      if (seen_invalid && rc != PPROTO_INVALID)
        fail_msg("\"%s\": invalid at a shorter prefix, not at %zu bytes", v1_bad[i], k);
      if (rc == PPROTO_INVALID) seen_invalid = 1;
      else assert_true(h.need > k);
    }
    assert_true(seen_invalid);
  }
  unsigned char b[64], hdr[128];
  size_t n = inet_block(b, "1.2.3.4", "5.6.7.8", 1, 2);
  memcpy(b + n, "\x04\x00\x05\x01", 4);
  size_t len = v2(hdr, 0x21, 0x11, b, n + 4);
  struct pproto_header h;
  for (size_t k = 1; k < len; k++) assert_int_equal(pproto_parse(hdr, k, &h), PPROTO_NEED_MORE);
  assert_int_equal(pproto_parse(hdr, len, &h), PPROTO_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pproto_v1_tcp4),
      cmocka_unit_test(test_pproto_v1_tcp6),
      cmocka_unit_test(test_pproto_v1_unknown),
      cmocka_unit_test(test_pproto_v1_length_limit),
      cmocka_unit_test(test_pproto_v1_malformed),
      cmocka_unit_test(test_pproto_v1_refuses_bytes_outside_printable_ascii),
      cmocka_unit_test(test_pproto_v1_refused_early),
      cmocka_unit_test(test_pproto_v2_inet_and_inet6),
      cmocka_unit_test(test_pproto_v2_tlvs_are_skipped),
      cmocka_unit_test(test_pproto_v2_local_and_other_families),
      cmocka_unit_test(test_pproto_v2_malformed),
      cmocka_unit_test(test_pproto_v2_refused_early),
      cmocka_unit_test(test_pproto_v2_longest_header),
      cmocka_unit_test(test_pproto_neither_version),
      cmocka_unit_test(test_pproto_malformed_byte_by_byte),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
