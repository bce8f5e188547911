#!/usr/bin/env bash
# Renumbering: three docker nodes, the workstation agent running; every node off the network at
# once, placeholder containers on the freed addresses, the nodes back on new ones. Prints the
# time from the move to 3 alive members with a leader (goal: 2 minutes) and whether a key
# written before is still read. Asserts nothing. Leaves nothing running.
# Usage: bench/renumber.sh
. "$(dirname "$0")/lib.sh"
net=raptiformica
placeholders=()
on_exit='[ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null; [ ${#placeholders[@]} -gt 0 ] && docker rm -f "${placeholders[@]}" >/dev/null 2>&1'
$bin spawn --compute-type docker --count 3 >"$cache/spawn.log" 2>&1 || { echo "spawn failed: $(tail -n 2 "$cache/spawn.log")"; exit 1; }
wait_alive 3 || { echo "the cluster did not form"; exit 1; }
$bin config set raptiformica/bench/before-move kept >/dev/null 2>&1
$bin agent >"$cache/agent.log" 2>&1 &
agent_pid=$!
sleep 5
nodes=$(docker ps -q --filter "label=raptiformica.instance" --filter network=$net | while read -r c; do
  case "$(docker inspect -f '{{index .Config.Labels "raptiformica.instance"}}' "$c")" in "$cache"/*) echo "$c" ;; esac; done)
ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$1"; }
before=$(for c in $nodes; do ip "$c"; done | sort | tr '\n' ' ')
for c in $nodes; do docker network disconnect $net "$c"; done
for c in $nodes; do placeholders+=("$(docker run -d --network $net raptiformica-base:bookworm sleep 3600)"); done
for c in $nodes; do docker network connect $net "$c"; done
t=$(now)
after=$(for c in $nodes; do ip "$c"; done | sort | tr '\n' ' ')
echo "addresses: $before-> $after"
if wait_alive 3; then echo "renumbered: 3 alive with a leader $(since "$t") s after the move (goal 120 s)"
else echo "renumbered: not 3 alive with a leader within $(since "$t") s"; fi
echo "a key written before the move: $($bin ssh -- raptiformica config get raptiformica/bench/before-move 2>/dev/null || echo lost)"
