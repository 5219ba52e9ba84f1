/* tests/test_accesslog.c: evr-proxy's access log writer (samples/accesslog.c)
 * on its own, under every backend: both line formats byte for byte (fixed
 * time and addresses), JSON escaping of odd bytes, writing to a regular
 * file in bounded chunks, a FIFO whose reader is slow (the loop goes on,
 * the buffer bounds memory, drops are counted, later lines arrive whole
 * and in order), reopen after a rename, a reopen that fails (the old file
 * is kept), and close flushing what is buffered. */
/* evr-test: backends */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "accesslog.h"
#include "helpers.h"

static char dir[64];
static char path[128];

static int dir_setup(void **state) {
  snprintf(dir, sizeof dir, "/tmp/evr-accesslog-XXXXXX");
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/access.log", dir);
  return evr_test_setup(state);
}

static int dir_teardown(void **state) {
  char p[160];
  snprintf(p, sizeof p, "%s/access.log", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/access.log.1", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/fifo", dir);
  unlink(p);
  rmdir(dir);
  return evr_test_teardown(state);
}

#define AL_TEST(fn) cmocka_unit_test_setup_teardown(fn, dir_setup, dir_teardown)

static evr_addr_t client_addr, up_addr;

/* 2026-11-18T11:06:40.123Z, 12.345678 ms, 512 up, 4096 down. */
static accesslog_record_t fixed_record(void) {
  assert_evr_ok(evr_addr_parse(&client_addr, "192.0.2.1:51000"));
  assert_evr_ok(evr_addr_parse(&up_addr, "[2001:db8::2]:80"));
  accesslog_record_t r = {0};
  r.end.tv_sec = 1795000000;
  r.end.tv_nsec = 123456789;
  r.client = &client_addr;
  r.upstream = &up_addr;
  r.duration_ns = 12345678;
  r.bytes_up = 512;
  r.bytes_down = 4096;
  r.cause = ACCESSLOG_DONE;
  return r;
}

static void test_accesslog_text_format_is_byte_exact(void **state) {
  (void)state;
  char line[ACCESSLOG_LINE_MAX];
  accesslog_record_t r = fixed_record();
  int n = accesslog_format(&r, ACCESSLOG_TEXT, line, sizeof line);
  const char *want =
      "2026-11-18T11:06:40.123Z 192.0.2.1:51000 [2001:db8::2]:80 12.345 512 4096 done\n";
  assert_string_equal(line, want);
  assert_int_equal(n, (int)strlen(want));
  /* Empty fields, a sub-millisecond duration, another cause. */
  r.upstream = NULL;
  r.duration_ns = 999;
  r.bytes_down = 0;
  r.cause = ACCESSLOG_UPSTREAM_REFUSED;
  accesslog_format(&r, ACCESSLOG_TEXT, line, sizeof line);
  assert_string_equal(line,
                      "2026-11-18T11:06:40.123Z 192.0.2.1:51000 - 0.000 512 0 upstream-refused\n");
  r.client = NULL;
  r.duration_ns = 1000;
  accesslog_format(&r, ACCESSLOG_TEXT, line, sizeof line);
  assert_string_equal(line, "2026-11-18T11:06:40.123Z - - 0.001 512 0 upstream-refused\n");
  /* A Unix address with a space and odd bytes keeps the line at seven
   * space-separated fields. */
  evr_addr_t u;
  assert_evr_ok(evr_addr_from_path(&u, "/run/a b\"\\\x01\xc3\xa9"));
  r.client = &u;
  accesslog_format(&r, ACCESSLOG_TEXT, line, sizeof line);
  assert_string_equal(line, "2026-11-18T11:06:40.123Z unix:/run/a\\x20b\\x22\\x5c\\x01\\xc3\\xa9 - "
                            "0.001 512 0 upstream-refused\n");
  /* Too small a buffer: refused, never truncated. */
  assert_int_equal(accesslog_format(&r, ACCESSLOG_TEXT, line, 20), -1);
  assert_int_equal(accesslog_format(&r, 7, line, sizeof line), -1);
}

