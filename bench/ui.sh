#!/usr/bin/env bash
# Web map figures (issue 12) with 3 and with 10 docker nodes:
#   - the page's first paint and first data (nodes rendered), in headless chromium, as the page
#     itself measures them (data-first-paint / data-first-data on <html>, ms since navigation);
#   - the API's latency (/api/members and /api/state, curl's total time, median of 30);
#   - how long gathering one view takes through the SSH tunnel (the view's took_ms, median of 10).
# Prints medians; asserts nothing; destroys what it spawned. Needs chromium.
# Usage: bench/ui.sh [RUNS]   (default 5 page loads per size)
. "$(dirname "$0")/lib.sh"
runs=${1:-5}
command -v chromium >/dev/null || { echo "chromium is needed (apt-get install chromium)"; exit 1; }
port=$((20000 + RANDOM % 20000))
ui_pid=
on_exit='[ -n "$ui_pid" ] && kill $ui_pid 2>/dev/null'
measure() {
  local n=$1 paint=() data=() api=() state=() took=()
  local login= auth
  $bin ui --listen 127.0.0.1:$port >"$cache/ui.log" 2>&1 & ui_pid=$!
  # The login URL `ui` prints (the token is needed on loopback too): chromium opens it (a
  # cookie, then the map), curl sends the token as a bearer (a header, not an argument).
  for _ in $(seq 40); do
    login=$(grep -oE "http://127\.0\.0\.1:$port/login\?token=[^[:space:]]*" "$cache/ui.log") && break
    sleep 0.25
  done
  [ -n "$login" ] || { echo "no login URL from ui"; cat "$cache/ui.log"; exit 1; }
  auth="$cache/ui.auth"
  (umask 077; printf 'header = "Authorization: Bearer %s"\n' "${login#*token=}" >"$auth")
  for _ in $(seq 120); do
    [ "$(curl -fs -K "$auth" "http://127.0.0.1:$port/api/members" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" -ge "$n" ] 2>/dev/null && break
    sleep 0.5
  done
  for _ in $(seq "$runs"); do
    dom=$(timeout 60 chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=5000 --dump-dom "$login" 2>/dev/null)
    paint+=("$(echo "$dom" | grep -o 'data-first-paint="[0-9.]*"' | head -n 1 | grep -o '[0-9.]*' || echo nan)")
    data+=("$(echo "$dom" | grep -o 'data-first-data="[0-9.]*"' | head -n 1 | grep -o '[0-9.]*' || echo nan)")
  done
  for _ in $(seq 30); do
    api+=("$(curl -K "$auth" -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/api/members" | awk '{print $1*1000}')")
    state+=("$(curl -K "$auth" -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/api/state" | awk '{print $1*1000}')")
  done
  for _ in $(seq 10); do
    took+=("$(curl -K "$auth" -fs "http://127.0.0.1:$port/api/state" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("took_ms", "nan"))')")
    sleep 2
  done
  kill $ui_pid; wait $ui_pid 2>/dev/null; ui_pid=
  printf '%-10s %10s %10s %14s %12s %14s\n' "$n nodes" \
    "$(printf '%s\n' "${paint[@]}" | median)" "$(printf '%s\n' "${data[@]}" | median)" \
    "$(printf '%s\n' "${api[@]}" | median)" "$(printf '%s\n' "${state[@]}" | median)" \
    "$(printf '%s\n' "${took[@]}" | median)"
}
$bin spawn --compute-type docker --count 3 >"$cache/spawn.log" 2>&1 || { tail "$cache/spawn.log"; exit 1; }
wait_alive 3
printf '%-10s %10s %10s %14s %12s %14s\n' "" "paint ms" "data ms" "members ms" "state ms" "gather ms"
measure 3
$bin spawn --compute-type docker --count 7 >>"$cache/spawn.log" 2>&1 || { tail "$cache/spawn.log"; exit 1; }
wait_alive 10
measure 10
