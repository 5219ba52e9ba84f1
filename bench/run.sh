#!/usr/bin/env bash
# bench/run.sh: run every benchmark of evr and its peers (libuv, libevent,
# libev) side by side and write bench/RESULTS.md plus PNG charts under
# docs/img/. docs/benchmarks.md explains the workloads and how to read them.
# evr's echo servers and evr-proxy run a second time on io_uring
# (EVR_BACKEND=io_uring) when the build has it and the kernel allows it.
#
#   bench/run.sh [--quick] [--results FILE] [--img DIR] [--build DIR]
#                [--only echo,sys,rss,ovh,timers,proxy,tls,chat]
#
# Installs nothing: a missing peer library, tool (perf/strace, gnuplot,
# taskset) or sample program is skipped with a message. Builds a Release
# build of its own (build-bench/ by default), pins servers to CPU 0 and
# clients to CPU 1, and interleaves the implementations in rotating order
# over several rounds so that every ratio compares runs made side by side.
# Everything talks to 127.0.0.1 only; every process runs under a time bound.
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quick=0
results=$root/bench/RESULTS.md
imgdir=$root/docs/img
build=$root/build-bench
only=",echo,sys,rss,ovh,timers,proxy,tls,chat,"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --results) results=$2; shift ;;
    --img) imgdir=$2; shift ;;
    --build) build=$2; shift ;;
    --only) only=",$2,"; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ $quick = 1 ]; then
  ROUNDS=2 DUR=0.5 WARM=0.15          # echo: rounds, seconds per run, warm-up
  SYS_ROUNDS=1 SYS_DUR=0.5
  IDLE_CONNS=2000 RSS_ROUNDS=1
  OVH_ROUNDS=1 OVH_RUNS=5 OVH_WRITES=1000
  TIMERS_MAX=10000
  PROXY_ROUNDS=1
  TLS_ROUNDS=1 TLS_DUR=1
  CHAT_ROUNDS=2 CHAT_DUR=0.5
else
  ROUNDS=7 DUR=3 WARM=0.5
  SYS_ROUNDS=3 SYS_DUR=2
  IDLE_CONNS=10000 RSS_ROUNDS=3
  OVH_ROUNDS=5 OVH_RUNS=25 OVH_WRITES=1000
  TIMERS_MAX=1000000
  PROXY_ROUNDS=3
  TLS_ROUNDS=3 TLS_DUR=3
  CHAT_ROUNDS=5 CHAT_DUR=3
fi

say() { printf '[bench] %s\n' "$*" >&2; }
skip() { printf '[bench] skipped: %s\n' "$*" >&2; skipped+=("$*"); }
skipped=()
want() { case $only in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
t_begin=$(date +%s)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evr-bench.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  [ -n "${EVR_BENCH_KEEP:-}" ] && echo "[bench] kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build ----
for tool in cmake cc; do
  command -v $tool >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done
say "building a Release build in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DEVR_BUILD_TESTS=OFF -DEVR_BUILD_BENCH=ON -DEVR_SANITIZE= >"$tmp/cmake.log" 2>&1 \
  || { cat "$tmp/cmake.log" >&2; exit 1; }
grep -E '^-- bench' "$tmp/cmake.log" >&2 || true
jobs=$(nproc 2>/dev/null || echo 2)
cmake --build "$build" --target bench -j"$jobs" >"$tmp/build.log" 2>&1 \
  || { tail -40 "$tmp/build.log" >&2; exit 1; }
bin=$build/bin
# The sample daemons are optional here (proxy row only).
cmake --build "$build" --target evr-echo evr-proxy -j"$jobs" >/dev/null 2>&1 || true

# ------------------------------------------------------------ the machine --
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
ncpu=$(nproc 2>/dev/null || echo 1)
if command -v taskset >/dev/null && [ "$ncpu" -ge 2 ]; then
  SRV=(taskset -c 0) CLI=(taskset -c 1) pinning="server on CPU 0, client on CPU 1 (taskset)"
else
  SRV=() CLI=() pinning="not pinned"
  skip "CPU pinning (needs taskset and 2 CPUs; have $ncpu)"
fi

# Every implementation in this build. Echo servers: evr both with raw
# watchers and with buffered streams (on the default backend, and again on
# io_uring when the probe below finds it works), libevent both with raw
# events and with bufferevents.
impls_echo=(evr evr-stream)
impls_ovh=(evr)
[ -x "$bin/bench-echo-uv" ] && impls_echo+=(libuv) && impls_ovh+=(libuv) || skip "libuv (libuv1-dev not found at build time)"
if [ -x "$bin/bench-echo-event" ]; then
  impls_echo+=(libevent libevent-bev) impls_ovh+=(libevent)
else
  skip "libevent (libevent-dev not found at build time)"
fi
[ -x "$bin/bench-echo-ev" ] && impls_echo+=(libev) && impls_ovh+=(libev) || skip "libev (libev-dev not found at build time)"

server_cmd() { # impl -> command words
  case $1 in
    evr) echo "$bin/bench-echo-evr" ;;
    evr-stream) echo "$bin/bench-echo-evr --stream" ;;
    evr-uring) echo "env EVR_BACKEND=io_uring $bin/bench-echo-evr" ;;
    evr-stream-uring) echo "env EVR_BACKEND=io_uring $bin/bench-echo-evr --stream" ;;
    libuv) echo "$bin/bench-echo-uv" ;;
    libevent) echo "$bin/bench-echo-event" ;;
    libevent-bev) echo "$bin/bench-echo-event --bufferevent" ;;
    libev) echo "$bin/bench-echo-ev" ;;
    chat-evr) echo "$build/examples/chat" ;;
    chat-evr-uring) echo "env EVR_BACKEND=io_uring $build/examples/chat" ;;
    chat-libuv) echo "$bin/bench-chat-uv" ;;
    chat-libev) echo "$bin/bench-chat-ev" ;;
  esac
}
server_args() { # impl -> the arguments that make it listen on a free port
  case $1 in chat-evr|chat-evr-uring) echo "127.0.0.1:0" ;; *) echo "--port 0" ;; esac
}
ovh_bin() {
  case $1 in
    evr) echo "$bin/bench-overhead-evr" ;; libuv) echo "$bin/bench-overhead-uv" ;;
    libevent) echo "$bin/bench-overhead-event" ;; libev) echo "$bin/bench-overhead-ev" ;;
  esac
}
# Round r runs the list rotated by r, so each implementation takes every
# position in turn and evr runs next to every peer.
rotate() { # r items... -> items rotated left by r
  local r=$1; shift
  local n=$# a=("$@") i
  for ((i = 0; i < n; i++)); do printf '%s\n' "${a[$(((i + r) % n))]}"; done
}

# Server lifecycle. start_server impl -> sets srv_pid, srv_port.
start_server() {
  local out=$tmp/server.out
  : >"$out"
  # shellcheck disable=SC2046
  timeout -k 5 900 "${SRV[@]}" $(server_cmd "$1") $(server_args "$1") >"$out" 2>"$tmp/server.err" &
  srv_pid=$!
  pids+=("$srv_pid")
  local i
  for ((i = 0; i < 100; i++)); do
    srv_port=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
    if [ -n "$srv_port" ]; then
      srv_real=$(child_of "$srv_pid")
      [ -n "$srv_real" ] && return 0
    fi
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "run.sh: server $1 did not start:" >&2
  cat "$tmp/server.err" >&2
  return 1
}
# The server itself: the child of its timeout(1) wrapper (taskset execs).
# Signals go to the wrapper, which forwards them; perf and RSS need the
# server's own pid.
child_of() {
  local c
  c=$(cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{ print $1 }')
  echo "${c:-}"
}
stop_pid() { # pid: SIGTERM, wait up to 5 s, then SIGKILL
  local p=$1 i
  if ! kill -TERM "$p" 2>/dev/null; then # already gone: reap it
    wait "$p" 2>/dev/null || true
    forget_pid "$p"
    return 0
  fi
  for ((i = 0; i < 100; i++)); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  forget_pid "$p"
}
forget_pid() { # drop a reaped pid, so the exit trap never signals a reused id
  local q keep=()
  for q in "${pids[@]:-}"; do [ -n "$q" ] && [ "$q" != "$1" ] && keep+=("$q"); done
  pids=("${keep[@]:-}")
}
# utime + stime of a process, in clock ticks (the comm field has no spaces
# for our servers).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)
server_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

client() { # args... -> the RESULT line's fields on stdout
  local bound
  bound=$(awk -v d="$DUR" 'BEGIN { printf "%d", d + 60 }')
  timeout -k 5 "$bound" "${CLI[@]}" "$bin/evr-bench-echo" "$@" 2>>"$tmp/client.err" \
    | sed -n 's/^RESULT //p'
}
field() { # name line -> value
  printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# ----------------------------------------------------- evr on io_uring ----
# evr-uring and evr-stream-uring are bench-echo-evr (raw watchers, --stream)
# with EVR_BACKEND=io_uring. They join the echo, syscall and memory runs only
# if the build has the backend and one such server starts, holds an io_uring
# descriptor and echoes: a kernel that refuses io_uring (io_uring_disabled,
# seccomp, too old) makes evr_loop_new() fail with EVR_ENOTSUP, and evr never
# falls back to another backend.
holds_io_uring() { # pid -> 0 if one of its descriptors is an io_uring instance
  local f
  for f in "/proc/$1/fd/"*; do
    case $(readlink "$f" 2>/dev/null) in *io_uring*) return 0 ;; esac
  done
  return 1
}
uring_probe() { # -> 0 if evr serves on io_uring; else skips with the reason
  local what="evr on io_uring (evr-uring, evr-stream-uring)" err line dis=""
  if ! grep -qx io_uring "$build/backends.txt" 2>/dev/null; then
    skip "$what: io_uring is not in this build (it needs liburing at build time; built: $(paste -sd' ' "$build/backends.txt" 2>/dev/null))"
    return 1
  fi
  if ! start_server evr-uring 2>/dev/null; then
    err=$(grep -v '^$' "$tmp/server.err" | tail -1 | sed 's/^bench-echo-evr: //')
    stop_pid "$srv_pid"
    case $err in
      evr_loop_new:*)
        dis=$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || true)
        [ -n "$dis" ] && [ "$dis" != 0 ] && dis=", kernel.io_uring_disabled=$dis" || dis=""
        skip "$what: the kernel refuses io_uring (bench-echo-evr with EVR_BACKEND=io_uring: $err$dis)" ;;
      *) skip "$what: bench-echo-evr with EVR_BACKEND=io_uring did not start (${err:-no message})" ;;
    esac
    return 1
  fi
  if ! holds_io_uring "$srv_real"; then
    stop_pid "$srv_pid"
    skip "$what: bench-echo-evr with EVR_BACKEND=io_uring holds no io_uring descriptor"
    return 1
  fi
  line=$(DUR=0.3 client --port "$srv_port" --conns 2 --size 64 --duration 0.3 --warmup 0 || true)
  stop_pid "$srv_pid"
  if [ -z "$line" ] || [ "$(field errors "$line")" != 0 ] || [ "$(field msgs_total "$line")" = 0 ]; then
    skip "$what: bench-echo-evr with EVR_BACKEND=io_uring started but did not echo ($(tail -1 "$tmp/client.err" 2>/dev/null))"
    return 1
  fi
  return 0
}
if (want echo || want sys || want rss) && uring_probe; then
  # next to their epoll twins, before the peers
  impls_echo=(evr evr-stream evr-uring evr-stream-uring "${impls_echo[@]:2}")
