#!/usr/bin/env bash
# Smoke test of one release binary, as a user would run it, through an emulator when it is built
# for another architecture:
#
#   scripts/smoke-binary.sh BINARY [EMULATOR]
#   scripts/smoke-binary.sh target/aarch64-unknown-linux-musl/release/rwop-guard qemu-aarch64-static
#
#   1. the binary is a static ELF for the architecture its path names (file(1))
#   2. --version: `rwop-guard VERSION (commit C[, dirty])`, VERSION from Cargo.toml and, in a git
#      checkout, C the checked-out commit (a stale or unstamped build fails)
#   3. review: a real AdmissionReview (an RWX -> RWOP volume update) is denied with the V2 message,
#      and an allowed one is allowed
#   4. check: a manifest with a violation exits 1 naming it; a clean one exits 0
#   5. serve --dev on loopback (ports chosen by the kernel): POST /validate over TLS, verified
#      against the CA the server wrote, answers the review; then SIGTERM, and the server exits 0
#
# Exits non-zero on the first failure, saying which check failed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:?usage: smoke-binary.sh BINARY [EMULATOR]}"
emulator="${2:-}"
fixtures="$repo/tests/fixtures"

die() { printf 'smoke-binary: FAILED (%s): %s\n' "$bin" "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }

[ -x "$bin" ] || die "not an executable file"
run=("$bin")
if [ -n "$emulator" ]; then
  command -v "$emulator" >/dev/null || die "$emulator not found; run scripts/install-tools.sh"
  run=("$emulator" "$bin")
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "file: static, for the architecture of $bin"
described="$(file -L "$bin")"
printf '   %s\n' "${described#*: }" >&2
case "$described" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) die "not statically linked" ;;
esac
case "$bin" in
  *aarch64*) want_machine="ARM aarch64" ;;
  *x86_64*) want_machine="x86-64" ;;
  *) want_machine="" ;;
esac
if [ -n "$want_machine" ]; then
  case "$described" in *"$want_machine"*) ;; *) die "not an $want_machine executable" ;; esac
fi

step "--version"
version_line="$("${run[@]}" --version)" || die "--version failed"
printf '   %s\n' "$version_line" >&2
cargo_version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)"
[[ "$version_line" =~ ^rwop-guard\ ([^ ]+)\ \(commit\ ([0-9a-f]{7,40}|unknown)(,\ dirty)?\)$ ]] \
  || die "--version printed [$version_line], want 'rwop-guard VERSION (commit C[, dirty])'"
[ "${BASH_REMATCH[1]}" = "$cargo_version" ] \
  || die "--version says ${BASH_REMATCH[1]}, Cargo.toml says $cargo_version"
stamped="${BASH_REMATCH[2]}"
if head="$(git -C "$repo" rev-parse HEAD 2>/dev/null)"; then
  [ "$stamped" = "$head" ] || die "built from commit $stamped, but the checkout is at $head (stale build?)"
fi

step "review --webhook validate (real AdmissionReviews)"
denied="$fixtures/admission/06b-pv-patch-rwx-to-rwop.pv.validate.json"
allowed="$fixtures/admission/05-pv-patch-rwo-to-rwop.pv.validate.json"
"${run[@]}" review --webhook validate <"$denied" >"$work/denied.json" || die "review exited non-zero"
jq -e '.response.allowed == false and (.response.status.message | test("only \\[ReadWriteOnce\\] -> \\[ReadWriteOncePod\\] is supported"))' \
  "$work/denied.json" >/dev/null || { cat "$work/denied.json" >&2; die "RWX -> RWOP update not denied with the V2 message"; }
"${run[@]}" review --webhook validate <"$allowed" >"$work/allowed.json" || die "review exited non-zero"
jq -e '.response.allowed == true' "$work/allowed.json" >/dev/null \
  || { cat "$work/allowed.json" >&2; die "RWO -> RWOP update not allowed"; }
printf '   denied: %s\n' "$(jq -r .response.status.message "$work/denied.json" | cut -c1-100)…" >&2

step "check -f (a manifest with a violation, a clean one)"
set +e
"${run[@]}" check -f "$fixtures/manifests/bad/claims.yaml" >"$work/check.out" 2>&1
code=$?
set -e
[ "$code" = 1 ] || { cat "$work/check.out" >&2; die "check of bad/claims.yaml exited $code, want 1"; }
grep -q 'ReadWriteOncePod' "$work/check.out" || { cat "$work/check.out" >&2; die "check printed no finding"; }
printf '   %s\n' "$(head -n 1 "$work/check.out" | cut -c1-120)" >&2
"${run[@]}" check -f "$fixtures/manifests/good/app.yaml" >"$work/check-good.out" 2>&1 \
  || { cat "$work/check-good.out" >&2; die "check of good/app.yaml failed"; }

step "serve --dev: a review over TLS on loopback"
mkfifo "$work/out"
"${run[@]}" serve --dev --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --dev-ca-out "$work/ca.crt" --log-format text >"$work/out" 2>"$work/serve.log" &
server_pid=$!
exec 3<"$work/out"
url=""
# The server prints its address once it listens; the read returns then (or at EOF if it dies).
# The timeout only bounds a hang (an emulator starts slowly); it is not the synchronisation.
while IFS= read -r -t 120 line <&3; do
  printf '   | %s\n' "$line" >&2
  if [[ "$line" =~ (https://localhost:[0-9]+) ]]; then
    url="${BASH_REMATCH[1]}"
    break
  fi
done
[ -n "$url" ] || { cat "$work/serve.log" >&2; die "serve --dev did not print its address"; }
curl --silent --show-error --fail --cacert "$work/ca.crt" --max-time 60 \
  -H 'Content-Type: application/json' --data-binary @"$denied" "$url/validate" >"$work/served.json" \
  || { cat "$work/serve.log" >&2; die "POST $url/validate failed"; }
jq -e --slurpfile want "$work/denied.json" '.response == $want[0].response' "$work/served.json" >/dev/null \
  || { cat "$work/served.json" >&2; die "the served review differs from the review command's"; }
printf '   POST %s/validate: allowed=%s (as the review command said)\n' "$url" "$(jq .response.allowed "$work/served.json")" >&2
kill -TERM "$server_pid"
set +e
wait "$server_pid"
code=$?
set -e
server_pid=""
exec 3<&-
[ "$code" = 0 ] || { cat "$work/serve.log" >&2; die "serve exited $code after SIGTERM, want 0"; }

printf '\nsmoke-binary: %s passed (%s)\n' "$bin" "${emulator:-native}" >&2
