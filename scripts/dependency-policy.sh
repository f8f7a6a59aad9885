#!/usr/bin/env bash
# The dependency policy (deny.toml), checked with cargo-deny:
#
#   1. cargo deny check licenses bans sources   always; fails on a license not in deny.toml's
#      allow list, a crate from anywhere but crates.io, a git dependency, a wildcard version;
#      duplicate versions are printed as warnings
#   2. the check bites: the same license check with one allowed license taken out of a copy of
#      deny.toml (ISC: ring, rustls-webpki and untrusted need it) must fail, naming a crate
#   3. cargo deny check advisories              only when a RustSec advisory database is present
#      locally (it is never fetched: --offline); otherwise one line says it was skipped.
#      RWOP_ADVISORY_DB=DIR names the directory that holds the database clone(s) (cargo-deny's
#      db-path; default: $CARGO_HOME/advisory-dbs)
#
# cargo-deny comes from scripts/install-tools.sh. Exits non-zero on the first failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${RWOP_TOOLS:-$HOME/.cache/rwop-guard/tools}"
export PATH="$tools/bin:$PATH"
cd "$repo"

die() { printf 'dependency-policy: FAILED: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }

command -v cargo-deny >/dev/null || die "cargo-deny not found; run scripts/install-tools.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step "cargo deny check licenses bans sources ($(cargo deny --version))"
if ! cargo deny --locked --color never check --show-stats licenses bans sources >"$work/deny.log" 2>&1; then
  cat "$work/deny.log" >&2
  die "cargo deny: a dependency breaks the policy in deny.toml (see above)"
fi
# Warnings (duplicate versions) are reported, not fatal.
grep -E '^warning\[' "$work/deny.log" | sort | uniq -c | sed 's/^/   /' >&2 || true
grep -E '^ *(licenses|bans|sources) ok' "$work/deny.log" | sed 's/^ */   /' >&2 || true

step "the license check fails for a license not on the list (ISC taken out of a copy)"
grep -q '^  "ISC",$' deny.toml || die "deny.toml has no '  \"ISC\",' line to take out"
grep -v '^  "ISC",$' deny.toml >"$work/deny-without-isc.toml"
if cargo deny --locked --color never --config "$work/deny-without-isc.toml" check licenses \
  >"$work/bites.log" 2>&1; then
  cat "$work/bites.log" >&2
  die "cargo deny passed with ISC not allowed: the license check does not check"
fi
grep -q 'error\[rejected\]: failed to satisfy license requirements' "$work/bites.log" \
  || { cat "$work/bites.log" >&2; die "cargo deny failed, but not on the license"; }
# Each rejection points at the crate's Cargo.toml (…/ring-0.17.14/Cargo.toml).
rejected="$(grep -Eo '/(ring|rustls-webpki|untrusted)-[0-9][^/]*/Cargo.toml' "$work/bites.log" \
  | sed 's|^/||; s|/Cargo.toml$||' | sort -u | paste -sd' ' -)"
[ -n "$rejected" ] \
  || { cat "$work/bites.log" >&2; die "the rejection does not name ring, rustls-webpki or untrusted"; }
printf '   rejected, as it should be: %s\n' "$rejected" >&2

db="${RWOP_ADVISORY_DB:-${CARGO_HOME:-$HOME/.cargo}/advisory-dbs}"
if [ -d "$db" ] && [ -n "$(find "$db" -mindepth 2 -maxdepth 3 -name crates -type d 2>/dev/null | head -n 1)" ]; then
  step "cargo deny check advisories (database in $db, not fetched)"
  # db-path is set through a copy of deny.toml with the path appended to [advisories].
  sed "s|^\[advisories\]$|[advisories]\ndb-path = \"$db\"|" deny.toml >"$work/deny-db.toml"
  cargo deny --locked --offline --color never --config "$work/deny-db.toml" check advisories >&2 \
    || die "cargo deny check advisories"
else
  step "cargo deny check advisories: skipped (no advisory database in $db; it cannot be fetched here)"
fi

printf '\ndependency-policy: passed\n' >&2