fi
say "echo servers: ${impls_echo[*]}"

# ---------------------------------------------------------- echo: msgs/s ---
# workload ids and their client options
workloads=("c1:--conns 1 --size 64" "c100:--conns 100 --size 64"
           "c1000:--conns 1000 --size 64" "c10x16k:--conns 10 --size 16384")
wl_label() {
  case $1 in
    c1) echo "1 conn, 64 B" ;; c100) echo "100 conns, 64 B" ;;
    c1000) echo "1,000 conns, 64 B" ;; c10x16k) echo "10 conns, 16 KiB" ;;
    n100) echo "100 receivers, 64 B" ;; n1000) echo "1,000 receivers, 64 B" ;;
    *) echo "$1" ;;
  esac
}
: >"$tmp/echo.tsv"
want echo && say "echo: ${#workloads[@]} workloads x ${#impls_echo[@]} servers x $ROUNDS rounds, ${DUR} s each"
want echo || ROUNDS=0
for ((r = 0; r < ROUNDS; r++)); do
  for wl in "${workloads[@]}"; do
    id=${wl%%:*} opts=${wl#*:}
    for impl in $(rotate "$r" "${impls_echo[@]}"); do
      start_server "$impl" || exit 1
      # shellcheck disable=SC2086
      c0=$(cpu_ticks "$srv_real")
      line=$(client --port "$srv_port" $opts --duration "$DUR" --warmup "$WARM" || true)
      c1=$(cpu_ticks "$srv_real")
      stop_pid "$srv_pid"
      if [ -z "$line" ] || [ "$(field errors "$line")" != 0 ]; then
        echo "run.sh: echo $id on $impl failed: $(tail -3 "$tmp/client.err")" >&2
        exit 1
      fi
      cpu=$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" -v m="$(field msgs_total "$line")" \
              'BEGIN { printf "%.1f", (b - a) * 1e9 / t / m }')
      printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\n' "$id" "$impl" "$r" "$(field msgs_per_s "$line")" \
        "$(field p50_us "$line")" "$(field p99_us "$line")" "$cpu" >>"$tmp/echo.tsv"
    done
  done
  say "echo round $((r + 1))/$ROUNDS done"
done

# ------------------------------------------------- syscalls per message ----
# perf counts the server's syscall tracepoints while the client runs
# 100, then 1,000 connections of 64 B; strace -c -f is the fallback.
sys_workloads=("c100:--conns 100 --size 64" "c1000:--conns 1000 --size 64")
sys_tool=""
want sys || SYS_ROUNDS=0
if command -v perf >/dev/null &&
   perf stat -e raw_syscalls:sys_enter -x, -o /dev/null -- true >/dev/null 2>&1; then
  sys_tool=perf
  events=(raw_syscalls:sys_enter)
  # Ask perf which per-call tracepoints exist (tracefs may only be mounted
  # once perf first needs it, so its directory is no guide).
  for s in read readv recvfrom recvmsg write writev sendto sendmsg epoll_wait epoll_pwait epoll_pwait2 epoll_ctl io_uring_enter; do
    perf stat -e "syscalls:sys_enter_$s" -x, -o /dev/null -- true >/dev/null 2>&1 &&
      events+=("syscalls:sys_enter_$s")
  done
elif command -v strace >/dev/null; then
  sys_tool=strace
else
  skip "syscalls per message (neither perf with tracepoint access nor strace)"
fi
# classify a syscall name into read/write/wait/ctl/uring/other (uring:
# io_uring_enter, which submits and waits on the io_uring backend)
sys_class() {
  case $1 in
    read|readv|recvfrom|recvmsg) echo read ;;
    write|writev|sendto|sendmsg) echo write ;;
    epoll_wait|epoll_pwait|epoll_pwait2) echo wait ;;
    epoll_ctl) echo ctl ;;
    io_uring_enter) echo uring ;;
    *) echo other ;;
  esac
}
: >"$tmp/sys.tsv"
if [ -n "$sys_tool" ]; then
  [ "$SYS_ROUNDS" -gt 0 ] && say "syscalls per message with $sys_tool: ${#sys_workloads[@]} workloads x ${#impls_echo[@]} servers x $SYS_ROUNDS rounds, ${SYS_DUR} s each"
  for ((r = 0; r < SYS_ROUNDS; r++)); do
    for wl in "${sys_workloads[@]}"; do
      id=${wl%%:*} opts=${wl#*:}
      for impl in $(rotate "$r" "${impls_echo[@]}"); do
        start_server "$impl" || exit 1
        if [ $sys_tool = perf ]; then
          ev=$(IFS=,; echo "${events[*]}")
          timeout -k 5 120 perf stat -x, -o "$tmp/sys.out" -e "$ev" -p "$srv_real" >/dev/null 2>&1 &
        else
          timeout -k 5 120 strace -c -f -o "$tmp/sys.out" -p "$srv_real" >/dev/null 2>&1 &
        fi
        mon=$!
        pids+=("$mon")
        sleep 0.3 # attached before the first connection
        # shellcheck disable=SC2086
        line=$(DUR=$SYS_DUR client --port "$srv_port" $opts \
                 --duration "$SYS_DUR" --warmup 0 || true)
        kill -INT "$mon" 2>/dev/null || true
        wait "$mon" 2>/dev/null || true
        forget_pid "$mon"
        stop_pid "$srv_pid"
        msgs=$(field msgs_total "$line")
        if [ -z "$msgs" ] || [ "$msgs" = 0 ]; then
          echo "run.sh: syscall run $id on $impl failed: $(tail -3 "$tmp/client.err")" >&2; exit 1
        fi
        declare -A cnt=([total]=0 [read]=0 [write]=0 [wait]=0 [ctl]=0 [uring]=0 [other]=0)
        if [ $sys_tool = perf ]; then
          while IFS=, read -r value _ name _; do
            case $name in
              raw_syscalls:sys_enter) cnt[total]=$value ;;
              syscalls:sys_enter_*) c=$(sys_class "${name#syscalls:sys_enter_}")
                                    cnt[$c]=$((cnt[$c] + value)) ;;
            esac
          done < <(grep -v '^#' "$tmp/sys.out" | grep -v '^$' | sed 's/<not counted>/0/')
        else
          # strace -c: "% time seconds usecs/call calls [errors] syscall"
          while read -r name calls; do
            c=$(sys_class "$name"); cnt[$c]=$((cnt[$c] + calls))
            cnt[total]=$((cnt[total] + calls))
          done < <(awk '$NF != "total" && $1 ~ /^[0-9.]+$/ && $2 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ { print $NF, $4 }' "$tmp/sys.out")
        fi
        printf '%s\t%s\t%d' "$id" "$impl" "$r" >>"$tmp/sys.tsv"
        for k in total read write wait ctl uring; do
          awk -v c="${cnt[$k]}" -v m="$msgs" 'BEGIN { printf "\t%.4f", c / m }' >>"$tmp/sys.tsv"
        done
        printf '\n' >>"$tmp/sys.tsv"
        unset cnt
      done
    done
  done
fi

# --------------------------------------------- memory per idle connection --
: >"$tmp/rss.tsv"
need=$((IDLE_CONNS + 200))
if [ "$nofile" != unlimited ] && [ "$nofile" -lt "$need" ]; then
  IDLE_CONNS=$(((nofile - 200) / 1000 * 1000))
  say "RLIMIT_NOFILE is $nofile: measuring $IDLE_CONNS idle connections instead"
fi
if ! want rss; then
  :
elif [ "$IDLE_CONNS" -lt 1000 ]; then
  skip "memory per idle connection (RLIMIT_NOFILE $nofile is too low)"
else
  say "memory: $IDLE_CONNS idle connections x ${#impls_echo[@]} servers x $RSS_ROUNDS rounds"
  for ((r = 0; r < RSS_ROUNDS; r++)); do
    for impl in $(rotate "$r" "${impls_echo[@]}"); do
      start_server "$impl" || exit 1
      # Warm up first, so the baseline already holds the I/O buffers.
      DUR=0.2 client --port "$srv_port" --conns 10 --size 16384 --duration 0.2 --warmup 0 >/dev/null || true
      sleep 0.1
      before=$(server_rss_kb "$srv_real")
      : >"$tmp/idle.out"
      timeout -k 5 120 "${CLI[@]}" "$bin/evr-bench-echo" --port "$srv_port" \
        --conns "$IDLE_CONNS" --idle >"$tmp/idle.out" 2>>"$tmp/client.err" &
      cli=$!
      pids+=("$cli")
      ok=0
      for ((i = 0; i < 1200; i++)); do
        grep -q '^IDLE' "$tmp/idle.out" && { ok=1; break; }
        kill -0 "$cli" 2>/dev/null || break
        sleep 0.05
      done
      sleep 0.2
      after=$(server_rss_kb "$srv_real")
      stop_pid "$cli"
      stop_pid "$srv_pid"
      if [ $ok != 1 ]; then
        echo "run.sh: idle connections to $impl failed: $(tail -3 "$tmp/client.err")" >&2; exit 1
      fi
      awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" -v i="$impl" -v r="$r" \
        'BEGIN { printf "%s\t%d\t%.1f\n", i, r, (a - b) * 1024 / n }' >>"$tmp/rss.tsv"
    done
  done
fi

# ---------------------------------------------------------- loop overhead --
: >"$tmp/ovh.tsv"
want ovh && say "loop overhead: 6 configurations x ${#impls_ovh[@]} libraries x $OVH_ROUNDS rounds"
want ovh || OVH_ROUNDS=0
for ((r = 0; r < OVH_ROUNDS; r++)); do
  for n in 100 1000 10000; do
    for a in 1 100; do
      for impl in $(rotate "$r" "${impls_ovh[@]}"); do
        line=$(timeout -k 5 300 "${SRV[@]}" "$(ovh_bin "$impl")" --pipes $n --active $a \
                 --writes $OVH_WRITES --runs $OVH_RUNS 2>>"$tmp/ovh.err" | sed -n 's/^RESULT //p' || true)
        if [ -z "$line" ]; then
          echo "run.sh: loop overhead on $impl failed: $(tail -3 "$tmp/ovh.err")" >&2; exit 1
        fi
        printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\n' "N=$n A=$a" "$impl" "$r" "$(field total_us "$line")" \
          "$(field setup_us "$line")" "$(field run_us "$line")" "$(field pipes "$line")" >>"$tmp/ovh.tsv"
      done
    done
  done
