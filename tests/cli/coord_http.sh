#!/usr/bin/env bash
# xcoord --http: the dashboard served by the real coordinator from its real SQLite state. Two fake
# workers (tests/integration/coord_peer.c, --rich: align/distill-shaped metrics lines and an eval
# report written to the eval job's out) run a whole pipeline submitted through the real protocol;
# the HTTP contract (docs/dashboard.md) is checked against it while it runs and once it is done,
# then the page in headless Chromium (tests/browser/check_dashboard.py), screenshots kept in
# ARTIFACT_DIR.
# usage: coord_http.sh XCOORD COORD_PEER ARTIFACT_DIR
xcoord=$1 peer=$2 art=$3
here=$(cd "$(dirname "$0")" && pwd)
. "$here/coord_lib.sh"
sse=
trap 'for p in $sse $pids $cpid; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$tmp"' EXIT

# ---- the flag ----
"$xcoord" --listen 'tcp://127.0.0.1:*' --db "$tmp/refused.db" --artifacts "$tmp/art" --http 0.0.0.0:0 2> "$tmp/refused.err"
rc=$?
check "--http off loopback without --http-public: refused, saying why (rc=$rc)" \
  "[ $rc -eq 2 ] && grep -q -- '--http-public' '$tmp/refused.err'"
"$xcoord" --listen 'tcp://127.0.0.1:*' --db "$tmp/refused.db" --artifacts "$tmp/art" --http-public 2> "$tmp/refused2.err"
check "--http-public alone: refused" "[ $? -eq 2 ] && grep -q -- '--http' '$tmp/refused2.err'"

