#!/usr/bin/env bash
# Snapshot figures on a real 3-node docker cluster (image built on first use): a cluster whose
# KV holds a user module of about 1,000 keys, `snapshot save`, then `snapshot restore --yes` of
# that file into the same cluster, timed from the workstation, as the median of RUNS restores
# (the trust-boundaries issue: a restore no slower than before by more than 20 %).
# Prints the figures; asserts nothing. Leaves nothing running.
# Usage: bench/snapshot.sh [RUNS]   (default 5)
. "$(dirname "$0")/lib.sh"
runs=${1:-5}
sh compute/docker/ensure_image.sh
big_module
$bin spawn --compute-type docker --count 3 >"$cache/spawn.log" 2>&1
wait_alive 3
t=$(now)
$bin snapshot save "$cache/bench.snap" >"$cache/save.log" 2>&1
echo "snapshot save: $(since "$t") s, $(stat -c %s "$cache/bench.snap") bytes"
for i in $(seq "$runs"); do
  t=$(now)
  $bin snapshot restore "$cache/bench.snap" --yes >"$cache/restore.log" 2>&1 || { tail -n 5 "$cache/restore.log"; exit 1; }
  since "$t"; echo
done | grep . | median | xargs -I{} echo "snapshot restore of about 1,000 keys: median {} s of $runs"