done

# ------------------------------------------------------------------ timers -
: >"$tmp/timers.md"
if ! want timers; then
  :
elif say "timers: bench_timers $TIMERS_MAX"; ! timeout -k 5 600 "${SRV[@]}" "$bin/bench_timers" "$TIMERS_MAX" >"$tmp/timers.md" 2>"$tmp/timers.err"; then
  echo "run.sh: bench_timers failed: $(tail -3 "$tmp/timers.err")" >&2; exit 1
fi

# ------------------------------------------------------------------- proxy -
: >"$tmp/proxy.tsv"
proxy_bin="" echo_bin=""
for d in ${EVR_BENCH_SAMPLES_DIR:+"$EVR_BENCH_SAMPLES_DIR"} "$bin" "$root/build/bin"; do
  if [ -x "$d/evr-proxy" ] && [ -x "$d/evr-echo" ]; then
    proxy_bin=$d/evr-proxy echo_bin=$d/evr-echo; break
  fi
done
start_daemon() { # log-file command... -> sets dmn_pid, dmn_port
  local log=$1; shift
  : >"$log"
  timeout -k 5 900 "${SRV[@]}" "$@" >/dev/null 2>"$log" &
  dmn_pid=$!
  pids+=("$dmn_pid")
  local i
  for ((i = 0; i < 100; i++)); do
    dmn_port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$dmn_port" ] && return 0
    kill -0 "$dmn_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "run.sh: $1 did not start: $(tail -3 "$log")" >&2
  return 1
}
# HAProxy (Debian's haproxy), mode tcp, one thread, in front of the same
# echo server: the reference proxy of the proxy rows. Sets haproxy_pid and
# haproxy_port; the port is found by trying a few free-looking ones.
start_haproxy() { # echo-port
  local try port cfg=$tmp/haproxy.cfg
  for ((try = 0; try < 20; try++)); do
    port=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue # in use
    cat >"$cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
listen bench
  bind 127.0.0.1:$port
  server echo 127.0.0.1:$1
CFG
    : >"$tmp/haproxy.log"
    timeout -k 5 900 "${SRV[@]}" haproxy -db -f "$cfg" >"$tmp/haproxy.log" 2>&1 &
    haproxy_pid=$!
    pids+=("$haproxy_pid")
    local i
    for ((i = 0; i < 100; i++)); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        haproxy_port=$port
        return 0
      fi
      kill -0 "$haproxy_pid" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$haproxy_pid" 2>/dev/null || true
    haproxy_pid=""
  done
  skip "proxy: HAProxy row (haproxy did not start: $(tail -2 "$tmp/haproxy.log" | tr '\n' ' '))"
  return 1
}
if ! want proxy; then
  :
elif [ -z "$proxy_bin" ]; then
  skip "proxy (evr-proxy and evr-echo are not built: build/bin/evr-proxy)"
else
  say "proxy: $proxy_bin in front of $echo_bin, $PROXY_ROUNDS rounds"
  proxy_ok=1
  if start_daemon "$tmp/echo.log" "$echo_bin" --listen 127.0.0.1:0 --threads 1 --drain-timeout 1; then
    echo_pid=$dmn_pid echo_port=$dmn_port
    if start_daemon "$tmp/proxy.log" "$proxy_bin" --listen 127.0.0.1:0 --threads 1 \
         --upstream "127.0.0.1:$echo_port" --drain-timeout 1; then
      proxy_pid=$dmn_pid proxy_port=$dmn_port
      modes=(direct proxy)
      # The same evr-proxy on io_uring, next to it (each idles while the
      # other is measured), when the kernel allows io_uring.
      puring_pid="" puring_port=""
      pver=$("$proxy_bin" --version 2>/dev/null || true)
      if [[ $pver != *"backends:"*" io_uring"* ]]; then
        skip "proxy: evr-proxy on io_uring row (io_uring is not built into $proxy_bin: ${pver:-no --version})"
      elif start_daemon "$tmp/proxy-uring.log" env EVR_BACKEND=io_uring "$proxy_bin" --listen 127.0.0.1:0 \
           --threads 1 --upstream "127.0.0.1:$echo_port" --drain-timeout 1 2>/dev/null; then
        for ((i = 0; i < 40; i++)); do # the "started: ..., backend NAME" line follows
          grep -q ' started: ' "$tmp/proxy-uring.log" && break
          sleep 0.05
        done
        if grep -q ' started: .*backend io_uring' "$tmp/proxy-uring.log"; then
          puring_pid=$dmn_pid puring_port=$dmn_port
          modes+=(proxy-uring)
        else
          stop_pid "$dmn_pid"
          skip "proxy: evr-proxy on io_uring row (EVR_BACKEND=io_uring did not select io_uring: $(grep ' started: ' "$tmp/proxy-uring.log" | sed 's/.*started: //'))"
        fi
      else
        stop_pid "$dmn_pid"
        err=$(grep ' error: ' "$tmp/proxy-uring.log" | head -1 | sed 's/^.* error: //')
        case $err in
          loop:*) skip "proxy: evr-proxy on io_uring row (the kernel refuses io_uring: evr-proxy with EVR_BACKEND=io_uring: $err)" ;;
          *) skip "proxy: evr-proxy on io_uring row (evr-proxy with EVR_BACKEND=io_uring did not start: ${err:-$(tail -1 "$tmp/proxy-uring.log")})" ;;
        esac
      fi
      haproxy_pid="" haproxy_port=""
      if command -v haproxy >/dev/null 2>&1 && start_haproxy "$echo_port"; then
        modes+=(haproxy)
      elif ! command -v haproxy >/dev/null 2>&1; then
        skip "proxy: HAProxy row (haproxy is not installed: apt-get install haproxy)"
      fi
      for ((r = 0; r < PROXY_ROUNDS; r++)); do
        for pw in "bytes:--conns 10 --size 16384:bytes_per_s" "requests:--conns 100 --size 64:msgs_per_s"; do
          id=${pw%%:*} rest=${pw#*:}; opts=${rest%:*} key=${rest##*:}
          # rotate the order of the modes from round to round
          order=()
          for ((k = 0; k < ${#modes[@]}; k++)); do order+=("${modes[$(((k + r) % ${#modes[@]}))]}"); done
          for mode in "${order[@]}"; do
            case $mode in
              direct) port=$echo_port ;; proxy) port=$proxy_port ;; haproxy) port=$haproxy_port ;;
              proxy-uring) port=$puring_port ;;
            esac
            # shellcheck disable=SC2086
            line=$(client --port "$port" $opts --duration "$DUR" --warmup "$WARM" || true)
            v=$(field "$key" "$line")
            if [ -z "$v" ]; then
              echo "run.sh: proxy $id through $mode failed: $(tail -3 "$tmp/client.err")" >&2
              proxy_ok=0; continue
            fi
            printf '%s\t%s\t%d\t%s\n' "$id" "$mode" "$r" "$v" >>"$tmp/proxy.tsv"
          done
        done
      done
      stop_pid "$proxy_pid"
      [ -z "$puring_pid" ] || stop_pid "$puring_pid"
      [ -z "$haproxy_pid" ] || stop_pid "$haproxy_pid"
    else
      proxy_ok=0
    fi
    stop_pid "$echo_pid"
  else
    proxy_ok=0
  fi
  [ $proxy_ok = 1 ] || { skip "proxy (a daemon or a client run failed)"; : >"$tmp/proxy.tsv"; }
fi

# --------------------------------------------------------------------- tls -
# evr-proxy terminating TLS (--tls-cert/--tls-key) against HAProxy (mode
# tcp, `bind ... ssl crt`, nbthread 1), both on CPU 0 in front of nginx (one
# process, HTTP on 127.0.0.1, also on CPU 0): full handshakes per second
# (`openssl s_time -new`: no resumption, no request) and HTTPS requests per
# second (`wrk`, keep-alive, 50 connections); clients on CPU 1. One ECDSA
# P-256 certificate for both, made here.
: >"$tmp/tls.tsv"
free_port() { # -> a port nothing answers on
  local try port
  for ((try = 0; try < 50; try++)); do
    port=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    echo "$port"
    return 0
  done
  return 1
}
wait_port() { # pid port -> 0 once the port answers, 1 if pid died or 5 s passed
  local i
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
if ! want tls; then
  :
elif [ -z "$proxy_bin" ]; then
  skip "tls (evr-proxy is not built)"
elif ! "$proxy_bin" --help 2>&1 | grep -q -- '--tls-cert'; then
  skip "tls (evr-proxy is built without TLS: libssl-dev)"
elif ! command -v openssl >/dev/null || ! command -v nginx >/dev/null; then
  skip "tls (needs openssl and nginx: apt-get install openssl nginx-light)"
else
  say "tls: evr-proxy and HAProxy terminating TLS in front of nginx, $TLS_ROUNDS rounds"
  tls_ok=1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$tmp/tls.key" -out "$tmp/tls.crt" >/dev/null 2>&1 || tls_ok=0
  cat "$tmp/tls.crt" "$tmp/tls.key" >"$tmp/tls.pem" 2>/dev/null || tls_ok=0
  ngx_port=$(free_port) || tls_ok=0
  mkdir -p "$tmp/nginx"
  cat >"$tmp/nginx.conf" <<CFG
daemon off;
master_process off;
worker_processes 1;
error_log $tmp/nginx/error.log warn;
pid $tmp/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$ngx_port;
    location / { return 200 "hello from nginx\n"; }
  }
}
CFG
  ngx_pid="" ptls_pid="" htls_pid=""
  if [ $tls_ok = 1 ]; then
    timeout -k 5 900 "${SRV[@]}" nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx.conf" >"$tmp/nginx.out" 2>&1 &
    ngx_pid=$!
    pids+=("$ngx_pid")
    wait_port "$ngx_pid" "$ngx_port" || { tls_ok=0; skip "tls (nginx did not start: $(tail -2 "$tmp/nginx.out" "$tmp/nginx/error.log" 2>/dev/null | tr '\n' ' '))"; }
  fi
  tls_modes=()
  if [ $tls_ok = 1 ] && start_daemon "$tmp/ptls.log" "$proxy_bin" --listen 127.0.0.1:0 --threads 1 \
       --upstream "127.0.0.1:$ngx_port" --tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key" --drain-timeout 1; then
    ptls_pid=$dmn_pid ptls_port=$dmn_port
    tls_modes+=(proxy)
  else
    tls_ok=0
  fi
  if [ $tls_ok = 1 ] && command -v haproxy >/dev/null; then
    htls_port=$(free_port) || true
    cat >"$tmp/haproxy-tls.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
  tune.ssl.default-dh-param 2048
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
listen tls
  bind 127.0.0.1:$htls_port ssl crt $tmp/tls.pem
  server nginx 127.0.0.1:$ngx_port
