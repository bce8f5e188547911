#!/usr/bin/env bash
# Healing figures on a real 3-node docker cluster (image built on first use), as medians:
#   - consul killed (-9) on a node -> a new consul pid, and -> the node alive in members
#     (goal 10 s),
#   - the agent killed (-9) -> a new agent (goal 10 s),
#   - a server `docker rm -f`'d -> `failed` in members (goal 7 s), and with `raptiformica
#     agent` running on this host -> 3 alive servers again (goal 30 s),
#   - two of three servers `docker rm -f`'d -> 3 alive servers again, a KV value written
#     before the loss intact (goal 60 s; the host's agent confirms the machines are gone and
#     asks the survivor to rebuild at once),
#   - the agent's RSS on a node (goal 20 MB) and the CPU of the cluster at rest.
# With --engine, instead, no workstation agent and machines with an engine of their own:
#   - one machine spawned with --with-engine -> 3 alive (it spawns the two missing; goal 30 s
#     after it is slaved),
#   - two of those three `docker rm -f`'d, the survivor one the node spawned -> 3 alive and 0
#     failed again (goal 90 s).
# Prints the figures; asserts nothing. Leaves nothing running.
# Usage: bench/healing.sh [RUNS]   (RUNS for the kill figures; default 3)
#        bench/healing.sh --engine
. "$(dirname "$0")/lib.sh"
if [ "${1:-}" = --engine ]; then
  on_node() { docker exec "$1" raptiformica --json members 2>/dev/null | python3 -c "import json,sys
try: m=json.load(sys.stdin); print(sum(1 for x in m if x['status']=='alive'), sum(1 for x in m if x['status']=='failed'))
except Exception: print(0, 0)"; }
  until_on() { local end=$((SECONDS + $3)); while [ $SECONDS -lt $end ]; do [ "$(on_node "$1")" = "$2" ] && return 0; sleep 0.5; done; return 1; }
  sh compute/docker/ensure_image.sh
  $bin spawn --compute-type docker --with-engine >"$cache/spawn.log" 2>&1
  t0=$(now)
  first=$(docker ps -q --filter "label=raptiformica.spawner=$(hostname)" | head -n 1)
  until_on "$first" "3 0" 300 && grown=$(since "$t0") || grown="not within 300"
  sleep 30 # the growth's slaving settles (the machines are members before they are slaved)
  label=$(docker inspect -f '{{index .Config.Labels "raptiformica.cluster"}}' "$first")
  others=($(docker ps -q --filter "label=raptiformica.cluster=$label" | grep -v "^${first:0:12}"))
  survivor=${others[0]}
  t0=$(now); docker rm -f "$first" "${others[1]}" >/dev/null
  # Until the survivor sees the loss (right after it, the two still look alive), then healed.
  for _ in $(seq 120); do [ "$(on_node "$survivor" | cut -d' ' -f2)" -ge 1 ] && break; sleep 0.5; done
  until_on "$survivor" "3 0" 600 && healed=$(since "$t0") || healed="not within 600"
  sleep 10
  n=$(docker ps -q --filter "label=raptiformica.cluster=$label" | wc -l)
  printf 'one machine with an engine -> 3 alive:          %s s (goal 30 s)\n' "$grown"
  printf 'two of three lost, no workstation -> 3 alive:   %s s (goal 90 s), %s containers of the cluster\n' "$healed" "$n"
  exit 0
fi
runs=${1:-3}
agent_pid=
on_exit='[ -n "$agent_pid" ] && kill $agent_pid 2>/dev/null || true'
count() { timeout 30 $bin members --json 2>/dev/null | python3 -c "import json,sys
try: print(sum(1 for m in json.load(sys.stdin) if m['status']=='$1' and ('$2'=='' or m['type']=='$2')))
except Exception: print(0)"; }
until_count() { local end=$((SECONDS + $4)); while [ $SECONDS -lt $end ]; do [ "$(count "$1" "$2")" -ge "$3" ] && return 0; sleep 0.5; done; return 1; }
nodes() { docker ps -q --filter network=raptiformica; }

sh compute/docker/ensure_image.sh
$bin spawn --compute-type docker --count 3 >/dev/null 2>&1
until_count alive server 3 120
ids=($(nodes))
docker exec "${ids[0]}" raptiformica config set raptiformica/bench/keep before >/dev/null

consul_pid=(); consul_alive=(); agent_back=()
for _ in $(seq "$runs"); do
  old=$(docker exec "${ids[1]}" pidof consul)
  t0=$(now); docker exec "${ids[1]}" kill -9 "$old"
  while :; do p=$(docker exec "${ids[1]}" pidof consul || true); [ -n "$p" ] && [ "$p" != "$old" ] && break; sleep 0.1; done
  consul_pid+=("$(since "$t0")")
  until_count alive "" 3 60; consul_alive+=("$(since "$t0")")
  old=$(docker exec "${ids[1]}" sh -c "pgrep -f '[r]aptiformica agent' | head -n 1")
  t0=$(now); docker exec "${ids[1]}" kill -9 "$old"
  while :; do p=$(docker exec "${ids[1]}" sh -c "pgrep -f '[r]aptiformica agent' | head -n 1" || true); [ -n "$p" ] && [ "$p" != "$old" ] && break; sleep 0.1; done
  agent_back+=("$(since "$t0")")
  sleep 5
done
rss=$(docker exec "${ids[0]}" sh -c "ps -o rss= -p \$(pgrep -f '[r]aptiformica agent' | head -n 1)")
sleep 10
cpu=$(for id in $(nodes); do docker stats --no-stream --format '{{.CPUPerc}}' "$id"; done | tr -d '%' | awk '{s+=$1} END {printf "%.1f", s}')

$bin agent >"$cache/agent.log" 2>&1 & agent_pid=$!
t0=$(now); docker rm -f "${ids[2]}" >/dev/null
until_count failed "" 1 60; failed=$(since "$t0")
until_fewer() { local end=$((SECONDS + 60)); while [ $SECONDS -lt $end ]; do [ "$(count alive server)" -lt "$1" ] && return 0; sleep 0.5; done; return 1; }
until_fewer 3
until_count alive server 3 300; replaced=$(since "$t0")

ids=($(nodes))
t0=$(now); docker rm -f "${ids[1]}" "${ids[2]}" >/dev/null
until_fewer 2
until_count alive server 3 600; rebuilt=$(since "$t0")
kept=$(docker exec "$(nodes | head -n 1)" raptiformica config get raptiformica/bench/keep 2>&1)

printf 'consul killed -> new consul:     median %.1f s of %s\n' "$(printf '%s\n' "${consul_pid[@]}" | median)" "$runs"
printf 'consul killed -> node alive:     median %.1f s (goal 10 s)\n' "$(printf '%s\n' "${consul_alive[@]}" | median)"
printf 'agent killed -> agent back:      median %.1f s (goal 10 s)\n' "$(printf '%s\n' "${agent_back[@]}" | median)"
printf 'server rm -f -> failed:          %s s (goal 7 s)\n' "$failed"
printf 'server rm -f -> replaced:        %s s (goal 30 s)\n' "$replaced"
printf 'two of three lost -> 3 servers:  %s s (goal 60 s), KV value: %s\n' "$rebuilt" "$kept"
printf 'agent RSS on a node:             %d kB (goal 20 MB)\n' "$rss"
printf 'CPU of 3 nodes at rest:          %s %% of a core\n' "$cpu"
