#!/usr/bin/env bash
# Stop a test environment started by up.sh: kill exactly the PIDs recorded in DIR/pids
# (TERM, up to 5 s grace, then KILL), including the watchdog, then remove DIR unless
# OXBOW_KEEP_ENV=1. Idempotent.
#
#   down.sh [DIR]      (default: $OXBOW_ENV_DIR)
set -euo pipefail

DIR="${1:-${OXBOW_ENV_DIR:-}}"
if [[ -z "$DIR" ]]; then
  echo "down: usage: down.sh DIR (or set OXBOW_ENV_DIR)" >&2
  exit 2
fi
if [[ ! -d "$DIR" ]]; then
  echo "down: $DIR does not exist (already down)" >&2
  exit 0
fi

# Watchdog first (unless we are the watchdog: it execs this script), so that it does not
# start a second down.sh while we work.
pids=()
names=()
add() {
  local f="$1" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ && "$pid" != "$$" ]] || return 0
  pids+=("$pid")
  names+=("$(basename "$f" .pid)")
}
add "$DIR/pids/watchdog.pid"
for f in "$DIR"/pids/*.pid; do
  [[ "$f" == "$DIR/pids/watchdog.pid" ]] || add "$f"
done

running=()
for i in "${!pids[@]}"; do
  if kill -TERM "${pids[$i]}" 2>/dev/null; then
    running+=("${pids[$i]}")
    echo "down: stopping ${names[$i]} (${pids[$i]})" >&2
  fi
done

deadline=$((SECONDS + 5))
while [[ ${#running[@]} -gt 0 ]] && ((SECONDS < deadline)); do
  still=()
  for pid in "${running[@]}"; do
    kill -0 "$pid" 2>/dev/null && still+=("$pid")
  done
  running=("${still[@]+"${still[@]}"}")
  [[ ${#running[@]} -gt 0 ]] && sleep 0.1
done
for pid in "${running[@]+"${running[@]}"}"; do
  echo "down: killing $pid (did not exit after TERM)" >&2
  kill -KILL "$pid" 2>/dev/null || true
done

rm -f "$DIR"/pids/*.pid
if [[ "${OXBOW_KEEP_ENV:-0}" == 1 ]]; then
  echo "down: stopped; kept $DIR (OXBOW_KEEP_ENV=1)" >&2
else
  rm -rf "$DIR"
  echo "down: stopped; removed $DIR" >&2
fi