static void test_accesslog_json_format_is_byte_exact(void **state) {
  (void)state;
  char line[ACCESSLOG_LINE_MAX];
  accesslog_record_t r = fixed_record();
  r.cause = ACCESSLOG_IDLE_TIMEOUT;
  int n = accesslog_format(&r, ACCESSLOG_JSON, line, sizeof line);
  const char *want =
      "{\"time\":\"2026-11-18T11:06:40.123Z\",\"client\":\"192.0.2.1:51000\","
      "\"upstream\":\"[2001:db8::2]:80\",\"duration_ms\":12.345,\"bytes_up\":512,"
      "\"bytes_down\":4096,\"cause\":\"idle-timeout\"}\n";
  assert_string_equal(line, want);
  assert_int_equal(n, (int)strlen(want));
  r.upstream = NULL;
  r.duration_ns = 0;
  r.bytes_up = UINT64_MAX;
  r.cause = ACCESSLOG_DRAIN;
  accesslog_format(&r, ACCESSLOG_JSON, line, sizeof line);
  assert_string_equal(line,
                      "{\"time\":\"2026-11-18T11:06:40.123Z\",\"client\":\"192.0.2.1:51000\","
                      "\"upstream\":null,\"duration_ms\":0.000,\"bytes_up\":18446744073709551615,"
                      "\"bytes_down\":4096,\"cause\":\"drain\"}\n");
}

static void test_accesslog_json_escapes_odd_bytes(void **state) {
  (void)state;
  char line[ACCESSLOG_LINE_MAX];
  accesslog_record_t r = fixed_record();
  evr_addr_t u;
  /* quote, backslash, \b \f \n \r \t, 0x01, 0x1f, DEL, a space, well-formed
   * UTF-8 (é, €, U+1F600), then malformed: a lone continuation byte, 0xff,
   * a truncated sequence, an overlong '/', a surrogate. */
  assert_evr_ok(evr_addr_from_path(&u, "/\"\\\b\f\n\r\t\x01\x1f\x7f \xc3\xa9\xe2\x82\xac"
                                       "\xf0\x9f\x98\x80\x80\xff\xe2\x82|\xc0\xaf\xed\xa0\x80"));
  r.client = &u;
  r.upstream = NULL;
  accesslog_format(&r, ACCESSLOG_JSON, line, sizeof line);
  const char *want =
      "{\"time\":\"2026-11-18T11:06:40.123Z\",\"client\":\"unix:/\\\"\\\\\\b\\f\\n\\r\\t"
      "\\u0001\\u001f\\u007f \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\\u0080\\u00ff\\u00e2\\u0082|"
      "\\u00c0\\u00af\\u00ed\\u00a0\\u0080\",\"upstream\":null,\"duration_ms\":12.345,"
      "\"bytes_up\":512,\"bytes_down\":4096,\"cause\":\"done\"}\n";
  assert_string_equal(line, want);
  /* The longest address escapes within ACCESSLOG_LINE_MAX. */
  char longest[sizeof u.u.un.sun_path];
  memset(longest, 0x01, sizeof longest - 1);
  longest[0] = '/';
  longest[sizeof longest - 1] = '\0';
  assert_evr_ok(evr_addr_from_path(&u, longest));
  r.upstream = &u;
  assert_true(accesslog_format(&r, ACCESSLOG_JSON, line, sizeof line) > 0);
  assert_true(accesslog_format(&r, ACCESSLOG_TEXT, line, sizeof line) > 0);
}

static void test_accesslog_causes_have_stable_distinct_names(void **state) {
  (void)state;
  for (int i = 0; i < ACCESSLOG_NCAUSES; i++) {
    const char *a = accesslog_cause_name((accesslog_cause_t)i);
    assert_string_not_equal(a, "unknown");
    assert_null(strchr(a, ' '));
    for (int j = 0; j < i; j++)
      assert_string_not_equal(a, accesslog_cause_name((accesslog_cause_t)j));
  }
  assert_string_equal(accesslog_cause_name(ACCESSLOG_NCAUSES), "unknown");
  assert_string_equal(accesslog_cause_name(ACCESSLOG_TLS_FAILED), "tls-failed");
  assert_int_equal(accesslog_cause_connect(EVR_ECONNREFUSED), ACCESSLOG_UPSTREAM_REFUSED);
  assert_int_equal(accesslog_cause_connect(EVR_ETIMEDOUT), ACCESSLOG_UPSTREAM_TIMEOUT);
  assert_int_equal(accesslog_cause_connect(EVR_EAI_NONAME), ACCESSLOG_UPSTREAM_UNREACHABLE);
  assert_int_equal(accesslog_cause_connect(EVR_EMFILE), ACCESSLOG_LOCAL_ERROR);
  assert_int_equal(accesslog_cause_connect(EVR_EIO), ACCESSLOG_UPSTREAM_ERROR);
  assert_int_equal(accesslog_cause_side(EVR_ECONNRESET, 0), ACCESSLOG_CLIENT_RESET);
  assert_int_equal(accesslog_cause_side(EVR_ECONNRESET, 1), ACCESSLOG_UPSTREAM_RESET);
  assert_int_equal(accesslog_cause_side(EVR_EPIPE, 1), ACCESSLOG_UPSTREAM_ERROR);
}

