#!/bin/sh
# The coordinator crashes right after a commit whose messages were not sent yet (fault injection),
# then is killed with SIGKILL twice mid-run, each time restarted on the same database: the run
# finishes, no job is lost, none runs twice (attempts counted in the database and the workers' logs).
# usage: coord_restart.sh XCOORD COORD_PEER
xcoord=$1 peer=$2
. "$(dirname "$0")/coord_lib.sh"
lease_ms=3000 # a heartbeat delayed past it on a loaded machine would lose a running attempt
# 0. the 4th commit with messages waiting (the submit reply, then assigns, ...) is the last
XCOORD_FAULT=exit-after-commit:4 start_coord
start_worker w1 --job-ms 1200
start_worker w2 --job-ms 1200
cat > "$tmp/spec.yaml" <<YAML
name: restart
teacher: /models/teacher.gguf
domains: [{name: a, data: /data/a}, {name: b, data: /data/b}, {name: c, data: /data/c}]
final_distill: {steps: 2}
YAML
run=$(request submit --file spec="$tmp/spec.yaml" | json "r['body']['run']")
job_state() { sql "SELECT state FROM jobs WHERE id = '$run/$1'"; }
wait "$cpid"; coord_rc=$?
check "the injected crash: xcoord exited after a commit, its messages unsent" "[ $coord_rc -eq 70 ] && grep -q 'XCOORD_FAULT: exiting after commit 4' '$tmp/xcoord.log'"
cpid=""
sleep 0.5
start_coord

# 1. while distill experts run
wait_until 30 "[ \$(sql \"SELECT count(*) FROM jobs WHERE run = '$run' AND name LIKE 'distill-%' AND state = 'running'\") -ge 1 ]"
check "experts are running" "[ \$(sql \"SELECT count(*) FROM jobs WHERE run = '$run' AND name LIKE 'distill-%' AND state = 'running'\") -ge 1 ]"
stop_coord -9
check "xcoord was killed (SIGKILL)" "[ $coord_rc -eq 137 ]"
sleep 1.5 # the workers go on; a done sent now waits in their socket
start_coord
# 2. right after a dispatch: the final distill's assign has just been committed
wait_until 40 "[ \"\$(job_state final)\" = dispatched ] || [ \"\$(job_state final)\" = running ]"
stop_coord -9
sleep 0.3
start_coord
wait_until 40 "[ \"\$(run_state $run)\" = succeeded ]"
check "the run succeeded after two crashes" "[ \"\$(run_state $run)\" = succeeded ]"
check "every job succeeded exactly once in the database" "[ \$(sql \"SELECT count(*) FROM jobs j WHERE j.run = '$run' AND (SELECT count(*) FROM attempts a WHERE a.job = j.id AND a.state = 'succeeded') != 1\") -eq 0 ] && [ \$(sql \"SELECT count(*) FROM jobs WHERE run = '$run' AND state = 'succeeded'\") -eq 8 ]"
grep -h '^done .* ok$' "$tmp/w1.log" "$tmp/w2.log" | cut -d' ' -f2 | sed 's/#.*//' | sort | uniq -c | awk '{print $1}' | sort -u > "$tmp/done_counts"
check "no job ran to completion twice on the workers" "[ \"\$(cat '$tmp/done_counts')\" = 1 ] && [ \$(grep -h '^done .* ok$' '$tmp/w1.log' '$tmp/w2.log' | wc -l) -eq 8 ]"
fenced_run=0
for w in w1 w2; do
  for id in $(grep '^fence' "$tmp/$w.log" | cut -d' ' -f2); do grep -q "^assign $id " "$tmp/$w.log" && fenced_run=1; done
done
check "no attempt a worker had received was fenced (running attempts were kept)" "[ $fenced_run -eq 0 ]"
check "the restarted coordinator kept attempts its workers still ran" "[ \$(sql \"SELECT count(*) FROM events WHERE kind = 'kept'\") -ge 1 ]"
check "every attempt the workers were assigned is in the database" "[ \$(cat '$tmp/w1.log' '$tmp/w2.log' | grep -c '^assign') -le \$(sql 'SELECT count(*) FROM attempts') ]"
check "the workers said hello again after each restart" "[ \$(cat '$tmp/w1.log' | grep -c '^welcome') -ge 3 ]"
sql "SELECT id FROM attempts WHERE state = 'lost'" > "$tmp/lost"
reached=0
while read -r id; do grep -q "^assign $id " "$tmp/w1.log" "$tmp/w2.log" && reached=1; done < "$tmp/lost"
check "every attempt declared lost had never reached a worker" "[ $reached -eq 0 ]"
lost=$(sql "SELECT count(*) FROM attempts WHERE state = 'lost'")
echo "   (attempts lost to the crashes and requeued: $lost)"
stop_coord
check "a SIGTERM stop is clean and the database consistent" "[ $coord_rc -eq 0 ] && [ \"\$(sql 'PRAGMA integrity_check')\" = ok ]"
[ $fail -eq 0 ] || { cat "$tmp/xcoord.log"; cat "$tmp/w1.log" "$tmp/w2.log"; sql "SELECT id, worker, state FROM attempts"; }
exit $fail
