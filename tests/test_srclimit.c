/* tests/test_srclimit.c: the per-source connection limits of the sample
 * daemons (samples/srclimit.c) on their own, with a fake clock: open
 * connections per address, IPv6 sources grouped by /64 (and IPv4-mapped
 * addresses as IPv4), Unix-socket clients not limited, the token bucket's
 * exact refill, eviction of the least recently used idle source, refusal
 * when every entry is busy, releases that would underflow, the counters,
 * the once-a-second log gate, and one table shared by several threads. */
/* evr-test: threads */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include "helpers.h"
#include "srclimit.h"

#define MS 1000000ull
#define S 1000000000ull

static struct sockaddr_storage addr(const char *ip) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(40000);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
  } else {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
  }
  return ss;
}

/* Admit a connection from ip at now; the key to release goes to *key. */
static int admit(srclimit_t *t, const char *ip, uint64_t now, srclimit_key_t *key) {
  struct sockaddr_storage ss = addr(ip);
  return srclimit_admit(t, (struct sockaddr *)&ss, now, key);
}

static void release(srclimit_t *t, const char *ip) {
  struct sockaddr_storage ss = addr(ip);
  srclimit_key_t k = srclimit_key((struct sockaddr *)&ss);
  srclimit_release(t, &k);
}

static srclimit_t *make(uint32_t capacity, uint32_t max_conns, uint32_t rate) {
  srclimit_t *t = srclimit_new(capacity, max_conns, rate, 0);
  assert_non_null(t);
  return t;
}

static void test_srclimit_new_checks_capacity(void **state) {
  (void)state;
  uint32_t bad[] = {0, 1, 3, 100, 65535, SRCLIMIT_MAX_CAPACITY * 2};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    errno = 0;
    assert_null(srclimit_new(bad[i], 1, 1, 0));
    assert_int_equal(errno, EINVAL);
  }
  errno = 0;
  assert_null(srclimit_new(16, 1, 1, 0x80));
  assert_int_equal(errno, EINVAL);
  srclimit_t *t = srclimit_new(SRCLIMIT_MIN_CAPACITY, 1, 1, SRCLIMIT_SHARED);
  assert_non_null(t);
  srclimit_free(t);
  srclimit_free(NULL);
}

static void test_srclimit_open_connections_per_address(void **state) {
  (void)state;
  srclimit_t *t = make(64, 3, 0);
  srclimit_key_t k;
  for (int i = 0; i < 3; i++) assert_int_equal(admit(t, "192.0.2.1", 0, &k), SRCLIMIT_OK);
  assert_int_equal(k.family, 4);
  assert_int_equal(k.addr, 0xC0000201u);
  assert_int_equal(admit(t, "192.0.2.1", 0, &k), SRCLIMIT_CONNS);
  assert_int_equal(k.family, 0); /* nothing to release */
  /* Another address has its own count. */
  for (int i = 0; i < 3; i++) assert_int_equal(admit(t, "192.0.2.2", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "192.0.2.2", 0, NULL), SRCLIMIT_CONNS);
  /* A closed connection makes room for exactly one. */
  release(t, "192.0.2.1");
  assert_int_equal(admit(t, "192.0.2.1", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "192.0.2.1", 0, NULL), SRCLIMIT_CONNS);
  /* The IPv4-mapped form of an address is that address. */
  assert_int_equal(admit(t, "::ffff:192.0.2.1", 0, NULL), SRCLIMIT_CONNS);
  release(t, "::ffff:192.0.2.1");
  assert_int_equal(admit(t, "192.0.2.1", 0, NULL), SRCLIMIT_OK);
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.admitted, 3 + 3 + 1 + 1);
  assert_int_equal(st.refused[SRCLIMIT_CONNS], 4);
  assert_int_equal(st.refused[SRCLIMIT_RATE], 0);
  assert_int_equal(st.refused[SRCLIMIT_FULL], 0);
  assert_int_equal(st.entries, 2);
  assert_int_equal(st.busy, 2);
  assert_int_equal(st.capacity, 64);
  srclimit_free(t);
}

