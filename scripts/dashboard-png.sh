#!/usr/bin/env bash
# Renders docs/images/dashboard.png: the panels of charts/rwop-guard/dashboards/rwop-guard.json,
# their queries answered by a real Prometheus that scraped a real `rwop-guard serve --dev` while
# this script sent it traffic. Grafana itself is not installable from this machine's registries,
# so scripts/dashboard_render.py draws the panels (layout, titles, queries, legends, units from
# the dashboard JSON) into one HTML page, and headless Chromium takes the screenshot.
#
#   1. rwop-guard serve --dev on free loopback ports, with a policy file that turns mutation on
#      for the class `fast-csi` (the class of fixture 31), --max-connections 16;
#   2. prometheus (Debian package `prometheus`, downloaded with `apt-get download`, not
#      installed: only its binary is extracted into the cache dir) scraping /metrics every 1s as
#      job `rwop-guard`, with the static labels namespace="rwop-guard" and pod="rwop-guard-dev"
#      (what a ServiceMonitor adds in a cluster), so the dashboard's variables match;
#   3. DASH_SECONDS of traffic, with curl over TLS: the real AdmissionReviews of
#      tests/fixtures/admission/ (allowed, warned, denied, mutated) to /validate and /mutate at a
#      rate that rises and falls, wrong content type (415), malformed JSON (400), TLS clients
#      without the CA or with other CAs (tls_failed), plain HTTP on the TLS port (plain_http),
#      silent connections (header_timeout), a flood of idle connections past the limit
#      (connections_limited), and policy file edits (good, broken, good, broken, good: reloads);
#   4. python3 scripts/dashboard_render.py queries Prometheus's HTTP API for every panel and
#      writes the HTML page; chromium --headless --screenshot writes the PNG.
#
# Everything listens on 127.0.0.1 only, everything started is stopped on exit, and the whole run
# is bounded by `timeout` (DASH_TIMEOUT). Installs chromium (Debian) if missing; needs root for
# that and for `apt-get update` (and to run chromium, which then gets --no-sandbox).
#
# Settings (environment):
#   DASH_SECONDS        seconds of traffic (default 150, 10..600)
#   DASH_RATE_INTERVAL  what $__rate_interval becomes (default 30s)
#   DASH_OUT            the PNG (default docs/images/dashboard.png)
#   DASH_TIMEOUT        seconds before the whole run gives up (default 600, 60..1800)
#   DASH_CACHE          where the prometheus binary is kept
#                       (default $HOME/.cache/rwop-guard/dashboard-png)
#   RWOP_GUARD_BIN      the rwop-guard binary (default ${CARGO_TARGET_DIR:-target}/release/rwop-guard,
#                       built with `cargo build --release --locked` if missing)
#   DASH_KEEP=1         keep the work dir (logs, prometheus config, the HTML page)
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."

bounded() {
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < $3 || $2 > $4)); then
    echo "dashboard-png: $1=$2 is not in $3..$4" >&2
    exit 2
  fi
}
timeout_s=${DASH_TIMEOUT:-600}
bounded DASH_TIMEOUT "$timeout_s" 60 1800
# The whole run under `timeout`, which signals this script's whole process group when it expires.
if [ -z "${_DASH_BOUNDED:-}" ]; then
  export _DASH_BOUNDED=1
  exec timeout -k 15 "$timeout_s" "$self" "$@"
fi

seconds=${DASH_SECONDS:-150}
bounded DASH_SECONDS "$seconds" 10 600
rate_interval=${DASH_RATE_INTERVAL:-30s}
[[ $rate_interval =~ ^[0-9]+[smh]$ ]] || { echo "dashboard-png: DASH_RATE_INTERVAL=$rate_interval is not like 30s" >&2; exit 2; }
out=${DASH_OUT:-docs/images/dashboard.png}
cache=${DASH_CACHE:-$HOME/.cache/rwop-guard/dashboard-png}
dashboard=charts/rwop-guard/dashboards/rwop-guard.json
fixtures=tests/fixtures/admission
log() { printf 'dashboard-png: %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
started=$(date +%s)

# --- tools -----------------------------------------------------------------------------------
bin=${RWOP_GUARD_BIN:-${CARGO_TARGET_DIR:-target}/release/rwop-guard}
if [ ! -x "$bin" ]; then
  log "no $bin: cargo build --release --locked --bin rwop-guard"
  cargo build --release --locked --bin rwop-guard >&2
fi
mkdir -p "$cache"
prometheus=$cache/bin/prometheus
if ! "$prometheus" --version >/dev/null 2>&1; then
  deb_dir=$(mktemp -d)
  log "apt-get download prometheus (the binary only, into $cache/bin)"
  if ! (cd "$deb_dir" && apt-get download prometheus >"$deb_dir/log" 2>&1); then
    if is_root; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      (cd "$deb_dir" && apt-get download prometheus >"$deb_dir/log" 2>&1) || { cat "$deb_dir/log" >&2; exit 1; }
    else
      cat "$deb_dir/log" >&2; exit 1
    fi
  fi
  dpkg-deb -x "$deb_dir"/prometheus_*.deb "$deb_dir/x"
  mkdir -p "$cache/bin"
  install -m 0755 "$deb_dir/x/usr/bin/prometheus" "$prometheus"
  rm -rf "$deb_dir"
fi
log "$("$prometheus" --version 2>&1 | head -n 1)"
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  is_root || { log "chromium is missing: apt-get install -y chromium"; exit 1; }
  log "apt-get install -y chromium"
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >&2
  chromium=$(command -v chromium)
fi
for tool in curl python3; do command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }; done

