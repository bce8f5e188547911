#!/usr/bin/env bash
# Vagrant back-end figures (issue 15), next to docker's, on this machine (where KVM guests do not
# boot, the VMs run in software emulation; the driver in use is printed):
#   - the box built from nothing (ensure_box.sh --force; goal: within 10 minutes);
#   - `spawn --compute-type vagrant` of a first machine until it is slaved and meshed, RUNS times
#     (goal: within 3 minutes), and of a second one joining it;
#   - `spawn --compute-type docker` the same way, for comparison.
# Prints medians; asserts nothing; destroys what it spawned.
# Usage: bench/vagrant.sh [RUNS] [--no-box]   (default 3; --no-box: keep the existing box)
. "$(dirname "$0")/lib.sh"
runs=${1:-3}
sh compute/vagrant/setup.sh --daemons
echo "libvirt driver: $(sh compute/vagrant/probe_driver.sh) ($(cat /var/lib/raptiformica/vagrant/driver.reason 2>/dev/null || echo probed))"
if [ "${2:-}" != "--no-box" ]; then
  t0=$(now); sh compute/vagrant/ensure_box.sh --force >/dev/null 2>"$cache/box.log" || { cat "$cache/box.log"; exit 1; }
  echo "box built from nothing: $(since "$t0") s"
fi
sh compute/docker/ensure_image.sh
$bin artifacts fetch >/dev/null 2>&1 || $bin artifacts fetch
declare -A first second
for ty in vagrant docker; do
  a=(); b=()
  for _ in $(seq "$runs"); do
    t0=$(now); $bin spawn --compute-type "$ty" --no-package >>"$cache/spawn.log" 2>&1 || echo "  ($ty: spawn failed, see $cache/spawn.log)"
    a+=("$(since "$t0")")
    t0=$(now); $bin spawn --compute-type "$ty" --no-package >>"$cache/spawn.log" 2>&1 || echo "  ($ty: second spawn failed)"
    b+=("$(since "$t0")")
    $bin destroy >/dev/null 2>&1
  done
  first[$ty]=$(printf '%s\n' "${a[@]}" | median)
  second[$ty]=$(printf '%s\n' "${b[@]}" | median)
done
printf '%-32s %10s %10s\n' "median of $runs (s)" vagrant docker
printf '%-32s %10s %10s\n' "first machine slaved and meshed" "${first[vagrant]}" "${first[docker]}"
printf '%-32s %10s %10s\n' "second machine, meshed with it" "${second[vagrant]}" "${second[docker]}"