CFG
    timeout -k 5 900 "${SRV[@]}" haproxy -db -f "$tmp/haproxy-tls.cfg" >"$tmp/haproxy-tls.log" 2>&1 &
    htls_pid=$!
    pids+=("$htls_pid")
    if wait_port "$htls_pid" "$htls_port"; then
      tls_modes+=(haproxy)
    else
      skip "tls: HAProxy row (haproxy did not start: $(tail -2 "$tmp/haproxy-tls.log" | tr '\n' ' '))"
    fi
  elif [ $tls_ok = 1 ]; then
    skip "tls: HAProxy row (haproxy is not installed: apt-get install haproxy)"
  fi
  have_wrk=1
  command -v wrk >/dev/null || { have_wrk=0; skip "tls: HTTPS requests/s (wrk is not installed: apt-get install wrk)"; }
  bound=$(awk -v d="$TLS_DUR" 'BEGIN { printf "%d", d + 60 }')
  for ((r = 0; r < TLS_ROUNDS && tls_ok == 1; r++)); do
    order=()
    for ((k = 0; k < ${#tls_modes[@]}; k++)); do order+=("${tls_modes[$(((k + r) % ${#tls_modes[@]}))]}"); done
    for mode in "${order[@]}"; do
      case $mode in proxy) port=$ptls_port ;; haproxy) port=$htls_port ;; esac
      # Handshakes: the count s_time reports over the wall time it took.
      t0=$(date +%s.%N)
      out=$(timeout -k 5 "$bound" "${CLI[@]}" openssl s_time -connect "127.0.0.1:$port" -new \
              -time "$TLS_DUR" 2>&1 </dev/null || true)
      t1=$(date +%s.%N)
      n=$(printf '%s\n' "$out" | sed -n 's/^\([0-9][0-9]*\) connections in .*real seconds.*/\1/p' | head -1)
      if [ -n "$n" ] && [ "$n" -gt 0 ]; then
        printf 'handshakes\t%s\t%d\t%s\n' "$mode" "$r" "$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')" >>"$tmp/tls.tsv"
      else
        echo "run.sh: tls handshakes through $mode failed: $(printf '%s\n' "$out" | tail -3)" >&2
        tls_ok=0
      fi
      [ $have_wrk = 1 ] || continue
      out=$(timeout -k 5 "$bound" "${CLI[@]}" wrk -t1 -c50 -d"${TLS_DUR}s" "https://127.0.0.1:$port/" 2>&1 || true)
      v=$(printf '%s\n' "$out" | sed -n 's/^Requests\/sec: *\([0-9.][0-9.]*\).*/\1/p')
      errs=$(printf '%s\n' "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *//p; s/^ *Socket errors: *//p')
      if [ -n "$v" ] && [ -z "$errs" ]; then
        printf 'requests\t%s\t%d\t%s\n' "$mode" "$r" "$v" >>"$tmp/tls.tsv"
      else
        echo "run.sh: tls requests through $mode failed: $(printf '%s\n' "$out" | tail -4)" >&2
        tls_ok=0
      fi
    done
  done
  [ -z "$ptls_pid" ] || stop_pid "$ptls_pid"
  [ -z "$htls_pid" ] || stop_pid "$htls_pid"
  [ -z "$ngx_pid" ] || stop_pid "$ngx_pid"
  [ $tls_ok = 1 ] || { skip "tls (a server or a client run failed)"; : >"$tmp/tls.tsv"; }
fi
# --------------------------------------------------------- chat: fan-out ---
# The chat server of examples/chat.c (evr) and the same server on libuv and
# libev (bench/chat_uv.c, bench/chat_ev.c). evr-bench-chat joins N receivers
# and one sender; the sender keeps 256 lines of 64 B in flight and every
# receiver gets every line. Figure: lines delivered per second, counted at
# the receivers (one line to N receivers is N messages).
impls_chat=()
[ -x "$build/examples/chat" ] && impls_chat+=(evr) || skip "chat: evr (examples/chat is not built: EVR_BUILD_EXAMPLES=OFF)"
[ -x "$bin/bench-chat-uv" ] && impls_chat+=(libuv) || skip "chat: libuv (libuv1-dev not found at build time)"
[ -x "$bin/bench-chat-ev" ] && impls_chat+=(libev) || skip "chat: libev (libev-dev not found at build time)"
# The evr server again on io_uring, when the echo section found it works
# (or, that section not wanted, the same probe does).
if want chat && [ "${impls_chat[0]:-}" = evr ]; then
  if want echo || want sys || want rss; then
    printf '%s\n' "${impls_echo[@]}" | grep -qx evr-uring && impls_chat+=(evr-uring)
  elif uring_probe; then
    impls_chat+=(evr-uring)
  fi
fi
chat_workloads=("n100:--clients 100" "n1000:--clients 1000")
chat_client() { # args... -> the RESULT line's fields on stdout
  local bound
  bound=$(awk -v d="$CHAT_DUR" 'BEGIN { printf "%d", d + 60 }')
  timeout -k 5 "$bound" "${CLI[@]}" "$bin/evr-bench-chat" "$@" 2>>"$tmp/client.err" \
    | sed -n 's/^RESULT //p'
}
: >"$tmp/chat.tsv"
want chat || CHAT_ROUNDS=0
[ ${#impls_chat[@]} -gt 0 ] || CHAT_ROUNDS=0
[ "$CHAT_ROUNDS" -gt 0 ] && say "chat fan-out: ${#chat_workloads[@]} workloads x ${#impls_chat[@]} servers x $CHAT_ROUNDS rounds, ${CHAT_DUR} s each"
for ((r = 0; r < CHAT_ROUNDS; r++)); do
  for wl in "${chat_workloads[@]}"; do
    id=${wl%%:*} opts=${wl#*:}
    for impl in $(rotate "$r" "${impls_chat[@]}"); do
      start_server "chat-$impl" || exit 1
      c0=$(cpu_ticks "$srv_real")
      # shellcheck disable=SC2086
      line=$(chat_client --port "$srv_port" $opts --duration "$CHAT_DUR" --warmup "$WARM" || true)
      c1=$(cpu_ticks "$srv_real")
      stop_pid "$srv_pid"
      if [ -z "$line" ] || [ "$(field errors "$line")" != 0 ]; then
        echo "run.sh: chat $id on $impl failed: $(tail -3 "$tmp/client.err")" >&2
        exit 1
      fi
      # server CPU per delivered message, over the whole client run (joins
      # and warm-up included, so an upper bound)
      cpu=$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" -v m="$(field msgs_per_s "$line")" -v d="$CHAT_DUR" \
              'BEGIN { printf "%.1f", (b - a) * 1e9 / t / (m * d) }')
      printf '%s\t%s\t%d\t%s\t%s\n' "$id" "$impl" "$r" "$(field msgs_per_s "$line")" "$cpu" >>"$tmp/chat.tsv"
    done
  done
  say "chat round $((r + 1))/$CHAT_ROUNDS done"
done

# ================================================================ report ===
# summarize FILE VALUE_COLUMN HIGHER_IS_BETTER [BASE]: for each (key, impl)
# the median, min and max over rounds, and the median over rounds of the
# ratio base/peer (throughput) or peer/base (costs), so > 1 always means the
# base (evr unless BASE names another impl) is better. Output: key impl
# median min max ratio (ratio "-" for the base).
summarize() {
  awk -F'\t' -v col="$2" -v hib="$3" -v base="${4:-evr}" '
    function sort(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
    function median(a, n) { sort(a, n); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    { k = $1; i = $2; r = $3; v = $col + 0
      if (!((k, i) in cnt)) { order[++no] = k SUBSEP i }
      vals[k, i, ++cnt[k, i]] = v; byround[k, i, r] = v; rounds[k, r] = 1 }
    END {
      for (o = 1; o <= no; o++) {
        split(order[o], p, SUBSEP); k = p[1]; i = p[2]; n = cnt[k, i]
        delete a; for (j = 1; j <= n; j++) a[j] = vals[k, i, j]
        med = median(a, n); lo = a[1]; hi = a[n]
        ratio = "-"
        if (i != base) {
          delete b; m = 0
          for (kr in rounds) { split(kr, q, SUBSEP); if (q[1] != k) continue; rr = q[2]
            if (((k, i, rr) in byround) && ((k, base, rr) in byround) && byround[k, i, rr] > 0 && byround[k, base, rr] > 0)
              b[++m] = hib ? byround[k, base, rr] / byround[k, i, rr] : byround[k, i, rr] / byround[k, base, rr] }
          if (m) ratio = sprintf("%.2f", median(b, m))
        }
        printf "%s\t%s\t%.6g\t%.6g\t%.6g\t%s\n", k, i, med, lo, hi, ratio
      }
    }' "$1"
}
fmt() { # number -> human (thousands separators for big, 2-3 significant otherwise)
  awk -v x="$1" 'BEGIN {
    if (x >= 1000) { s = sprintf("%.0f", x); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }
    else if (x >= 100) printf "%.0f\n", x; else if (x >= 10) printf "%.1f\n", x; else printf "%.2f\n", x }'
}
med_of() { # file key impl -> median of column 4 over rounds
  awk -F'\t' -v k="$2" -v i="$3" '$1 == k && $2 == i { a[++n] = $4 }
    END { if (!n) exit; for (x = 2; x <= n; x++) { t = a[x]; for (y = x - 1; y >= 1 && a[y] > t; y--) a[y + 1] = a[y]; a[y + 1] = t }
          print n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }' "$1"
}
ratio_fmt() { case ${1:-} in ""|-) echo "—" ;; *) echo "$1×" ;; esac; }

summarize "$tmp/echo.tsv" 4 1 >"$tmp/echo.sum"
summarize "$tmp/echo.tsv" 5 0 >"$tmp/echo.p50"
summarize "$tmp/echo.tsv" 6 0 >"$tmp/echo.p99"
summarize "$tmp/echo.tsv" 7 0 >"$tmp/echo.cpu"
summarize "$tmp/sys.tsv" 4 0 >"$tmp/sys.sum"
# rss.tsv has no key column: add one
awk -F'\t' -v OFS='\t' '{ print "rss", $0 }' "$tmp/rss.tsv" >"$tmp/rss.k"
summarize "$tmp/rss.k" 4 0 >"$tmp/rss.sum"
summarize "$tmp/rss.k" 4 0 evr-stream >"$tmp/rss-stream.sum"
summarize "$tmp/ovh.tsv" 4 0 >"$tmp/ovh.sum"
summarize "$tmp/ovh.tsv" 5 0 >"$tmp/ovh.setup"
summarize "$tmp/ovh.tsv" 6 0 >"$tmp/ovh.run"
summarize "$tmp/chat.tsv" 4 1 >"$tmp/chat.sum"
summarize "$tmp/chat.tsv" 5 0 >"$tmp/chat.cpu"
get() { # file key impl column(3=median 4=min 5=max 6=ratio)
  awk -F'\t' -v k="$2" -v i="$3" -v c="$4" '$1 == k && $2 == i { print $c; exit }' "$1"
}
# median of a per-round column of sys.tsv for one workload and impl
# (col 4..9 = total read write wait ctl uring)
sys_med() { # key impl col
  awk -F'\t' -v k="$1" -v i="$2" -v c="$3" '$1 == k && $2 == i { a[++n] = $c }
    END { if (!n) exit; for (x = 2; x <= n; x++) { t = a[x]; for (y = x - 1; y >= 1 && a[y] > t; y--) a[y + 1] = a[y]; a[y + 1] = t }
          printf "%.2f\n", n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }' "$tmp/sys.tsv"
}
# evr-stream and the io_uring servers are evr too: the peers are the other
# libraries.
peers_echo=()
for i in "${impls_echo[@]}"; do case $i in evr*) ;; *) peers_echo+=("$i") ;; esac; done
peers_ovh=("${impls_ovh[@]:1}")
# The io_uring servers that ran, each with its twin on the default backend.
# Their own summaries take them as the base of the ratios (against the
# peers and against the twin).
uring_impls=()
for i in evr-uring evr-stream-uring; do
  printf '%s\n' "${impls_echo[@]}" | grep -qx "$i" && uring_impls+=("$i")
done
twin() { case $1 in evr-uring) echo evr ;; evr-stream-uring) echo evr-stream ;; esac; }
for i in "${uring_impls[@]}"; do
  summarize "$tmp/echo.tsv" 4 1 "$i" >"$tmp/echo.sum.$i"
  summarize "$tmp/echo.tsv" 7 0 "$i" >"$tmp/echo.cpu.$i"
  summarize "$tmp/sys.tsv" 4 0 "$i" >"$tmp/sys.sum.$i"
  summarize "$tmp/rss.k" 4 0 "$i" >"$tmp/rss.sum.$i"
