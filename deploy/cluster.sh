#!/usr/bin/env bash
# A local cluster on this machine: one xcoord (database and artifacts under the run directory) and
# N CPU workers, in the background with pid files and logs (docs/operations.md).
#
#   deploy/cluster.sh start  [--workers N] [--dir DIR] [--port P] [--http HOST:PORT|off]
#   deploy/cluster.sh stop   [--dir DIR]
#   deploy/cluster.sh status [--dir DIR]
#
# Defaults: 2 workers, DIR runs/cluster, port 7070, the dashboard on 127.0.0.1 at a free port (its
# URL with the access token is printed and kept in DIR/dashboard.url). The programs come from $XD_BIN_DIR (the four
# executables side by side), else the build tree ${XD_BUILD_DIR:-build}, else PATH.
# DIR/xcoord.db, DIR/artifacts/, DIR/workers/wN/, DIR/logs/{xcoord,wN}.log, DIR/pids/*.pid.
set -euo pipefail

usage() {
  sed -n '5,7p' "$0" | sed 's/^# *//' >&2
  exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-}
[ -n "$cmd" ] || usage
shift
workers=2 dir=runs/cluster port=7070 http=127.0.0.1:0
while [ $# -gt 0 ]; do
  case $1 in
    --workers) workers=${2:?--workers needs a number}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --http) http=${2:?--http needs HOST:PORT or off}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "cluster.sh: unknown argument $1" >&2; usage ;;
  esac
done
case $workers in ''|*[!0-9]*) echo "cluster.sh: --workers must be a number" >&2; exit 2 ;; esac
case $port in ''|*[!0-9]*) echo "cluster.sh: --port must be a number" >&2; exit 2 ;; esac
[ "$workers" -ge 1 ] && [ "$workers" -le 64 ] || { echo "cluster.sh: --workers must be 1..64" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
addr=tcp://127.0.0.1:$port
[ "$cmd" != start ] && [ -f "$dir/address" ] && addr=$(cat "$dir/address")

# bin NAME RELATIVE_BUILD_PATH
bin() {
  if [ -n "${XD_BIN_DIR:-}" ] && [ -x "$XD_BIN_DIR/$1" ]; then echo "$XD_BIN_DIR/$1"; return; fi
  local b=${XD_BUILD_DIR:-$root/build}
  case $b in /*) ;; *) b=$root/$b ;; esac
  if [ -x "$b/$2" ]; then echo "$b/$2"; return; fi
  command -v "$1" || { echo "cluster.sh: $1 not found (build it, or set XD_BIN_DIR)" >&2; exit 1; }
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2> /dev/null; }

# stop_pid FILE SECONDS: SIGTERM, wait, then SIGKILL
stop_pid() {
  local f=$1 t=$2 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2> /dev/null; then
    kill -TERM "$pid" 2> /dev/null || true
    for _ in $(seq 1 $((t * 10))); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2> /dev/null; then
      echo "cluster.sh: $(basename "$f" .pid) (pid $pid) did not stop in ${t}s: SIGKILL" >&2
      kill -KILL "$pid" 2> /dev/null || true
    fi
  fi
  rm -f "$f"
}

start() {
  local xcoord xworker xctl xtrain
  xcoord=$(bin xcoord coordinator/xcoord)
  xworker=$(bin xworker worker/xworker)
  xctl=$(bin xctl xctl/xctl)
  xtrain=$(bin xtrain stages/xtrain)
  mkdir -p "$dir/pids" "$dir/logs" "$dir/artifacts" "$dir/workers"
  if alive "$dir/pids/xcoord.pid"; then
    echo "cluster.sh: a cluster already runs in $dir (cluster.sh stop --dir $dir)" >&2
    exit 1
  fi
  echo "$addr" > "$dir/address"
  local http_args=() log_lines=0
  [ "$http" = off ] || http_args=(--http "$http")
  [ -f "$dir/logs/xcoord.log" ] && log_lines=$(wc -l < "$dir/logs/xcoord.log")
  rm -f "$dir/dashboard.url"
  "$xcoord" --listen "$addr" --db "$dir/xcoord.db" --artifacts "$dir/artifacts" "${http_args[@]}" \
    >> "$dir/logs/xcoord.log" 2>&1 &
  echo $! > "$dir/pids/xcoord.pid"
  local up=0
  for _ in $(seq 1 50); do
    if ! alive "$dir/pids/xcoord.pid"; then break; fi
    if "$xctl" --coordinator "$addr" --timeout 0.5 workers > /dev/null 2>&1; then up=1; break; fi
    sleep 0.2
  done
  if [ $up = 0 ]; then
    echo "cluster.sh: xcoord did not come up on $addr; its log:" >&2
    tail -20 "$dir/logs/xcoord.log" >&2
    stop_pid "$dir/pids/xcoord.pid" 5
    exit 1
  fi
  local host
  host=$(hostname -s 2> /dev/null || echo local)
  for i in $(seq 1 "$workers"); do
    mkdir -p "$dir/workers/w$i"
    "$xworker" --coordinator "$addr" --workdir "$dir/workers/w$i" --name "$host-w$i" --cpu \
      --xtrain "$xtrain" >> "$dir/logs/w$i.log" 2>&1 &
    echo $! > "$dir/pids/w$i.pid"
  done
  # every worker said hello
  local n=0
  for _ in $(seq 1 100); do
    n=$("$xctl" --coordinator "$addr" --json workers 2> /dev/null | grep -c '"state": "alive"' || true)
    [ "$n" -ge "$workers" ] && break
    sleep 0.2
  done
  # A worker stopped by `cluster.sh stop` drained, and the coordinator remembers that under its
  # name: these are new processes, so they take work again.
  for i in $(seq 1 "$workers"); do
    "$xctl" --coordinator "$addr" --timeout 2 undrain "$host-w$i" > /dev/null 2>&1 || true
  done
  echo "cluster up in $dir: xcoord on $addr, $n of $workers workers alive"
  echo "  export XCTL_COORDINATOR=$addr; $xctl workers"
  if [ "$http" != off ]; then
    local url
    url=$(tail -n +$((log_lines + 1)) "$dir/logs/xcoord.log" | grep -o 'dashboard: open http://[^ ]*' | head -n 1 | cut -d' ' -f3)
    if [ -n "$url" ]; then
      echo "$url" > "$dir/dashboard.url"
      echo "  dashboard: $url"
    fi
  fi
  [ "$n" -ge "$workers" ] || { echo "cluster.sh: not every worker joined (see $dir/logs)" >&2; exit 1; }
}

stop() {
  [ -d "$dir/pids" ] || { echo "no cluster in $dir"; return 0; }
  # workers first: each drains (its child stops; the job is requeued), then the coordinator
  for f in "$dir"/pids/w*.pid; do [ -e "$f" ] && stop_pid "$f" 60 & done
  wait
  stop_pid "$dir/pids/xcoord.pid" 30
  echo "cluster in $dir stopped"
}

status() {
  [ -d "$dir/pids" ] || { echo "no cluster in $dir"; exit 1; }
  local any=0
  for f in "$dir"/pids/*.pid; do
    [ -e "$f" ] || continue
    if alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"; any=1
    else echo "$(basename "$f" .pid): stopped"; fi
  done
  if alive "$dir/pids/xcoord.pid"; then
    "$(bin xctl xctl/xctl)" --coordinator "$addr" --timeout 2 workers || true
  fi
  [ $any = 1 ]
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
