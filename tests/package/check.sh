#!/bin/sh
# tests/package/check.sh BUILD_DIR SOURCE_DIR: make the Debian packages of
# BUILD_DIR (cpack -G DEB), check their control fields and contents, unpack
# them into a scratch root (dpkg -x: no root needed, the system untouched),
# and use them from there as a newcomer would use the installed packages:
#   - a program built with `pkg-config --cflags --libs evr`, and one with
#     find_package(evr), shared and static, each run;
#   - evr-echo and evr-proxy run (--version);
#   - the man pages render without a warning;
#   - the systemd units pass systemd-analyze verify, where it is installed.
# apt-get --simulate checks that the three packages install together on
# this system. Registered by cmake/EvrPackaging.cmake (ctest label
# "package"), which sets EVR_CPACK, EVR_CMAKE, EVR_PACKAGE_LIB (libevr0),
# EVR_PACKAGE_VERSION (0.1.0-1), EVR_PACKAGE_TOOLS (ON when the daemons are
# built) and EVR_PACKAGE_MAN (the man pages built, e.g. "evr.3 evr-echo.1").
set -eu
build=$1
src=$2
CC=${CC:-${EVR_BUILD_CC:-cc}}
export CC
cpack=${EVR_CPACK:-cpack}
cmake=${EVR_CMAKE:-cmake}
version=${EVR_PACKAGE_VERSION:?}
libpkg=${EVR_PACKAGE_LIB:?}
tools=${EVR_PACKAGE_TOOLS:-OFF}
man_pages=${EVR_PACKAGE_MAN:-}

fail() {
  echo "package check: $*" >&2
  exit 1
}
# A check whose tool is missing: skipped with a note, or fatal under CI.
skip() {
  [ -z "${CI:-}" ] || fail "$1 not found"
  echo "package check: $1 not found: $2 not checked" >&2
}
for t in dpkg dpkg-deb dpkg-shlibdeps file pkg-config; do
  command -v "$t" >/dev/null 2>&1 ||
    fail "$t not found (Debian packages: dpkg-dev, file, pkg-config)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/evr-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
out=$work/debs
root=$work/root

# ---- make the packages ----
if ! "$cpack" --config "$build/CPackConfig.cmake" -G DEB -B "$out" >"$work/cpack.log" 2>&1; then
  cat "$work/cpack.log" >&2
  fail "cpack -G DEB failed"
fi
arch=$(dpkg --print-architecture)
deb_lib=$out/${libpkg}_${version}_$arch.deb
deb_dev=$out/libevr-dev_${version}_$arch.deb
deb_tools=$out/evr-tools_${version}_$arch.deb
debs="$deb_lib $deb_dev"
[ "$tools" = ON ] && debs="$debs $deb_tools"
for d in $debs; do
  [ -f "$d" ] || { ls "$out" >&2; fail "no $(basename "$d")"; }
done
echo "package check: made$(for d in $debs; do printf ' %s' "$(basename "$d")"; done)"

# ---- control fields ----
field() { dpkg-deb -f "$1" "$2"; }
for d in $debs; do
  for f in Package Version Architecture Maintainer Description Depends Section; do
    [ -n "$(field "$d" "$f")" ] || fail "$(basename "$d"): no $f field"
  done
  [ "$(field "$d" Version)" = "$version" ] || fail "$(basename "$d"): Version $(field "$d" Version), not $version"
done
# dpkg-shlibdeps found the C library; the others need this very libevr0.
field "$deb_lib" Depends | grep -q 'libc6 (>= ' || fail "$libpkg does not depend on libc6: $(field "$deb_lib" Depends)"
field "$deb_dev" Depends | grep -qF "$libpkg (= $version)" ||
  fail "libevr-dev does not depend on $libpkg (= $version): $(field "$deb_dev" Depends)"
if [ "$tools" = ON ]; then
  deps=$(field "$deb_tools" Depends)
  echo "$deps" | grep -qF "$libpkg (= $version)" || fail "evr-tools does not depend on $libpkg (= $version): $deps"
  echo "$deps" | grep -q 'libc6 (>= ' || fail "evr-tools does not depend on libc6: $deps"
fi
dpkg-deb --ctrl-tarfile "$deb_lib" | tar -xO ./shlibs 2>/dev/null | grep -q "^libevr [0-9]* $libpkg " ||
  fail "$libpkg has no shlibs file"

# ---- contents ----
# has DEB REGEX: DEB holds a path matching REGEX (paths as ./usr/...).
has() {
  dpkg-deb -c "$1" | awk '{print $6}' | grep -Eq "$2" || fail "$(basename "$1") has no $2"
}
has "$deb_lib" '^\./usr/lib/([^/]*/)?libevr\.so\.[0-9]+$'
has "$deb_lib" "^\./usr/share/doc/$libpkg/copyright$"
has "$deb_dev" '^\./usr/include/evr/evr\.h$'
has "$deb_dev" '^\./usr/lib/([^/]*/)?libevr\.so$'
has "$deb_dev" '^\./usr/lib/([^/]*/)?libevr\.a$'
has "$deb_dev" '^\./usr/lib/([^/]*/)?pkgconfig/evr\.pc$'
has "$deb_dev" '^\./usr/lib/([^/]*/)?cmake/evr/evrConfig\.cmake$'
if dpkg-deb -c "$deb_lib" | awk '{print $6}' | grep -Eq '\.(a|h|pc)$|libevr\.so$'; then
  fail "$libpkg holds development files"
