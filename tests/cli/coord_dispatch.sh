#!/bin/sh
# Two fake workers run a whole pipeline through a real xcoord in dependency order; query, events,
# log_tail and workers answer; control: drain, cancel a running run, hold and release, retry.
# usage: coord_dispatch.sh XCOORD COORD_PEER
xcoord=$1 peer=$2
. "$(dirname "$0")/coord_lib.sh"
lease_ms=3000 # leases are not under test here: a loaded machine must not lose attempts
start_coord
mkdir -p "$tmp/configs"
start_worker w1 --job-ms 300 --save-configs "$tmp/configs"
start_worker w2 --job-ms 300 --save-configs "$tmp/configs"
cat > "$tmp/spec.yaml" <<YAML
name: dispatch
teacher: /models/teacher.gguf
domains:
  - {name: math, data: /data/math, weight: 0.6}
  - {name: code, data: /data/code, weight: 0.4}
align: {layer_blocks: 2, num_layers: 4, steps: 10}
distill: {steps: 5}
final_distill: {steps: 2}
eval: {max_tokens: 512}
YAML
run=$(request submit --file spec="$tmp/spec.yaml" | json "r['body']['run']")
check "submitted" "[ -n '$run' ]"
wait_until 40 "[ \"\$(run_state $run)\" = succeeded ]"
check "the run succeeded" "[ \"\$(run_state $run)\" = succeeded ]"
check "9 jobs, each run once" "[ \$(sql \"SELECT count(*) FROM jobs WHERE run = '$run' AND state = 'succeeded' AND epoch = 1\") -eq 9 ] && [ \$(sql 'SELECT count(*) FROM attempts') -eq 9 ]"
check "no job started before what it needs had succeeded" "[ \$(sql \"SELECT count(*) FROM deps d JOIN attempts a ON a.job = d.job JOIN attempts u ON u.job = d.needs AND u.state = 'succeeded' WHERE a.created < u.ended\") -eq 0 ]"
check "both workers ran jobs" "[ \$(grep -c '^assign' '$tmp/w1.log') -ge 1 ] && [ \$(grep -c '^assign' '$tmp/w2.log') -ge 1 ]"
check "the layer blocks ran in parallel on the two workers" "[ \$(sql \"SELECT count(*) FROM attempts a JOIN attempts b ON a.job = '$run/align-0' AND b.job = '$run/align-1' WHERE a.worker != b.worker AND a.started < b.ended AND b.started < a.ended\") -eq 1 ]"
check "every config is YAML whose out is the job's workdir" "! grep -q badconfig '$tmp/w1.log' '$tmp/w2.log'"
check "distill starts from the joined align" "grep -q \"student: \\\"$tmp/art/$run/align\\\"\" '$tmp/configs/${run}_distill-math.yaml'"
check "eval reads the final student" "grep -q \"student: \\\"$tmp/art/$run/final/model\\\"\" '$tmp/configs/${run}_eval.yaml'"
check "progress lines are in the metrics table" "[ \$(sql \"SELECT count(*) FROM metrics WHERE job = '$run/distill-math'\") -ge 2 ]"
check "checkpoints and outputs are in the artifacts table" "[ \$(sql \"SELECT count(*) FROM artifacts WHERE job = '$run/final' AND kind = 'checkpoint'\") -eq 1 ] && [ \$(sql \"SELECT path FROM artifacts WHERE job = '$run/final' AND kind = 'output'\") = '$tmp/art/$run/final/model' ]"

request query "{\"run\": \"$run\"}" > "$tmp/q"
check "query RUN: jobs with state, attempts, deps, latest metrics" "json \"r['body']['run']['state'] == 'succeeded' and len(r['body']['jobs']) == 9 and [j['deps'] for j in r['body']['jobs'] if j['name'] == 'merge'][0] == ['distill-math', 'distill-code'] and all(j['attempts'] == 1 and j['metrics']['line']['step'] >= 1 for j in r['body']['jobs'])\" < '$tmp/q' | grep -q True"
request query > "$tmp/q"
check "query: runs with jobs by state" "json \"r['body']['runs'][0]['jobs'] == {'succeeded': 9}\" < '$tmp/q' | grep -q True"
request log_tail "{\"job\": \"$run/distill-code\", \"lines\": 2}" > "$tmp/q"
check "log_tail: the last lines of a job" "json \"len(r['body']['lines']) == 2 and '\\\"loss\\\"' in r['body']['lines'][1]['line']\" < '$tmp/q' | grep -q True"
request events "{\"run\": \"$run\", \"since\": 0}" > "$tmp/q"
check "events: submitted, dispatched, running, succeeded, the run's end" "json \"set(['submitted', 'dispatched', 'running', 'succeeded', 'run']) <= set(e['kind'] for e in r['body']['events'])\" < '$tmp/q' | grep -q True"
last=$(json "r['body']['last']" < "$tmp/q")
check "events since the last id: none" "request events '{\"run\": \"$run\", \"since\": $last}' | json \"r['body']['events']\" | grep -qx '\[\]'"
request workers > "$tmp/q"
check "workers: both alive, idle, with heartbeat ages" "json \"sorted((w['name'], w['state'], w['attempt']) for w in r['body']['workers']) == [('w1', 'alive', None), ('w2', 'alive', None)] and all(w['last_heartbeat_age_s'] < 1 for w in r['body']['workers'])\" < '$tmp/q' | grep -q True"

