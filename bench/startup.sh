#!/usr/bin/env bash
# Start-up time of the release binary: median of `raptiformica --version` and of a config read.
# Goal: --version under 10 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release/raptiformica
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 - "$bin" "$tmp" <<'PY'
import os, statistics, subprocess, sys, time
bin, tmp = sys.argv[1], sys.argv[2]
env = dict(os.environ, RAPTIFORMICA_CACHE_DIR=tmp)
def median_ms(args, n=51):
    t = []
    for _ in range(n):
        s = time.perf_counter()
        subprocess.run([bin, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
        t.append(time.perf_counter() - s)
    return statistics.median(t) * 1000
print(f"--version:       median {median_ms(['--version']):.2f} ms (goal < 10 ms)")
print(f"config --json:   median {median_ms(['config', '--json']):.2f} ms")
subprocess.run([bin, "config", "set", "bench/x", "1"], env=env, check=True)
print(f"config set:      median {median_ms(['config', 'set', 'bench/x', '2']):.2f} ms")
PY