# --- processes, cleanup ----------------------------------------------------------------------
work=$(mktemp -d)
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    for f in guard.log prometheus.log chromium.log; do
      [ -s "$work/$f" ] && { echo "--- $f (last lines)" >&2; tail -n 15 "$work/$f" >&2; }
    done
  fi
  if [ "${DASH_KEEP:-0}" = 1 ]; then log "work dir kept: $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

# Three free loopback ports (webhook, metrics, prometheus).
read -r port mport pport < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))
for s in ss: s.close()')
wait_http() { # url what
  for _ in $(seq 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done
  log "$2 did not come up ($1)"; exit 1
}

policy=$work/policy/policy.yaml
mkdir -p "$work/policy"
write_policy() { # extra storage class
  printf 'mutation:\n  enabled: true\n  storageClasses: [fast-csi%s]\n' "${1:+, $1}" >"$policy.tmp"
  mv "$policy.tmp" "$policy"
}
write_policy ""
ca=$work/dev-ca.crt
guard_cmd=("$bin" serve --dev --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport"
  --dev-ca-out "$ca" --config "$policy" --max-connections 16)
RUST_LOG=warn "${guard_cmd[@]}" >"$work/guard.out" 2>"$work/guard.log" &
pids+=($!)
wait_http "http://127.0.0.1:$mport/readyz" "rwop-guard"

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rwop-guard
    static_configs:
      - targets: ['127.0.0.1:$mport']
        labels:
          namespace: rwop-guard
          pod: rwop-guard-dev
EOF
prom_cmd=("$prometheus" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb"
  --storage.tsdb.retention.time=2h --web.listen-address="127.0.0.1:$pport" --log.level=warn)
"${prom_cmd[@]}" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$pport/-/ready" "prometheus"
# The window starts here: a few quiet scrapes before the traffic.
w0=$(date +%s)
sleep 5

# --- traffic ---------------------------------------------------------------------------------
# The reviews, weighted so that every decision shows: the one mutated and the denied reviews
# appear more than once.
reviews=()
for f in "$fixtures"/*.json; do reviews+=("$f"); done
for _ in 1 2 3 4 5 6; do reviews+=("$fixtures/31-pvc-create-no-sc-default-class-filled.pvc.mutate.json"); done
for _ in 1 2 3; do
  reviews+=("$fixtures/06b-pv-patch-rwx-to-rwop.pv.validate.json" "$fixtures/06e-pv-apply-manifest-change-rwop-to-rwx.pv.validate.json")
done
url=https://127.0.0.1:$port
sent_reviews=0 sent_415=0 sent_400=0 sent_tls=0 sent_plain=0 sent_silent=0 sent_flood=0 edits=0
next=0
tick_pids=()
# One curl per batch: its requests share a keep-alive connection.
send_reviews() { # count, index of the first review
  local args=() f path i
  for ((i = 0; i < $1; i++)); do
    f=${reviews[($2 + i) % ${#reviews[@]}]}
    case $f in *.mutate.json) path=/mutate ;; *) path=/validate ;; esac
    ((i > 0)) && args+=(--next)
    args+=(-s -o /dev/null --max-time 10 --cacert "$ca" -H 'Content-Type: application/json'
      --data-binary "@$f" "$url$path")
  done
  curl "${args[@]}" || true
}
log "webhook https://127.0.0.1:$port, metrics http://127.0.0.1:$mport, prometheus http://127.0.0.1:$pport"
log "sending traffic for ${seconds}s"
t0=$(date +%s)
for ((t = 0; t < seconds; t++)); do
  # Reviews per second: a ramp up, a plateau, a dip and a second peak.
  phase=$((t * 100 / seconds))
  if ((phase < 25)); then n=$((4 + phase * 2)); elif ((phase < 45)); then n=54
  elif ((phase < 60)); then n=15; elif ((phase < 80)); then n=80; else n=30; fi
  send_reviews "$n" "$next" &
  tick_pids+=($!)
  next=$((next + n))
  sent_reviews=$((sent_reviews + n))
  if ((t % 7 == 3)); then
    curl -s -o /dev/null --max-time 5 --cacert "$ca" -H 'Content-Type: text/plain' \
      --data-binary "@$fixtures/01-pvc-create-rwo.pvc.validate.json" "$url/validate" || true
    sent_415=$((sent_415 + 1))
  fi
  if ((t % 11 == 5)); then
    curl -s -o /dev/null --max-time 5 --cacert "$ca" -H 'Content-Type: application/json' \
      --data '{"kind":"AdmissionReview","request":' "$url/mutate" || true
    sent_400=$((sent_400 + 1))
  fi
  if ((t % 9 == 2)); then
    # Without the dev CA (the system's CAs only), then with a CA of its own: both fail the handshake.
    curl -s -o /dev/null --max-time 5 "$url/validate" || true
    curl -s -o /dev/null --max-time 5 --cacert /dev/null "$url/validate" || true
    sent_tls=$((sent_tls + 2))
  fi
  if ((t % 23 == 10)); then
    curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/validate" || true
    sent_plain=$((sent_plain + 1))
  fi
  if ((t % 30 == 15)); then
    # A connection that never sends a request: closed after --header-timeout (5s).
    (exec 3<>"/dev/tcp/127.0.0.1/$port" && sleep 7) 2>/dev/null &
    tick_pids+=($!)
    sent_silent=$((sent_silent + 1))
  fi
  if ((t == seconds * 2 / 3)); then
    # 24 silent connections at once, past --max-connections 16: 8 wait for a free slot.
    for _ in $(seq 24); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port" && sleep 6) 2>/dev/null &
      tick_pids+=($!)
    done
    sent_flood=$((sent_flood + 24))
  fi
  # Policy edits, good (reload ok: a class more, or the original) and broken (reload failed).
  # A counter's series appears with its first reload, which increase() cannot see: each result
  # happens twice or more.
  for pct in 20 35 45 60 70; do
    ((t == seconds * pct / 100)) || continue
    case $pct in
      35 | 60) echo 'mutation: {enabled: maybe}' >"$policy" ;;
      45) write_policy "" ;;
      *) write_policy "expandable" ;;
    esac
    edits=$((edits + 1))
  done
  # Once per second, on the second.
  now_us=${EPOCHREALTIME/./}
  wait_us=$(((t0 + t + 1) * 1000000 - 10#$now_us))
  ((wait_us > 50000)) || wait_us=50000
  sleep "$((wait_us / 1000000)).$(printf '%06d' $((wait_us % 1000000)))"
done
for pid in "${tick_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
t1=$(date +%s)
# Two more scrapes, so the last second of traffic is in the TSDB.
sleep 3
end=$((t1 + 2))

# --- render ----------------------------------------------------------------------------------
log "rendering the panels of $dashboard"
height=$(python3 scripts/dashboard_render.py --prometheus "http://127.0.0.1:$pport" \
  --dashboard "$dashboard" --start "$w0" --end "$end" --rate-interval "$rate_interval" \
  --var namespace=rwop-guard --var job=rwop-guard --width 1600 --out "$work/dashboard.html")
mkdir -p "$(dirname "$out")"
case $out in /*) out_abs=$out ;; *) out_abs=$PWD/$out ;; esac
chromium_args=(--headless --disable-gpu --hide-scrollbars --force-device-scale-factor=1
  --no-first-run --no-default-browser-check --user-data-dir="$work/chromium"
  --screenshot="$out_abs" --window-size="1600,$height" "file://$work/dashboard.html")
is_root && chromium_args=(--no-sandbox "${chromium_args[@]}")
"$chromium" "${chromium_args[@]}" >"$work/chromium.log" 2>&1 &
pids+=($!)
wait "${pids[-1]}"
[ -s "$out" ] || { log "chromium wrote no $out"; exit 1; }

fmt() { date -u -d "@$1" '+%Y-%m-%d %H:%M:%S UTC'; }
echo "command:   DASH_SECONDS=$seconds DASH_RATE_INTERVAL=$rate_interval ${self#"$PWD"/}${*:+ $*}"
echo "           (finished $(fmt "$(date +%s)"), $(($(date +%s) - started))s in all)"
echo "server:    RUST_LOG=warn ${guard_cmd[*]//"$work"/\$WORK}  [$("$bin" --version 2>/dev/null)]"
echo "           policy: mutation.enabled true, storageClasses [fast-csi]"
echo "scraper:   ${prom_cmd[*]//"$work"/\$WORK}"
echo "           job rwop-guard, every 1s, static labels namespace=rwop-guard pod=rwop-guard-dev"
echo "window:    $(fmt "$w0") .. $(fmt "$end"); traffic $(fmt "$t0") .. $(fmt "$t1"); \$__rate_interval=$rate_interval"
echo "load:      $sent_reviews AdmissionReviews (fixtures of $fixtures, weighted to show each decision),"
echo "           $sent_415 wrong content type (415), $sent_400 malformed (400), $sent_tls TLS clients without the CA,"
echo "           $sent_plain plain HTTP, $sent_silent silent connections, a flood of $sent_flood idle connections (limit 16),"
echo "           $edits policy file edits (good, broken, good, broken, good)"
echo "renderer:  python3 scripts/dashboard_render.py --start $w0 --end $end --rate-interval $rate_interval --var namespace=rwop-guard --var job=rwop-guard"
echo "chromium:  $chromium ${chromium_args[*]//"$work"/\$WORK}"
echo "output:    $out ($(stat -c %s "$out") bytes, 1600x$height)"
