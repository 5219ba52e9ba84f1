/* tests/test_addr.c: addresses as text: parsing every accepted form,
 * formatting back to the same text, and every documented error. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <net/if.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "helpers.h"

static void assert_round_trip(const char *text, int family, uint16_t port) {
  evr_addr_t a;
  char buf[EVR_ADDR_STRLEN];
  assert_evr_ok(evr_addr_parse(&a, text));
  assert_int_equal(evr_addr_family(&a), family);
  assert_int_equal(evr_addr_port(&a), port);
  int n = evr_addr_format(&a, buf, sizeof buf);
  assert_int_equal(n, (int)strlen(text));
  assert_string_equal(buf, text);
  /* Formatting then parsing again gives the same bytes. */
  evr_addr_t b;
  assert_evr_ok(evr_addr_parse(&b, buf));
  assert_int_equal(a.len, b.len);
  assert_memory_equal(&a.u, &b.u, a.len);
}

static void test_addr_ipv4_round_trips(void **state) {
  (void)state;
  assert_round_trip("127.0.0.1:80", AF_INET, 80);
  assert_round_trip("0.0.0.0:0", AF_INET, 0);
  assert_round_trip("255.255.255.255:65535", AF_INET, 65535);
  evr_addr_t a;
  assert_evr_ok(evr_addr_parse(&a, "10.1.2.3:8080"));
  assert_int_equal(a.len, sizeof(struct sockaddr_in));
  assert_int_equal(ntohl(a.u.in.sin_addr.s_addr), 0x0a010203);
  assert_int_equal(ntohs(a.u.in.sin_port), 8080);
}

static void test_addr_ipv6_round_trips(void **state) {
  (void)state;
  assert_round_trip("[::1]:80", AF_INET6, 80);
  assert_round_trip("[::]:0", AF_INET6, 0);
  assert_round_trip("[2001:db8::1:2]:443", AF_INET6, 443);
  assert_round_trip("[::ffff:1.2.3.4]:1", AF_INET6, 1);
  evr_addr_t a;
  assert_evr_ok(evr_addr_parse(&a, "[2001:DB8:0:0:0:0:0:1]:9"));
  char buf[EVR_ADDR_STRLEN];
  assert_int_equal(evr_addr_format(&a, buf, sizeof buf), 15);
  assert_string_equal(buf, "[2001:db8::1]:9"); /* canonical form */
  assert_int_equal(a.len, sizeof(struct sockaddr_in6));
}

static void test_addr_ipv6_zone_by_number_and_name(void **state) {
  (void)state;
  evr_addr_t a;
  char buf[EVR_ADDR_STRLEN];
  assert_evr_ok(evr_addr_parse(&a, "[fe80::1%7]:80"));
  assert_int_equal(a.u.in6.sin6_scope_id, 7);
  assert_true(evr_addr_format(&a, buf, sizeof buf) > 0);
  /* Index 7 may or may not name an interface: either form parses back. */
  evr_addr_t b;
  if (if_indextoname(7, (char[IF_NAMESIZE]){0}) == NULL) {
    assert_string_equal(buf, "[fe80::1%7]:80");
  }
  assert_evr_ok(evr_addr_parse(&b, buf));
  assert_int_equal(b.u.in6.sin6_scope_id, 7);

  unsigned lo = if_nametoindex("lo");
  if (lo) {
    assert_evr_ok(evr_addr_parse(&a, "[fe80::1%lo]:80"));
    assert_int_equal(a.u.in6.sin6_scope_id, lo);
    assert_true(evr_addr_format(&a, buf, sizeof buf) > 0);
    assert_string_equal(buf, "[fe80::1%lo]:80");
  }
  assert_int_equal(evr_addr_parse(&a, "[fe80::1%no-such-if0]:80"), EVR_EINVAL);
  assert_int_equal(evr_addr_parse(&a, "[fe80::1%]:80"), EVR_EINVAL);
}

