#!/usr/bin/env bash
# tests/install/check.sh BUILD_DIR SOURCE_DIR: install evr from BUILD_DIR
# into a scratch prefix, then build and run a consumer with find_package()
# (shared and static) and with pkg-config.
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
libdir=$(dirname "$(find "$work/prefix" -name 'libevr.so*' -o -name 'libevr*.dylib' | head -1)")
LD_LIBRARY_PATH=$libdir DYLD_LIBRARY_PATH=$libdir "$work/consumer/consumer"
"$work/consumer/consumer_static"
pc=$(dirname "$(find "$work/prefix" -name evr.pc)")
flags=$(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs evr)
${CC:-cc} "$src/consumer.c" $flags -o "$work/consumer_pc"
LD_LIBRARY_PATH=$libdir DYLD_LIBRARY_PATH=$libdir "$work/consumer_pc"
echo "install check OK"
