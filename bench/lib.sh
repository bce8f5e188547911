# Sourced by the cluster benches: the release binary built ($bin), a fresh cache dir for this
# run ($cache), and on exit whatever it spawned destroyed (plus anything in $on_exit, e.g. a
# host agent to stop); median, now and since for the figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q
bin=$PWD/target/release/raptiformica
cache=$(mktemp -d); export RAPTIFORMICA_CACHE_DIR=$cache
on_exit=
trap 'eval "$on_exit"; $bin destroy >/dev/null 2>&1 || true; rm -rf "$cache"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now)-$1}"; }
