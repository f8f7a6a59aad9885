#!/usr/bin/env bash
# `rwop-guard scan --apply` at scale on a real control plane, beside the floor: a bare paged list
# of the same claims (`kubectl get pvc -A --chunk-size=500 -o name`). Loopback only; stops the
# control plane it started, whatever happens, and gives up after $REPORTS_SCALE_TIMEOUT seconds
# (default 5400).
#
#   scripts/reports-scale.sh [CLAIMS [NAMESPACES]]      # default 100000 claims in 100 namespaces
#
# Needs: the control-plane `start`/`stop` scripts ($K8S_START, default ../shared/k8s/start next
# to the repository; see its README for the binaries), kubectl (scripts/install-tools.sh),
# GNU time at /usr/bin/time, and a release build (`cargo build --release`; $RWOP_GUARD names
# another binary).
#
# Steps: start the control plane; stop its controller manager (nothing here needs it, and its
# PV binder would resync 100,000 unbound claims every 15 s beside the measurement); install
# the OpenReports CRDs; create the namespaces and the claims ([ReadWriteOncePod], no class and
# no volume: Pending, one V1 `pass` each), 8 kubectl processes at a time; then, each under
# /usr/bin/time -v: the floor (3 runs of a bare paged list in Python: the same pages of 500
# claims fetched over one connection and decoded, nothing kept; 2 runs of `kubectl get pvc -A
# --chunk-size=500 -o name`, which turned out to hold every object), `scan -A -o json` (the scan alone), `scan --apply`
# (first: creates the reports), `scan --apply` (again: updates them); last, checks the reports
# on the server (count, results). Prints one line per measurement: wall seconds, peak RSS.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${RWOP_TOOLS:-$HOME/.cache/rwop-guard/tools}/bin:$PATH"
claims="${1:-100000}"
namespaces="${2:-100}"
per_ns=$(( claims / namespaces ))
(( per_ns * namespaces == claims )) || { echo "CLAIMS must be a multiple of NAMESPACES" >&2; exit 2; }
start="${K8S_START:-$repo/../shared/k8s/start}"
stop="$(dirname "$start")/stop"
rwop="${RWOP_GUARD:-${CARGO_TARGET_DIR:-$repo/target}/release/rwop-guard}"
for f in "$start" "$stop" "$rwop" /usr/bin/time; do
  [ -x "$f" ] || { echo "reports-scale: $f not found or not executable" >&2; exit 2; }
done
command -v kubectl >/dev/null || { echo "reports-scale: kubectl not found" >&2; exit 2; }

# The whole run is bounded: under `timeout`, whose TERM ends this script (and the EXIT trap
# stops the control plane).
if [ -z "${REPORTS_SCALE_BOUNDED:-}" ]; then
  REPORTS_SCALE_BOUNDED=1 exec timeout "${REPORTS_SCALE_TIMEOUT:-5400}" bash "$0" "$@"
fi
work="$(mktemp -d)"
cleanup() { "$stop" "$work/k8s" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
trap 'echo "reports-scale: stopped" >&2; exit 143' TERM INT

eval "$("$start" "$work/k8s")"
kill "$(cat "$K8S_DIR/run/kube-controller-manager.pid")" && rm "$K8S_DIR/run/kube-controller-manager.pid"
echo "control plane: $(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')" >&2

# OpenReports CRDs: the fields scan writes, typed; results kept as the scan wrote them.
crd() { # KIND PLURAL SCOPE
  cat <<Y
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: $2.openreports.io}
spec:
  group: openreports.io
  names: {kind: $1, listKind: $1List, plural: $2, singular: $(echo "$1" | tr A-Z a-z)}
  scope: $3
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            source: {type: string}
            summary: {type: object, x-kubernetes-preserve-unknown-fields: true}
            results:
              type: array
              items: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
Y
}
{ crd Report reports Namespaced; crd ClusterReport clusterreports Cluster; } | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Established crd/reports.openreports.io crd/clusterreports.openreports.io >/dev/null