static void test_srclimit_ipv6_sources_are_slash_64(void **state) {
  (void)state;
  srclimit_t *t = make(64, 2, 0);
  /* Two addresses of one /64 share a count. */
  assert_int_equal(admit(t, "2001:db8:1:2::1", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "2001:db8:1:2:ffff:ffff:ffff:fffe", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "2001:db8:1:2::99", 0, NULL), SRCLIMIT_CONNS);
  /* The next /64, and one differing in the first bits, do not. */
  assert_int_equal(admit(t, "2001:db8:1:3::1", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "3001:db8:1:2::1", 0, NULL), SRCLIMIT_OK);
  /* Released by any address of the /64. */
  release(t, "2001:db8:1:2::abcd");
  assert_int_equal(admit(t, "2001:db8:1:2::42", 0, NULL), SRCLIMIT_OK);
  srclimit_key_t k;
  struct sockaddr_storage ss = addr("2001:db8:1:2::42");
  k = srclimit_key((struct sockaddr *)&ss);
  assert_int_equal(k.family, 6);
  assert_true(k.addr == 0x20010db800010002ull);
  char text[64];
  assert_string_equal(srclimit_key_format(&k, text, sizeof text), "2001:db8:1:2::/64");
  ss = addr("198.51.100.7");
  k = srclimit_key((struct sockaddr *)&ss);
  assert_string_equal(srclimit_key_format(&k, text, sizeof text), "198.51.100.7");
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.entries, 3);
  srclimit_free(t);
}

static void test_srclimit_unix_clients_are_not_limited(void **state) {
  (void)state;
  srclimit_t *t = make(2, 1, 1);
  struct sockaddr_un un;
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  srclimit_key_t k;
  for (int i = 0; i < 10; i++)
    assert_int_equal(srclimit_admit(t, (struct sockaddr *)&un, 0, &k), SRCLIMIT_OK);
  assert_int_equal(k.family, 0);
  srclimit_release(t, &k); /* does nothing */
  char text[64];
  assert_string_equal(srclimit_key_format(&k, text, sizeof text), "unix");
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.exempt, 10);
  assert_int_equal(st.admitted, 0);
  assert_int_equal(st.entries, 0);
  assert_int_equal(st.stray_releases, 0);
  srclimit_free(t);
}

/* rate 5: a burst of 5, then one token every 200 ms, never more than 5. */
static void test_srclimit_token_bucket_refills_exactly(void **state) {
  (void)state;
  srclimit_t *t = make(64, 0, 5);
  const char *a = "203.0.113.9";
  uint64_t t0 = 1000 * S; /* any start */
  int ok = 0;
  for (int i = 0; i < 20; i++) ok += admit(t, a, t0, NULL) == SRCLIMIT_OK;
  assert_int_equal(ok, 5);
  /* 199.999999 ms earn 0.999999995 token: nothing. */
  assert_int_equal(admit(t, a, t0 + 200 * MS - 1, NULL), SRCLIMIT_RATE);
  /* At 200 ms, the one token is there. */
  assert_int_equal(admit(t, a, t0 + 200 * MS, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, a, t0 + 200 * MS, NULL), SRCLIMIT_RATE);
  /* A clock read earlier (another thread's) adds nothing and takes nothing. */
  assert_int_equal(admit(t, a, t0, NULL), SRCLIMIT_RATE);
  /* 600 ms more: 3 tokens. */
  ok = 0;
  for (int i = 0; i < 10; i++) ok += admit(t, a, t0 + 800 * MS, NULL) == SRCLIMIT_OK;
  assert_int_equal(ok, 3);
  /* A long pause fills the bucket, and only to the burst. */
  ok = 0;
  for (int i = 0; i < 10; i++) ok += admit(t, a, t0 + 3600 * S, NULL) == SRCLIMIT_OK;
  assert_int_equal(ok, 5);
  /* Refusals for rate do not need a connection to be open or closed;
   * releases do not give tokens back. */
  for (int i = 0; i < 5 + 1 + 3 + 5; i++) release(t, a);
  assert_int_equal(admit(t, a, t0 + 3600 * S, NULL), SRCLIMIT_RATE);
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.admitted, 14);
  assert_int_equal(st.refused[SRCLIMIT_RATE], 15 + 1 + 1 + 1 + 7 + 5 + 1);
  assert_int_equal(st.stray_releases, 0);
  srclimit_free(t);

  /* A rate whose interval is not a whole number of ns: 1/3 s. */
  t = make(64, 0, 3);
  ok = 0;
  for (int i = 0; i < 5; i++) ok += admit(t, a, 0, NULL) == SRCLIMIT_OK;
  assert_int_equal(ok, 3);
  assert_int_equal(admit(t, a, 333333333, NULL), SRCLIMIT_RATE);  /* 0.999999999 */
  assert_int_equal(admit(t, a, 333333334, NULL), SRCLIMIT_OK);    /* 1.000000002 */
  assert_int_equal(admit(t, a, 666666667, NULL), SRCLIMIT_OK);    /* 0.000000002 + 0.999999999 */
  assert_int_equal(admit(t, a, 666666667, NULL), SRCLIMIT_RATE);
  srclimit_free(t);
}

