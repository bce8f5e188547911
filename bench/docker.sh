#!/usr/bin/env bash
# Docker back-end figures, as medians: cold image build, spawn to ssh-ready on a warm image,
# and slave time (first slave of a fresh machine, and a re-slave). Leaves nothing running.
# Usage: bench/docker.sh [RUNS] [--cold]   (--cold removes and rebuilds the base image first)
. "$(dirname "$0")/lib.sh"
runs=${1:-3}

if [ "${2:-}" = "--cold" ]; then
  docker image rm -f raptiformica-base:bookworm >/dev/null 2>&1 || true
  t0=$(now); sh compute/docker/ensure_image.sh; t1=$(now)
  printf 'image build (cold):           %.1f s\n' "$(awk "BEGIN{print $t1-$t0}")"
fi
$bin artifacts fetch >/dev/null 2>&1 || $bin artifacts fetch
start=(); slave=(); reslave=()
for _ in $(seq "$runs"); do
  t0=$(now); out=$($bin --json spawn --compute-type docker --no-slave 2>/dev/null); t1=$(now)
  host=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["host"])')
  start+=("$(awk "BEGIN{print $t1-$t0}")")
  t0=$(now); $bin slave "$host" --no-assimilate >/dev/null 2>&1; t1=$(now); slave+=("$(awk "BEGIN{print $t1-$t0}")")
  t0=$(now); $bin slave "$host" --no-assimilate >/dev/null 2>&1; t1=$(now); reslave+=("$(awk "BEGIN{print $t1-$t0}")")
  $bin destroy >/dev/null 2>&1
done
printf 'spawn to ssh-ready (warm):    median %.2f s of %s\n' "$(printf '%s\n' "${start[@]}" | median)" "$runs"
printf 'slave, fresh machine:         median %.2f s of %s\n' "$(printf '%s\n' "${slave[@]}" | median)" "$runs"
printf 'slave again (idempotent):     median %.2f s of %s\n' "$(printf '%s\n' "${reslave[@]}" | median)" "$runs"