lease_ms=3000 start_coord --http 127.0.0.1:0
url=$(grep -o 'dashboard: open http://[^ ]*' "$tmp/xcoord.log" | head -n 1 | cut -d' ' -f3)
token=${url##*token=}
base=${url%%/\?token=*}
port=${base##*:}
echo "dashboard: $url"
check "the URL is logged the Jupyter way, with the token next to the database (mode 0600)" \
  "[ -n '$token' ] && [ \"\$(cat '$tmp/dashboard.token')\" = '$token' ] && [ \"\$(stat -c %a '$tmp/dashboard.token')\" = 600 ]"
auth="Authorization: Bearer $token"

# req NAME PATH [CURL_ARGS...]: body in $tmp/NAME.body, status in $code (with the token)
req() {
  local name=$1 path=$2
  shift 2
  code=$(curl -s -o "$tmp/$name.body" -w '%{http_code}' -H "$auth" "$@" "$base$path")
}
# js NAME PYTHON_EXPR: the expression over j (the parsed body) must be true
js() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$tmp/$1.body"; }

curl -sN -H "$auth" "$base/api/stream" > "$tmp/sse" 2>&1 &
sse=$!
req empty /api/runs
check "no runs yet: /api/runs is []" "[ $code = 200 ] && js empty 'j == []'"

start_worker w1 --job-ms 900 --progress-ms 60 --rich 1 --save-configs "$tmp"
start_worker w2 --job-ms 900 --progress-ms 60 --rich 1
cat > "$tmp/spec.yaml" <<YAML
name: dashboard
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
check "submitted through the protocol ($run)" "[ -n '$run' ]"

# while it runs: /metrics has the running jobs' throughput and loss from their latest line
wait_until 20 "curl -s -H '$auth' '$base/metrics' > '$tmp/prom_live' && grep -q '^xd_job_tokens_per_second{run=\"$run\"' '$tmp/prom_live'"
check "/metrics while running: tokens/s, loss and step of a running job" \
  "grep -q '^xd_job_tokens_per_second{run=\"$run\",job=\"[a-z0-9-]*\",stage=\"[a-z]*\"} [0-9.]*$' '$tmp/prom_live' && grep -q '^xd_job_loss{run=\"$run\"' '$tmp/prom_live' && grep -q '^xd_jobs{state=\"running\"} [1-9]' '$tmp/prom_live'"
req live "/api/runs/$run"
check "/api/runs/ID while running: a running job has its worker and progress" \
  "js live \"any(x['state'] == 'running' and x['worker'] in ('w1', 'w2') for x in j['jobs'])\""

wait_until 60 "[ \"\$(run_state $run)\" = succeeded ]"
check "the run succeeded" "[ \"\$(run_state $run)\" = succeeded ]"

# ---- access ----
code=$(curl -s -o "$tmp/noauth.body" -w '%{http_code}' "$base/api/runs")
check "no token: 401" "[ $code = 401 ] && js noauth \"'token' in j['error']\""
req evil /api/runs -H "Host: evil.example:$port"
check "a foreign Host: 403" "[ $code = 403 ]"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz")
check "/healthz without the token: 200" "[ $code = 200 ]"

# ---- the API from the coordinator's state ----
req runs /api/runs
check "/api/runs lists the run with its jobs by state" \
  "[ $code = 200 ] && js runs \"[(r['id'], r['name'], r['state'], r['jobs']) for r in j] == [('$run', 'dashboard', 'succeeded', {'succeeded': 9})] and j[0]['created'] > 0\""
req run "/api/runs/$run"
check "/api/runs/ID: the DAG with every job (id, name, stage, state, deps, attempts, progress, worker)" \
  "[ $code = 200 ] && js run \"len(j['jobs']) == 9 and all({'id','name','stage','state','deps','attempts','progress','worker'} <= set(x) and x['state'] == 'succeeded' and x['attempts'] >= 1 and x['worker'] in ('w1', 'w2') for x in j['jobs'])\""
check "/api/runs/ID: deps name the jobs needed; progress is {step, total} of the latest line" \
  "js run \"{x['name']: x['deps'] for x in j['jobs']}['merge'] == ['distill-math', 'distill-code'] and {x['name']: x['deps'] for x in j['jobs']}['init'] == [] and all(1 <= x['progress']['step'] <= x['progress']['total'] for x in j['jobs'])\""
check "/api/runs/ID: the report is the eval job's out file" \
  "js run \"j['report'] == json.load(open('$tmp/art/$run/eval/report.json')) and len(j['report']['tasks']) == 4 and len(j['report']['c_alpha']) == 6\""
req job "/api/jobs/$run/align-0"
check "/api/jobs/ID (align): attempts, every metrics line whole (mse_layer) in step order, log" \
  "[ $code = 200 ] && js job \"j['id'] == '$run/align-0' and j['stage'] == 'align' and j['attempts'][-1]['state'] == 'succeeded' and j['attempts'][-1]['worker'] in ('w1', 'w2') and len(j['metrics']) >= 5 and [m['step'] for m in j['metrics']] == sorted(m['step'] for m in j['metrics']) and j['metrics'][0]['step'] == 1 and all(len(m['mse_layer']) == 4 for m in j['metrics']) and len(j['log']) == min(50, len(j['metrics'])) and json.loads(j['log'][-1])['step'] >= 1\""
req job2 "/api/jobs/$run%2Fdistill-math"
check "/api/jobs/RUN%2FNAME (distill): loss, ce, kl, tokens_per_s" \
  "[ $code = 200 ] && js job2 \"{'loss','ce','kl','tokens_per_s','lr','grad_norm','step','tokens'} <= set(j['metrics'][-1])\""
req nojob "/api/jobs/$run/nope"
check "an unknown job: 404" "[ $code = 404 ]"
req norun /api/runs/run-99-0000
check "an unknown run: 404 naming it" "[ $code = 404 ] && js norun \"'run-99-0000' in j['error']\""
req workers /api/workers
check "/api/workers: w1 and w2 alive with heartbeat ages" \
  "js workers \"[(w['name'], w['state'], w['attempt']) for w in j] == [('w1', 'alive', None), ('w2', 'alive', None)] and all(0 <= w['heartbeat_age_ms'] < 1000 and w['devices'] for w in j)\""
req events "/api/events?run=$run&since=0"
check "/api/events?run=ID: that run's events, submitted to the run's end" \
  "js events \"{'submitted','dispatched','running','succeeded','run'} <= {e['kind'] for e in j} and all(e['run'] == '$run' for e in j)\""
last=$(python3 -c "import json; print(max(e['id'] for e in json.load(open('$tmp/events.body'))))")
req since "/api/events?since=$last"
check "/api/events?since=LAST: none" "js since 'j == []'"
req prom /metrics
check "/metrics: jobs by state, workers, heartbeat ages" \
  "[ $code = 200 ] && grep -q '^xd_jobs{state=\"succeeded\"} 9$' $tmp/prom.body && grep -q '^xd_jobs{state=\"running\"} 0$' $tmp/prom.body && grep -q '^xd_workers{state=\"alive\"} 2$' $tmp/prom.body && grep -q '^xd_worker_heartbeat_age_seconds{worker=\"w1\"} [0-9.]*$' $tmp/prom.body"
check "/metrics: Prometheus text format (every sample under its HELP and TYPE)" "python3 - '$tmp/prom.body' <<'PY'
import re, sys
typed, ok = set(), True
for line in open(sys.argv[1]):
    line = line.rstrip('\n')
    m = re.match(r'# (HELP|TYPE) (\w+) (.+)', line)
    if m:
        if m.group(1) == 'TYPE':
            ok &= m.group(3) in ('gauge', 'counter')
            typed.add(m.group(2))
        continue
    m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+=\"[^\"]*\"(,[a-z_]+=\"[^\"]*\")*\})? (-?[0-9.e+-]+)$', line)
    ok &= bool(m) and m.group(1) in typed
sys.exit(0 if ok and 'xd_jobs' in typed else 1)
PY"
check "the live stream pushed the changes (coord_http_notify on events)" \
  "[ \$(grep -c '^event: change' '$tmp/sse') -ge 3 ] && grep -q \"\\\"last_event_id\\\": $last}\" '$tmp/sse'"
kill $sse 2> /dev/null
sse=

# ---- the page in headless Chromium, on the finished run ----
if command -v chromium > /dev/null; then
  python3 "$here/../browser/check_dashboard.py" "$url" "$art" > "$tmp/browser.log" 2>&1
  brc=$?
  cat "$tmp/browser.log"
  check "the dashboard in Chromium against the real coordinator" "[ $brc -eq 0 ]"
  check "a screenshot of the run with its eval report" "[ -s '$art/dashboard.png' ] && grep -q '$run: recovery per task drawn' '$tmp/browser.log'"
else
  echo "FAIL: chromium is missing (deploy/install-deps.sh --test)"
  fail=1
fi

stop_coord
check "xcoord stops cleanly with the dashboard open (rc=$coord_rc)" "[ $coord_rc -eq 0 ] && [ \"\$(sql 'PRAGMA integrity_check')\" = ok ]"
[ $fail -eq 0 ] || { [ -n "${XD_KEEP:-}" ] && cp "$tmp"/*.body "$XD_KEEP"; cat "$tmp/xcoord.log"; tail -n 5 "$tmp"/w*.log; }
exit $fail