/* The bucket and the open connections together: a refusal for open
 * connections does not spend a token. */
static void test_srclimit_both_limits(void **state) {
  (void)state;
  srclimit_t *t = make(64, 2, 3);
  const char *a = "192.0.2.77";
  assert_int_equal(admit(t, a, 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, a, 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, a, 0, NULL), SRCLIMIT_CONNS);
  assert_int_equal(admit(t, a, 0, NULL), SRCLIMIT_CONNS);
  release(t, a);
  assert_int_equal(admit(t, a, 0, NULL), SRCLIMIT_OK); /* the third token */
  release(t, a);
  assert_int_equal(admit(t, a, 0, NULL), SRCLIMIT_RATE);
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.refused[SRCLIMIT_CONNS], 2);
  assert_int_equal(st.refused[SRCLIMIT_RATE], 1);
  srclimit_free(t);
}

/* A full table reuses its least recently used idle entry: that source is
 * forgotten (a full bucket again), the others are not. */
static void test_srclimit_evicts_least_recently_used_idle_source(void **state) {
  (void)state;
  srclimit_t *t = make(4, 0, 1);
  const char *src[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(admit(t, src[i], 0, NULL), SRCLIMIT_OK); /* its one token */
    release(t, src[i]);
  }
  /* 10.0.0.1 is refused, which uses it: 10.0.0.2 is now the oldest. */
  assert_int_equal(admit(t, src[0], 0, NULL), SRCLIMIT_RATE);
  assert_int_equal(admit(t, "10.0.0.5", 0, NULL), SRCLIMIT_OK); /* evicts .2 */
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.evictions, 1);
  assert_int_equal(st.entries, 4);
  assert_int_equal(st.busy, 1);
  /* .1 is remembered (empty bucket); .2 was forgotten (full again), and
   * taking an entry for it evicts .3, the oldest idle one left. */
  assert_int_equal(admit(t, src[0], 0, NULL), SRCLIMIT_RATE);
  assert_int_equal(admit(t, src[1], 0, NULL), SRCLIMIT_OK);
  srclimit_stats(t, &st);
  assert_int_equal(st.evictions, 2);
  assert_int_equal(admit(t, src[3], 0, NULL), SRCLIMIT_RATE);
  /* .4 refused: the idle ones, oldest first, are .1 and .4. */
  assert_int_equal(admit(t, src[2], 0, NULL), SRCLIMIT_OK); /* evicts .1 */
  assert_int_equal(admit(t, src[0], 0, NULL), SRCLIMIT_OK); /* evicts .4 */
  srclimit_stats(t, &st);
  assert_int_equal(st.evictions, 4);
  assert_int_equal(st.entries, 4);
  assert_int_equal(st.busy, 4);
  srclimit_free(t);
}

