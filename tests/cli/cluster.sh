#!/bin/sh
# The whole job system on this machine, as an operator runs it: deploy/cluster.sh starts xcoord
# and two CPU workers, xctl submits a tiny pipeline (one domain, two steps per stage), waits for
# it and shows it; a worker stopped mid-job drains and the job finishes on the other worker;
# cluster.sh stop ends everything.
# The dashboard of the real finished run is checked in headless Chromium (screenshots in ARTIFACT_DIR).
# usage: cluster.sh XCOORD XWORKER XCTL XTRAIN SOURCE_DIR MODELS_DIR ARTIFACT_DIR
set -u
src=$5 teacher=$6/SmolLM2-135M-Instruct.Q4_1.gguf art=$7
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$teacher" ] || { echo "FAIL: $teacher missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xd_cluster_XXXXXX")
mkdir -p "$tmp/bin" "$tmp/in"
ln -s "$1" "$tmp/bin/xcoord"; ln -s "$2" "$tmp/bin/xworker"; ln -s "$3" "$tmp/bin/xctl"; ln -s "$4" "$tmp/bin/xtrain"
export XD_BIN_DIR="$tmp/bin"
port=$((20000 + $$ % 20000))
export XCTL_COORDINATOR=tcp://127.0.0.1:$port
xctl=$tmp/bin/xctl
cleanup() {
  bash "$src/deploy/cluster.sh" stop --dir "$tmp/cluster" > /dev/null 2>&1
  [ $fail = 0 ] && rm -rf "$tmp"
}
trap cleanup EXIT

cp "$src/tests/data/english.txt" "$src/docs/method.md" "$tmp/in/"
"$4" prepare --tokenizer "$teacher" --out "$tmp/data" --val-fraction 0.3 --seed 1 "$tmp/in" > /dev/null 2>&1
check "token shards with a validation split" "[ -f '$tmp/data/manifest.json' ] && grep -q 'val-00000' '$tmp/data/manifest.json'"

bash "$src/deploy/cluster.sh" start --dir "$tmp/cluster" --port $port --workers 2 > "$tmp/start.out" 2>&1
rc=$?
cat "$tmp/start.out"
check "cluster.sh start: xcoord and 2 workers (rc=$rc)" "[ $rc -eq 0 ] && grep -q '2 of 2 workers alive' '$tmp/start.out'"
check "pid files and logs" "[ -f '$tmp/cluster/pids/xcoord.pid' ] && [ -f '$tmp/cluster/pids/w1.pid' ] && [ -f '$tmp/cluster/logs/w2.log' ]"
"$xctl" workers > "$tmp/workers.out"
cat "$tmp/workers.out"
check "xctl workers lists both, alive, with the CPU" "[ \$(grep -c 'alive' '$tmp/workers.out') -eq 2 ] && grep -q cpu '$tmp/workers.out'"

cat > "$tmp/spec.yaml" <<YAML
name: tiny
teacher: $teacher
student: {window: 16, sinks: 2, chunk: 8}
domains:
  - {name: english, data: $tmp/data, weight: 1}
align: {layer_blocks: 2, steps: 2, seq_len: 32, batch: 2, checkpoint_every: 1, keep_checkpoints: 1}
distill: {steps: 2, seq_len: 32, batch: 2, checkpoint_every: 100}
final_distill: {steps: 2, seq_len: 32, batch: 2, checkpoint_every: 100}
eval: {max_tokens: 64, seq_len: 32, passkey: none}
YAML
run=$("$xctl" submit "$tmp/spec.yaml" --name cluster-test)
check "submit prints the run id ($run)" "[ -n '$run' ]"
"$xctl" wait "$run" --timeout 500 > "$tmp/wait.out" 2>&1
rc=$?
cat "$tmp/wait.out"
check "xctl wait: the run succeeded (rc=$rc)" "[ $rc -eq 0 ]"
"$xctl" status "$run" > "$tmp/status.out"
"$xctl" --json status "$run" > "$tmp/status.json"
check "xctl status RUN: every job succeeded, with steps and losses" \
  "[ \$(grep -c succeeded '$tmp/status.out') -ge 6 ] && grep -q '2/2' '$tmp/status.out' && python3 -c \"import json,sys; b=json.load(open('$tmp/status.json')); sys.exit(0 if all(j['state']=='succeeded' for j in b['jobs']) else 1)\""