static void test_addr_unix_path_round_trips(void **state) {
  (void)state;
  assert_round_trip("unix:/run/app.sock", AF_UNIX, 0);
  assert_round_trip("unix:relative/sock", AF_UNIX, 0);
  evr_addr_t a;
  assert_evr_ok(evr_addr_parse(&a, "unix:/tmp/x"));
  assert_string_equal(a.u.un.sun_path, "/tmp/x");
  assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) + 7);

  /* The longest path that fits, and one byte more. */
  char path[sizeof a.u.un.sun_path + 8];
  char text[sizeof path + 8];
  memset(path, 'p', sizeof a.u.un.sun_path - 1);
  path[0] = '/';
  path[sizeof a.u.un.sun_path - 1] = '\0';
  snprintf(text, sizeof text, "unix:%s", path);
  assert_round_trip(text, AF_UNIX, 0);
  path[sizeof a.u.un.sun_path - 1] = 'p';
  path[sizeof a.u.un.sun_path] = '\0';
  snprintf(text, sizeof text, "unix:%s", path);
  assert_int_equal(evr_addr_parse(&a, text), EVR_ENAMETOOLONG);
  assert_int_equal(evr_addr_from_path(&a, path), EVR_ENAMETOOLONG);
}

static void test_addr_unix_abstract(void **state) {
  (void)state;
  evr_addr_t a;
#ifdef __linux__
  assert_round_trip("unix:@evr-abstract", AF_UNIX, 0);
  assert_evr_ok(evr_addr_parse(&a, "unix:@name"));
  assert_int_equal(a.u.un.sun_path[0], '\0');
  assert_memory_equal(a.u.un.sun_path + 1, "name", 4);
  assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) + 5);
  assert_int_equal(evr_addr_parse(&a, "unix:@"), EVR_EINVAL);
  char name[sizeof a.u.un.sun_path + 2];
  memset(name, 'n', sizeof name - 1);
  name[0] = '@';
  name[sizeof a.u.un.sun_path] = '\0'; /* '@' + 107 bytes: fits */
  assert_evr_ok(evr_addr_from_path(&a, name));
  name[sizeof a.u.un.sun_path] = 'n';
  name[sizeof name - 1] = '\0';
  assert_int_equal(evr_addr_from_path(&a, name), EVR_ENAMETOOLONG);
#else
  assert_int_equal(evr_addr_parse(&a, "unix:@name"), EVR_ENOTSUP);
#endif
}

static void test_addr_parse_errors(void **state) {
  (void)state;
  evr_addr_t a;
  static const char *const bad[] = {
      "",               /* empty */
      "127.0.0.1",      /* no port */
      "127.0.0.1:",     /* empty port */
      "127.0.0.1:65536", /* port out of range */
      "127.0.0.1:99999",
      "127.0.0.1:-1",
      "127.0.0.1:+80",
      "127.0.0.1: 80",
      "127.0.0.1:80 ",
      "127.0.0.1:8o",
      "127.0.0.1:000080", /* too many digits */
      ":80",            /* no host */
      "1.2.3.256:80",   /* not a literal, not a name */
      "1.2.3:80",
      "::1:80",         /* IPv6 needs brackets */
      "[::1]",          /* no port */
      "[::1]:",
      "[::1:80",        /* unbalanced */
      "::1]:80",
      "[::1]80",
      "[]:80",
      "[1.2.3.4]:80",   /* brackets hold IPv6 only */
      "[::1]:80x",
      "[[::1]]:80",
      "[::g]:80",
      "host name:80",   /* garbage, not a name */
      "a/b:80",
      "unix:",          /* empty path */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = evr_addr_parse(&a, bad[i]);
    if (rc != EVR_EINVAL) fail_msg("\"%s\": %s", bad[i], evr_err_name(rc));
  }
  assert_int_equal(evr_addr_parse(NULL, "1.2.3.4:5"), EVR_EINVAL);
  assert_int_equal(evr_addr_parse(&a, NULL), EVR_EINVAL);
}

static void test_addr_names_are_refused_with_eai_noname(void **state) {
  (void)state;
  evr_addr_t a;
  assert_int_equal(evr_addr_parse(&a, "localhost:80"), EVR_EAI_NONAME);
  assert_int_equal(evr_addr_parse(&a, "host.example:443"), EVR_EAI_NONAME);
  assert_int_equal(evr_addr_parse(&a, "a-b-c.d1:1"), EVR_EAI_NONAME);
  /* A bad port wins over the name. */
  assert_int_equal(evr_addr_parse(&a, "localhost:x"), EVR_EINVAL);
  assert_int_equal(evr_addr_from_ip(&a, "localhost", 1), EVR_EAI_NONAME);
}