/* Every entry busy: a new source is refused, a known one is not; when a
 * connection closes, its entry can be reused. */
static void test_srclimit_refuses_new_sources_when_full_of_busy_ones(void **state) {
  (void)state;
  srclimit_t *t = make(2, 10, 0);
  assert_int_equal(admit(t, "10.1.0.1", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "2001:db8::1", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "10.1.0.3", 0, NULL), SRCLIMIT_FULL);
  assert_int_equal(admit(t, "2001:db8:0:1::1", 0, NULL), SRCLIMIT_FULL);
  assert_int_equal(admit(t, "10.1.0.1", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "2001:db8::2", 0, NULL), SRCLIMIT_OK);
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.refused[SRCLIMIT_FULL], 2);
  assert_int_equal(st.evictions, 0);
  release(t, "2001:db8::1");
  assert_int_equal(admit(t, "10.1.0.3", 0, NULL), SRCLIMIT_FULL); /* one still open */
  release(t, "2001:db8::2");
  assert_int_equal(admit(t, "10.1.0.3", 0, NULL), SRCLIMIT_OK);
  srclimit_stats(t, &st);
  assert_int_equal(st.evictions, 1);
  assert_int_equal(st.refused[SRCLIMIT_FULL], 3);
  assert_int_equal(st.busy, 2);
  srclimit_free(t);
}

/* More releases than admissions change nothing but a counter: they give no
 * source room for more than max_conns. */
static void test_srclimit_release_cannot_underflow(void **state) {
  (void)state;
  srclimit_t *t = make(8, 1, 0);
  release(t, "10.2.0.1"); /* never seen */
  assert_int_equal(admit(t, "10.2.0.1", 0, NULL), SRCLIMIT_OK);
  release(t, "10.2.0.1");
  release(t, "10.2.0.1"); /* once too often */
  release(t, "10.2.0.1");
  assert_int_equal(admit(t, "10.2.0.1", 0, NULL), SRCLIMIT_OK);
  assert_int_equal(admit(t, "10.2.0.1", 0, NULL), SRCLIMIT_CONNS);
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.stray_releases, 3);
  assert_int_equal(st.busy, 1);
  assert_int_equal(st.entries, 1);
  srclimit_free(t);
}

/* Many sources in one table: each is found again. */
static void test_srclimit_many_sources(void **state) {
  (void)state;
  enum { N = 4096 };
  srclimit_t *t = make(N, 1, 0);
  char ip[32];
  for (int i = 0; i < N; i++) {
    snprintf(ip, sizeof ip, "10.%d.%d.1", i >> 8, i & 255);
    assert_int_equal(admit(t, ip, 0, NULL), SRCLIMIT_OK);
  }
  for (int i = 0; i < N; i++) {
    snprintf(ip, sizeof ip, "10.%d.%d.1", i >> 8, i & 255);
    assert_int_equal(admit(t, ip, 0, NULL), SRCLIMIT_CONNS);
  }
  assert_int_equal(admit(t, "11.0.0.1", 0, NULL), SRCLIMIT_FULL);
  for (int i = 0; i < N; i += 2) {
    snprintf(ip, sizeof ip, "10.%d.%d.1", i >> 8, i & 255);
    release(t, ip);
  }
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  assert_int_equal(st.busy, N / 2);
  assert_int_equal(st.entries, N);
  assert_int_equal(st.stray_releases, 0);
  srclimit_free(t);
}

