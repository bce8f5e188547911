#!/usr/bin/env bash
# Packaged image figures (issue 9) on real docker nodes (image built on first use):
#   - `package --compute-type docker`: how long baking the packaged image takes;
#   - a cluster of 3 from nothing (`spawn --count 3`) until 3 members are alive with a leader,
#     RUNS times from the packaged image and RUNS times with `--no-package`, taken in turns:
#     the medians of the spawn itself and of spawn-to-alive, and their ratio
#     (goal: packaged <= half of plain). With the built-in `headless` type the package saves
#     only the upload (~90 MB, ~2 s on a local network) and a trivial bootstrap; the container
#     start and consensus stay, so the gain grows with what a server type's bootstrap does.
# The packaged image gets a repository of its own (removed at the end), so a packaged image of
# the user's is neither used nor replaced. Prints the figures; asserts nothing. Leaves nothing
# running.
# Usage: bench/package.sh [RUNS]   (default 3)
. "$(dirname "$0")/lib.sh"
runs=${1:-3}
export RAPTIFORMICA_DOCKER_PACKAGED_REPO=raptiformica-packaged-bench-$$
on_exit="$bin destroy >/dev/null 2>&1; docker image rm -f $RAPTIFORMICA_DOCKER_PACKAGED_REPO:headless >/dev/null 2>&1 || true"
# One cluster of 3 from nothing; appends to the arrays named spawn_$1 and alive_$1.
cluster() {
  local mode=$1; shift
  local t0 t1 t2
  t0=$(now); $bin spawn --compute-type docker --count 3 "$@" >>"$cache/spawn.log" 2>&1 || echo "  ($mode: spawn failed)"
  t1=$(now)
  wait_alive 3 || echo "  ($mode: not 3 alive with a leader within 120 s)"
  t2=$(now)
  eval "spawn_$mode+=($(awk "BEGIN{print $t1-$t0}"))"
  eval "alive_$mode+=($(awk "BEGIN{print $t2-$t0}"))"
  # One more machine into the running cluster: what each later spawn costs.
  t0=$(now); $bin spawn --compute-type docker "$@" >>"$cache/spawn.log" 2>&1 || echo "  ($mode: 4th spawn failed)"
  wait_alive 4 || echo "  ($mode: the 4th not alive within 120 s)"
  eval "fourth_$mode+=($(awk "BEGIN{print $(now)-$t0}"))"
  $bin destroy >/dev/null 2>&1
}

sh compute/docker/ensure_image.sh
$bin artifacts fetch >/dev/null 2>&1 || $bin artifacts fetch
t0=$(now); $bin package --compute-type docker >"$cache/package.log" 2>&1 || { cat "$cache/package.log"; exit 1; }
echo "package --compute-type docker: $(since "$t0") s ($(tail -n 1 "$cache/package.log"))"
spawn_packaged=(); alive_packaged=(); spawn_plain=(); alive_plain=(); fourth_packaged=(); fourth_plain=()
for _ in $(seq "$runs"); do
  cluster packaged
  cluster plain --no-package
done
m() { printf '%s\n' "$@" | median; }
sp=$(m "${spawn_packaged[@]}"); ap=$(m "${alive_packaged[@]}")
sn=$(m "${spawn_plain[@]}"); an=$(m "${alive_plain[@]}")
printf '3 nodes, spawn only:     packaged median %.1f s, plain median %.1f s, ratio %.2f\n' "$sp" "$sn" "$(awk "BEGIN{print $sp/$sn}")"
printf '3 nodes, spawn to alive: packaged median %.1f s, plain median %.1f s, ratio %.2f (goal <= 0.50)\n' "$ap" "$an" "$(awk "BEGIN{print $ap/$an}")"
fp=$(m "${fourth_packaged[@]}"); fn=$(m "${fourth_plain[@]}")
printf 'a 4th node, spawn to alive: packaged median %.1f s, plain median %.1f s, ratio %.2f (goal <= 0.50)\n' "$fp" "$fn" "$(awk "BEGIN{print $fp/$fn}")"
printf '  (runs: %s each; packaged to alive: %s; plain to alive: %s)\n' "$runs" "${alive_packaged[*]}" "${alive_plain[*]}"
echo "  provisioning skipped in $(grep -c 'already provisioned' "$cache/spawn.log") of $((runs * 4)) packaged spawns"
exit 0