/* ---- the writer ---- */

static int closed;
static void on_closed(accesslog_t *w) {
  (void)w;
  closed++;
}

static void close_writer(accesslog_t *w) {
  closed = 0;
  assert_evr_ok(accesslog_close(w, on_closed));
  run_until(test_loop, &closed, 1000);
  assert_int_equal(closed, 1);
}

/* Record number seq (carried in bytes_up). */
static int put_line(accesslog_t *w, uint64_t seq) {
  accesslog_record_t r = fixed_record();
  r.bytes_up = seq;
  return accesslog_write(w, &r);
}

static char *slurp(const char *p, size_t *len) {
  FILE *f = fopen(p, "rb");
  assert_non_null(f);
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  assert_non_null(b);
  size_t r;
  while ((r = fread(b + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      cap *= 2;
      b = realloc(b, cap);
      assert_non_null(b);
    }
  }
  fclose(f);
  b[n] = '\0';
  *len = n;
  return b;
}

/* Check that text holds whole lines of put_line() records, their sequence
 * numbers increasing; returns how many, the first and last in *first and
 * *last. */
static size_t check_lines(const char *text, size_t len, uint64_t *first, uint64_t *last) {
  char want[ACCESSLOG_LINE_MAX];
  size_t count = 0;
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    assert_non_null(nl); /* whole lines only */
    size_t l = (size_t)(nl - p + 1);
    /* "... 12.345 SEQ 4096 done" */
    const char *sp = memchr(p, ' ', l);
    assert_non_null(sp);
    unsigned long long seq = 0;
    char line[ACCESSLOG_LINE_MAX];
    assert_true(l < sizeof line);
    memcpy(line, p, l);
    line[l] = '\0';
    assert_int_equal(sscanf(line, "%*s %*s %*s %*s %llu", &seq), 1);
    accesslog_record_t r = fixed_record();
    r.bytes_up = seq;
    accesslog_format(&r, ACCESSLOG_TEXT, want, sizeof want);
    assert_string_equal(line, want);
    if (count) assert_true(seq > *last);
    else *first = seq;
    *last = seq;
    count++;
    p = nl + 1;
  }
  return count;
}

static void test_accesslog_writes_a_file_in_bounded_chunks(void **state) {
  (void)state;
  accesslog_t w = {0};
  accesslog_options_t o = {.path = path, .chunk = 512};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  for (uint64_t i = 0; i < 200; i++) assert_evr_ok(put_line(&w, i));
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 0); /* nothing written inside write() */
  /* One iteration writes one chunk at most, cut after a newline. */
  assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  assert_int_equal(stat(path, &st), 0);
  assert_true(st.st_size > 0 && st.st_size <= 512);
  accesslog_counters_t c;
  for (int i = 0; i < 1000; i++) {
    accesslog_counters(&w, &c);
    if (c.buffered == 0) break;
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  }
  accesslog_counters(&w, &c);
  assert_int_equal(c.buffered, 0);
  assert_int_equal(c.lines_written, 200);
  assert_int_equal(c.lines_dropped, 0);
  assert_int_equal(c.write_errors, 0);
  size_t len;
  char *text = slurp(path, &len);
  uint64_t first, last;
  assert_int_equal(check_lines(text, len, &first, &last), 200);
  assert_int_equal(first, 0);
  assert_int_equal(last, 199);
  free(text);
  close_writer(&w);
}