static void test_srclimit_log_once_per_second_per_reason(void **state) {
  (void)state;
  srclimit_t *t = make(8, 1, 1);
  uint64_t n = 99;
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_OK, 0, &n), 0);
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_NREASONS, 0, &n), 0);
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_RATE, 5 * S, &n), 1);
  assert_int_equal(n, 0);
  for (int i = 0; i < 7; i++)
    assert_int_equal(srclimit_log_due(t, SRCLIMIT_RATE, 5 * S + 999 * MS, &n), 0);
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_RATE, 5 * S - 1, &n), 0); /* clock back */
  /* Another reason has its own second. */
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_CONNS, 5 * S + 1, &n), 1);
  assert_int_equal(n, 0);
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_RATE, 6 * S, &n), 1);
  assert_int_equal(n, 8);
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_RATE, 6 * S + 1, &n), 0);
  assert_int_equal(srclimit_log_due(t, SRCLIMIT_RATE, 7 * S, &n), 1);
  assert_int_equal(n, 1);
  assert_string_equal(srclimit_reason_name(SRCLIMIT_CONNS), "open connections");
  assert_string_equal(srclimit_reason_name(SRCLIMIT_RATE), "rate");
  assert_string_equal(srclimit_reason_name(SRCLIMIT_FULL), "table full");
  assert_string_equal(srclimit_reason_name(42), "?");
  srclimit_free(t);
}

/* One table, four threads admitting and releasing at once (what the loops
 * of a daemon do): the counts come out exact. */
struct worker {
  srclimit_t *t;
  int index;
  int admitted;
};

static void *hammer(void *p) {
  struct worker *w = p;
  char ip[32];
  for (int i = 0; i < 20000; i++) {
    /* A few sources every thread uses, so that threads meet on entries. */
    snprintf(ip, sizeof ip, "10.3.%d.%d", w->index, i % 64);
    struct sockaddr_storage ss = addr(i % 3 ? ip : "10.9.9.9");
    srclimit_key_t k;
    if (srclimit_admit(w->t, (struct sockaddr *)&ss, (uint64_t)i, &k) == SRCLIMIT_OK) {
      w->admitted++;
      srclimit_release(w->t, &k);
    }
  }
  return NULL;
}

static void test_srclimit_shared_between_threads(void **state) {
  (void)state;
  srclimit_t *t = srclimit_new(128, 4, 0, SRCLIMIT_SHARED);
  assert_non_null(t);
  struct worker w[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (struct worker){t, i, 0};
    assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
  }
  int admitted = 0;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(th[i], NULL), 0);
    admitted += w[i].admitted;
  }
  srclimit_stats_t st;
  srclimit_stats(t, &st);
  /* Each thread holds at most one connection at a time: never 4 at once
   * from one source, so nothing is refused. */
  assert_int_equal(admitted, 4 * 20000);
  assert_int_equal(st.admitted, 4 * 20000);
  assert_int_equal(st.refused[SRCLIMIT_CONNS], 0);
  assert_int_equal(st.busy, 0);
  assert_int_equal(st.stray_releases, 0);
  assert_int_equal(st.entries, 128); /* 257 sources: the table is full */
  assert_true(st.evictions > 0);
  srclimit_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_srclimit_new_checks_capacity),
      cmocka_unit_test(test_srclimit_open_connections_per_address),
      cmocka_unit_test(test_srclimit_ipv6_sources_are_slash_64),
      cmocka_unit_test(test_srclimit_unix_clients_are_not_limited),
      cmocka_unit_test(test_srclimit_token_bucket_refills_exactly),
      cmocka_unit_test(test_srclimit_both_limits),
      cmocka_unit_test(test_srclimit_evicts_least_recently_used_idle_source),
      cmocka_unit_test(test_srclimit_refuses_new_sources_when_full_of_busy_ones),
      cmocka_unit_test(test_srclimit_release_cannot_underflow),
      cmocka_unit_test(test_srclimit_many_sources),
      cmocka_unit_test(test_srclimit_log_once_per_second_per_reason),
      cmocka_unit_test(test_srclimit_shared_between_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
