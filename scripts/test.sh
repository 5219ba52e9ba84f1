#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, as CI runs it.
#   1. gcc, RelWithDebInfo (build/): every test under every built backend;
#   2. clang with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/);
#   3. clang with ThreadSanitizer (build-tsan/), the multi-threaded tests;
#   4. valgrind memcheck (build-valgrind/), every test not labelled novalgrind.
# Options: --quick runs pass 1 only.
set -euo pipefail
. "$(dirname "$0")/common.sh"

quick=0
[ "${1:-}" = "--quick" ] && quick=1

# haproxy: the PROXY-protocol interop test of evr-proxy (tests/test_proxy.c)
evr_ensure_pkgs $EVR_BUILD_PKGS valgrind haproxy

run_ctest() {
  local dir=$1
  shift
  echo "==> ctest in $dir $*"
  ctest --test-dir "$dir" --output-on-failure -j "$EVR_JOBS" "$@"
}

CC=gcc evr_build "$EVR_ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
run_ctest "$EVR_ROOT/build"
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
echo "==> tests OK"