# drain both; a long-job worker takes the next run; cancelling the run stops it there
check "drain w1" "request control '{\"action\": \"drain\", \"target\": \"w1\"}' > /dev/null"
check "drain w2" "request control '{\"action\": \"drain\", \"target\": \"w2\"}' > /dev/null"
wait_until 5 "grep -q '^drain' '$tmp/w1.log' && grep -q '^drain' '$tmp/w2.log'"
check "drained workers were told, and said they drain" "grep -q '^drain' '$tmp/w1.log' && [ \$(sql \"SELECT sum(draining) FROM workers\") -eq 2 ]"
start_worker slow --job-ms 60000
run2=$(request submit --file spec="$tmp/spec.yaml" | json "r['body']['run']")
wait_until 10 "[ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run2/init'\")\" = running ]"
check "the long job runs on the only free worker" "grep -q \"^assign $run2/init#1 1\" '$tmp/slow.log'"
check "cancel the run" "request control '{\"action\": \"cancel\", \"target\": \"$run2\"}' > /dev/null"
wait_until 10 "[ \"\$(sql \"SELECT state FROM attempts WHERE job = '$run2/init'\")\" = cancelled ]"
check "the worker was told to cancel and the attempt ended cancelled" "grep -q \"^cancel $run2/init#1 1\" '$tmp/slow.log' && [ \"\$(sql \"SELECT state FROM attempts WHERE job = '$run2/init'\")\" = cancelled ]"
check "every job of the run is cancelled, and the run" "[ \$(sql \"SELECT count(*) FROM jobs WHERE run = '$run2' AND state != 'cancelled'\") -eq 0 ] && [ \"\$(run_state $run2)\" = cancelled ]"
check "hold a cancelled job: refused" "! request control '{\"action\": \"hold\", \"target\": \"$run2/init\"}' > /dev/null"
stop_worker slow
wait_until 8 "[ \"\$(sql \"SELECT state FROM workers WHERE name = 'slow'\")\" = lost ]"
check "a worker that stopped heartbeating is lost" "[ \"\$(sql \"SELECT state FROM workers WHERE name = 'slow'\")\" = lost ]"

# hold keeps a ready job from a free worker; release lets it go
run3=$(request submit --file spec="$tmp/spec.yaml" | json "r['body']['run']")
check "hold a ready job" "request control '{\"action\": \"hold\", \"target\": \"$run3/init\"}' > /dev/null && [ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run3/init'\")\" = held ]"
check "undrain w1" "request control '{\"action\": \"undrain\", \"target\": \"w1\"}' > /dev/null"
sleep 1.5
check "a held job is not dispatched to a free worker" "! grep -q \"$run3\" '$tmp/w1.log' && [ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run3/init'\")\" = held ]"
check "release" "request control '{\"action\": \"release\", \"target\": \"$run3/init\"}' > /dev/null"
wait_until 30 "[ \"\$(run_state $run3)\" = succeeded ]"
check "the released run finished on the undrained worker" "[ \"\$(run_state $run3)\" = succeeded ] && ! grep -q \"$run3\" '$tmp/w2.log'"

# retry the cancelled run: every job again, the cancelled init with a higher epoch
check "retry the cancelled run" "request control '{\"action\": \"retry\", \"target\": \"$run2\"}' > /dev/null"
wait_until 30 "[ \"\$(run_state $run2)\" = succeeded ]"
check "the retried run succeeded; init ran again with epoch 2" "[ \"\$(run_state $run2)\" = succeeded ] && [ \"\$(sql \"SELECT group_concat(epoch || ':' || state, ' ') FROM (SELECT * FROM attempts WHERE job = '$run2/init' ORDER BY epoch)\")\" = '1:cancelled 2:succeeded' ]"
check "an unknown target is an error reply" "request control '{\"action\": \"cancel\", \"target\": \"run-99-0000\"}' | grep -q 'no run'"
stop_coord
check "xcoord stops cleanly" "[ $coord_rc -eq 0 ] && [ \"\$(sql 'PRAGMA integrity_check')\" = ok ]"
[ $fail -eq 0 ] || { cat "$tmp/xcoord.log"; tail -n 5 "$tmp"/*.log; }
exit $fail
