# scripts/common.sh: shared by the top-level scripts (sourced, not run).
# Knows the Debian/Ubuntu packages evr needs and installs the missing ones
# with apt-get (as root, or through sudo); elsewhere it names what is missing.

EVR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EVR_JOBS=$(nproc 2>/dev/null || echo 2)

# Packages to build evr, its samples and its tests.
EVR_BUILD_PKGS="cmake make gcc clang pkg-config libcmocka-dev"

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
