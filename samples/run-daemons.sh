#!/usr/bin/env bash
# samples/run-daemons.sh BIN_DIR: run the two sample daemons together on
# loopback: evr-echo, evr-proxy in front of it, verified traffic through the
# proxy (evr-bench-echo checks every echoed byte), the proxy's /metrics, and
# a graceful stop of both with SIGTERM. Exits nonzero on any failure.
set -euo pipefail
bin=${1:-build/bin}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The port a daemon bound (it logs "listening on 127.0.0.1:PORT").
bound_port() { # log what
  local i
  for i in $(seq 1 200); do
    if grep -q "$2 on 127.0.0.1:" "$1" 2>/dev/null; then
      grep -o "$2 on 127.0.0.1:[0-9]*" "$1" | head -1 | sed 's/.*://'
      return 0
    fi
    sleep 0.05
  done
  echo "no '$2' line in $1:" >&2
  cat "$1" >&2
  return 1
}

stop() { # pid name
  kill -TERM "$1"
  local st=0
  wait "$1" || st=$?
  if [ $st -ne 0 ]; then
    echo "$2 exited with status $st" >&2
    return 1
  fi
  echo "$2 stopped cleanly"
}

"$bin/evr-echo" --listen 127.0.0.1:0 --threads 2 2>"$work/echo.log" &
pids+=($!)
echo_pid=$!
echo_port=$(bound_port "$work/echo.log" listening)
echo "evr-echo listening on 127.0.0.1:$echo_port"

"$bin/evr-proxy" --listen 127.0.0.1:0 --upstream "127.0.0.1:$echo_port" \
  --metrics 127.0.0.1:0 --threads 2 2>"$work/proxy.log" &
pids+=($!)
proxy_pid=$!
proxy_port=$(bound_port "$work/proxy.log" listening)
metrics_port=$(bound_port "$work/proxy.log" metrics)
echo "evr-proxy listening on 127.0.0.1:$proxy_port (metrics on $metrics_port)"

if [ -x "$bin/evr-bench-echo" ]; then
  # --duration counts the warm-up: 1 s of warm-up, then 3 s measured
  # (the RESULT line's seconds=).
  echo "--> 100 connections through the proxy: 1 s warm-up, then 3 s measured, every byte verified"
  "$bin/evr-bench-echo" --port "$proxy_port" --conns 100 --size 512 --pipeline 4 \
    --duration 4 --warmup 1
else
  echo "--> (evr-bench-echo not built: one message by hand)"
  exec 3<>"/dev/tcp/127.0.0.1/$proxy_port"
  printf 'hello through evr-proxy\n' >&3
  read -r -t 5 line <&3
  [ "$line" = "hello through evr-proxy" ] || { echo "bad echo: '$line'" >&2; exit 1; }
  exec 3>&-
fi

echo "--> GET /metrics"
exec 4<>"/dev/tcp/127.0.0.1/$metrics_port"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&4
metrics=$(timeout 5 cat <&4)
exec 4>&-
echo "$metrics" | grep -E '^evr_proxy_(connections_total|bytes_in_total|bytes_out_total) '
echo "$metrics" | grep -q '^evr_proxy_connections_total [1-9]' || {
  echo "metrics show no connections" >&2
  exit 1
}

stop "$proxy_pid" evr-proxy
stop "$echo_pid" evr-echo
pids=()
