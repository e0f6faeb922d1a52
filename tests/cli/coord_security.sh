#!/bin/sh
# Bad input and security: garbage, oversize, wrong-version, unknown-field, multi-frame and
# wrong-way messages are refused (an error reply, counted) while a run on a good worker goes on;
# a non-loopback bind without keys is refused; with --keys only the listed public keys get in.
# usage: coord_security.sh XCOORD COORD_PEER
xcoord=$1 peer=$2
. "$(dirname "$0")/coord_lib.sh"
lease_ms=3000 # leases are not under test here: a loaded machine must not lose the good worker
start_coord
start_worker good --job-ms 400
cat > "$tmp/spec.yaml" <<YAML
teacher: /models/teacher.gguf
domains: [{name: a, data: /data/a}]
YAML
run=$(request submit --file spec="$tmp/spec.yaml" | json "r['body']['run']")
raw() { "$peer" --connect "$ep" --timeout-ms "${timeout_ms:-3000}" send-raw "$@"; }
raw garbage > "$tmp/r"; rc=$?
check "garbage: an error reply" "[ $rc -eq 2 ] && grep -q '\"code\":400' '$tmp/r'"
raw wrong-version > "$tmp/r"; rc=$?
check "wrong version: an error reply naming the version" "[ $rc -eq 2 ] && grep -qi 'version' '$tmp/r'"
raw bad-field > "$tmp/r"; rc=$?
check "an unknown field: an error reply naming it" "[ $rc -eq 2 ] && grep -q 'bogus' '$tmp/r'"
raw two-frames > "$tmp/r"; rc=$?
check "two frames: an error reply" "[ $rc -eq 2 ] && grep -q 'one frame' '$tmp/r'"
raw wrong-way > "$tmp/r"; rc=$?
check "a message the coordinator sends (drain): an error reply" "[ $rc -eq 2 ] && grep -q '\"code\":405' '$tmp/r'"
timeout_ms=1500 raw oversize > "$tmp/r"; rc=$?
check "oversize (4 MiB + 1): dropped by the socket before decoding, no reply" "[ $rc -eq 3 ]"
raw garbage --count 2000 > "$tmp/r"; rc=$?
check "a flood of 2000 garbage messages: each answered with an error" "[ $rc -eq 2 ]"
check "heartbeat from a worker never seen: told to say hello" "request heartbeat '{\"worker\": \"ghost\", \"running\": []}' | grep -q 'send hello'"
check "progress from an unknown connection: told to say hello" "request progress '{\"attempt\": \"x#1\", \"epoch\": 1, \"step\": 1, \"total\": 1, \"metrics\": \"{}\"}' | grep -q 'send hello'"
wait_until 20 "[ \"\$(run_state $run)\" = succeeded ]"
check "meanwhile the good worker's run succeeded" "[ \"\$(run_state $run)\" = succeeded ]"
request workers > "$tmp/r"
check "the coordinator still serves, and counted the refused messages" "json \"r['body']['coordinator']['rejected'] >= 2005\" < '$tmp/r' | grep -q True"
check "a REQ socket client is served too" "request workers --req > /dev/null"
check "no refused message touched the database" "[ \$(sql \"SELECT count(*) FROM events WHERE kind NOT IN ('submitted', 'ready', 'dispatched', 'running', 'succeeded', 'run', 'checkpoint', 'worker_joined')\") -eq 0 ]"
stop_coord
check "xcoord survived all of it and stops cleanly" "[ $coord_rc -eq 0 ]"

# binding off loopback needs keys
for bad in 'tcp://0.0.0.0:45999' 'tcp://*:45999' 'tcp://eth0:45999'; do
  "$xcoord" --listen "$bad" --db "$tmp/k.db" --artifacts "$tmp/art" > "$tmp/r" 2>&1; rc=$?
  check "--listen $bad without --keys: refused at start" "[ $rc -eq 1 ] && grep -q 'give --keys' '$tmp/r'"
done

# CURVE: server keys, alice listed, mallory not
mkdir -p "$tmp/keys/authorized" "$tmp/client"
"$peer" keygen "$tmp/keys" server
"$peer" keygen "$tmp/client" alice
"$peer" keygen "$tmp/client" mallory
cp "$tmp/client/alice.pub" "$tmp/keys/authorized/alice.pub"
chmod 644 "$tmp/keys/server.key"
"$xcoord" --listen 'tcp://127.0.0.1:*' --keys "$tmp/keys" --db "$tmp/k.db" --artifacts "$tmp/art" > "$tmp/r" 2>&1; rc=$?
check "a server.key others can read is refused" "[ $rc -eq 1 ] && grep -q 'chmod 600' '$tmp/r'"
chmod 600 "$tmp/keys/server.key"
ep="" listen='tcp://0.0.0.0:*'
start_coord --keys "$tmp/keys"
listen=""
ep=$(echo "$ep" | sed 's#tcp://0.0.0.0:#tcp://127.0.0.1:#')
curve() { who=$1; shift; "$peer" --connect "$ep" --timeout-ms 2000 --curve-server "$tmp/keys/server.pub" --curve-key "$tmp/client/$who" "$@"; }
check "with --keys the coordinator may listen on every interface" "grep -q 'with CURVE' '$tmp/xcoord.log'"
check "a listed key (alice) is served" "curve alice request workers > /dev/null"
curve mallory request workers > /dev/null 2>&1; rc=$?
check "an unlisted key (mallory) gets no reply" "[ $rc -eq 3 ]"
request workers > /dev/null 2>&1; rc=$?
check "a client without CURVE gets no reply" "[ $rc -eq 3 ]"
cp "$tmp/client/mallory.pub" "$tmp/keys/authorized/"
check "a key added to authorized/ works without a restart" "curve mallory request workers > /dev/null"
rm "$tmp/keys/authorized/alice.pub"
curve alice request workers > /dev/null 2>&1; rc=$?
check "a key removed from authorized/ is refused from the next connection" "[ $rc -eq 3 ]"
start_worker_curve() { "$peer" --connect "$ep" --curve-server "$tmp/keys/server.pub" --curve-key "$tmp/client/mallory" worker --name secure --job-ms 200 > "$tmp/secure.log" 2>&1 & pids="$pids $!"; }
start_worker_curve
run=$(curve mallory request submit --file spec="$tmp/spec.yaml" | json "r['body']['run']")
check "submitted over CURVE" "[ -n '$run' ]"
wait_until 20 "[ \"\$(run_state $run)\" = succeeded ]"
check "a run over CURVE succeeds" "[ \"\$(run_state $run)\" = succeeded ]"
stop_coord
[ $fail -eq 0 ] || cat "$tmp/xcoord.log"
exit $fail
