/* tests/test_error.c: error codes, names and messages. */
#include <string.h>
#include "helpers.h"

static void test_error_codes_equal_negative_errno(void **state) {
  (void)state;
  assert_int_equal(EVR_EAGAIN, -EAGAIN);
  assert_int_equal(EVR_EBADF, -EBADF);
  assert_int_equal(EVR_ECONNRESET, -ECONNRESET);
  assert_int_equal(EVR_EMFILE, -EMFILE);
  assert_true(EVR_EOF < 0);
}

static void test_error_every_code_has_distinct_name_and_message(void **state) {
  (void)state;
  static const int codes[] = {
#define X(name, value, msg) EVR_##name,
      EVR_ERRNO_MAP(X)
#undef X
  };
  size_t n = sizeof codes / sizeof codes[0];
  for (size_t i = 0; i < n; i++) {
    assert_string_not_equal(evr_err_name(codes[i]), "UNKNOWN");
    assert_string_not_equal(evr_strerror(codes[i]), "unknown error");
    for (size_t j = i + 1; j < n; j++) assert_int_not_equal(codes[i], codes[j]);
  }
  assert_string_equal(evr_err_name(EVR_EAGAIN), "EAGAIN");
  assert_string_equal(evr_err_name(EVR_EOF), "EOF");
  assert_string_equal(evr_strerror(EVR_EADDRINUSE), "address already in use");
}

static void test_error_unknown_code_gets_fallback_text(void **state) {
  (void)state;
  assert_string_equal(evr_strerror(-99999), "unknown error");
  assert_string_equal(evr_err_name(12345), "UNKNOWN");
  assert_string_equal(evr_strerror(0), "success");
  assert_string_equal(evr_version_string(), EVR_VERSION_STRING);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_codes_equal_negative_errno),
      cmocka_unit_test(test_error_every_code_has_distinct_name_and_message),
      cmocka_unit_test(test_error_unknown_code_gets_fallback_text),
  };
  return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
