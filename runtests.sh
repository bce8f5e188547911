#!/usr/bin/env bash
# Runs every test of the project: format check, clippy with -D warnings, unit and integration
# tests (and, when there are any, the end-to-end cluster tests on the real Docker engine).
# Usage: ./runtests.sh            everything
#        ./runtests.sh --quick    skip fmt and clippy
set -euo pipefail
cd "$(dirname "$0")"

quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n==> %s\n' "$*"; }

if [ "$quick" = 0 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy -D warnings"
  cargo clippy --all-targets --locked -- -D warnings
fi

step "unit and integration tests"
cargo test --locked