check "the eval report is in the artifacts" "ls '$tmp/cluster/artifacts/$run/eval/' | grep -q json"
"$xctl" logs "$run/align-0" > "$tmp/logs.out"
check "xctl logs: align's progress lines" "grep -q 'step 2/2' '$tmp/logs.out'"
"$xctl" events "$run" > "$tmp/events.out"
check "xctl events: the run's story" "grep -q dispatched '$tmp/events.out' && grep -q succeeded '$tmp/events.out'"
url=$(cat "$tmp/cluster/dashboard.url" 2> /dev/null)
check "cluster.sh start printed the dashboard's URL with its token" "[ -n '$url' ] && grep -q \"dashboard: $url\" '$tmp/start.out'"
code=$(curl -s -o "$tmp/runs.json" -w '%{http_code}' -H "Authorization: Bearer ${url##*token=}" "${url%%/\?token=*}/api/runs")
check "the dashboard's API lists the finished run ($code)" "[ '$code' = 200 ] && grep -q '$run' '$tmp/runs.json'"
python3 "$src/tests/browser/check_dashboard.py" "$url" "$art" > "$tmp/browser.log" 2>&1
rc=$?
grep -E '^(ok|FAIL)' "$tmp/browser.log" | sed 's/^/  browser /'
check "the page of the real finished run in Chromium: graph, curves, eval report, no errors (rc=$rc)" \
  "[ $rc -eq 0 ] && grep -q '$run: recovery per task drawn' '$tmp/browser.log' && [ -s '$art/dashboard.png' ]"

# a long align; its worker is stopped (SIGTERM: drain) after a checkpoint; the other worker resumes it
sed -e 's/^name: tiny/name: drained/' -e 's/^align: .*/align: {steps: 12, seq_len: 32, batch: 2, checkpoint_every: 2, keep_checkpoints: 1}/' \
  "$tmp/spec.yaml" > "$tmp/spec2.yaml"
