# Sourced by the cluster benches: the release binary built ($bin), a fresh cache dir for this
# run ($cache), and on exit whatever it spawned destroyed (plus anything in $on_exit, e.g. a
# host agent to stop); median, now and since for the figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q
bin=$PWD/target/release/raptiformica
cache=$(mktemp -d); export RAPTIFORMICA_CACHE_DIR=$cache
on_exit=
trap 'eval "$on_exit" || true; $bin destroy >/dev/null 2>&1 || true; rm -rf "$cache"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now)-$1}"; }
# Alive members and leaders as `members` on this host sees them (0 when it cannot tell).
alive() { $bin members --json 2>/dev/null | python3 -c 'import json,sys
try: print(sum(1 for m in json.load(sys.stdin) if m["status"]=="alive"))
except Exception: print(0)'; }
leader() { $bin members --json 2>/dev/null | python3 -c 'import json,sys
try: print(sum(1 for m in json.load(sys.stdin) if m["raft"]=="leader"))
except Exception: print(0)'; }
# Waits (at most ${wait_alive_tenths:-1200} tenths of a second) for $1 alive members and a leader.
wait_alive() { for _ in $(seq "${wait_alive_tenths:-1200}"); do [ "$(alive)" -ge "$1" ] && [ "$(leader)" -ge 1 ] && return 0; sleep 0.1; done; return 1; }
# A user module of about 1,000 keys (500 hooks that never run) in this run's cache: a big shared
# config for the config and snapshot figures.
big_module() {
  mkdir -p "$cache/modules/bench"
  python3 - "$cache/modules/bench/raptiformica.toml" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write('raptiformica_api_version = "0.1"\n')
    for i in range(500):
        f.write(f'[platform.default.hooks.after_mesh.b{i:03d}]\ncommand = "true"\npredicate = "false"\n')
PY
}