/* "<n labels of `len` x's joined by dots><tail>:1" into buf. */
static const char *long_name(char *buf, int labels, int len, const char *tail) {
  size_t n = 0;
  for (int i = 0; i < labels; i++) {
    if (i) buf[n++] = '.';
    memset(buf + n, 'x', (size_t)len);
    n += (size_t)len;
  }
  strcpy(buf + n, tail);
  strcat(buf, ":1");
  return buf;
}

static int expect_rc(const char *fn, const char *arg, int rc, int want) {
  if (rc == want) return 0;
  print_error("%s \"%s\": %s, want %s\n", fn, arg, evr_err_name(rc), evr_err_name(want));
  return 1;
}

/* A host part that is not a literal is a name only if it is a host name
 * as RFC 1123 spells one: dot-separated labels of 1 to 63 letters, digits
 * and hyphens, no label starting or ending with a hyphen, at most 253
 * characters, one optional trailing dot. Anything else is EVR_EINVAL, from
 * every function that takes a host, and never reaches a resolver. */
static void test_addr_host_names_follow_rfc1123(void **state) {
  (void)state;
  static char b[10][320];
  const char *const good[] = {
      "localhost:80",
      "a:1",
      "A-Z.Example.ORG:443",
      "example.org.:80", /* fully qualified, trailing dot */
      "1a.2-b.example:1", /* RFC 1123 allows a leading digit */
      "xn--bcher-kva.example:1", /* an internationalised name, ASCII form */
      "a--b.example:1",
      long_name(b[0], 1, 63, ".example"),   /* longest label */
      long_name(b[1], 4, 62, ""),           /* 4 * 62 + 3 = 251 */
      long_name(b[2], 125, 1, ".xyz"),      /* 249 + 4 = 253 characters */
      long_name(b[3], 125, 1, ".xyz."),     /* 253, and a trailing dot */
  };
  const char *const bad[] = {
      "a..b:80",  "-bad-:80",     "_:80",           "a_b.example:80",
      "-a:1",     "a-:1",         "a.-b:1",         "a.b-:1",
      ".a:1",     ".:1",          "..:1",           "a..:1",
      "a.b..:1",  "ex\xc3\xa4mple:1", "a*b:1",    "a%b:1",
      "a+b:1",    "1.2.3.256:80", "1.2.3:80",       "123:80",
      long_name(b[4], 1, 64, ".example"),   /* label of 64 */
      long_name(b[5], 1, 64, ""),
      long_name(b[6], 125, 1, ".wxyz"),     /* 254 characters */
      long_name(b[7], 125, 1, ".wxyz."),    /* 254, and a trailing dot */
      long_name(b[8], 127, 1, ".."),        /* 253, then an empty label */
  };
  evr_addr_t a;
  char host[320], ip[320];
  uint16_t port;
  int failed = 0;
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    const char *t = good[i];
    size_t hl = (size_t)(strrchr(t, ':') - t);
    int rc = evr_addr_parse(&a, t);
    failed += expect_rc("parse", t, rc, EVR_EAI_NONAME);
    rc = evr_addr_split(t, host, sizeof host, &port);
    if (expect_rc("split", t, rc, 0)) failed++;
    else if (strlen(host) != hl || memcmp(host, t, hl) != 0) {
      print_error("split \"%s\": host \"%s\"\n", t, host);
      failed++;
    }
    rc = evr_addr_from_ip(&a, host, 1);
    failed += expect_rc("from_ip", host, rc, EVR_EAI_NONAME);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *t = bad[i];
    size_t hl = (size_t)(strrchr(t, ':') - t);
    int rc = evr_addr_parse(&a, t);
    failed += expect_rc("parse", t, rc, EVR_EINVAL);
    rc = evr_addr_split(t, host, sizeof host, &port);
    failed += expect_rc("split", t, rc, EVR_EINVAL);
    memcpy(ip, t, hl);
    ip[hl] = '\0';
    rc = evr_addr_from_ip(&a, ip, 1);
    failed += expect_rc("from_ip", ip, rc, EVR_EINVAL);
  }
  assert_int_equal(failed, 0);
}