fi
if [ "$tools" = ON ]; then
  has "$deb_tools" '^\./usr/bin/evr-echo$'
  has "$deb_tools" '^\./usr/bin/evr-proxy$'
  for u in evr-echo.service evr-echo.socket evr-proxy.service evr-proxy.socket; do
    has "$deb_tools" "^\./usr/lib/systemd/system/$u\$"
  done
fi
for page in $man_pages; do
  case $page in
  *.3) has "$deb_dev" "^\./usr/share/man/man3/$page\.gz\$" ;;
  *.1) has "$deb_tools" "^\./usr/share/man/man1/$page\.gz\$" ;;
  esac
done
[ -n "$man_pages" ] || skip go-md2man "the man pages"

# ---- the packages install together on this system ----
if command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086 # a list of paths without spaces
  if ! apt-get install --simulate --no-install-recommends $debs >"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    fail "apt-get cannot install the packages together"
  fi
fi

# ---- unpack into a scratch root ----
mkdir -p "$root"
for d in $debs; do dpkg -x "$d" "$root"; done
pc=$(find "$root/usr/lib" -name evr.pc | head -n 1)
libdir=$(dirname "$(dirname "$pc")")
[ -e "$libdir/libevr.so" ] || fail "libevr.so (libevr-dev) does not lead to the library of $libpkg"
grep -q '^prefix=/usr$' "$pc" || fail "evr.pc: prefix is not /usr: $(grep '^prefix=' "$pc")"
if grep -Eq '\.\.|pcfiledir|^Requires[.a-z]*: *$' "$pc"; then
  cat "$pc" >&2
  fail "evr.pc: relative or empty entries"
fi

# ---- build programs against it ----
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
# The scratch root stands for /: pkg-config puts it in front of evr.pc's
# /usr paths; the system's own .pc files (liburing) stay visible.
flags=$(PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs evr)
echo "package check: pkg-config --cflags --libs evr: $flags"
case " $flags " in
*" -I$root/usr/include "*) ;;
*) fail "pkg-config gives no -I$root/usr/include" ;;
esac
# shellcheck disable=SC2086 # CC and flags are word lists
$CC "$src/tests/install/consumer.c" $flags -o "$work/consumer_pc"
"$work/consumer_pc"

if ! { "$cmake" -S "$src/tests/install" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$root/usr" &&
  "$cmake" --build "$work/consumer"; } >"$work/cmake.log" 2>&1; then
  cat "$work/cmake.log" >&2
  fail "the find_package(evr) consumer does not build"
fi
"$work/consumer/consumer"
"$work/consumer/consumer_static"

# ---- the daemons ----
if [ "$tools" = ON ]; then
  for p in evr-echo evr-proxy; do
    "$root/usr/bin/$p" --version >/dev/null || fail "$p --version failed"
    if command -v readelf >/dev/null 2>&1 && readelf -d "$root/usr/bin/$p" | grep -Eq 'R(UN)?PATH'; then
      fail "$p keeps an rpath"
    fi
  done
  for u in "$root"/usr/lib/systemd/system/*.service; do
    grep -q '^Type=notify$' "$u" || fail "$(basename "$u"): not Type=notify"
    grep -Eq '^ExecStart=/usr/bin/evr-(echo|proxy) ' "$u" || fail "$(basename "$u"): ExecStart is not /usr/bin/..."
  done
  if command -v systemd-analyze >/dev/null 2>&1; then
    # The units as they are, but for ExecStart, which must exist: the
    # daemon in the scratch root. Documentation=man: pages are looked up in
    # the root too. Any complaint fails the check.
    mkdir -p "$work/units"
    for u in "$root"/usr/lib/systemd/system/*; do
      sed "s|^ExecStart=/usr/bin/|ExecStart=$root/usr/bin/|" "$u" >"$work/units/$(basename "$u")"
    done
    manpath=
    [ -n "$man_pages" ] && manpath=$root/usr/share/man
    if ! MANPATH=$manpath systemd-analyze verify --man="$([ -n "$manpath" ] && echo yes || echo no)" \
      "$work"/units/* >"$work/verify.log" 2>&1 || [ -s "$work/verify.log" ]; then
      cat "$work/verify.log" >&2
      fail "systemd-analyze verify complains about the units"
    fi
  else
    skip systemd-analyze "the units"
  fi
fi

# ---- the man pages ----
if [ -n "$man_pages" ] && ! command -v man >/dev/null 2>&1; then
  skip man "the rendering of the man pages"
elif [ -n "$man_pages" ]; then
  for page in $man_pages; do
    f=$(find "$root/usr/share/man" -name "$page.gz")
    LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$f" \
      >"$work/man.out" 2>"$work/man.log" || fail "man -l $page failed"
    if [ -s "$work/man.log" ]; then
      cat "$work/man.log" >&2
      fail "$page: warnings from man"
    fi
    MANWIDTH=80 man -l "$f" 2>/dev/null | grep -q '^NAME' || fail "$page: no NAME section"
  done
fi
echo "package check OK"
