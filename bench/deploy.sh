#!/usr/bin/env bash
# deploy: three plain containers (sshd and our key only, not spawned by us), one of them
# reachable only through another, deployed from nothing; then re-runs on the healthy network
# (every host `unchanged`). Prints the first deploy's time and the re-runs' median.
# Usage: bench/deploy.sh [RERUNS]   (default 5)
. "$(dirname "$0")/lib.sh"
reruns=${1:-5}
hidden=raptiformica-bench-hidden
plain=()
on_exit='[ ${#plain[@]} -gt 0 ] && docker rm -f "${plain[@]}" >/dev/null 2>&1; docker network rm $hidden >/dev/null 2>&1 || true'
# The base image and our key.
$bin spawn --compute-type docker --no-slave >/dev/null 2>&1
$bin destroy >/dev/null 2>&1
image=raptiformica-base:bookworm
docker network rm $hidden >/dev/null 2>&1 || true
docker network create $hidden >/dev/null
run_plain() {
  docker run -d --init --cap-add NET_ADMIN --device /dev/net/tun \
    --sysctl net.ipv6.conf.all.disable_ipv6=0 --sysctl net.ipv6.conf.default.disable_ipv6=0 \
    -e RAPTIFORMICA_AUTHORIZED_KEYS="$(cat "$cache/id_ed25519.pub")" --network "$1" "$image"
}
a=$(run_plain raptiformica); plain+=("$a")
j=$(run_plain raptiformica); plain+=("$j")
docker network connect $hidden "$j"
h=$(run_plain $hidden); plain+=("$h")
ip_on() { docker inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1"; }
printf '[{"dst": "%s"}, {"dst": "%s"}, {"dst": "%s", "via": "%s"}]' \
  "$(ip_on "$a" raptiformica)" "$(ip_on "$j" raptiformica)" "$(ip_on "$h" $hidden)" "$(ip_on "$j" raptiformica)" >"$cache/inventory.json"
t=$(now)
$bin deploy "$cache/inventory.json" >/dev/null 2>"$cache/deploy.log" || { tail -n 20 "$cache/deploy.log"; exit 1; }
first=$(since "$t")
for _ in $(seq 60); do
  n=$(docker exec "$a" raptiformica --json members 2>/dev/null | python3 -c 'import json,sys; print(sum(m["status"]=="alive" for m in json.load(sys.stdin)))' 2>/dev/null || echo 0)
  [ "$n" -ge 3 ] && break; sleep 1
done
alive=$(since "$t")
times=()
for _ in $(seq "$reruns"); do
  t=$(now)
  out=$($bin --json deploy "$cache/inventory.json" 2>/dev/null)
  times+=("$(since "$t")")
  echo "$out" | python3 -c 'import json,sys; r=[o["result"] for o in json.load(sys.stdin)]; sys.exit(0 if set(r)=={"unchanged"} else "re-run not unchanged: %s" % r)'
done
echo "deploy of 3 hosts (one via a jump host) from nothing: ${first}s (3 alive members after ${alive}s)"
echo "re-run on the healthy network, median of $reruns: $(printf '%s\n' "${times[@]}" | median)s (all hosts unchanged)"
