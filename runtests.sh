#!/usr/bin/env bash
# Runs every test of the project: format check, clippy with -D warnings, unit and integration
# tests (and, when there are any, the end-to-end cluster tests on the real Docker engine and, for
# the vagrant back-end, libvirt).
# Usage: ./runtests.sh            everything
#        ./runtests.sh --quick    skip fmt and clippy
set -euo pipefail
cd "$(dirname "$0")"

quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n==> %s\n' "$*"; }

# The vagrant back-end's end-to-end test needs vagrant and libvirt, the web map's chromium:
# install and start them (a no-op once done; needs root and Debian's mirror).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  step "set up the vagrant back-end (compute/vagrant/setup.sh)"
  sh compute/vagrant/setup.sh
  # The web map's test drives Debian's chromium, headless.
  if ! command -v chromium >/dev/null 2>&1; then
    step "install chromium (the web map's browser test)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || {
      DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    }
  fi
fi

if [ "$quick" = 0 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy -D warnings"
  cargo clippy --all-targets --locked -- -D warnings
fi

step "unit and integration tests"
cargo test --locked