run2=$("$xctl" submit "$tmp/spec2.yaml")
i=0
while [ $i -lt 600 ] && [ -z "$(ls "$tmp/cluster/artifacts/$run2/align/checkpoints/" 2> /dev/null | grep -v tmp)" ]; do sleep 0.2; i=$((i + 1)); done
w=$(grep -l "attempt $run2/align#" "$tmp"/cluster/workers/w*/attempts/*/log.txt 2> /dev/null | head -1 | sed 's|.*/workers/\(w[0-9]*\)/.*|\1|')
check "align of the second run checkpointed on a worker ($w)" "[ -n '$w' ]"
[ -n "$w" ] && kill -TERM "$(cat "$tmp/cluster/pids/$w.pid")"
i=0
while [ $i -lt 300 ] && kill -0 "$(cat "$tmp/cluster/pids/$w.pid")" 2> /dev/null; do sleep 0.2; i=$((i + 1)); done
check "the stopped worker drained and exited" "! kill -0 \$(cat '$tmp/cluster/pids/$w.pid') 2> /dev/null && grep -q 'drained' '$tmp/cluster/logs/$w.log'"
"$xctl" wait "$run2" --timeout 500 > "$tmp/wait2.out" 2>&1
rc=$?
tail -8 "$tmp/wait2.out"
check "the drained run finished on the other worker (rc=$rc)" "[ $rc -eq 0 ]"
check "align resumed from its checkpoint there" "grep -l 'resuming from' '$tmp'/cluster/workers/w*/attempts/*align*/log.txt > /dev/null"

# faults: a worker SIGKILLed during distill, then the coordinator SIGKILLed mid-run and started
# again on its database. The run finishes; no job is lost, none succeeds twice.
sed -e 's/^name: tiny/name: faults/' -e 's/^distill: .*/distill: {steps: 6, seq_len: 32, batch: 2, checkpoint_every: 2, keep_checkpoints: 1}/' \
  "$tmp/spec.yaml" > "$tmp/spec3.yaml"
run3=$("$xctl" submit "$tmp/spec3.yaml")
i=0
while [ $i -lt 900 ] && [ -z "$(ls "$tmp/cluster/artifacts/$run3/distill-english/checkpoints/" 2> /dev/null | grep -v tmp)" ]; do sleep 0.2; i=$((i + 1)); done
w=$(grep -l "attempt $run3/distill-english#" "$tmp"/cluster/workers/w*/attempts/*/log.txt 2> /dev/null | head -1 | sed 's|.*/workers/\(w[0-9]*\)/.*|\1|')
check "distill of the third run checkpointed on a live worker ($w)" "[ -n '$w' ] && kill -0 \$(cat '$tmp/cluster/pids/$w.pid')"
if [ -n "$w" ]; then
  kill -KILL "$(cat "$tmp/cluster/pids/$w.pid")"
  pkill -KILL -f "attempts/.*distill-english.*/config.yaml" 2> /dev/null # its xtrain child dies with it
  # a replacement worker joins, as a cluster scheduler would start one
  n=$(ls "$tmp/cluster/workers" | wc -l); n=$((n + 1)); mkdir -p "$tmp/cluster/workers/w$n"
  "$tmp/bin/xworker" --coordinator "$XCTL_COORDINATOR" --workdir "$tmp/cluster/workers/w$n" --name "replacement-w$n" \
    --cpu --xtrain "$tmp/bin/xtrain" >> "$tmp/cluster/logs/w$n.log" 2>&1 &
  echo $! > "$tmp/cluster/pids/w$n.pid"
fi
# the coordinator dies while the job is being requeued, and comes back on the same database
sleep 3
kill -KILL "$(cat "$tmp/cluster/pids/xcoord.pid")"
sleep 1
"$tmp/bin/xcoord" --listen "$XCTL_COORDINATOR" --db "$tmp/cluster/xcoord.db" --artifacts "$tmp/cluster/artifacts" \
  >> "$tmp/cluster/logs/xcoord.log" 2>&1 &
echo $! > "$tmp/cluster/pids/xcoord.pid"
"$xctl" wait "$run3" --timeout 600 > "$tmp/wait3.out" 2>&1
rc=$?
tail -6 "$tmp/wait3.out"
check "after a killed worker and a killed coordinator the run succeeded (rc=$rc)" "[ $rc -eq 0 ]"
check "distill resumed from its checkpoint on another worker" \
  "grep -l 'resuming from .*step-' '$tmp'/cluster/workers/w*/attempts/*distill-english*/log.txt > /dev/null"
twice=$(sqlite3 "$tmp/cluster/xcoord.db" "SELECT count(*) FROM (SELECT job FROM attempts WHERE state = 'succeeded' GROUP BY job HAVING count(*) > 1)")
jobs3=$(sqlite3 "$tmp/cluster/xcoord.db" "SELECT count(*) FROM jobs WHERE run = '$run3' AND state = 'succeeded'")
all3=$(sqlite3 "$tmp/cluster/xcoord.db" "SELECT count(*) FROM jobs WHERE run = '$run3'")
check "no job succeeded twice ($twice), every job of the run succeeded ($jobs3 of $all3)" "[ '$twice' = 0 ] && [ '$jobs3' = '$all3' ] && [ '$all3' -ge 5 ]"

# a worker that stops heartbeating: the node freezes (SIGSTOP to the worker and its xtrain) during
# align; its lease runs out and the job goes to another worker. When the worker resumes (SIGCONT)
# its late messages about the old attempt are dropped and it is fenced: it kills its child.
n=$(ls "$tmp/cluster/workers" | wc -l); n=$((n + 1)); mkdir -p "$tmp/cluster/workers/w$n"
"$tmp/bin/xworker" --coordinator "$XCTL_COORDINATOR" --workdir "$tmp/cluster/workers/w$n" --name "extra-w$n" \
  --cpu --xtrain "$tmp/bin/xtrain" >> "$tmp/cluster/logs/w$n.log" 2>&1 &
echo $! > "$tmp/cluster/pids/w$n.pid"
sed -e 's/^name: tiny/name: stopped/' -e 's/^align: .*/align: {steps: 16, seq_len: 32, batch: 2, checkpoint_every: 2, keep_checkpoints: 1}/' \
  "$tmp/spec.yaml" > "$tmp/spec4.yaml"
run4=$("$xctl" submit "$tmp/spec4.yaml")
i=0
while [ $i -lt 600 ] && [ -z "$(ls "$tmp/cluster/artifacts/$run4/align/checkpoints/" 2> /dev/null | grep -v tmp)" ]; do sleep 0.2; i=$((i + 1)); done
log=$(grep -l "attempt $run4/align#1" "$tmp"/cluster/workers/w*/attempts/*/log.txt 2> /dev/null | head -1)
w=$(echo "$log" | sed 's|.*/workers/\(w[0-9]*\)/.*|\1|')
wname=$(sqlite3 "$tmp/cluster/xcoord.db" "SELECT worker FROM attempts WHERE id = '$run4/align#1'")
child=$(pgrep -f "attempts/$(basename "$(dirname "$log")")/config.yaml" | head -1)
check "align of the fourth run checkpointed on $wname ($w, child ${child:-none})" "[ -n '$w' ] && [ -n '$child' ]"
if [ -n "$w" ] && [ -n "$child" ]; then
  wpid=$(cat "$tmp/cluster/pids/$w.pid")
  kill -STOP "$wpid" "$child"
  i=0
  while [ $i -lt 300 ] && [ "$(sqlite3 "$tmp/cluster/xcoord.db" "SELECT count(*) FROM attempts WHERE id = '$run4/align#2' AND state IN ('running', 'succeeded')")" != 1 ]; do sleep 0.2; i=$((i + 1)); done
  check "the frozen worker was declared lost and align went to another worker (epoch 2)" \
    "[ \"\$(sqlite3 '$tmp/cluster/xcoord.db' \"SELECT state || ':' || (worker != '$wname') FROM attempts WHERE id IN ('$run4/align#1', '$run4/align#2') ORDER BY epoch\" | tr '\\n' ' ')\" = 'lost:0 running:1 ' ] || [ \"\$(sqlite3 '$tmp/cluster/xcoord.db' \"SELECT state || ':' || (worker != '$wname') FROM attempts WHERE id IN ('$run4/align#1', '$run4/align#2') ORDER BY epoch\" | tr '\\n' ' ')\" = 'lost:0 succeeded:1 ' ]"
  kill -CONT "$wpid" # the worker only: its child stays frozen until the fence kills it
  i=0
  while [ $i -lt 150 ] && kill -0 "$child" 2> /dev/null; do sleep 0.2; i=$((i + 1)); done
  check "resumed, $wname was fenced and killed its child" \
    "grep -q \"attempt $run4/align#1 is fenced: killing its child\" '$tmp/cluster/logs/$w.log' && ! kill -0 $child 2> /dev/null"
  check "its late messages about epoch 1 were dropped and answered with a fence (events)" \
    "[ \$(sqlite3 '$tmp/cluster/xcoord.db' \"SELECT count(*) FROM events WHERE kind IN ('stale', 'fenced') AND message LIKE '%$wname%$run4/align#1%epoch 1%'\") -ge 1 ]"
  i=0
  while [ $i -lt 600 ] && [ "$(sqlite3 "$tmp/cluster/xcoord.db" "SELECT state FROM jobs WHERE id = '$run4/align'")" != succeeded ]; do sleep 0.2; i=$((i + 1)); done
  check "align finished on the other worker, resumed from a checkpoint, exactly once" \
    "[ \"\$(sqlite3 '$tmp/cluster/xcoord.db' \"SELECT count(*) FROM attempts WHERE job = '$run4/align' AND state = 'succeeded'\")\" = 1 ] && grep -l 'resuming from' '$tmp'/cluster/workers/w*/attempts/*${run4}_align_2*/log.txt > /dev/null"
  "$xctl" cancel "$run4" > /dev/null # the rest of this run shows nothing new
fi

bash "$src/deploy/cluster.sh" status --dir "$tmp/cluster" > "$tmp/status2.out" 2>&1
check "cluster.sh status" "grep -q 'xcoord: running' '$tmp/status2.out'"
bash "$src/deploy/cluster.sh" stop --dir "$tmp/cluster" > "$tmp/stop.out" 2>&1
check "cluster.sh stop: everything ends" "grep -q stopped '$tmp/stop.out' && ! ls '$tmp'/cluster/pids/*.pid > /dev/null 2>&1"
"$xctl" --timeout 1 workers > /dev/null 2>&1
rc=$?
check "xctl: the coordinator is gone (exit $rc)" "[ $rc -eq 3 ]"
[ $fail = 0 ] || { for f in "$tmp"/cluster/logs/*.log; do echo "--- $f"; tail -30 "$f"; done; }
exit $fail
