#!/bin/sh
# Faults: a worker that stops heartbeating loses its attempt (fenced, requeued to the other worker
# with a higher epoch) and its late done is dropped; a job that keeps failing is retried with
# exponential backoff up to its bound, then fails and its dependents are upstream_failed.
# usage: coord_faults.sh XCOORD COORD_PEER
xcoord=$1 peer=$2
. "$(dirname "$0")/coord_lib.sh"
lease_ms=1500 # silences below last 4 s and 3 s: well past it
start_coord
one_domain() {
  cat <<YAML
teacher: /models/teacher.gguf
domains: [{name: math, data: /data/math}]
retries: 2
YAML
}

# 1. a silent worker: w1 accepts distill-math, then says nothing for 4 s (the lease is 1.5 s)
one_domain > "$tmp/one.yaml"
start_worker w1 --job-ms 300 --silent-on distill-math --silent-ms 4000
run=$(request submit --file spec="$tmp/one.yaml" | json "r['body']['run']")
wait_until 20 "grep -q '^silent' '$tmp/w1.log'"
check "w1 took distill-math and went silent" "grep -q \"^silent $run/distill-math#1\" '$tmp/w1.log'"
start_worker w2 --job-ms 300
wait_until 20 "[ \"\$(run_state $run)\" = succeeded ]"
check "the run still succeeded" "[ \"\$(run_state $run)\" = succeeded ]"
check "w1 was declared lost" "[ \$(sql \"SELECT count(*) FROM events WHERE kind = 'worker_lost' AND message LIKE 'w1 lost: no heartbeat%'\") -ge 1 ]"
check "its attempt was lost and the job requeued to w2 with epoch 2" "[ \"\$(sql \"SELECT group_concat(epoch || ':' || worker || ':' || state, ' ') FROM (SELECT * FROM attempts WHERE job = '$run/distill-math' ORDER BY epoch)\")\" = '1:w1:lost 2:w2:succeeded' ]"
check "the loss counts against the worker, not the job" "[ \"\$(sql \"SELECT failures || ':' || worker_failures FROM jobs WHERE id = '$run/distill-math'\")\" = 0:1 ]"
wait_until 10 "grep -q '^late-done' '$tmp/w1.log'"
wait_until 5 "[ \$(sql \"SELECT count(*) FROM events WHERE kind = 'stale' AND message LIKE 'dropped done%'\") -ge 1 ]"
check "back, w1 listed its old attempt and was fenced" "grep -q \"^fence $run/distill-math#1 1\" '$tmp/w1.log'"
check "its late done (epoch 1) was dropped and logged" "[ \$(sql \"SELECT count(*) FROM events WHERE kind = 'stale' AND message LIKE 'dropped done from w1 about attempt $run/distill-math#1 epoch 1%'\") -eq 1 ]"
check "the late done changed nothing" "[ \"\$(sql \"SELECT state FROM attempts WHERE id = '$run/distill-math#1'\")\" = lost ] && [ \"\$(sql \"SELECT epoch FROM jobs WHERE id = '$run/distill-math'\")\" = 2 ]"
stop_worker w1
stop_worker w2