done

# The best peer for a workload in a summary: the one its base compares worst
# with (lowest median per-round ratio), so the table shows the hardest
# comparison.
best_in() { # summary-file key -> "impl ratio"
  local best="" bv=1e9 v i
  for i in "${peers_echo[@]}"; do
    v=$(get "$1" "$2" "$i" 6)
    [ -z "$v" ] || [ "$v" = - ] && continue
    if awk -v a="$v" -v b="$bv" 'BEGIN { exit !(a < b) }'; then best=$i bv=$v; fi
  done
  [ -n "$best" ] && echo "$best $bv"
}
verdict() { # ratio (>1 = evr better) -> word
  awk -v r="$1" 'BEGIN { if (r >= 1.03) print "ahead"; else if (r >= 0.97) print "on par"; else print "behind" }'
}

timers_table() { # the operation table of bench_timers, as TSV: op n impl... ratios...
  awk -F'|' '/^\| op \|/ { hdr = 1; next } hdr && /^\|---/ { next } hdr && /^\|/ {
      line = ""; for (i = 2; i < NF; i++) { gsub(/^ +| +$/, "", $i); line = line (i > 2 ? "\t" : "") $i } print line; next }
    hdr && !/^\|/ { hdr = 0 }' "$tmp/timers.md"
}
timers_table >"$tmp/timers.tsv"
timers_precision() { # the precision table of bench_timers, as TSV: window impl mean p50 p99 max early
  awk -F'|' '/^\| window \| impl \|/ { hdr = 1; next } hdr && /^\|---/ { next } hdr && /^\|/ {
      line = ""; for (i = 2; i < NF; i++) { gsub(/^ +| +$/, "", $i); line = line (i > 2 ? "\t" : "") $i } print line; next }
    hdr && !/^\|/ { hdr = 0 }' "$tmp/timers.md"
}
timers_precision >"$tmp/timers-prec.tsv"
timer_impls=$(awk -F'|' '/^\| op \|/ { for (i = 5; i < NF; i++) { gsub(/^ +| +$/, "", $i); if ($i ~ / ns$/) { sub(/ ns$/, "", $i); printf "%s ", $i } } exit }' "$tmp/timers.md")
read -r -a timer_impls <<<"$timer_impls"

machine_cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
[ -z "$machine_cpu" ] && machine_cpu=$(uname -m)
cc_path=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
cc_ver=$("$cc_path" --version 2>/dev/null | head -1)
evr_ver=$(sed -n 's/^#define EVR_VERSION_STRING "\(.*\)"/\1/p' "$root/include/evr/version.h" | head -1)
libver() {
  case $1 in
    libuv) pkg-config --modversion libuv 2>/dev/null ;;
    libevent) pkg-config --modversion libevent 2>/dev/null ;;
    libev) local h
           h="$(sed -n 's/^LIBEV_INCLUDE_DIR:PATH=//p' "$build/CMakeCache.txt")/ev.h"
           [ -f "$h" ] && awk '/define EV_VERSION_MAJOR/ { ma = $3 } /define EV_VERSION_MINOR/ { mi = $3 } END { if (ma != "") print ma "." mi }' "$h" ;;
  esac
}
# the default backend, unless EVR_BACKEND names another for the whole run
backend=${EVR_BACKEND:-$(head -1 "$build/backends.txt" 2>/dev/null || echo "?")}
t_end=$(date +%s)