static void test_accesslog_full_buffer_drops_and_counts(void **state) {
  (void)state;
  accesslog_t w = {0};
  accesslog_options_t o = {.path = path, .buffer_size = ACCESSLOG_LINE_MAX};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  int queued = 0, dropped = 0;
  for (uint64_t i = 0; i < 100; i++) {
    int rc = put_line(&w, i);
    if (rc == 0) queued++;
    else {
      assert_int_equal(rc, EVR_ENOBUFS);
      dropped++;
    }
  }
  assert_true(queued > 0 && dropped > 0);
  accesslog_counters_t c;
  accesslog_counters(&w, &c);
  assert_int_equal(c.lines_dropped, (uint64_t)dropped);
  assert_true(c.buffered <= ACCESSLOG_LINE_MAX);
  close_writer(&w);
  accesslog_counters(&w, &c);
  assert_int_equal(c.lines_written, (uint64_t)queued);
  size_t len;
  char *text = slurp(path, &len);
  uint64_t first, last;
  assert_int_equal(check_lines(text, len, &first, &last), (size_t)queued);
  assert_int_equal(first, 0);
  free(text);
}

/* Read what the FIFO holds now; returns the bytes appended to *acc. */
static size_t drain_fifo(int rfd, char **acc, size_t *acclen, size_t *cap) {
  size_t got = 0;
  for (;;) {
    if (*cap - *acclen < 65536) {
      *cap *= 2;
      *acc = realloc(*acc, *cap);
      assert_non_null(*acc);
    }
    ssize_t r = read(rfd, *acc + *acclen, *cap - *acclen - 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      assert_true(r == 0 || errno == EAGAIN);
      break;
    }
    *acclen += (size_t)r;
    got += (size_t)r;
  }
  return got;
}

/* A writer waiting for a full pipe does not keep the loop alive (its
 * watcher is unreferenced), as a daemon's listeners would: this timer
 * does, so that EVR_RUN_NOWAIT polls. */
static evr_timer_t keepalive;
static void on_keepalive(evr_timer_t *t) { (void)t; }
static void keep_alive(int on) {
  if (on) {
    assert_evr_ok(evr_timer_init(test_loop, &keepalive));
    assert_evr_ok(evr_timer_start(&keepalive, on_keepalive, 3600 * 1000, 0));
  } else {
    evr_timer_stop(&keepalive);
  }
}

static void test_accesslog_slow_fifo_reader_bounds_memory_and_keeps_order(void **state) {
  (void)state;
  keep_alive(1);
  char fifo[160];
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  int rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  assert_true(rfd >= 0);
  accesslog_t w = {0};
  accesslog_options_t o = {.path = fifo, .buffer_size = 16384};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  /* Nobody reads: the pipe fills, then the buffer, then lines drop; the
   * loop never blocks (NOWAIT iterations keep returning). */
  uint64_t seq = 0;
  accesslog_counters_t c;
  for (int round = 0; round < 2000; round++) {
    for (int i = 0; i < 20; i++) put_line(&w, seq++);
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    accesslog_counters(&w, &c);
    assert_true(c.buffered <= 16384);
    if (c.lines_dropped > 100) break;
  }
  assert_true(c.lines_dropped > 100);
  assert_true(c.buffered > 0);
  assert_int_equal(c.write_errors, 0);
  /* The reader drains: what was buffered follows, then later lines. */
  size_t cap = 1 << 20, len = 0;
  char *acc = malloc(cap);
  assert_non_null(acc);
  for (int i = 0; i < 1000; i++) {
    drain_fifo(rfd, &acc, &len, &cap);
    accesslog_counters(&w, &c);
    if (c.buffered == 0) break;
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  }
  assert_int_equal(c.buffered, 0);
  uint64_t later = seq;
  for (int i = 0; i < 50; i++) assert_evr_ok(put_line(&w, seq++));
  for (int i = 0; i < 1000; i++) {
    accesslog_counters(&w, &c);
    if (c.buffered == 0) break;
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  }
  drain_fifo(rfd, &acc, &len, &cap);
  uint64_t first, last;
  size_t n = check_lines(acc, len, &first, &last);
  accesslog_counters(&w, &c);
  assert_int_equal(n, c.lines_written);
  assert_int_equal(c.lines_written + c.lines_dropped, seq);
  assert_int_equal(first, 0);
  assert_int_equal(last, seq - 1);
  /* The 50 later lines all arrived, the last 50 of the text. */
  assert_true(n >= 50);
  const char *p = acc + len;
  for (int i = 0; i < 50; i++) {
    p--;
    while (p > acc && p[-1] != '\n') p--;
  }
  uint64_t f2, l2;
  assert_int_equal(check_lines(p, (size_t)(acc + len - p), &f2, &l2), 50);
  assert_int_equal(f2, later);
  free(acc);
  close_writer(&w);
  close(rfd);
  keep_alive(0);
}

