#!/usr/bin/env bash
# Mesh and consensus figures, as medians over RUNS clusters (image already built):
#   - from nothing to 3 alive consul servers with a leader (`spawn --count 3`, then polling
#     `members --json` from the host),
#   - a 4th node from `spawn` to alive in `members`,
#   - `members` latency on a node and from the host (through a node over SSH),
# then the RSS of consul, yggdrasil and any raptiformica process on a node.
# Goals: 3 nodes in 15 s, the 4th in 5 s, `members` on a node in 50 ms. Leaves nothing running.
# Usage: bench/mesh.sh [RUNS]
. "$(dirname "$0")/lib.sh"
runs=${1:-1}

sh compute/docker/ensure_image.sh
$bin artifacts fetch >/dev/null 2>&1 || $bin artifacts fetch
three=(); fourth=(); on_node=(); from_host=()
for _ in $(seq "$runs"); do
  t0=$(now); $bin spawn --compute-type docker --count 3 >/dev/null 2>&1; wait_alive 3; t1=$(now)
  three+=("$(awk "BEGIN{print $t1-$t0}")")
  t0=$(now); $bin spawn --compute-type docker >/dev/null 2>&1; wait_alive 4; t1=$(now)
  fourth+=("$(awk "BEGIN{print $t1-$t0}")")
  node=$(docker ps -q --filter network=raptiformica | head -n 1)
  # On the node itself: 20 runs, median, in ms (docker exec's own overhead is not counted).
  on_node+=("$(docker exec "$node" sh -c 'for i in $(seq 20); do s=$(date +%s%N); raptiformica members >/dev/null; e=$(date +%s%N); echo $(( (e-s)/1000 )); done' | median | awk '{print $1/1000}')")
  for _ in $(seq 5); do t0=$(now); $bin members >/dev/null 2>&1; t1=$(now); from_host+=("$(awk "BEGIN{print ($t1-$t0)*1000}")"); done
  echo "RSS on node ${node:0:12} (kB):"
  docker exec "$node" ps -o rss=,comm= -C consul,yggdrasil,raptiformica | awk '{printf "  %-14s %6d kB\n", $2, $1}'
  $bin destroy >/dev/null 2>&1
done
printf '3 alive servers with a leader, from nothing: median %.1f s of %s (goal 15 s)\n' "$(printf '%s\n' "${three[@]}" | median)" "$runs"
printf '4th node alive in members:                   median %.1f s of %s (goal 5 s)\n' "$(printf '%s\n' "${fourth[@]}" | median)" "$runs"
printf 'members on a node:                           median %.1f ms (goal 50 ms)\n' "$(printf '%s\n' "${on_node[@]}" | median)"
printf 'members from the host (via a node, SSH):     median %.0f ms\n' "$(printf '%s\n' "${from_host[@]}" | median)"