static void test_addr_split_host_and_port(void **state) {
  (void)state;
  char host[64];
  uint16_t port = 0;
  assert_evr_ok(evr_addr_split("example.org:443", host, sizeof host, &port));
  assert_string_equal(host, "example.org");
  assert_int_equal(port, 443);
  assert_evr_ok(evr_addr_split("[::1]:80", host, sizeof host, &port));
  assert_string_equal(host, "::1");
  assert_int_equal(port, 80);
  assert_evr_ok(evr_addr_split("[fe80::1%7]:1", host, sizeof host, &port));
  assert_string_equal(host, "fe80::1%7");
  assert_evr_ok(evr_addr_split("1.2.3.4:0", host, sizeof host, &port));
  assert_string_equal(host, "1.2.3.4");
  assert_int_equal(port, 0);

  /* Exactly fitting, then one byte short. */
  assert_evr_ok(evr_addr_split("abcd:1", host, 5, &port));
  assert_string_equal(host, "abcd");
  assert_int_equal(evr_addr_split("abcd:1", host, 4, &port), EVR_ENAMETOOLONG);
  assert_int_equal(evr_addr_split("abcd:1", host, 0, &port), EVR_ENAMETOOLONG);

  assert_int_equal(evr_addr_split("unix:/x", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("unix:@x", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("host", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("host:70000", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("[::1:80", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("[nope]:80", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("::1:80", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("a b:1", host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split(NULL, host, sizeof host, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("a:1", NULL, 4, &port), EVR_EINVAL);
  assert_int_equal(evr_addr_split("a:1", host, sizeof host, NULL), EVR_EINVAL);
}

static void test_addr_from_ip(void **state) {
  (void)state;
  evr_addr_t a;
  char buf[EVR_ADDR_STRLEN];
  assert_evr_ok(evr_addr_from_ip(&a, "127.0.0.1", 7000));
  assert_int_equal(evr_addr_format(&a, buf, sizeof buf), 14);
  assert_string_equal(buf, "127.0.0.1:7000");
  assert_evr_ok(evr_addr_from_ip(&a, "::1", 7000));
  assert_true(evr_addr_format(&a, buf, sizeof buf) > 0);
  assert_string_equal(buf, "[::1]:7000");
  assert_evr_ok(evr_addr_from_ip(&a, "[::1]", 1));
  assert_int_equal(evr_addr_family(&a), AF_INET6);
  assert_evr_ok(evr_addr_from_ip(&a, "fe80::1%3", 1));
  assert_int_equal(a.u.in6.sin6_scope_id, 3);
  assert_int_equal(evr_addr_from_ip(&a, "", 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_ip(&a, NULL, 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_ip(NULL, "::1", 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_ip(&a, "1.2.3.4:5", 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_ip(&a, "999.1.1.1", 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_ip(&a, "[::1", 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_ip(&a, "example.org", 1), EVR_EAI_NONAME);
}

static void test_addr_from_path_errors(void **state) {
  (void)state;
  evr_addr_t a;
  assert_int_equal(evr_addr_from_path(&a, ""), EVR_EINVAL);
  assert_int_equal(evr_addr_from_path(&a, NULL), EVR_EINVAL);
  assert_int_equal(evr_addr_from_path(NULL, "/x"), EVR_EINVAL);
  assert_evr_ok(evr_addr_from_path(&a, "/x"));
  assert_int_equal(evr_addr_family(&a), AF_UNIX);
  assert_int_equal(evr_addr_port(&a), 0);
}

static void test_addr_from_sockaddr(void **state) {
  (void)state;
  evr_addr_t a, b;
  char buf[EVR_ADDR_STRLEN];
  assert_evr_ok(evr_addr_parse(&a, "192.168.1.2:3"));
  assert_evr_ok(evr_addr_from_sockaddr(&b, &a.u.sa, a.len));
  assert_int_equal(b.len, a.len);
  assert_memory_equal(&a.u, &b.u, a.len);
  assert_evr_ok(evr_addr_parse(&a, "[::2]:4"));
  assert_evr_ok(evr_addr_from_sockaddr(&b, &a.u.sa, sizeof a.u.ss));
  assert_int_equal(b.len, sizeof(struct sockaddr_in6)); /* trimmed */
  assert_evr_ok(evr_addr_parse(&a, "unix:/s"));
  assert_evr_ok(evr_addr_from_sockaddr(&b, &a.u.sa, a.len));
  assert_int_equal(evr_addr_format(&b, buf, sizeof buf), 7);
  assert_string_equal(buf, "unix:/s");

  /* An unnamed Unix socket (what getsockname() gives for one). */
  struct sockaddr_un un;
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  assert_evr_ok(evr_addr_from_sockaddr(&b, (struct sockaddr *)&un,
                                       offsetof(struct sockaddr_un, sun_path)));
  assert_int_equal(evr_addr_format(&b, buf, sizeof buf), 5);
  assert_string_equal(buf, "unix:");

  assert_evr_ok(evr_addr_parse(&a, "1.2.3.4:5"));
  assert_int_equal(evr_addr_from_sockaddr(&b, &a.u.sa, 4), EVR_EINVAL);
  assert_int_equal(evr_addr_from_sockaddr(&b, &a.u.sa, 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_sockaddr(&b, &a.u.sa, sizeof a.u + 1), EVR_EINVAL);
  assert_int_equal(evr_addr_from_sockaddr(&b, NULL, 16), EVR_EINVAL);
  assert_int_equal(evr_addr_from_sockaddr(NULL, &a.u.sa, a.len), EVR_EINVAL);
  a.u.sa.sa_family = AF_UNSPEC;
  assert_int_equal(evr_addr_from_sockaddr(&b, &a.u.sa, a.len), EVR_EAFNOSUPPORT);
}

static void test_addr_format_errors_and_truncation(void **state) {
  (void)state;
  evr_addr_t a;
  char buf[EVR_ADDR_STRLEN];
  assert_evr_ok(evr_addr_parse(&a, "127.0.0.1:80"));
  assert_int_equal(evr_addr_format(&a, buf, 12), EVR_ENOSPC);
  assert_string_equal(buf, "127.0.0.1:8"); /* truncated, terminated */
  assert_int_equal(evr_addr_format(&a, buf, 13), 12);
  buf[0] = 'x';
  assert_int_equal(evr_addr_format(&a, buf, 1), EVR_ENOSPC);
  assert_int_equal(buf[0], '\0');
  assert_int_equal(evr_addr_format(&a, buf, 0), EVR_ENOSPC);
  assert_int_equal(evr_addr_format(NULL, buf, sizeof buf), EVR_EINVAL);
  assert_int_equal(evr_addr_format(&a, NULL, sizeof buf), EVR_EINVAL);
  assert_evr_ok(evr_addr_parse(&a, "unix:/some/path"));
  assert_int_equal(evr_addr_format(&a, buf, 8), EVR_ENOSPC);
  assert_string_equal(buf, "unix:/s");
  memset(&a, 0, sizeof a);
  a.u.sa.sa_family = AF_UNSPEC;
  assert_int_equal(evr_addr_format(&a, buf, sizeof buf), EVR_EINVAL);
  assert_int_equal(evr_addr_family(NULL), 0);
  assert_int_equal(evr_addr_port(NULL), 0);
}

static void test_addr_longest_forms_fit_in_strlen(void **state) {
  (void)state;
  evr_addr_t a;
  char buf[EVR_ADDR_STRLEN];
  assert_evr_ok(evr_addr_parse(
      &a, "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535"));
  a.u.in6.sin6_scope_id = 0xffffffffu;
  assert_true(evr_addr_format(&a, buf, sizeof buf) > 0);
  char path[sizeof a.u.un.sun_path];
  memset(path, 'q', sizeof path - 1);
  path[sizeof path - 1] = '\0';
  assert_evr_ok(evr_addr_from_path(&a, path));
  assert_int_equal(evr_addr_format(&a, buf, sizeof buf),
                   (int)(5 + sizeof path - 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addr_ipv4_round_trips),
      cmocka_unit_test(test_addr_ipv6_round_trips),
      cmocka_unit_test(test_addr_ipv6_zone_by_number_and_name),
      cmocka_unit_test(test_addr_unix_path_round_trips),
      cmocka_unit_test(test_addr_unix_abstract),
      cmocka_unit_test(test_addr_parse_errors),
      cmocka_unit_test(test_addr_names_are_refused_with_eai_noname),
      cmocka_unit_test(test_addr_host_names_follow_rfc1123),
      cmocka_unit_test(test_addr_split_host_and_port),
      cmocka_unit_test(test_addr_from_ip),
      cmocka_unit_test(test_addr_from_path_errors),
      cmocka_unit_test(test_addr_from_sockaddr),
      cmocka_unit_test(test_addr_format_errors_and_truncation),
      cmocka_unit_test(test_addr_longest_forms_fit_in_strlen),
  };
  return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
