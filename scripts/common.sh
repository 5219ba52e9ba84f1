# scripts/common.sh: shared by the top-level scripts (sourced, not run).
# Knows the Debian/Ubuntu packages evr needs and installs the missing ones
# with apt-get (as root, or through sudo); elsewhere it names what is missing.

EVR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EVR_JOBS=$(nproc 2>/dev/null || echo 2)

# Packages to build evr, its samples, its man pages and its tests.
EVR_BUILD_PKGS="cmake make gcc clang pkg-config libcmocka-dev go-md2man libssl-dev openssl"

evr_have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

# evr_ensure_pkgs PKG...: install the packages that are not installed yet.
evr_ensure_pkgs() {
  local missing=()
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "note: not a Debian-based system; make sure these are installed: $*" >&2
    return 0
  fi
  for p in "$@"; do evr_have_pkg "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "error: missing packages: ${missing[*]}" >&2
      echo "install them with: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "==> installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}

# evr_build DIR [cmake args...]: configure (once) and build into DIR.
evr_build() {
  local dir=$1
  shift
  echo "==> cmake -S $EVR_ROOT -B $dir $*"
  cmake -S "$EVR_ROOT" -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$EVR_JOBS"
}

# evr_musl_cmocka DIR: print the prefix of a static cmocka built with musl-gcc
# from Debian's own source package (apt-get source cmocka, which needs a
# deb-src entry), building it into DIR once. Fails, printing nothing, where
# the source package cannot be had.
evr_musl_cmocka() {
  local dir=$1 prefix=$1/prefix
  if [ ! -f "$prefix/lib/libcmocka.a" ]; then
    command -v apt-get >/dev/null 2>&1 || return 1
    rm -rf "$dir/src" && mkdir -p "$dir/src" || return 1
    (cd "$dir/src" && apt-get source -q --download-only cmocka >/dev/null 2>&1) || return 1
    local orig
    orig=$(ls "$dir"/src/cmocka_*.orig.tar.* 2>/dev/null | head -n 1)
    [ -n "$orig" ] || return 1
    tar -xf "$orig" -C "$dir/src" || return 1
    local srcdir
    srcdir=$(find "$dir/src" -mindepth 1 -maxdepth 1 -type d -name 'cmocka-*' | head -n 1)
    CC=musl-gcc cmake -S "$srcdir" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$prefix" -DWITH_STATIC_LIB=ON -DWITH_EXAMPLES=OFF \
      -DUNIT_TESTING=OFF >/dev/null || return 1
    cmake --build "$dir/build" -j "$EVR_JOBS" >/dev/null || return 1
    cmake --install "$dir/build" >/dev/null || return 1
    # Link the tests statically: musl's loader would not find the shared one.
    rm -f "$prefix"/lib/libcmocka.so*
    ln -sf libcmocka-static.a "$prefix/lib/libcmocka.a"
  fi
  echo "$prefix"
}
