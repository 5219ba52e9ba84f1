#!/usr/bin/env bash
# scripts/run-samples.sh: build evr (Release, into build/) and run the sample
# programs against each built backend. Exits nonzero if any sample fails.
set -euo pipefail
. "$(dirname "$0")/common.sh"

evr_ensure_pkgs $EVR_BUILD_PKGS
evr_build "$EVR_ROOT/build" -DCMAKE_BUILD_TYPE=Release
bin="$EVR_ROOT/build/bin"

backends=$(cat "$EVR_ROOT/build/backends.txt")

for b in $backends; do
  echo "==> evr-tour --backend $b"
  "$bin/evr-tour" --backend "$b"
done

for s in "$EVR_ROOT"/samples/run-*.sh; do
  [ -e "$s" ] || continue
  echo "==> $(basename "$s")"
  bash "$s" "$bin"
done
echo "==> samples OK"
