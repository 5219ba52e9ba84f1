#!/bin/sh
# tests/install/check.sh BUILD_DIR SOURCE_DIR: install evr from BUILD_DIR
# into a scratch prefix, then build and run a consumer with find_package()
# (shared and static) and with pkg-config.
#
# POSIX sh: FreeBSD has no bash. The consumer is built with CC and CFLAGS
# from the environment; where they are unset, with the compiler and flags
# of the build being checked (EVR_BUILD_CC, EVR_BUILD_CFLAGS, set by
# tests/CMakeLists.txt), so that a -m32 build is checked by a -m32 consumer.
set -eu
build=$1
src=$2
CC=${CC:-${EVR_BUILD_CC:-cc}}
CFLAGS=${CFLAGS-${EVR_BUILD_CFLAGS-}}
export CC CFLAGS # read by the consumer's first cmake configure
work=$(mktemp -d "${TMPDIR:-/tmp}/evr-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
lib=$(find "$work/prefix" \( -name 'libevr.so*' -o -name 'libevr*.dylib' \) | head -n 1)
if [ -z "$lib" ]; then
  echo "install check: no shared libevr under $work/prefix" >&2
  exit 1
fi
libdir=$(dirname "$lib")
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DYLD_LIBRARY_PATH=$libdir${DYLD_LIBRARY_PATH:+:$DYLD_LIBRARY_PATH} "$work/consumer/consumer"
"$work/consumer/consumer_static"
pc=$(find "$work/prefix" -name evr.pc | head -n 1)
if [ -z "$pc" ]; then
  echo "install check: no evr.pc under $work/prefix" >&2
  exit 1
fi
flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs evr)
# CC, CFLAGS and flags are word lists: split on purpose.
# shellcheck disable=SC2086
$CC $CFLAGS "$src/consumer.c" $flags -o "$work/consumer_pc"
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DYLD_LIBRARY_PATH=$libdir${DYLD_LIBRARY_PATH:+:$DYLD_LIBRARY_PATH} "$work/consumer_pc"
echo "install check OK"
