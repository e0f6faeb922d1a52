#!/usr/bin/env bash
# The dashboard's HTTP contract (docs/dashboard.md), against the real server module on the test
# host (tests/integration/http_host.c) serving the fixture in tests/data/dashboard: routes, status
# codes, content types, JSON shapes, the token (Bearer and cookie), Host/Origin checks, methods,
# size limits, keep-alive and pipelining, Server-Sent Events, a slow client that must not stall
# anyone, the connection cap, and a clean stop.
# usage: http_api.sh HTTP_HOST FIXTURE_DIR
set -u
host_bin=$1 fixture=$2
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
tmp=$(mktemp -d) pid= sse=
cleanup() {
  [ -n "$sse" ] && kill "$sse" 2> /dev/null
  [ -n "$pid" ] && kill "$pid" 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
cp -r "$fixture" "$tmp/data"
"$host_bin" "$tmp/data" 127.0.0.1:0 "$tmp" "$tmp/url" 2> "$tmp/host.log" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/url" ] && break; sleep 0.1; done
[ -s "$tmp/url" ] || { echo "FAIL: the test host did not start"; cat "$tmp/host.log"; exit 1; }
url=$(cat "$tmp/url")
token=${url##*token=}
base=${url%%/\?token=*}
port=${base##*:}
auth="Authorization: Bearer $token"
echo "server: $base"

# req NAME CURL_ARGS...: body in $tmp/NAME.body, headers in $tmp/NAME.h, status in $code
req() {
  local name=$1
  shift
  code=$(curl -s -o "$tmp/$name.body" -D "$tmp/$name.h" -w '%{http_code}' "$@")
}
hdr() { grep -i "^$2:" "$tmp/$1.h" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
# json NAME PYTHON_EXPR: the expression over j (the parsed body) must be true
json() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$tmp/$1.body" 2> /dev/null; }

# ---- access ----
check "the token file is mode 0600 and holds the URL's token" \
  "[ \"\$(stat -c %a '$tmp/dashboard.token')\" = 600 ] && [ \"\$(cat '$tmp/dashboard.token')\" = '$token' ] && [ \${#token} -eq 64 ]"
check "the URL was logged the Jupyter way" "grep -q 'open http://127.0.0.1:$port/?token=$token' '$tmp/host.log'"
req hz "$base/healthz"
check "/healthz without the token: 200 ok" "[ $code = 200 ] && [ \"\$(cat $tmp/hz.body)\" = ok ]"
req noauth "$base/api/runs"
check "no token: 401 with a JSON error and WWW-Authenticate" \
  "[ $code = 401 ] && json noauth \"'token' in j['error']\" && hdr noauth WWW-Authenticate | grep -q Bearer"
req bad -H "Authorization: Bearer $(echo "$token" | tr 0-9a-f 1-9a-f0)" "$base/api/runs"
check "a wrong token of the right length: 401" "[ $code = 401 ]"
req short -H "Authorization: Bearer ${token:0:63}" "$base/api/runs"
check "a truncated token: 401" "[ $code = 401 ]"
req page401 "$base/"
check "the page without the token: 401 with a page that says how to get in" \
  "[ $code = 401 ] && grep -q 'dashboard.token' $tmp/page401.body && hdr page401 Content-Type | grep -q text/html"
req badq "$base/?token=nope"
check "/?token=WRONG: 401" "[ $code = 401 ]"
req login -c "$tmp/jar" "$url"
check "/?token=T: 302 to / setting an HttpOnly SameSite=Strict cookie" \
  "[ $code = 302 ] && [ \"\$(hdr login Location)\" = / ] && hdr login Set-Cookie | grep -q '$token; Path=/; HttpOnly; SameSite=Strict'"
req page -b "$tmp/jar" "$base/"
check "the page with the cookie: 200 HTML that loads app.js and Chart.js" \
  "[ $code = 200 ] && hdr page Content-Type | grep -q '^text/html' && grep -q '/app.js' $tmp/page.body && grep -q '/static/chart.min.js' $tmp/page.body"
check "the page has a strict Content-Security-Policy" "hdr page Content-Security-Policy | grep -q \"script-src 'self'\""
req cookie -b "$tmp/jar" "$base/api/workers"
check "the API with the cookie: 200" "[ $code = 200 ]"
req bearer -H "$auth" "$base/api/workers"
check "the API with the Bearer token: 200" "[ $code = 200 ]"

# ---- Host and Origin: DNS rebinding and cross-site requests ----
req evil -H "$auth" -H "Host: evil.example:$port" "$base/api/runs"
check "a foreign Host: 403" "[ $code = 403 ] && json evil \"'Host' in j['error']\""
req evil2 -H "$auth" -H "Host: 10.1.2.3:$port" "$base/api/runs"
check "an address this server is not bound to: 403" "[ $code = 403 ]"
req lh -H "$auth" -H "Host: localhost:$port" "$base/api/runs"
check "Host localhost:PORT: 200" "[ $code = 200 ]"
req tunnel -H "$auth" -H "Host: localhost:9" "$base/api/runs"
check "Host localhost on another port (an ssh tunnel): 200" "[ $code = 200 ]"
req origin -H "$auth" -H "Origin: http://evil.example" "$base/api/runs"
check "a foreign Origin: 403" "[ $code = 403 ]"
req onull -H "$auth" -H "Origin: null" "$base/api/runs"
check "Origin null: 403" "[ $code = 403 ]"
req oself -H "$auth" -H "Origin: http://127.0.0.1:$port" "$base/api/runs"
check "its own Origin: 200" "[ $code = 200 ]"

# ---- routes and JSON shapes ----
req runs -H "$auth" "$base/api/runs"
check "/api/runs: application/json, [{id, name, state, created, jobs: {state: count}}]" \
  "[ $code = 200 ] && hdr runs Content-Type | grep -q '^application/json' && json runs \"len(j) == 3 and all({'id','name','state','created','jobs'} <= set(r) and isinstance(r['jobs'], dict) for r in j)\""
req run -H "$auth" "$base/api/runs/run-3-7f2a"
check "/api/runs/ID: jobs with deps, attempts, progress, worker, and the eval report" \
  "[ $code = 200 ] && json run \"len(j['jobs']) == 11 and all({'id','name','stage','state','deps','attempts','progress','worker'} <= set(x) for x in j['jobs']) and {'tasks','c_alpha','alpha_star'} <= set(j['report']) and len(j['report']['c_alpha']) == 6\""
req job -H "$auth" "$base/api/jobs/run-3-7f2a/align-0"
check "/api/jobs/RUN/NAME: attempts, metrics with mse_layer, log" \
  "[ $code = 200 ] && json job \"j['id'] == 'run-3-7f2a/align-0' and len(j['metrics']) == 100 and len(j['metrics'][0]['mse_layer']) == 15 and j['attempts'][0]['state'] == 'succeeded' and len(j['log']) > 0\""
req job2 -H "$auth" "$base/api/jobs/run-3-7f2a%2Fdistill-math"
check "/api/jobs/RUN%2FNAME (encoded): the distill job with ce and kl" \
  "[ $code = 200 ] && json job2 \"{'ce','kl','loss','tokens_per_s','lr','grad_norm','step','tokens'} <= set(j['metrics'][-1])\""
req workers -H "$auth" "$base/api/workers"
check "/api/workers: [{name, devices, heartbeat_age_ms, attempt, draining}]" \
  "json workers \"len(j) == 3 and all({'name','devices','heartbeat_age_ms','attempt','draining'} <= set(w) for w in j)\""
req ev -H "$auth" "$base/api/events?run=run-3-7f2a&since=10"
check "/api/events?run=ID&since=N: that run's events after N" \
  "[ $code = 200 ] && json ev \"len(j) > 0 and all(e['run'] == 'run-3-7f2a' and e['id'] > 10 and {'id','time','job','kind','message'} <= set(e) for e in j)\""
req evall -H "$auth" "$base/api/events"
check "/api/events: every run's" "json evall \"len({e['run'] for e in j}) == 3\""
req evbad -H "$auth" "$base/api/events?since=ten"
check "/api/events?since=ten: 400" "[ $code = 400 ] && json evbad \"'error' in j\""
req evneg -H "$auth" "$base/api/events?since=-1"
check "/api/events?since=-1: 400" "[ $code = 400 ]"
req idbad -H "$auth" "$base/api/runs/..%2F..%2Fetc"
check "an id with '..': 400" "[ $code = 400 ]"
req nr -H "$auth" "$base/api/runs/run-9-0000"
check "an unknown run: 404 {error}" "[ $code = 404 ] && json nr \"'run-9-0000' in j['error']\""
req nj -H "$auth" "$base/api/jobs/run-3-7f2a/nope"
check "an unknown job: 404" "[ $code = 404 ]"
req nroute -H "$auth" "$base/api/nothing"
check "an unknown route: 404 JSON" "[ $code = 404 ] && json nroute \"'error' in j\""
req prom -H "$auth" "$base/metrics"
check "/metrics: Prometheus text" \
  "[ $code = 200 ] && hdr prom Content-Type | grep -q 'text/plain; version=0.0.4' && grep -q '^xd_jobs{state=\"running\"} 1' $tmp/prom.body && grep -q '^xd_job_tokens_per_second{' $tmp/prom.body"
req promno "$base/metrics"
check "/metrics needs the token too" "[ $code = 401 ]"

# ---- the embedded files ----
req chart -H "$auth" "$base/static/chart.min.js"
check "/static/chart.min.js is Debian's Chart.js, byte for byte" \
  "[ $code = 200 ] && hdr chart Content-Type | grep -q javascript && cmp -s $tmp/chart.body /usr/share/javascript/chart.js/chart.min.js"
req appjs -H "$auth" "$base/app.js"
req appcss -H "$auth" "$base/app.css"
check "/app.js and /app.css with their types" \
  "hdr appjs Content-Type | grep -q '^text/javascript' && hdr appcss Content-Type | grep -q '^text/css' && grep -q EventSource $tmp/appjs.body"
etag=$(hdr appjs ETag)
req appjs2 -H "$auth" -H "If-None-Match: $etag" "$base/app.js"
check "an unchanged file is answered 304 by its ETag" "[ -n '$etag' ] && [ $code = 304 ] && [ ! -s $tmp/appjs2.body ]"
req head -H "$auth" -I "$base/api/runs"
check "HEAD: the GET's status, type and length" \
  "[ $code = 200 ] && hdr head Content-Type | grep -q application/json && [ \"\$(hdr head Content-Length)\" = \"\$(wc -c < $tmp/runs.body | tr -d ' ')\" ]"

# ---- methods and limits ----
req post -H "$auth" -X POST -d x=1 "$base/api/runs"
check "POST: 405 with Allow: GET, HEAD" "[ $code = 405 ] && hdr post Allow | grep -q 'GET, HEAD'"
req del -H "$auth" -X DELETE "$base/api/runs/run-3-7f2a"
check "DELETE: 405" "[ $code = 405 ]"
req put -X PUT -d x "$base/healthz"
check "PUT even on /healthz: 405" "[ $code = 405 ]"
head -c 100000 /dev/zero | tr '\0' a > "$tmp/big"
req bigpost -H "$auth" -H 'Expect:' --data-binary @"$tmp/big" "$base/api/runs"
check "a 100 KB body: 413 (and the response arrives although the body was not read)" "[ $code = 413 ]"
req biglen -H "$auth" -X GET -H 'Expect:' --data-binary @"$tmp/big" "$base/api/runs"
check "a GET with a 100 KB body: 413" "[ $code = 413 ]"
long=$(head -c 20000 /dev/zero | tr '\0' b)
req bighdr -H "$auth" -H "X-Long: $long" "$base/api/runs"
check "a 20 KB header: 431" "[ $code = 431 ] && json bighdr \"'16 KiB' in j['error']\""
many=()
for i in $(seq 70); do many+=(-H "X-H$i: $i"); done
req manyhdr -H "$auth" "${many[@]}" "$base/api/runs"
check "70 header fields: 431" "[ $code = 431 ]"
longurl="$base/api/runs/$(head -c 17000 /dev/zero | tr '\0' r)"
req bigurl -H "$auth" "$longurl"
check "a 17 KB request target: 431" "[ $code = 431 ]"

# raw exchanges: python3 talks to the socket itself
raw() { # raw BYTES_AS_PYTHON_LITERAL: prints what the server sent until it closes or 2 s pass
  python3 - "$port" "$1" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(eval(sys.argv[2]))
s.settimeout(2)
out = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
except socket.timeout:
    pass
sys.stdout.write(out.decode("latin-1"))
PY
}
r=$(raw "b'GARBAGE\\r\\n\\r\\n'")
check "a malformed request: 400 and closed" "echo \"\$r\" | head -1 | grep -q '^HTTP/1.1 400'"
r=$(raw "b'HEAD /api/runs HTTP/1.1\\r\\nHost: 127.0.0.1:$port\\r\\nAuthorization: Bearer $token\\r\\nConnection: close\\r\\n\\r\\n'")
check "HEAD sends no body" "echo \"\$r\" | head -1 | grep -q '^HTTP/1.1 200' && [ -z \"\$(printf '%s' \"\$r\" | sed '1,/^\\r\$/d')\" ]"
r=$(raw "b'GET /api/runs HTTP/1.0\\r\\nAuthorization: Bearer $token\\r\\n\\r\\n'")
check "no Host header: 403" "echo \"\$r\" | head -1 | grep -q '^HTTP/1.1 403'"
r=$(raw "b'GET /api/runs HTTP/1.1\\r\\nHost: 127.0.0.1:$port\\r\\nHost: evil.example\\r\\nAuthorization: Bearer $token\\r\\n\\r\\n'")
check "two Host headers: 400" "echo \"\$r\" | head -1 | grep -q '^HTTP/1.1 400'"
r=$(raw "b'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /api/runs HTTP/1.1\\r\\nHost: 127.0.0.1:$port\\r\\nAuthorization: Bearer $token\\r\\nConnection: close\\r\\n\\r\\n'")
check "two pipelined requests: two responses, in order, then closed on Connection: close" \
  "[ \$(echo \"\$r\" | grep -c '^HTTP/1.1 ') = 2 ] && echo \"\$r\" | grep -m1 '^HTTP/1.1' | grep -q 200 && echo \"\$r\" | grep -q 'run-3-7f2a' && echo \"\$r\" | grep -q 'Connection: close'"
r=$(raw "b'GET /api/runs HTTP/1.1\\r\\nHost: 127.0.0.1:$port\\r\\nTransfer-Encoding: chunked\\r\\nAuthorization: Bearer $token\\r\\n\\r\\n' + b''.join(b'8000\\r\\n' + b'z' * 0x8000 + b'\\r\\n' for _ in range(3))")
check "a chunked body past 64 KiB: 413" "echo \"\$r\" | head -1 | grep -q '^HTTP/1.1 413'"

# ---- keep-alive ----
curl -sv -H "$auth" -o /dev/null -o /dev/null "$base/api/runs" "$base/api/workers" 2> "$tmp/ka.err"
check "keep-alive: two requests on one connection" \
  "[ \$(grep -c '< HTTP/1.1 200' $tmp/ka.err) = 2 ] && grep -qi 're-us' $tmp/ka.err && [ \$(grep -c 'Connected to' $tmp/ka.err) = 1 ]"

# ---- Server-Sent Events ----
curl -sN -H "$auth" "$base/api/stream" > "$tmp/sse" 2>&1 &
sse=$!
last=$(python3 -c "import json; print(max(e['id'] for e in json.load(open('$tmp/data/events.json'))))")
add_event() { # add_event ID: appends an event with that id to the fixture
  python3 - "$tmp/data/events.json" "$1" <<'PY'
import json, sys
p, i = sys.argv[1], int(sys.argv[2])
ev = json.load(open(p))
ev.append({"id": i, "time": 1763890000.0 + i, "run": "run-4-b01c", "job": "run-4-b01c/align-1", "kind": "checkpoint", "message": "step %d" % i})
json.dump(ev, open(p + ".tmp", "w"))
PY
  mv "$tmp/data/events.json.tmp" "$tmp/data/events.json"
}
waitfor() { for _ in $(seq 50); do grep -q "$1" "$2" && return 0; sleep 0.1; done; return 1; }
check "the stream opens with the last event id" "waitfor '\"last_event_id\": $last}' $tmp/sse && grep -q '^event: change' $tmp/sse && grep -q '^retry: ' $tmp/sse"
add_event $((last + 1))
kill -HUP $pid
t0=$(date +%s%N)
check "a change and coord_http_notify (SIGHUP): an event within a second" \
  "waitfor '\"last_event_id\": $((last + 1))}' $tmp/sse && [ \$(( (\$(date +%s%N) - t0) / 1000000 )) -lt 1000 ]"
add_event $((last + 2))
check "a change without notify: pushed by the once-a-second check" "waitfor '\"last_event_id\": $((last + 2))}' $tmp/sse"
req sseauth "$base/api/stream"
check "the stream needs the token" "[ $code = 401 ]"
kill $sse 2> /dev/null
wait $sse 2> /dev/null
sse=

# ---- a slow client does not stall anyone, and is closed after 10 s ----
python3 - "$port" > "$tmp/slow.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setblocking(False)
start = time.monotonic()
got = b""
for ch in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Dribble: " + b"d" * 100:
    try:
        s.send(bytes([ch]))
    except OSError:
        break
    time.sleep(1)
    try:
        b = s.recv(4096)
        got += b
        if not b or b"\r\n\r\n" in got:
            break
    except BlockingIOError:
        pass
    if time.monotonic() - start > 20:
        break
print("closed after %.1f s: %s" % (time.monotonic() - start, got.split(b"\r\n")[0].decode()))
PY
slow=$!
sleep 2
t0=$(date +%s%N)
req fast -H "$auth" "$base/api/runs/run-3-7f2a"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "a normal request while a client dribbles its header: 200 in ${ms} ms" "[ $code = 200 ] && [ $ms -lt 1000 ]"
wait $slow
check "the dribbling client gets 408 and is closed after ~10 s ($(cat "$tmp/slow.out"))" \
  "grep -Eq 'closed after (9|1[0-3])\.[0-9] s: HTTP/1.1 408' $tmp/slow.out"

# ---- at most 256 connections ----
python3 - "$port" "$auth" "$base" > "$tmp/cap.out" 2>&1 <<'PY'
import socket, subprocess, sys, time
port, auth, base = int(sys.argv[1]), sys.argv[2], sys.argv[3]
socks = []
for i in range(300):
    socks.append(socket.create_connection(("127.0.0.1", port)))
time.sleep(1.5)
closed, busy = 0, 0
for s in socks:
    s.setblocking(False)
    try:
        b = s.recv(4096)
        closed += 1
        busy += b.startswith(b"HTTP/1.1 503")
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", auth, base + "/api/runs"], capture_output=True, text=True)
full = r.stdout
for s in socks:
    s.close()
time.sleep(1)
r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", auth, base + "/api/runs"], capture_output=True, text=True)
print("open %d closed %d (503: %d) while full: %s after: %s" % (300 - closed, closed, busy, full, r.stdout))
PY
check "300 connections: 256 kept, 44 told 503 and closed; a request while full is refused, after: 200 ($(cat "$tmp/cap.out"))" \
  "grep -q 'open 256 closed 44 (503: 44) while full: 503 after: 200' $tmp/cap.out"

# ---- bound to every address: the machine's names and IP literals are this server, others not ----
mkdir -p "$tmp/wild"
"$host_bin" "$tmp/data" 0.0.0.0:0 "$tmp/wild" "$tmp/url2" 2> "$tmp/host2.log" &
pid2=$!
for _ in $(seq 100); do [ -s "$tmp/url2" ] && break; sleep 0.1; done
url2=$(cat "$tmp/url2")
p2=${url2##*:}
p2=${p2%%/*}
t2=${url2##*token=}
wild() { curl -s -o /dev/null -w '%{http_code}' -H "Host: $1" -H "Authorization: Bearer $t2" "http://127.0.0.1:$p2/api/workers"; }
check "0.0.0.0: the URL names the machine ($url2)" "echo '$url2' | grep -q '^http://$(hostname):'"
check "0.0.0.0: Host \$(hostname):PORT, an IP literal, localhost: 200; evil.example, a wrong port: 403" \
  "[ \$(wild $(hostname):$p2) = 200 ] && [ \$(wild 192.0.2.7:$p2) = 200 ] && [ \$(wild '[2001:db8::1]:'$p2) = 200 ] && [ \$(wild localhost:$p2) = 200 ] && [ \$(wild evil.example:$p2) = 403 ] && [ \$(wild 192.0.2.7:1) = 403 ]"
kill $pid2
wait $pid2
check "a second server has a token of its own" "[ '$t2' != '$token' ]"

# ---- a clean stop ----
kill "$pid"
wait "$pid"
rc=$?
pid=
check "SIGTERM: the host stops the server and exits 0 (rc=$rc)" "[ $rc -eq 0 ]"
[ $fail -eq 0 ] || { echo "--- host log"; cat "$tmp/host.log"; }
exit $fail