echo "creating $claims claims in $namespaces namespaces…" >&2
mkdir -p "$work/claims"
t0=$(date +%s)
for n in $(seq 1 "$namespaces"); do
  ns="scale-$n"
  {
    printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n' "$ns"
    for c in $(seq 1 "$per_ns"); do
      printf -- '---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c%d, namespace: %s}\nspec: {accessModes: [ReadWriteOncePod], storageClassName: "", resources: {requests: {storage: 1Gi}}}\n' "$c" "$ns"
    done
  } > "$work/claims/$ns.yaml"
done
# 8 at a time; kubectl creates the namespace (first document) before its claims.
ls "$work"/claims/*.yaml | xargs -P 8 -I{} kubectl create -f {} -o name >/dev/null
listed=$(kubectl get pvc -A --chunk-size=500 -o name | wc -l)
[ "$listed" -eq "$claims" ] || { echo "reports-scale: $listed claims listed, $claims expected" >&2; exit 1; }
echo "created in $(( $(date +%s) - t0 )) s" >&2

measure() { # LABEL COMMAND...
  local label=$1; shift
  /usr/bin/time -v -o "$work/time" "$@" >"$work/out" 2>"$work/err" \
    || { echo "reports-scale: $label failed:" >&2; tail -5 "$work/err" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/time")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$work/time")
  printf '%-48s wall %7.2f s   peak RSS %7.1f MiB\n' "$label" "$wall" "$rss"
}

# The bare floor: the same pages (500 claims each) fetched and decoded, nothing kept.
cat >"$work/pages.py" <<'PY'
import http.client, json, ssl, subprocess, sys, urllib.parse
def cfg(path):
    return subprocess.run(["kubectl", "config", "view", "--raw", "--minify", "-o",
                           "jsonpath={" + path + "}"], check=True, capture_output=True,
                          text=True).stdout
url = urllib.parse.urlparse(cfg(".clusters[0].cluster.server"))
assert url.hostname in ("127.0.0.1", "localhost"), url  # loopback only
tls = ssl.create_default_context(cafile=cfg(".clusters[0].cluster.certificate-authority"))
tls.load_cert_chain(cfg(".users[0].user.client-certificate"), cfg(".users[0].user.client-key"))
conn = http.client.HTTPSConnection(url.hostname, url.port, context=tls)
token, n = "", 0
while True:
    conn.request("GET", "/api/v1/persistentvolumeclaims?limit=500"
                 + (f"&continue={urllib.parse.quote(token)}" if token else ""))
    page = json.loads(conn.getresponse().read())
    n += len(page["items"])
    token = page["metadata"].get("continue", "")
    if not token:
        break
print(n)
PY

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in 1 2 3; do
  measure "floor: paged list, 500 a page, decoded ($i)" python3 "$work/pages.py"
  [ "$(cat "$work/out")" -eq "$claims" ] || { echo "reports-scale: the paged list saw $(cat "$work/out")" >&2; exit 1; }
done
for i in 1 2; do
  measure "kubectl get pvc -A --chunk-size=500 -o name ($i)" kubectl get pvc -A --chunk-size=500 -o name
done
measure "rwop-guard scan -A -o json" "$rwop" scan -A -o json
measure "rwop-guard scan --apply (first: creates)" "$rwop" scan --apply
tail -2 "$work/out"
measure "rwop-guard scan --apply (again: updates)" "$rwop" scan --apply
tail -2 "$work/out"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# The reports on the server: one per 500 claims, summing to one pass per claim.
reports=$(kubectl get reports.openreports.io -A --chunk-size=50 --no-headers | wc -l)
passes=$(kubectl get reports.openreports.io -A --chunk-size=50 \
  -o jsonpath='{range .items[*]}{.summary.pass}{"\n"}{end}' | awk '{s+=$1} END {print s}')
echo "on the server: $reports Reports, $passes pass results"
[ "$passes" -eq "$claims" ] || { echo "reports-scale: $passes pass results, $claims expected" >&2; exit 1; }
