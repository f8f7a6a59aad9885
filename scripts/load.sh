#!/usr/bin/env bash
# Load test over TLS on loopback: wrk against `rwop-guard serve` (release, --no-cluster) and
# against the baseline examples/echo_webhook.rs (the same stack, answering allowed with the
# request's uid), in turn, at each concurrency level. Prints req/s, p50/p99 latency, each
# server's CPU per request and peak RSS. Every answer must be 200 with the request's uid; any
# other answer or socket error makes the script exit 1. Installs wrk (Debian) if missing.
#
# Settings (environment, bounded; every run stops by itself):
#   LOAD_SECONDS      measured seconds per level and server (default 6, 1..60)
#   LOAD_WARMUP       warm-up seconds before each measured run (default 1, 0..10)
#   LOAD_CONCURRENCY  connections per level (default "1 16 64", each 1..512, at most 8 levels)
#   LOAD_FIXTURE      the review sent (default 05-pv-patch-rwo-to-rwop.pv.validate.json, a PV
#                     update rwop-guard allows with W1 warnings), from tests/fixtures/admission/
#   LOAD_SERVER_LOG   RUST_LOG of rwop-guard (default warn; info logs one line per review)
#   LOAD_LOG_FORMAT   text (default) or json
#   LOAD_PORT         first of three loopback ports used (default 18443)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${LOAD_SECONDS:-6}
warmup=${LOAD_WARMUP:-1}
levels=${LOAD_CONCURRENCY:-1 16 64}
fixture=tests/fixtures/admission/${LOAD_FIXTURE:-05-pv-patch-rwo-to-rwop.pv.validate.json}
port=${LOAD_PORT:-18443}
bounded() { [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3 && $2 <= $4)) || { echo "load: $1=$2 is not in $3..$4" >&2; exit 2; }; }
bounded LOAD_SECONDS "$seconds" 1 60
bounded LOAD_WARMUP "$warmup" 0 10
bounded LOAD_PORT "$port" 1024 65000
n=0
for c in $levels; do bounded LOAD_CONCURRENCY "$c" 1 512; n=$((n + 1)); done
((n >= 1 && n <= 8)) || { echo "load: LOAD_CONCURRENCY: 1 to 8 levels" >&2; exit 2; }
[ -f "$fixture" ] || { echo "load: no fixture $fixture" >&2; exit 2; }
case $fixture in *.mutate.json) path=/mutate ;; *) path=/validate ;; esac

if ! command -v wrk >/dev/null; then
  echo "== installing wrk (apt)" >&2
  { apt-get update -qq && apt-get install -y -qq wrk; } >&2
fi

echo "== building (release)" >&2
cargo build --release --locked --bin rwop-guard --example echo_webhook >&2
bin=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# The certificate in a directory of its own: the server watches it, and a log file next to it
# would wake the watcher on every line.
mkdir "$work/tls"
"$bin/rwop-guard" certs --out "$work/tls" --dns localhost --ip 127.0.0.1 >/dev/null

# Waits (at most 10 s) until something accepts connections on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "load: nothing listens on 127.0.0.1:$1; logs in $work" >&2
  exit 1
}
for p in "$port" $((port + 1)) $((port + 2)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "load: 127.0.0.1:$p is in use; set LOAD_PORT" >&2
    exit 2
  fi
done

RUST_LOG=${LOAD_SERVER_LOG:-warn} "$bin/rwop-guard" serve --no-cluster \
  --tls-cert "$work/tls/tls.crt" --tls-key "$work/tls/tls.key" \
  --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$((port + 1))" \
  --log-format "${LOAD_LOG_FORMAT:-text}" 2>"$work/guard.log" &
pids+=($!)
guard=$!
"$bin/examples/echo_webhook" "$work/tls/tls.crt" "$work/tls/tls.key" "127.0.0.1:$((port + 2))" \
  2>"$work/baseline.log" &
pids+=($!)
baseline=$!
wait_port $((port + 1))
wait_port "$port"
wait_port $((port + 2))

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
peak_rss_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# One wrk run against $1 (port) with $2 connections for $3 seconds; prints wrk's RESULT line.
drive() {
  local threads=$(($2 < 2 ? 1 : 2))
  wrk -t"$threads" -c"$2" -d"$3"s -s scripts/load.lua "https://localhost:$1$path?timeout=5s" \
    -- "$fixture" | grep '^RESULT'
}
# One measured run of server $1 (pid) on port $2 with $3 connections: req/s, p50 and p99 µs,
# server CPU µs per request, and the answers that were not right (wrong or socket errors).
measure() {
  local before result ticks
  [ "$warmup" = 0 ] || drive "$2" "$3" "$warmup" >/dev/null
  before=$(cpu_ticks "$1")
  result=$(drive "$2" "$3" "$seconds")
  ticks=$(($(cpu_ticks "$1") - before))
  local requests duration p50_us p99_us wrong socket_errors
  eval "${result#RESULT }"
  awk -v r="$requests" -v s="$duration" -v p50="$p50_us" -v p99="$p99_us" -v t="$ticks" \
    -v hz="$hz" -v bad=$((wrong + socket_errors + (requests == 0))) \
    'BEGIN { printf "%9.0f %8d %8d %8.1f %5d", r / s, p50, p99, t * 1e6 / hz / (r ? r : 1), bad }'
}

failed=0
echo "load: POST $path?timeout=5s, $(basename "$fixture"), HTTP/1.1 keep-alive over TLS, $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "rwop-guard: RUST_LOG=${LOAD_SERVER_LOG:-warn} --log-format ${LOAD_LOG_FORMAT:-text} --no-cluster; baseline: examples/echo_webhook.rs"
echo "per level and server: ${warmup} s warm-up + ${seconds} s measured, servers in turn; $(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%5s | %9s %8s %8s %8s %5s | %9s %8s %8s %8s %5s | %s\n' conns "guard r/s" "p50 µs" "p99 µs" "CPU µs" wrong \
  "base r/s" "p50 µs" "p99 µs" "CPU µs" wrong "r/s % of base"
i=0
for c in $levels; do
  # Alternate which server goes first, so drift on a shared machine favours neither.
  if ((i % 2 == 0)); then
    g=$(measure "$guard" "$port" "$c")
    b=$(measure "$baseline" $((port + 2)) "$c")
  else
    b=$(measure "$baseline" $((port + 2)) "$c")
    g=$(measure "$guard" "$port" "$c")
  fi
  read -r g_rps _ _ _ g_bad <<<"$g"
  read -r b_rps _ _ _ b_bad <<<"$b"
  ratio=$(awk -v g="$g_rps" -v b="$b_rps" 'BEGIN { printf "%.1f %%", b ? 100 * g / b : 0 }')
  printf '%5s | %s | %s | %s\n' "$c" "$g" "$b" "$ratio"
  ((g_bad + b_bad == 0)) || failed=1
  i=$((i + 1))
done
echo
echo "peak RSS (VmHWM): rwop-guard $(peak_rss_mib "$guard") MiB, baseline $(peak_rss_mib "$baseline") MiB"
exit "$failed"
