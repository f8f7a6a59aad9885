#!/usr/bin/env bash
# The test suite: what the README tells you to run and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked
