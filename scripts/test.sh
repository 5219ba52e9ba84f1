#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, as CI runs it.
#   1. gcc, RelWithDebInfo (build-test/): every test under every built
#      backend, the Debian packages (tests/package/check.sh), then the API
#      reference (the docs target: Doxygen, where a warning is an error);
#   2. clang with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/);
#   3. clang with ThreadSanitizer (build-tsan/), the multi-threaded tests;
#   4. valgrind memcheck (build-valgrind/), every test not labelled novalgrind;
#   5. the portable build (build-portable/, -DEVR_PORTABLE=ON): the code the
#      BSDs and macOS run (no epoll, accept4, SOCK_* flags, eventfd, pipe2,
#      MSG_NOSIGNAL, splice), every test;
#   6. 32-bit (build-m32/, gcc -m32), every test;
#   7. musl (build-musl/, musl-gcc): the library, the samples and evr-tour on
#      every backend, and every test when a musl build of cmocka is found
#      (scripts/common.sh: evr_musl_cmocka);
#   8. libFuzzer (build-fuzz/, clang -fsanitize=fuzzer,address,undefined,
#      -DEVR_FUZZ=ON): each harness of tests/fuzz runs for EVR_FUZZ_SECONDS
#      (default 30) from its committed seed corpus; what it finds new is kept
#      in build-fuzz/corpus/ for the next run, a crashing input in
#      build-fuzz/artifacts/.
# Passes 6 to 8 need packages of their own (gcc-multilib and the i386
# libcmocka-dev; musl-tools and Debian's cmocka source package; clang's
# libFuzzer runtime, libclang-rt-dev), and the API reference needs doxygen:
# where they cannot be had, the pass says so and is skipped, unless CI is set
# (then it fails). .ci/run sets the machine up for them.
# Every pass has a build directory of its own; build/ is left to the Quick
# start's Release build (scripts/run-samples.sh).
# Options: --quick runs pass 1 only.
set -euo pipefail
. "$(dirname "$0")/common.sh"

quick=0
[ "${1:-}" = "--quick" ] && quick=1

# haproxy: the PROXY-protocol interop test of evr-proxy (tests/test_proxy.c);
# dpkg-dev, file, man-db: the package test (tests/package/check.sh); doxygen:
# the API reference; liburing-dev: the io_uring backend; libsystemd-dev,
# systemd: the daemons' systemd support and its tests; libclang-rt-dev:
# libFuzzer (pass 8); python3: the examples' checker and a TLS test client.
# The 32-bit and musl passes set up their own.
evr_ensure_pkgs $EVR_BUILD_PKGS valgrind haproxy dpkg-dev file man-db doxygen \
  liburing-dev libsystemd-dev systemd libclang-rt-dev python3

run_ctest() {
  local dir=$1
  shift
  echo "==> ctest in $dir $*"
  # --no-tests=error: a build directory configured without tests (a cache
  # left from another use) must not pass silently.
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$EVR_JOBS" "$@"
}

# A pass whose tools are missing: skipped with its reason, or fatal under CI.
skip_pass() {
  if [ -n "${CI:-}" ]; then
    echo "error: $1" >&2
    exit 1
  fi
  echo "==> skipped: $1" >&2
}

CC=gcc evr_build "$EVR_ROOT/build-test" -DCMAKE_BUILD_TYPE=RelWithDebInfo
run_ctest "$EVR_ROOT/build-test"
if command -v doxygen >/dev/null 2>&1; then
  echo "==> API reference (docs target) in $EVR_ROOT/build-test"
  cmake --build "$EVR_ROOT/build-test" --target docs
else
  skip_pass "API reference: needs doxygen"
fi
[ $quick -eq 1 ] && { echo "==> tests OK (quick)"; exit 0; }

CC=clang evr_build "$EVR_ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug \
  -DEVR_SANITIZE=address,undefined -DEVR_BUILD_BENCH=OFF
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run_ctest "$EVR_ROOT/build-asan"

CC=clang evr_build "$EVR_ROOT/build-tsan" -DCMAKE_BUILD_TYPE=Debug \
  -DEVR_SANITIZE=thread -DEVR_BUILD_BENCH=OFF -DEVR_BUILD_SAMPLES=OFF
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  run_ctest "$EVR_ROOT/build-tsan" -L threads
CC=gcc evr_build "$EVR_ROOT/build-valgrind" -DCMAKE_BUILD_TYPE=Debug \
  -DEVR_BUILD_BENCH=OFF -DEVR_BUILD_SAMPLES=OFF \
  "-DEVR_TEST_WRAPPER=valgrind;-q;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite,indirect"