static void test_accesslog_close_lingers_then_drops_for_a_stuck_fifo(void **state) {
  (void)state;
  char fifo[160];
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  int rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  assert_true(rfd >= 0);
  accesslog_t w = {0};
  accesslog_options_t o = {.path = fifo, .buffer_size = 16384, .linger_ms = 20};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  accesslog_counters_t c;
  uint64_t seq = 0;
  for (int round = 0; round < 2000; round++) {
    for (int i = 0; i < 20; i++) put_line(&w, seq++);
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
    accesslog_counters(&w, &c);
    if (c.lines_dropped) break;
  }
  assert_true(c.buffered > 0);
  close_writer(&w); /* the linger timer ends it */
  accesslog_counters(&w, &c);
  assert_int_equal(c.buffered, 0);
  assert_int_equal(c.lines_written + c.lines_dropped, seq);
  close(rfd);
}

static void test_accesslog_reopen_after_rename_splits_the_lines(void **state) {
  (void)state;
  accesslog_t w = {0};
  accesslog_options_t o = {.path = path, .format = ACCESSLOG_TEXT};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  for (uint64_t i = 0; i < 10; i++) assert_evr_ok(put_line(&w, i));
  /* Lines still buffered at the reopen go to the old file. */
  char old[160];
  snprintf(old, sizeof old, "%s/access.log.1", dir);
  assert_int_equal(rename(path, old), 0);
  assert_evr_ok(accesslog_request_reopen(&w)); /* as from SIGUSR1's thread */
  accesslog_counters_t c;
  for (int i = 0; i < 100; i++) {
    accesslog_counters(&w, &c);
    if (c.reopens) break;
    assert_true(evr_loop_run(test_loop, EVR_RUN_NOWAIT) >= 0);
  }
  assert_int_equal(c.reopens, 1);
  for (uint64_t i = 10; i < 20; i++) assert_evr_ok(put_line(&w, i));
  close_writer(&w);
  size_t len;
  uint64_t first, last;
  char *text = slurp(old, &len);
  assert_int_equal(check_lines(text, len, &first, &last), 10);
  assert_int_equal(first, 0);
  assert_int_equal(last, 9);
  free(text);
  text = slurp(path, &len);
  assert_int_equal(check_lines(text, len, &first, &last), 10);
  assert_int_equal(first, 10);
  assert_int_equal(last, 19);
  free(text);
  accesslog_counters(&w, &c);
  assert_int_equal(c.lines_written, 20);
  assert_int_equal(c.reopen_errors, 0);
}

static void test_accesslog_failed_reopen_keeps_the_old_file(void **state) {
  (void)state;
  accesslog_t w = {0};
  accesslog_options_t o = {.path = path};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  for (uint64_t i = 0; i < 5; i++) assert_evr_ok(put_line(&w, i));
  /* Keep a way to read the file, then take its directory away. */
  int rfd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(rfd >= 0);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(accesslog_reopen(&w), EVR_ENOENT);
  accesslog_counters_t c;
  accesslog_counters(&w, &c);
  assert_int_equal(c.reopen_errors, 1);
  assert_int_equal(c.reopens, 0);
  assert_int_equal(c.lines_written, 5); /* flushed before the attempt */
  for (uint64_t i = 5; i < 10; i++) assert_evr_ok(put_line(&w, i));
  close_writer(&w);
  accesslog_counters(&w, &c);
  assert_int_equal(c.lines_written, 10);
  assert_int_equal(c.write_errors, 0);
  char buf[8192];
  ssize_t n = read(rfd, buf, sizeof buf);
  assert_true(n > 0);
  uint64_t first, last;
  assert_int_equal(check_lines(buf, (size_t)n, &first, &last), 10);
  assert_int_equal(first, 0);
  assert_int_equal(last, 9);
  close(rfd);
  assert_int_equal(mkdir(dir, 0700), 0); /* for the teardown */
}

