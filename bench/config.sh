#!/usr/bin/env bash
# Shared-config figures on a real 3-node docker cluster with ACLs on (image built on first use):
#   - seeding a new cluster's KV with a user module of about 1,000 keys (500 hooks): the time
#     the seeding node reports (goal <= 2 s);
#   - `config get` and `config set` on a node, timed on the node itself (goals <= 10 ms and
#     <= 20 ms), as medians of RUNS calls: on a cluster with the default config, and on the
#     one with the big module.
# Prints the figures; asserts nothing. Leaves nothing running.
# Usage: bench/config.sh [RUNS]   (default 21)
. "$(dirname "$0")/lib.sh"
runs=${1:-21}
# Times RUNS calls of a command on the node, in microseconds, and prints the median in ms.
on_node_median() {
  docker exec "$node" sh -c "for i in \$(seq $runs); do s=\$(date +%s%N); $1 >/dev/null 2>&1; e=\$(date +%s%N); echo \$(( (e - s) / 1000 )); done" |
    sort -n | awk '{a[NR]=$1} END {printf "%.1f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2) / 1000}'
}
get_set() {
  node=$(docker ps -q --filter network=raptiformica | head -n 1)
  docker exec "$node" raptiformica config set raptiformica/bench/x 0 >/dev/null
  echo "config get on a node ($1): median $(on_node_median "raptiformica config get raptiformica/bench/x") ms of $runs (goal 10 ms)"
  echo "config set on a node ($1): median $(on_node_median "raptiformica config set raptiformica/bench/x 1") ms of $runs (goal 20 ms)"
}
sh compute/docker/ensure_image.sh
$bin spawn --compute-type docker --count 3 >"$cache/spawn.log" 2>&1
get_set "default config"
$bin destroy >/dev/null 2>&1
rm -rf "$cache"/var/machines

big_module
$bin spawn --compute-type docker --count 3 >"$cache/spawn.log" 2>&1
# The node that seeded the KV keeps a record of it.
seeded=$(for id in $(docker ps -q --filter network=raptiformica); do
  docker exec "$id" cat /root/.raptiformica.d/var/seeded.json 2>/dev/null || true
done | python3 -c "import json,sys
for l in sys.stdin:
    r=json.loads(l); print(f\"{r['keys']} keys seeded in {r['seconds']:.2f} s\"); break")
node=$(docker ps -q --filter network=raptiformica | head -n 1)
keys=$(docker exec "$node" raptiformica --json config get raptiformica 2>/dev/null | python3 -c "import json,sys
def n(v): return sum(n(x) for x in v.values()) if isinstance(v, dict) else 1
print(n(json.load(sys.stdin)))")
echo "seeding: ${seeded:-no node recorded a seeding} (goal 2 s); the KV holds $keys keys"
get_set "1,000-key module"