EVR_TEST_UNDER_VALGRIND=1 run_ctest "$EVR_ROOT/build-valgrind" -LE novalgrind --timeout 1200

CC=gcc evr_build "$EVR_ROOT/build-portable" -DCMAKE_BUILD_TYPE=Debug -DEVR_PORTABLE=ON
run_ctest "$EVR_ROOT/build-portable"

m32_pc=/usr/lib/i386-linux-gnu/pkgconfig
if evr_have_pkg gcc-multilib && [ -f "$m32_pc/cmocka.pc" ]; then
  CC=gcc CFLAGS=-m32 PKG_CONFIG_LIBDIR="$m32_pc:/usr/share/pkgconfig" \
    evr_build "$EVR_ROOT/build-m32" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-m32 \
    -DEVR_BUILD_TESTS=ON -DEVR_BUILD_BENCH=OFF
  CFLAGS=-m32 run_ctest "$EVR_ROOT/build-m32"
else
  skip_pass "32-bit pass: needs gcc-multilib and libcmocka-dev:i386 (dpkg --add-architecture i386)"
fi

if command -v musl-gcc >/dev/null 2>&1; then
  musl_cmocka=$(evr_musl_cmocka "$EVR_ROOT/build-musl-cmocka") || musl_cmocka=
  if [ -n "$musl_cmocka" ]; then
    CC=musl-gcc PKG_CONFIG_LIBDIR="$musl_cmocka/lib/pkgconfig" \
      evr_build "$EVR_ROOT/build-musl" -DCMAKE_BUILD_TYPE=Debug -DEVR_BUILD_BENCH=OFF \
      -DEVR_BUILD_TESTS=ON
  else
    skip_pass "musl test suite: no musl build of cmocka (needs Debian's cmocka source package: deb-src)"
    CC=musl-gcc evr_build "$EVR_ROOT/build-musl" -DCMAKE_BUILD_TYPE=Debug \
      -DEVR_BUILD_BENCH=OFF -DEVR_BUILD_TESTS=OFF
  fi
  for b in $(cat "$EVR_ROOT/build-musl/backends.txt"); do
    echo "==> musl: evr-tour --backend $b"
    "$EVR_ROOT/build-musl/bin/evr-tour" --backend "$b" >/dev/null
  done
  [ -n "$musl_cmocka" ] && run_ctest "$EVR_ROOT/build-musl"
else
  skip_pass "musl pass: needs musl-gcc (musl-tools)"
fi

# Can clang build and link a libFuzzer program with the sanitizers?
have_libfuzzer() {
  command -v clang >/dev/null 2>&1 || return 1
  local d rc
  d=$(mktemp -d) || return 1
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    > "$d/probe.c"
  clang -fsanitize=fuzzer,address,undefined "$d/probe.c" -o "$d/probe" >/dev/null 2>&1
  rc=$?
  rm -rf "$d"
  return $rc
}

if have_libfuzzer; then
  fz=$EVR_ROOT/build-fuzz
  CC=clang evr_build "$fz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEVR_FUZZ=ON \
    -DEVR_SANITIZE=address,undefined -DEVR_BUILD_TESTS=OFF -DEVR_BUILD_SAMPLES=OFF \
    -DEVR_BUILD_BENCH=OFF
  secs=${EVR_FUZZ_SECONDS:-30}
  mkdir -p "$fz/artifacts"
  for src in "$EVR_ROOT"/tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    name=${name#fuzz_}
    corpus=$fz/corpus/$name
    log=$fz/fuzz_$name.log
    mkdir -p "$corpus"
    dict=()
    [ -f "$EVR_ROOT/tests/fuzz/$name.dict" ] && dict=("-dict=$EVR_ROOT/tests/fuzz/$name.dict")
    echo "==> fuzz_$name for $secs s"
    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$fz/bin/fuzz_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$fz/artifacts/$name-" ${dict[@]+"${dict[@]}"} \
      "$corpus" "$EVR_ROOT/tests/fuzz/corpus/$name" >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "error: fuzz_$name failed (full output: $log; input: $fz/artifacts/)" >&2
      exit 1
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | sed 's/^/    /'
  done
else
  skip_pass "fuzz pass: needs clang with libFuzzer (libclang-rt-dev)"
fi
echo "==> tests OK"
