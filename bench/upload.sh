#!/usr/bin/env bash
# Bytes this workstation sends to a new machine from nothing while slaving it (goal: at most
# 25 MB), counted by iptables on the way out to a plain container (the base image, sshd and our
# key only), and the time slaving took. Twice: with a fresh cache (the artifacts' packed set is
# made first, once) and again to a second plain machine (the set and the bundle reused); then
# with a member serving (`slave --from-member`, one spawned node the member): what this
# workstation still sends, and the time. Prints the figures; asserts nothing. Leaves nothing
# running.
# Usage: bench/upload.sh   (as root: iptables)
. "$(dirname "$0")/lib.sh"
sh compute/docker/ensure_image.sh >/dev/null
# Our key and the artifacts, as any first command that needs them makes them.
$bin artifacts fetch >/dev/null 2>&1 || true
[ -f "$cache/id_ed25519.pub" ] || ssh-keygen -q -t ed25519 -N '' -f "$cache/id_ed25519"
plain=()
on_exit='[ ${#plain[@]} -gt 0 ] && docker rm -f "${plain[@]}" >/dev/null 2>&1; iptables -D OUTPUT -j bench_up 2>/dev/null; iptables -F bench_up 2>/dev/null; iptables -X bench_up 2>/dev/null'
one() {
  local p ip t bytes
  p=$(docker run -d --init --cap-add NET_ADMIN --device /dev/net/tun \
    --sysctl net.ipv6.conf.all.disable_ipv6=0 --sysctl net.ipv6.conf.default.disable_ipv6=0 \
    -e "RAPTIFORMICA_AUTHORIZED_KEYS=$(cat "$cache/id_ed25519.pub")" --network raptiformica raptiformica-base:bookworm)
  plain+=("$p")
  ip=$(docker inspect -f '{{(index .NetworkSettings.Networks "raptiformica").IPAddress}}' "$p")
  # sshd starts once the container made its host keys.
  for _ in $(seq 120); do docker exec "$p" sh -c 'pidof sshd' >/dev/null 2>&1 && break; sleep 0.5; done
  iptables -N bench_up 2>/dev/null || iptables -F bench_up
  iptables -I OUTPUT 1 -d "$ip" -j bench_up
  t=$(now)
  $bin slave "$ip" $2 >"$cache/slave.log" 2>&1 || { echo "slave failed: $(tail -n 2 "$cache/slave.log")"; return; }
  bytes=$(iptables -nvxL OUTPUT | awk -v ip="$ip" '$3=="bench_up" && $9==ip {print $2; exit}')
  iptables -D OUTPUT -d "$ip" -j bench_up
  echo "$1: $(awk "BEGIN{printf \"%.1f MiB (%d KiB)\", $bytes/1048576, $bytes/1024}") sent to a fresh machine, slaved in $(since "$t") s (goal 25 MB; 0 with a member serving)"
}
one "first machine (the packed set made)" --no-assimilate
one "second machine (reused)" --no-assimilate
$bin spawn --compute-type docker >/dev/null 2>&1 || { echo "spawn of the member failed"; exit 1; }
one "a member serving (slave --from-member)" --from-member
