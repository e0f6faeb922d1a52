# Shared by the coordinator's CLI tests (sourced): real xcoord processes over loopback and
# tests/integration/coord_peer (fake workers and clients speaking the real protocol).
# The sourcing script sets xcoord and peer; this file gives it $tmp, check, sql, wait_until,
# start_coord / stop_coord, start_worker, request and cleanup of every process it started.
set -u
fail=0
tmp=$(mktemp -d)
mkdir -p "$tmp/art"
pids=""
cpid=""
ep=""
trap 'for p in $pids $cpid; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; [ -n "${XD_KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"' EXIT

check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
sql() { sqlite3 -cmd ".timeout 5000" "$tmp/coord.db" "$1"; }
# wait_until SECONDS CONDITION: polls every 0.1 s; 1 when it never held
wait_until() {
  limit=$(( $1 * 10 )) i=0
  while [ $i -lt $limit ]; do
    if eval "$2"; then return 0; fi
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

# start_coord [xcoord flags...]: on $listen (default an ephemeral loopback port; a restart reuses
# $ep), with a 200 ms heartbeat and a 1 s lease unless the flags say otherwise; sets cpid and ep.
start_coord() {
  lines=$(cat "$tmp/xcoord.log" 2> /dev/null | wc -l)
  "$xcoord" --listen "${listen:-${ep:-tcp://127.0.0.1:*}}" --db "$tmp/coord.db" --artifacts "$tmp/art" \
    --heartbeat-ms "${heartbeat_ms:-200}" --lease-ms "${lease_ms:-1000}" "$@" >> "$tmp/xcoord.log" 2>&1 &
  cpid=$!
  if ! wait_until 10 "tail -n +$((lines + 1)) '$tmp/xcoord.log' | grep -q 'listening on'"; then
    echo "FAIL: xcoord did not start:"; cat "$tmp/xcoord.log"; exit 1
  fi
  ep=$(tail -n +$((lines + 1)) "$tmp/xcoord.log" | grep -o 'listening on [^ ]*' | head -n 1 | cut -d' ' -f3)
}
stop_coord() { kill "${1:--TERM}" "$cpid" 2> /dev/null; wait "$cpid" 2> /dev/null; coord_rc=$?; cpid=""; }

# start_worker NAME [worker flags...]: its log is $tmp/NAME.log
start_worker() {
  name=$1; shift
  "$peer" --connect "$ep" worker --name "$name" "$@" >> "$tmp/$name.log" 2>&1 &
  eval "wpid_$name=$!"
  pids="$pids $!"
}
stop_worker() { eval "p=\$wpid_$1"; kill "$p" 2> /dev/null; wait "$p" 2> /dev/null; }

# request TYPE [JSON] [--file K=PATH]: the reply's JSON on stdout, the peer's exit code as status
request() { "$peer" --connect "$ep" --timeout-ms "${timeout_ms:-5000}" request "$@"; }
# json EXPR < reply: evaluates a Python expression over the parsed reply r
json() { python3 -c "import json,sys; r=json.load(sys.stdin); print($1)"; }

run_state() { sql "SELECT state FROM runs WHERE id = '${1:-}'"; }