# ------------------------------------------------------------- RESULTS.md --
{
  echo "# evr benchmark results"
  echo
  if [ $quick = 1 ]; then
    echo "**Quick run** (\`bench/run.sh --quick\`): few rounds and short runs, for a smoke check; not for publication."
    echo
  fi
  echo "Written by \`bench/run.sh$([ $quick = 1 ] && echo " --quick")\` on $(date -u +%Y-%m-%d) in $(( (t_end - t_begin) / 60 )) min $(( (t_end - t_begin) % 60 )) s."
  echo "How to run and read this: [docs/benchmarks.md](../docs/benchmarks.md)."
  echo "**Ratios are \"evr vs peer\": above 1.00× evr is better** (more messages/s, or fewer"
  echo "syscalls, bytes, microseconds or nanoseconds). Each ratio is the median of"
  echo "per-round ratios between runs made side by side."
  echo
  echo "## Machine and method"
  echo
  echo "- CPU: $machine_cpu, $ncpu CPUs; shared 2-core machine; Linux $(uname -r)"
  echo "- Compiler: $cc_ver, CMake Release (-O3), static libraries for evr"
  if [ ${#uring_impls[@]} -gt 0 ]; then
    echo -n "- Libraries: evr ${evr_ver:-?} (backend $backend; io_uring for ${uring_impls[*]})"
  else
    echo -n "- Libraries: evr ${evr_ver:-?} (backend $backend)"
  fi
  for l in libuv libevent libev; do
    printf '%s\n' "${impls_echo[@]}" | grep -qx "$l" || continue
    v=$(libver $l || true); echo -n ", $l ${v:-(version unknown)}"
  done
  echo
  echo "- Pinning: $pinning. Implementations run in rotating order, one process at a time."
  echo "- Echo: $ROUNDS rounds of ${DUR} s per workload and server (${WARM} s warm-up not counted), one message in flight per connection, every byte verified by \`evr-bench-echo\`."
  [ ${#skipped[@]} -gt 0 ] && { echo "- Skipped in this run:"; for s in "${skipped[@]}"; do echo "  - $s"; done; }
  echo

  echo "## Targets"
  echo
  echo "| target | evr | best peer | evr vs best peer | |"
  echo "|---|---:|---:|---:|---|"
  # target_rows LABEL-PREFIX IMPL SUMMARY KEY...: IMPL (the base of
  # SUMMARY's ratios) against the best peer, one row per key
  target_rows() {
    local label=$1 impl=$2 sum=$3 id b bi br v
    shift 3
    for id in "$@"; do
      b=$(best_in "$sum" "$id") || true
      v=$(get "$sum" "$id" "$impl" 3)
      [ -z "$b" ] || [ -z "$v" ] && continue
      bi=${b%% *} br=${b##* }
      echo "| $label, $(wl_label "$id") | $(fmt "$v") | $bi $(fmt "$(get "$sum" "$id" "$bi" 3)") | $(ratio_fmt "$br") | $(verdict "$br") |"
    done
  }
  target_rows "echo msgs/s" evr "$tmp/echo.sum" c1 c100 c1000 c10x16k
  target_rows "syscalls per message" evr "$tmp/sys.sum" c100 c1000
  target_rows "chat fan-out msgs/s" evr "$tmp/chat.sum" n100 n1000
  if printf '%s\n' "${uring_impls[@]:-}" | grep -qx evr-uring; then
    target_rows "echo msgs/s on io_uring (evr-uring)" evr-uring "$tmp/echo.sum.evr-uring" c1 c100 c1000 c10x16k
    target_rows "syscalls per message on io_uring (evr-uring)" evr-uring "$tmp/sys.sum.evr-uring" c100 c1000
  fi
  if printf '%s\n' "${uring_impls[@]:-}" | grep -qx evr-stream-uring; then
    # The completion path's targets: streams on io_uring against the best
    # peer (msgs/s), libev (server CPU per message, a ratio of 1.05× or
    # more is 0.95× of libev's CPU or less) and 0.6 syscalls per message.
    target_rows "echo msgs/s, streams on io_uring (evr-stream-uring)" evr-stream-uring "$tmp/echo.sum.evr-stream-uring" c100 c1000
    for id in c100 c1000; do
      r=$(get "$tmp/echo.cpu.evr-stream-uring" "$id" libev 6)
      [ -n "$r" ] || continue
      ok=$(awk -v r="$r" 'BEGIN { print (r >= 1/0.95) ? "met" : "missed" }')
      echo "| server CPU per message ≤ 0.95× libev's, streams on io_uring, $(wl_label "$id") (ns) | $(fmt "$(get "$tmp/echo.cpu.evr-stream-uring" "$id" evr-stream-uring 3)") | libev $(fmt "$(get "$tmp/echo.cpu.evr-stream-uring" "$id" libev 3)") | $(ratio_fmt "$r") | $ok |"
    done
    for id in c100 c1000; do
      v=$(get "$tmp/sys.sum.evr-stream-uring" "$id" evr-stream-uring 3)
      [ -n "$v" ] || continue
      b=$(best_in "$tmp/sys.sum.evr-stream-uring" "$id") || true
      ok=$(awk -v v="$v" 'BEGIN { print (v <= 0.6) ? "met" : "missed" }')
      echo "| syscalls per message ≤ 0.6, streams on io_uring, $(wl_label "$id") | $(fmt "$v") | ${b%% *} $(fmt "$(get "$tmp/sys.sum.evr-stream-uring" "$id" "${b%% *}" 3)") | $(ratio_fmt "${b##* }") | $ok |"
    done
  fi
  if grep -q "$(printf '\tproxy-uring\t')" "$tmp/proxy.tsv" 2>/dev/null &&
     grep -q "$(printf '\thaproxy\t')" "$tmp/proxy.tsv"; then
    summarize "$tmp/proxy.tsv" 4 0 haproxy >"$tmp/proxy.haproxy.t"
    for id in bytes requests; do
      r=$(get "$tmp/proxy.haproxy.t" "$id" proxy-uring 6)
      [ -n "$r" ] || continue
      ok=$(awk -v r="$r" 'BEGIN { print (r >= 1.1) ? "met" : "missed" }')
      echo "| evr-proxy on io_uring ≥ 1.1× HAProxy, $([ $id = bytes ] && echo bytes/s || echo requests/s) | $(fmt "$(get "$tmp/proxy.haproxy.t" "$id" proxy-uring 3)") | HAProxy $(fmt "$(get "$tmp/proxy.haproxy.t" "$id" haproxy 3)") | $(ratio_fmt "$r") | $ok |"
    done
  fi
  if grep -q "$(printf '\thaproxy\t')" "$tmp/tls.tsv" 2>/dev/null; then
    summarize "$tmp/tls.tsv" 4 1 proxy >"$tmp/tls.sum.t"
    for id in handshakes requests; do
      r=$(get "$tmp/tls.sum.t" "$id" haproxy 6)
      [ -n "$r" ] || continue
      ok=$(awk -v r="$r" 'BEGIN { print (r >= 1.0) ? "met" : "missed" }')
      echo "| evr-proxy terminating TLS ≥ 1.0× HAProxy, $([ $id = handshakes ] && echo "full handshakes/s" || echo "HTTPS requests/s") | $(fmt "$(get "$tmp/tls.sum.t" "$id" proxy 3)") | HAProxy $(fmt "$(get "$tmp/tls.sum.t" "$id" haproxy 3)") | $(ratio_fmt "$r") | $ok |"
    done
  fi
  if [ -s "$tmp/ovh.sum" ] && printf '%s\n' "${peers_ovh[@]}" | grep -qx libev; then
    for k in "N=100 A=1" "N=1000 A=1" "N=10000 A=1" "N=100 A=100" "N=1000 A=100" "N=10000 A=100"; do
      r=$(get "$tmp/ovh.sum" "$k" libev 6)
      echo "| loop overhead incl. setup, $k (µs) | $(fmt "$(get "$tmp/ovh.sum" "$k" evr 3)") | libev $(fmt "$(get "$tmp/ovh.sum" "$k" libev 3)") | $(ratio_fmt "$r") | $(verdict "$r") |"
    done
  fi
  # mem_target LABEL IMPL SUMMARY: IMPL's bytes per idle connection against
  # the target (≤ 256 B and below libuv's); SUMMARY has ratios against IMPL.
  mem_target() {
    local e u ok
    e=$(get "$tmp/rss.sum" rss "$2" 3)
    [ -n "$e" ] || return 0
    u=$(get "$tmp/rss.sum" rss libuv 3)
    ok=$(awk -v e="$e" -v u="${u:-1e9}" 'BEGIN { print ((e <= 256 && e < u) ? "met" : "missed") }')
    echo "| $1 | $(fmt "$e") | libuv $( [ -n "$u" ] && fmt "$u" || echo "—") | $(ratio_fmt "$(get "$3" rss libuv 6)") | $ok |"
  }
  if [ -s "$tmp/rss.sum" ]; then
    mem_target "memory per idle connection ≤ 256 B and below libuv's (B)" evr "$tmp/rss.sum"
    mem_target "the same with evr_stream_t (evr-stream) (B)" evr-stream "$tmp/rss-stream.sum"
  fi
  if [ ${#timer_impls[@]} -gt 1 ] && [ -s "$tmp/timers.tsv" ]; then
    # restart at the largest size: at least 3x faster than the faster peer
    nmax=$(awk -F'\t' '{ if ($2 + 0 > m) m = $2 + 0 } END { print m }' "$tmp/timers.tsv")
    awk -F'\t' -v nmax="$nmax" -v ni="${#timer_impls[@]}" -v names="${timer_impls[*]}" '
      BEGIN { split(names, nm, " ") }
      { op = $1; n = $2; evr = $4; best = 0; bn = ""
        for (k = 2; k <= ni; k++) { v = $(3 + k); if (bn == "" || v < best) { best = v; bn = nm[k] } }
        r = best / evr
        if (op == "restart (idle)" && n == nmax)
          printf "| timer restart (idle), %d timers: ≥ 3× the faster peer (ns) | %.1f | %s %.1f | %.2f× | %s |\n", n, evr, bn, best, r, (r >= 3 ? "met" : "missed")
        if (op != "restart (idle)") { tot[op]++; if (r >= 0.97) okc[op]++; if (!(op in worst) || r < worst[op]) { worst[op] = r; wn[op] = n } }
      }
      END { for (op in tot) printf "| timer %s no slower than the faster peer, all sizes | | | worst %.2f× (%d timers) | %s |\n", op, worst[op], wn[op], (okc[op] == tot[op] ? "met" : "missed") }' "$tmp/timers.tsv" | sort -t'|' -k2,2
  fi
  if printf '%s\n' "${timer_impls[@]}" | grep -qx libev && [ -s "$tmp/timers.tsv" ]; then
    # every operation, every size: evr no slower than libev (within 3%)
    awk -F'\t' -v ni="${#timer_impls[@]}" -v names="${timer_impls[*]}" '
      BEGIN { split(names, nm, " "); for (k = 2; k <= ni; k++) if (nm[k] == "libev") ev = 3 + k }
      { op = $1; r = $ev / $4; tot[op]++; if (r >= 0.97) okc[op]++
        if (!(op in worst) || r < worst[op]) { worst[op] = r; wn[op] = $2 } }
      END { for (op in tot) printf "| timer %s no slower than libev, all sizes | | | worst %.2f× (%d timers) | %s |\n", op, worst[op], wn[op], (okc[op] == tot[op] ? "met" : "missed") }' "$tmp/timers.tsv" | sort -t'|' -k2,2
  fi
  if [ -s "$tmp/timers-prec.tsv" ]; then
    # per window: evr's mean and p99 lateness at most libev's, and nothing early
    awk -F'\t' '
      { w = $1; if (!(w in seen)) { seen[w] = 1; order[++nw] = w }
        mean[w, $2] = $3; p99[w, $2] = $5; early[w, $2] = $7 }
      END { for (k = 1; k <= nw; k++) { w = order[k]
              if (!((w, "evr") in mean) || !((w, "libev") in mean)) continue
              ok = mean[w, "evr"] <= mean[w, "libev"] && p99[w, "evr"] <= p99[w, "libev"] && early[w, "evr"] == 0
              printf "| timer precision, 100,000 timers over %s: mean and p99 lateness ≤ libev'"'"'s, 0 early (ms) | mean %.3f, p99 %.3f, %d early | libev mean %.3f, p99 %.3f, %d early | — | %s |\n", w, mean[w, "evr"], p99[w, "evr"], early[w, "evr"], mean[w, "libev"], p99[w, "libev"], early[w, "libev"], (ok ? "met" : "missed") } }' "$tmp/timers-prec.tsv"
  fi
  echo
  echo "\"Best peer\" is the peer evr (or, in the io_uring rows, evr-uring) compares worst with. The ratio is the median of per-round ratios, so it can differ from the ratio of the two medians shown. \"on par\" means within 3%; the machine is shared, so differences of a few percent are noise."
  echo

  echo "## Echo throughput and latency"
  echo
  echo "![echo throughput](../docs/img/bench-echo.png)"
  echo
  echo "The chart shows each server's messages/s relative to evr's in the same round (the median of per-round ratios); the table has the absolute figures."
  echo
  echo "| workload | server | msgs/s (median) | min – max | p50 µs | p99 µs | server CPU ns/msg | evr vs server, msgs/s | evr vs server, CPU/msg |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r k i med lo hi ratio; do
    echo "| $(wl_label "$k") | $i | $(fmt "$med") | $(fmt "$lo") – $(fmt "$hi") | $(fmt "$(get "$tmp/echo.p50" "$k" "$i" 3)") | $(fmt "$(get "$tmp/echo.p99" "$k" "$i" 3)") | $(fmt "$(get "$tmp/echo.cpu" "$k" "$i" 3)") | $(ratio_fmt "$ratio") | $(ratio_fmt "$(get "$tmp/echo.cpu" "$k" "$i" 6)") |"
  done <"$tmp/echo.sum"
  echo
  echo "Server CPU ns/msg is the server's user + system CPU time over the whole client run (from /proc, 1/$clk_tck s resolution) divided by the messages it echoed: with one core each, the load generator is often the bottleneck, and then this column, not msgs/s, shows which server does less work per message."
  echo "evr is measured with raw watchers (\`evr\`, the baseline of every ratio in this table) and with its buffered streams (\`evr-stream\`: \`evr_stream_t\`, \`evr_stream_write_copy()\`, water marks)$([ ${#uring_impls[@]} -gt 0 ] && echo ", each on the default backend ($backend) and on io_uring (\`evr-uring\`, \`evr-stream-uring\`: the same program with \`EVR_BACKEND=io_uring\`; their ratios against the peers are in [evr on io_uring](#evr-on-io_uring))"). libevent is measured twice: with raw events (\`libevent\`) and with bufferevents (\`libevent-bev\`)."
  echo

  echo "## System calls per echoed message"
  echo
  if [ -s "$tmp/sys.sum" ]; then
    echo "Counted with \`$sys_tool\` on the server while \`evr-bench-echo\` runs 100, then 1,000 connections of 64 B for ${SYS_DUR} s; $SYS_ROUNDS round(s); counts divided by the messages echoed (connecting and closing included). Medians. \`io_uring_enter\` is the io_uring backend's submit-and-wait call; it stands where \`epoll_wait\` and \`epoll_ctl\` stand for the others."
    echo
    echo "![syscalls](../docs/img/bench-syscalls.png)"
    echo
    echo "| connections | server | total | read | write | epoll_wait | epoll_ctl | io_uring_enter | min – max (total) | evr vs server |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    while IFS=$'\t' read -r k i med lo hi ratio; do
      echo "| $(wl_label "$k") | $i | $(fmt "$med") | $(sys_med "$k" "$i" 5) | $(sys_med "$k" "$i" 6) | $(sys_med "$k" "$i" 7) | $(sys_med "$k" "$i" 8) | $(sys_med "$k" "$i" 9) | $(fmt "$lo") – $(fmt "$hi") | $(ratio_fmt "$ratio") |"
    done <"$tmp/sys.sum"
  else
    echo "Skipped (no perf with tracepoint access and no strace)."
  fi
  echo

  echo "## evr on io_uring"
  echo
  if [ ${#uring_impls[@]} -gt 0 ] && { [ -s "$tmp/echo.sum" ] || [ -s "$tmp/sys.sum" ] || [ -s "$tmp/rss.sum" ]; }; then
    echo "The same evr servers with \`EVR_BACKEND=io_uring\` in their environment: \`evr-uring\` (raw watchers) and \`evr-stream-uring\` (buffered streams), from the runs above. **Here the io_uring server is the base of every ratio: above 1.00× it is better** than the other server. \"Same on $backend\" is the same program on the default backend in the same round (\`evr\` for \`evr-uring\`, \`evr-stream\` for \`evr-stream-uring\`); the best peer is the one the io_uring server compares worst with."
    echo
  fi
  if [ ${#uring_impls[@]} -gt 0 ] && [ -s "$tmp/echo.sum" ]; then
    echo "| workload | server | msgs/s (median) | vs best peer, msgs/s | vs libev, msgs/s | vs same on $backend, msgs/s | server CPU ns/msg | vs libev, CPU/msg | vs same on $backend, CPU/msg |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for wl in "${workloads[@]}"; do
      id=${wl%%:*}
      for i in "${uring_impls[@]}"; do
        v=$(get "$tmp/echo.sum.$i" "$id" "$i" 3)
        [ -n "$v" ] || continue
        b=$(best_in "$tmp/echo.sum.$i" "$id") || true
        bt="—"; [ -n "$b" ] && bt="$(ratio_fmt "${b##* }") (${b%% *} $(fmt "$(get "$tmp/echo.sum.$i" "$id" "${b%% *}" 3)"))"
        echo "| $(wl_label "$id") | $i | $(fmt "$v") | $bt | $(ratio_fmt "$(get "$tmp/echo.sum.$i" "$id" libev 6)") | $(ratio_fmt "$(get "$tmp/echo.sum.$i" "$id" "$(twin "$i")" 6)") | $(fmt "$(get "$tmp/echo.cpu.$i" "$id" "$i" 3)") | $(ratio_fmt "$(get "$tmp/echo.cpu.$i" "$id" libev 6)") | $(ratio_fmt "$(get "$tmp/echo.cpu.$i" "$id" "$(twin "$i")" 6)") |"
      done
    done
    echo
  fi
  if [ ${#uring_impls[@]} -gt 0 ] && [ -s "$tmp/sys.sum" ]; then
    echo "| connections | server | syscalls per message | of which io_uring_enter | vs best peer | vs libev | vs same on $backend |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for wl in "${sys_workloads[@]}"; do
      id=${wl%%:*}
      for i in "${uring_impls[@]}"; do
        v=$(get "$tmp/sys.sum.$i" "$id" "$i" 3)
        [ -n "$v" ] || continue
        b=$(best_in "$tmp/sys.sum.$i" "$id") || true
        bt="—"; [ -n "$b" ] && bt="$(ratio_fmt "${b##* }") (${b%% *} $(fmt "$(get "$tmp/sys.sum.$i" "$id" "${b%% *}" 3)"))"
        echo "| $(wl_label "$id") | $i | $(fmt "$v") | $(sys_med "$id" "$i" 9) | $bt | $(ratio_fmt "$(get "$tmp/sys.sum.$i" "$id" libev 6)") | $(ratio_fmt "$(get "$tmp/sys.sum.$i" "$id" "$(twin "$i")" 6)") |"
      done
    done
    echo
  fi
  if [ ${#uring_impls[@]} -gt 0 ] && [ -s "$tmp/rss.sum" ]; then
    echo "| server | bytes per idle connection | vs best peer | vs libev | vs same on $backend |"
    echo "|---|---:|---:|---:|---:|"
    for i in "${uring_impls[@]}"; do
      v=$(get "$tmp/rss.sum.$i" rss "$i" 3)
      [ -n "$v" ] || continue
      b=$(best_in "$tmp/rss.sum.$i" rss) || true
      bt="—"; [ -n "$b" ] && bt="$(ratio_fmt "${b##* }") (${b%% *} $(fmt "$(get "$tmp/rss.sum.$i" rss "${b%% *}" 3)"))"
      echo "| $i | $(fmt "$v") | $bt | $(ratio_fmt "$(get "$tmp/rss.sum.$i" rss libev 6)") | $(ratio_fmt "$(get "$tmp/rss.sum.$i" rss "$(twin "$i")" 6)") |"
    done
    echo
  fi
  if [ ${#uring_impls[@]} -eq 0 ]; then
    r=$(printf '%s\n' "${skipped[@]:-}" | grep '^evr on io_uring' | head -1 | sed 's/^[^:]*: //' || true)
    echo "Skipped: ${r:-not measured in this run (see --only)}."
    echo
  fi
  if grep -q "$(printf '\tproxy-uring\t')" "$tmp/proxy.tsv"; then
    echo "evr-proxy on io_uring is in the [proxy section](#proxy)."
    echo
  fi

  echo "## Memory per idle connection"
  echo
  if [ -s "$tmp/rss.sum" ]; then
    echo "Growth of the server's RSS while $IDLE_CONNS connections are open and idle (each after one round trip), divided by $IDLE_CONNS; the baseline is taken after a warm-up, so shared buffers are not counted. User-space memory only (kernel socket buffers are not in RSS). $RSS_ROUNDS round(s)."
    echo
    echo "![memory](../docs/img/bench-memory.png)"
    echo
    echo "| server | bytes per connection (median) | min – max | evr vs server |"
    echo "|---|---:|---:|---:|"
    while IFS=$'\t' read -r _ i med lo hi ratio; do
      echo "| $i | $(fmt "$med") | $(fmt "$lo") – $(fmt "$hi") | $(ratio_fmt "$ratio") |"
    done <"$tmp/rss.sum"
    sz_evr=$("$bin/bench-echo-evr" --sizeof 2>/dev/null || true)
    sz_uv=$([ -x "$bin/bench-echo-uv" ] && "$bin/bench-echo-uv" --sizeof 2>/dev/null || true)
    echo
    echo "Per-connection structs: \`evr\` allocates a \`struct conn\` around an \`evr_io_t\` (96 bytes); \`evr-stream\` allocates an \`evr_stream_t\` (${sz_evr:-?} bytes); \`libuv\` a \`uv_tcp_t\` (${sz_uv:-?} bytes). The rest of each figure is malloc's chunk overhead and the library's per-descriptor tables."
  else
    echo "Skipped."
  fi
  echo

  echo "## Loop overhead (libevent's bench.c workload)"
  echo
  echo "N socketpairs with a read watcher each, A of them active, $OVH_WRITES writes forwarded from callback to callback. Setup = re-arming all N watchers (stop + start) and one non-blocking iteration; run = until every byte is read. Median of $OVH_RUNS runs per process (after one unmeasured), then median over $OVH_ROUNDS process round(s). Times in µs; the ratio is on the total."
  echo
  echo "![loop overhead](../docs/img/bench-overhead.png)"
  echo
  echo "| N, A | library | total µs | min – max | setup µs | run µs | evr vs library |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r k i med lo hi ratio; do
    echo "| $k | $i | $(fmt "$med") | $(fmt "$lo") – $(fmt "$hi") | $(fmt "$(get "$tmp/ovh.setup" "$k" "$i" 3)") | $(fmt "$(get "$tmp/ovh.run" "$k" "$i" 3)") | $(ratio_fmt "$ratio") |"
  done <"$tmp/ovh.sum"
  awk -F'\t' '{ split($1, p, /[= ]/); if ($7 != "" && $7 != p[2] && !seen[$1]++) printf "\n%s ran with %d socketpairs: two descriptors each must fit under RLIMIT_NOFILE (%s here).\n", $1, $7, nofile }' nofile="$nofile" "$tmp/ovh.tsv"
  echo

  echo "## Timers"
  echo
  echo "\`bench_timers $TIMERS_MAX\`, all libraries in one process, rounds in rotating order (its own output below; its ratios are peer/evr, so above 1 evr is faster)."
  echo
  echo "![timers](../docs/img/bench-timers.png)"
  echo
  sed -e '/^# /d' -e '/^Implementations:/d' -e 's/^## /### /' "$tmp/timers.md" | cat -s | sed '1{/^$/d}'
  echo

  echo "## Proxy"
  echo
  if [ -s "$tmp/proxy.tsv" ]; then
    # Per-round ratios, as elsewhere: each path against the direct path and
    # against HAProxy (summarize with "costs" orientation gives path/base).
    summarize "$tmp/proxy.tsv" 4 0 direct >"$tmp/proxy.direct"
    summarize "$tmp/proxy.tsv" 4 0 haproxy >"$tmp/proxy.haproxy"
    echo "\`evr-proxy --threads 1\`$(grep -q "$(printf '\tproxy-uring\t')" "$tmp/proxy.tsv" && echo " (on the default backend, $backend, and with \`EVR_BACKEND=io_uring\` in its environment)") and HAProxy (\`mode tcp\`, \`nbthread 1\`, when installed) in front of \`evr-echo --threads 1\` (all on CPU 0, the echo server on the default backend), against the same echo server directly; \`evr-bench-echo\` on CPU 1. bytes/s: 10 connections of 16 KiB; requests/s: 100 connections of 64 B. $PROXY_ROUNDS round(s) in rotating order; medians, and ratios as medians of per-round ratios (above 1.00× the path is faster than HAProxy)."
    echo
    echo "| workload | path | throughput (median) | min – max | / direct | vs HAProxy |"
    echo "|---|---|---:|---:|---:|---:|"
    for id in bytes requests; do
      unit="requests/s"; [ $id = bytes ] && unit="bytes/s"
      for mode in direct proxy proxy-uring haproxy; do
        v=$(get "$tmp/proxy.direct" "$id" "$mode" 3)
        [ -n "$v" ] || continue
        case $mode in
          direct) name="direct" ;; proxy) name="through evr-proxy" ;;
          proxy-uring) name="through evr-proxy on io_uring" ;; haproxy) name="through HAProxy" ;;
        esac
        d=$(get "$tmp/proxy.direct" "$id" "$mode" 6) h="-"
        case $mode in proxy|proxy-uring) h=$(get "$tmp/proxy.haproxy" "$id" "$mode" 6) ;; esac
        [ $mode = direct ] && d=1.00
        echo "| $unit | $name | $(fmt "$v") | $(fmt "$(get "$tmp/proxy.direct" "$id" "$mode" 4)") – $(fmt "$(get "$tmp/proxy.direct" "$id" "$mode" 5)") | ${d:-—} | $(ratio_fmt "$h") |"
      done
    done
    r=$(printf '%s\n' "${skipped[@]:-}" | grep '^proxy: ' | sed 's/^proxy: //' || true)
    [ -z "$r" ] || { echo; printf '%s\n' "$r" | sed 's/^/Skipped: /; s/$/./'; }
  else
    echo "Skipped: $(printf '%s\n' "${skipped[@]:-}" | grep '^proxy' | head -1 || echo "no data")."
  fi

  echo
  echo "## TLS"
  echo
  if [ -s "$tmp/tls.tsv" ]; then
    summarize "$tmp/tls.tsv" 4 1 proxy >"$tmp/tls.sum"
    echo "\`evr-proxy --threads 1 --tls-cert ... --tls-key ...\` and HAProxy (\`mode tcp\`, \`bind ... ssl crt ...\`, \`nbthread 1\`) terminating TLS in front of nginx (one process, \`return 200\`), all on CPU 0, with one ECDSA P-256 certificate; clients on CPU 1. Full handshakes/s: \`openssl s_time -new\` (a new session each time, no request) for $TLS_DUR s, its count over the wall time. HTTPS requests/s: \`wrk -t1 -c50\` for $TLS_DUR s (keep-alive; TLS 1.3). $TLS_ROUNDS round(s) in rotating order; medians, and the ratio as the median of per-round ratios (above 1.00× evr-proxy is faster)."
    echo
    echo "| workload | path | median | min – max | evr-proxy vs HAProxy |"
    echo "|---|---|---:|---:|---:|"
    for id in handshakes requests; do
      unit="full handshakes/s"; [ $id = requests ] && unit="HTTPS requests/s"
      for mode in proxy haproxy; do
        v=$(get "$tmp/tls.sum" "$id" "$mode" 3)
        [ -n "$v" ] || continue
        name="through evr-proxy"; [ $mode = haproxy ] && name="through HAProxy"
        h="-"; [ $mode = haproxy ] && h=$(get "$tmp/tls.sum" "$id" haproxy 6)
        echo "| $unit | $name | $(fmt "$v") | $(fmt "$(get "$tmp/tls.sum" "$id" "$mode" 4)") – $(fmt "$(get "$tmp/tls.sum" "$id" "$mode" 5)") | $(ratio_fmt "$h") |"
      done
    done
    r=$(printf '%s\n' "${skipped[@]:-}" | grep '^tls: ' | sed 's/^tls: //' || true)
    [ -z "$r" ] || { echo; printf '%s\n' "$r" | sed 's/^/Skipped: /; s/$/./'; }
  else
    echo "Skipped: $(printf '%s\n' "${skipped[@]:-}" | grep '^tls' | head -1 || echo "no data")."
  fi
  echo
  echo "## Chat fan-out"
  echo
  if [ -s "$tmp/chat.sum" ]; then
    echo "The chat server of [examples/chat.c](../examples/chat.c) on evr ($backend) and the same server on libuv and libev (\`bench/chat_uv.c\`, \`bench/chat_ev.c\`), on CPU 0; \`evr-bench-chat\` on CPU 1 joins N receivers and one sender, which keeps 256 lines of 64 B in flight; every receiver gets every line and checks its framing. Messages/s counts lines delivered at the receivers (one line to N receivers is N messages). $CHAT_ROUNDS round(s) of ${CHAT_DUR} s per workload and server (${WARM} s warm-up not counted) in rotating order; medians, and ratios as medians of per-round ratios (above 1.00× evr delivers more)."
    echo
    echo "| workload | server | msgs/s (median) | min – max | lines sent/s | server CPU ns/msg | evr vs server, msgs/s | evr vs server, CPU/msg |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    while IFS=$'\t' read -r k i med lo hi ratio; do
      n=${k#n}
      echo "| $(wl_label "$k") | $i | $(fmt "$med") | $(fmt "$lo") – $(fmt "$hi") | $(fmt "$(awk -v m="$med" -v n="$n" 'BEGIN { print m / n }')") | $(fmt "$(get "$tmp/chat.cpu" "$k" "$i" 3)") | $(ratio_fmt "$ratio") | $(ratio_fmt "$(get "$tmp/chat.cpu" "$k" "$i" 6)") |"
    done <"$tmp/chat.sum"
    echo
    echo "Server CPU ns/msg is the server's user + system CPU time over the whole client run (joins and warm-up included) divided by the messages delivered in the measured seconds: an upper bound, and the column to read when the load generator, not the server, limits msgs/s."
  else
    echo "Skipped: $(printf '%s\n' "${skipped[@]:-}" | grep '^chat' | head -1 || echo "not measured in this run (see --only)")."
  fi
} >"$tmp/RESULTS.md"

# ------------------------------------------------------------------ charts -
if ! command -v gnuplot >/dev/null; then
  skip "charts (gnuplot not found)"
else
  mkdir -p "$imgdir"
  term="set terminal pngcairo size 900,480 font 'sans,10' noenhanced"
  gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 || term="set terminal png size 900,480 noenhanced"
  colors() { # impl... -> their colours, one word each, same in every chart
    local i out=""
    for i in "$@"; do
      case $i in
        evr) out+=" #7b3294" ;; evr-stream) out+=" #c2a5cf" ;; evr-uring) out+=" #c51b7d" ;; evr-stream-uring) out+=" #f1b6da" ;; libuv) out+=" #1b9e77" ;; libevent) out+=" #2c7fb8" ;;
        libevent-bev) out+=" #9ecae1" ;; libev) out+=" #e6a01e" ;; *) out+=" #888888" ;;
      esac
    done
    echo "${out# }"
  }
  style="set style data histogram; set style histogram clustered gap 1; set style fill solid 0.85 border -1; set boxwidth 0.9; set grid ytics; set key top left; set datafile missing '-'; set yrange [0:*]"
  bars="set style fill solid 0.85 border -1; set boxwidth 0.6; set grid ytics; set key off; set yrange [0:*]; set autoscale xfix; set offsets 0.6, 0.6, 0, 0"
  # echo: rows = workloads, columns = servers; each server's throughput
  # relative to evr's in the same round (median of per-round ratios), which
  # is steadier on a shared machine than the absolute medians.
  [ -s "$tmp/echo.sum" ] && {
    echo "workload ${impls_echo[*]}"
    for wl in "${workloads[@]}"; do
      id=${wl%%:*}
      printf '"%s"' "$(wl_label "$id")"
      for i in "${impls_echo[@]}"; do
        v=$(get "$tmp/echo.sum" "$id" "$i" 6)
        printf ' %s' "$(awk -v i="$i" -v v="${v:-}" 'BEGIN { if (i == "evr") print "1.00"; else if (v == "" || v == "-" || v + 0 == 0) print "-"; else printf "%.3f", 1 / v }')"
      done
      echo
    done
  } >"$tmp/echo.dat"
  n=$((${#impls_echo[@]} + 1))
  [ ! -s "$tmp/echo.sum" ] || gnuplot -e "$term; set output '$imgdir/bench-echo.png'; $style; set yrange [0:1.3]; set key top center horizontal; set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb '#555555'; set title 'Echo throughput relative to evr in the same round (evr = 1.00, higher is better; median of $ROUNDS rounds)'; set ylabel 'messages/s relative to evr'; plot for [c=2:$n] '$tmp/echo.dat' using c:xtic(1) title columnheader(c) lc rgb word('$(colors "${impls_echo[@]}")', c - 1)" \
    || skip "chart bench-echo.png (gnuplot failed)"
  # syscalls: rows = connection counts, columns = servers, with the value
  # on each bar
  if [ -s "$tmp/sys.sum" ]; then
    {
      echo "conns ${impls_echo[*]}"
      for wl in "${sys_workloads[@]}"; do
        id=${wl%%:*}
        printf '"%s"' "$(wl_label "$id")"
        for i in "${impls_echo[@]}"; do v=$(get "$tmp/sys.sum" "$id" "$i" 3); printf ' %s' "${v:--}"; done
        echo
      done
    } >"$tmp/sys.dat"
    # bar c of a row sits at row + (c - 2 - (k - 1) / 2) / (k + gap): k servers, gap 1
    n=$((${#impls_echo[@]} + 1)) k=${#impls_echo[@]}
    gnuplot -e "$term; set output '$imgdir/bench-syscalls.png'; $style; set key top center horizontal; set yrange [0:*]; set offsets 0, 0, graph 0.12, 0; set key autotitle columnheader; set title 'System calls per echoed message (lower is better)'; plot for [c=2:$n] '$tmp/sys.dat' using c:xtic(1) title columnheader(c) lc rgb word('$(colors "${impls_echo[@]}")', c - 1), for [c=2:$n] '' using (\$0 + (c - 2 - ($k - 1) / 2.0) / ($k + 1.0)):c:(sprintf('%.2f', column(c))) with labels font ',7' offset 0,0.6 notitle" \
      || skip "chart bench-syscalls.png (gnuplot failed)"
  fi
  if [ -s "$tmp/rss.sum" ]; then
    { while IFS=$'\t' read -r _ i med _; do c=$(colors "$i"); echo "$i $med $((16#${c#\#}))"; done <"$tmp/rss.sum"; } >"$tmp/rss.dat"
    gnuplot -e "$term; set output '$imgdir/bench-memory.png'; $bars; set title 'User-space memory per idle connection, bytes (lower is better)'; plot '$tmp/rss.dat' using 0:2:3:xtic(1) with boxes lc rgb variable, '' using 0:2:(sprintf('%.0f', \$2)) with labels offset 0,0.8" \
      || skip "chart bench-memory.png (gnuplot failed)"
  fi
  [ -s "$tmp/ovh.sum" ] && {
    echo "config ${impls_ovh[*]}"
    for k in "N=100 A=1" "N=1000 A=1" "N=10000 A=1" "N=100 A=100" "N=1000 A=100" "N=10000 A=100"; do
      printf '"%s"' "$k"
      for i in "${impls_ovh[@]}"; do v=$(get "$tmp/ovh.sum" "$k" "$i" 3); printf ' %s' "${v:--}"; done
      echo
    done
  } >"$tmp/ovh.dat"
  n=$((${#impls_ovh[@]} + 1))
  [ ! -s "$tmp/ovh.sum" ] || gnuplot -e "$term; set output '$imgdir/bench-overhead.png'; $style; set yrange [*:*]; set logscale y; set title 'Loop overhead incl. setup, µs per run (lower is better, log scale)'; set ylabel 'µs'; plot for [c=2:$n] '$tmp/ovh.dat' using c:xtic(1) title columnheader(c) lc rgb word('$(colors "${impls_ovh[@]}")', c - 1)" \
    || skip "chart bench-overhead.png (gnuplot failed)"
  if [ -s "$tmp/timers.tsv" ]; then
    nmax=$(awk -F'\t' '{ if ($2 + 0 > m) m = $2 + 0 } END { print m }' "$tmp/timers.tsv")
    {
      echo "op ${timer_impls[*]}"
      awk -F'\t' -v n="$nmax" -v ni="${#timer_impls[@]}" '$2 == n { printf "\"%s\"", $1; for (k = 1; k <= ni; k++) printf " %s", $(3 + k); print "" }' "$tmp/timers.tsv"
    } >"$tmp/timers.dat"
    n=$((${#timer_impls[@]} + 1))
    gnuplot -e "$term; set output '$imgdir/bench-timers.png'; $style; set title 'Timer operations at $(fmt "$nmax") active timers, ns per operation (lower is better)'; set ylabel 'ns'; plot for [c=2:$n] '$tmp/timers.dat' using c:xtic(1) title columnheader(c) lc rgb word('$(colors "${timer_impls[@]}")', c - 1)" \
      || skip "chart bench-timers.png (gnuplot failed)"
  fi
fi

mkdir -p "$(dirname "$results")"
cp "$tmp/RESULTS.md" "$results"
say "wrote $results and charts in $imgdir ($(( $(date +%s) - t_begin )) s)"
[ ${#skipped[@]} -gt 0 ] && say "skipped: ${#skipped[@]} item(s), listed in $results"
exit 0
