#!/usr/bin/env bash
# Scale figures on real docker nodes (image built on first use):
#   - nodes 4 to 20 added one at a time: for each, how long `spawn` took and how long until
#     the new node was alive in `members` (goal for the 10th and the 20th: alive <= 5 s after
#     its spawn, flat as the cluster grows);
#   - then batches of 10 (`spawn --count 10`) up to TOTAL nodes: each batch's time and
#     whether all nodes are alive;
#   - after each spawn: the `ssh` processes of this run left on the workstation (goal: 0);
#   - at rest: the CPU of the whole cluster (docker stats) and per daemon (/proc, over 30 s,
#     the 3 servers apart), the overlay links of 5 nodes, and the host's memory in use.
# Prints the figures; asserts nothing. Leaves nothing running.
# Usage: bench/scale.sh [TOTAL]   (default 50; 20 skips the batches)
. "$(dirname "$0")/lib.sh"
total=${1:-50}
alive() { timeout 60 $bin members --json 2>/dev/null | python3 -c "import json,sys
try: print(sum(1 for m in json.load(sys.stdin) if m['status']=='alive'))
except Exception: print(0)"; }
until_alive() { local end=$((SECONDS + $2)); while [ $SECONDS -lt $end ]; do [ "$(alive)" -ge "$1" ] && return 0; sleep 0.3; done; return 1; }
nodes() { docker ps -q --filter network=raptiformica; }
at_rest() {
  sleep 20
  local cpu links
  cpu=$(docker stats --no-stream --format '{{.CPUPerc}}' $(nodes) | tr -d '%' | awk '{s+=$1} END {printf "%.1f", s}')
  links=$(for id in $(nodes | head -n 5); do
    docker exec "$id" sh -c 'yggdrasilctl -endpoint unix:///root/.raptiformica.d/mesh/yggdrasil.sock -json getpeers' |
      python3 -c "import json,sys; p=json.load(sys.stdin)['peers']; print(len({x['key'] for x in (p.values() if isinstance(p, dict) else p)}))"
  done | tr '\n' ' ')
  printf '  at rest with %d nodes: cluster CPU %s %% of a core; overlay peers of 5 nodes: %s; host memory in use: %s MB\n' \
    "$(nodes | wc -l)" "$cpu" "$links" "$(free -m | awk '/^Mem:/ {print $3}')"
  python3 bench/daemon_cpu.py 30 --servers | sed 's/^/  per daemon, % of a core: /'
}
# The ssh processes of this run still on this machine (a command's masters must end with it).
ssh_left() { { pgrep -f "ssh .*$cache/" || true; } | wc -l; }

sh compute/docker/ensure_image.sh
t0=$(now); $bin spawn --compute-type docker --count 3 >"$cache/spawn.log" 2>&1
until_alive 3 120
echo "3 nodes: $(since "$t0") s"
for n in $(seq 4 20); do
  t0=$(now)
  $bin spawn --compute-type docker >>"$cache/spawn.log" 2>&1 || { echo "node $n: spawn failed"; continue; }
  spawned=$(since "$t0"); t1=$(now)
  if until_alive "$n" 60; then
    printf 'node %2d: spawn %5s s, alive %4s s after it, ssh left %s\n' "$n" "$spawned" "$(since "$t1")" "$(ssh_left)"
  else
    printf 'node %2d: spawn %5s s, NOT alive within 60 s (%s alive)\n' "$n" "$spawned" "$(alive)"
  fi
done
at_rest
have=20
while [ "$have" -lt "$total" ]; do
  batch=$(( total - have < 10 ? total - have : 10 ))
  t0=$(now)
  ok=yes; $bin spawn --compute-type docker --count "$batch" >>"$cache/spawn.log" 2>&1 || ok=no
  spawned=$(since "$t0")
  have=$((have + batch))
  if until_alive "$have" 120; then
    printf '%d -> %d nodes: spawn %s s (all spawned: %s), all alive after %s s, ssh left %s\n' "$((have - batch))" "$have" "$spawned" "$ok" "$(since "$t0")" "$(ssh_left)"
  else
    printf '%d -> %d nodes: spawn %s s (all spawned: %s), %s alive after %s s\n' "$((have - batch))" "$have" "$spawned" "$ok" "$(alive)" "$(since "$t0")"
  fi
done
[ "$total" -gt 20 ] && at_rest
exit 0