# 2. a job that always fails: 1 + 2 retries, 1 s then 2 s apart, then failed for good
cat > "$tmp/two.yaml" <<YAML
teacher: /models/teacher.gguf
domains: [{name: a, data: /data/a}, {name: b, data: /data/b}]
retries: 2
YAML
start_worker f1 --job-ms 100 --fail distill-b
start_worker f2 --job-ms 100 --fail distill-b
run=$(request submit --file spec="$tmp/two.yaml" | json "r['body']['run']")
wait_until 30 "[ \"\$(run_state $run)\" = failed ] && [ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run/distill-a'\")\" = succeeded ]"
check "distill-b ran 3 times, failing each time" "[ \"\$(sql \"SELECT group_concat(epoch || ':' || state || ':' || exit_code, ' ') FROM (SELECT * FROM attempts WHERE job = '$run/distill-b' ORDER BY epoch)\")\" = '1:failed:1 2:failed:1 3:failed:1' ]"
check "then it failed, naming the bound" "[ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run/distill-b'\")\" = failed ] && sql \"SELECT error FROM jobs WHERE id = '$run/distill-b'\" | grep -q 'failed 3 times: the bound is 2 retries'"
gaps=$(sql "SELECT group_concat(b.created - a.ended, ' ') FROM attempts a JOIN attempts b ON b.job = a.job AND b.epoch = a.epoch + 1 WHERE a.job = '$run/distill-b' ORDER BY a.epoch")
gap1=${gaps%% *} gap2=${gaps##* }
check "backoff: the retries waited about 1 s, then 2 s ($gaps ms)" "[ $gap1 -ge 950 ] && [ $gap1 -lt 1900 ] && [ $gap2 -ge 1950 ] && [ $gap2 -lt 3500 ]"
check "its dependents are upstream_failed, the run failed" "[ \"\$(sql \"SELECT group_concat(name || ':' || state, ' ') FROM (SELECT * FROM jobs WHERE run = '$run' AND seq >= 4 ORDER BY seq)\")\" = 'merge:upstream_failed eval:upstream_failed' ] && [ \"\$(run_state $run)\" = failed ]"
check "the sibling distill-a succeeded" "[ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run/distill-a'\")\" = succeeded ]"

# 3. retry after the cause is fixed: the job and its upstream_failed dependents run again
stop_worker f1
stop_worker f2
start_worker ok1 --job-ms 100
wait_until 5 "[ \$(sql \"SELECT count(*) FROM workers WHERE name IN ('f1', 'f2') AND state = 'lost'\") -eq 2 ]"
check "retry the failed job" "request control '{\"action\": \"retry\", \"target\": \"$run/distill-b\"}' | grep -q '\"jobs\":\\[\"$run/distill-b\"\\]'"
wait_until 20 "[ \"\$(run_state $run)\" = succeeded ]"
check "the run succeeds after the retry, distill-b on its 4th attempt" "[ \"\$(run_state $run)\" = succeeded ] && [ \"\$(sql \"SELECT group_concat(epoch || ':' || state, ' ') FROM (SELECT * FROM attempts WHERE job = '$run/distill-b' ORDER BY epoch)\")\" = '1:failed 2:failed 3:failed 4:succeeded' ]"

# 4. an assign never accepted: the lease lapses even while the worker heartbeats... covered by
#    the restart test (a worker that reconnects without the attempt); here a lost worker's bound:
cat > "$tmp/lost.yaml" <<YAML
teacher: /models/teacher.gguf
domains: [{name: a, data: /data/a}]
worker_retries: 1
YAML
stop_worker ok1
start_worker s1 --job-ms 300 --silent-on /init --silent-ms 3000
run=$(request submit --file spec="$tmp/lost.yaml" | json "r['body']['run']")
wait_until 10 "grep -q \"^silent $run/init#1\" '$tmp/s1.log'"
start_worker s2 --job-ms 300 --silent-on /init --silent-ms 3000
wait_until 20 "[ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run/init'\")\" = failed ]"
check "lost twice with worker_retries 1: the job fails, counted as lost" "[ \"\$(sql \"SELECT state || ':' || failures || ':' || worker_failures FROM jobs WHERE id = '$run/init'\")\" = failed:0:2 ] && sql \"SELECT error FROM jobs WHERE id = '$run/init'\" | grep -q 'lost 2 times'"
stop_worker s1
stop_worker s2
wait_until 5 "[ \$(sql \"SELECT count(*) FROM workers WHERE name IN ('s1', 's2') AND state = 'lost'\") -eq 2 ]"

# 5. a worker restarted under the same name: its hello without the attempt it had accepted makes
#    that attempt lost at once (not a lease later), and the job runs again on the new process
start_worker r1 --job-ms 30000
run=$(request submit --file spec="$tmp/one.yaml" | json "r['body']['run']")
wait_until 10 "[ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run/init'\")\" = running ]"
first=$(sql "SELECT id FROM attempts WHERE job = '$run/init' AND state = 'running'")
eval "kill -9 \$wpid_r1"
start_worker r1 --job-ms 200
wait_until 10 "[ \"\$(sql \"SELECT state FROM attempts WHERE id = '$first'\")\" = lost ]"
check "the restarted worker's hello loses the attempt it no longer runs, at once" "sql \"SELECT error FROM attempts WHERE id = '$first'\" | grep -q 'said hello without it' && [ \$(sql \"SELECT ended - (SELECT max(time) FROM events WHERE kind = 'worker_joined') FROM attempts WHERE id = '$first'\") -lt 100 ]"
wait_until 20 "[ \"\$(run_state $run)\" = succeeded ]"
check "the run then succeeds on the new process" "[ \"\$(run_state $run)\" = succeeded ] && [ \$(sql \"SELECT count(*) FROM attempts WHERE job = '$run/init' AND state = 'succeeded' AND worker = 'r1'\") -eq 1 ]"
stop_coord
check "xcoord stops cleanly" "[ $coord_rc -eq 0 ]"
[ $fail -eq 0 ] || { cat "$tmp/xcoord.log"; tail -n 8 "$tmp"/*.log; sql "SELECT * FROM attempts"; }
exit $fail