static void test_accesslog_close_flushes_everything_to_a_file(void **state) {
  (void)state;
  accesslog_t w = {0};
  accesslog_options_t o = {.path = path, .format = ACCESSLOG_JSON, .chunk = 256};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  for (uint64_t i = 0; i < 1000; i++) {
    accesslog_record_t r = fixed_record();
    r.bytes_up = i;
    assert_evr_ok(accesslog_write(&w, &r));
  }
  assert_int_equal(accesslog_close(&w, on_closed), 0);
  closed = 0;
  /* A regular file gets everything inside the close. */
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  size_t len;
  char *text = slurp(path, &len);
  size_t lines = 0;
  for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
  assert_int_equal(lines, 1000);
  assert_int_equal(text[len - 1], '\n');
  assert_non_null(strstr(text, "\"bytes_up\":999,"));
  free(text);
  assert_int_equal(accesslog_write(&w, &(accesslog_record_t){0}), EVR_EINVAL);
  assert_int_equal(accesslog_close(&w, NULL), EVR_EALREADY);
  run_until(test_loop, &closed, 100);
  accesslog_counters_t c;
  accesslog_counters(&w, &c);
  assert_int_equal(c.lines_written, 1000);
  assert_int_equal(c.lines_dropped, 0);
}

static void test_accesslog_open_errors_leave_nothing_open(void **state) {
  (void)state;
  int base = count_open_fds();
  accesslog_t w = {0};
  accesslog_options_t o = {.path = "/nonexistent-dir/x/access.log"};
  assert_int_equal(accesslog_open(&w, test_loop, &o), EVR_ENOENT);
  o.path = dir; /* a directory */
  assert_true(accesslog_open(&w, test_loop, &o) < 0);
  o.path = path;
  o.format = 9;
  assert_int_equal(accesslog_open(&w, test_loop, &o), EVR_EINVAL);
  o.format = ACCESSLOG_TEXT;
  o.buffer_size = 100;
  assert_int_equal(accesslog_open(&w, test_loop, &o), EVR_EINVAL);
  assert_fds_back_to(base);
  assert_int_equal(evr_loop_run(test_loop, EVR_RUN_DEFAULT), 0);
}

static void test_accesslog_stdout_writer_restores_its_flags(void **state) {
  (void)state;
  /* Standard output swapped for a pipe for the test's length. */
  fflush(stdout); /* cmocka's own output must not land in the pipe */
  int saved = dup(STDOUT_FILENO);
  assert_true(saved >= 0);
  int p[2];
  assert_int_equal(pipe(p), 0);
  assert_int_equal(dup2(p[1], STDOUT_FILENO), STDOUT_FILENO);
  close(p[1]);
  int fl = fcntl(STDOUT_FILENO, F_GETFL);
  assert_false(fl & O_NONBLOCK);
  accesslog_t w = {0};
  accesslog_options_t o = {.path = "-"};
  assert_evr_ok(accesslog_open(&w, test_loop, &o));
  assert_true(fcntl(STDOUT_FILENO, F_GETFL) & O_NONBLOCK);
  assert_evr_ok(put_line(&w, 7));
  assert_int_equal(accesslog_reopen(&w), 0); /* a no-op for "-" */
  close_writer(&w);
  assert_false(fcntl(STDOUT_FILENO, F_GETFL) & O_NONBLOCK);
  assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
  close(saved);
  char buf[4096];
  ssize_t n = read(p[0], buf, sizeof buf);
  close(p[0]);
  uint64_t first, last;
  assert_true(n > 0);
  assert_int_equal(check_lines(buf, (size_t)n, &first, &last), 1);
  assert_int_equal(first, 7);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      EVR_TEST(test_accesslog_text_format_is_byte_exact),
      EVR_TEST(test_accesslog_json_format_is_byte_exact),
      EVR_TEST(test_accesslog_json_escapes_odd_bytes),
      EVR_TEST(test_accesslog_causes_have_stable_distinct_names),
      AL_TEST(test_accesslog_writes_a_file_in_bounded_chunks),
      AL_TEST(test_accesslog_full_buffer_drops_and_counts),
      AL_TEST(test_accesslog_slow_fifo_reader_bounds_memory_and_keeps_order),
      AL_TEST(test_accesslog_close_lingers_then_drops_for_a_stuck_fifo),
      AL_TEST(test_accesslog_reopen_after_rename_splits_the_lines),
      AL_TEST(test_accesslog_failed_reopen_keeps_the_old_file),
      AL_TEST(test_accesslog_close_flushes_everything_to_a_file),
      AL_TEST(test_accesslog_open_errors_leave_nothing_open),
      AL_TEST(test_accesslog_stdout_writer_restores_its_flags),
  };
  return cmocka_run_group_tests_name("accesslog", tests, NULL, NULL);
}
