#!/usr/bin/env bash
# Events and replicated state machines on docker nodes (medians):
# - event fired on a node -> handler done on every node, with 3 nodes and with 10;
# - `state append` throughput: one client appending lines (`--each-line`, many entries per
#   transaction) and one entry per command; three nodes appending at once;
# - append -> applied on every node of 3 (the lag at that rate), the machine having an
#   `apply_batch` (one process for a run of waiting entries) beside its `apply`.
# Goals: <= 1 s (3 nodes) and <= 2 s (10); >= 500 entries/s; <= 1 s lag. Prints figures only.
# Usage: bench/events.sh [RUNS]   (default 5)
. "$(dirname "$0")/lib.sh"
runs=${1:-5}
mkdir -p "$cache/modules/bench"
cat >"$cache/modules/bench/raptiformica.json" <<'J'
{"raptiformica_api_version": "0.1",
 "platform": {"default": {"events": {"tick": {"h": {"command": "date +%s.%N > /tmp/tick.done"}}}}},
 "state": {"acc": {"apply": "cat >> /root/acc.state && echo >> /root/acc.state",
                   "apply_batch": "awk 1 \"$RAPTIFORMICA_STATE_ENTRIES\"/* > /root/acc.batch && cat /root/acc.batch >> /root/acc.state",
                   "snapshot": "cat /root/acc.state 2>/dev/null || true",
                   "restore": "cat > /root/acc.state", "snapshot_every": 5000}}}
J
nodes() { docker ps -q --filter network=raptiformica; }
# One event fired on the first node; seconds (this machine's clock, polling every node with
# docker exec, so an upper bound) until every node's handler has finished.
event_latency() {
  local ids; ids=($(nodes))
  for c in "${ids[@]}"; do docker exec "$c" rm -f /tmp/tick.done; done
  local t0; t0=$(now)
  docker exec "${ids[0]}" raptiformica event fire tick >/dev/null
  local pending=("${ids[@]}")
  for _ in $(seq 200); do
    local left=()
    for c in "${pending[@]}"; do docker exec "$c" test -s /tmp/tick.done || left+=("$c"); done
    pending=("${left[@]}")
    [ ${#pending[@]} -eq 0 ] && break
  done
  [ ${#pending[@]} -eq 0 ] || echo "  (no handler on ${pending[*]})" >&2
  since "$t0"
}
$bin spawn --compute-type docker --count 3 >/dev/null 2>&1
wait_alive 3
sleep 2
lat3=(); for _ in $(seq "$runs"); do lat3+=("$(event_latency)"); done
ids=($(nodes))

# state append throughput and lag (3 nodes).
one=${ids[0]}
applied_all() { # every node applied $1 entries
  for c in "${ids[@]}"; do
    [ "$(docker exec "$c" sh -c 'grep -c . /root/acc.state 2>/dev/null || true' | head -n 1)" -ge "$1" ] || return 1
  done
}
docker exec "$one" sh -c 'seq 2000 | sed s/^/x/ > /tmp/lines'
t0=$(now); docker exec "$one" raptiformica state append acc @/tmp/lines --each-line >/dev/null; t1=$(now)
until applied_all 2000; do sleep 0.1; done; t2=$(now)
batch_rate=$(awk "BEGIN{printf \"%.0f\", 2000 / ($t1 - $t0)}")
batch_lag=$(awk "BEGIN{printf \"%.2f\", $t2 - $t1}")
t0=$(now); docker exec "$one" sh -c 'for i in $(seq 100); do raptiformica state append acc y$i >/dev/null; done'; t1=$(now)
single_rate=$(awk "BEGIN{printf \"%.0f\", 100 / ($t1 - $t0)}")
for c in "${ids[@]}"; do docker exec "$c" sh -c 'seq 1000 | sed s/^/z/ > /tmp/lines'; done
t0=$(now)
for c in "${ids[@]}"; do docker exec "$c" raptiformica state append acc @/tmp/lines --each-line >/dev/null & done; wait
t1=$(now)
until applied_all 5100; do sleep 0.1; done; t2=$(now)
three_rate=$(awk "BEGIN{printf \"%.0f\", 3000 / ($t1 - $t0)}")
three_lag=$(awk "BEGIN{printf \"%.2f\", $t2 - $t1}")
apply_rate=$(awk "BEGIN{printf \"%.0f\", 3000 / ($t2 - $t0)}")
# A steady 500 entries/s for 10 s (100 lines every 0.2 s, paced on the node's clock), then the
# lag: from the last append returning to every node having applied everything.
docker exec "$one" sh -c 'seq 100 | sed s/^/s/ > /tmp/chunk'
t0=$(now)
docker exec "$one" sh -c 'start=$(date +%s.%N); i=0
  while [ $i -lt 50 ]; do
    raptiformica state append acc @/tmp/chunk --each-line >/dev/null; i=$((i + 1))
    pause=$(awk "BEGIN{d = $start + $i * 0.2 - $(date +%s.%N); if (d > 0) printf \"%.3f\", d; else print 0}")
    sleep "$pause"
  done'
t1=$(now)
until applied_all 10100; do sleep 0.05; done; t2=$(now)
steady_rate=$(awk "BEGIN{printf \"%.0f\", 5000 / ($t1 - $t0)}")
steady_lag=$(awk "BEGIN{printf \"%.2f\", $t2 - $t1}")

# 10 nodes for the event latency.
$bin spawn --compute-type docker --count 7 >/dev/null 2>&1
wait_alive 10
sleep 3
lat10=(); for _ in $(seq "$runs"); do lat10+=("$(event_latency)"); done

echo "event fired -> handled on every node: 3 nodes median $(printf '%s\n' "${lat3[@]}" | median)s (goal <= 1), 10 nodes median $(printf '%s\n' "${lat10[@]}" | median)s (goal <= 2)"
echo "  (runs: 3 nodes ${lat3[*]}; 10 nodes ${lat10[*]})"
echo "state append, one client, 2000 lines --each-line: $batch_rate entries/s; applied on all 3 nodes ${batch_lag}s after the append returned"
echo "state append, one client, one command per entry: $single_rate entries/s"
echo "state append, three nodes at once (1000 lines each): $three_rate entries/s; applied on all 3 ${three_lag}s after the appends returned (apply rate $apply_rate entries/s per node)"
echo "state append, steady ${steady_rate} entries/s for 10 s: applied on all 3 nodes ${steady_lag}s after the last append (goal <= 1 s at 500/s)"
