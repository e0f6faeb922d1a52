#!/usr/bin/env bash
# The dashboard in headless Chromium (Debian's chromium package), on the test host serving the
# fixture run: tests/browser/check_dashboard.py opens the page with the token in the URL and checks
# the pipeline graph, the charts, the workers and events against the API, a live update without a
# reload, and that the page logs no error. Screenshots go to ARTIFACT_DIR (dashboard.png).
# usage: dashboard.sh HTTP_HOST FIXTURE_DIR ARTIFACT_DIR
set -u
host=$1 fixture=$2 art=$3
here=$(cd "$(dirname "$0")" && pwd)
command -v chromium > /dev/null || { echo "FAIL: chromium is missing (deploy/install-deps.sh --test)"; exit 1; }
tmp=$(mktemp -d) pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2> /dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
cp -r "$fixture" "$tmp/data"
"$host" "$tmp/data" 127.0.0.1:0 "$tmp" "$tmp/url" 2> "$tmp/host.log" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/url" ] && break; sleep 0.1; done
[ -s "$tmp/url" ] || { echo "FAIL: the test host did not start"; cat "$tmp/host.log"; exit 1; }
url=$(cat "$tmp/url")
mkdir -p "$art"

# the live change: a new event for the run on screen, then SIGHUP (coord_http_notify)
cat > "$tmp/change.sh" <<SH
python3 - "$tmp/data/events.json" <<'PY'
import json, sys
p = sys.argv[1]
ev = json.load(open(p))
ev.append({"id": ev[-1]["id"] + 1, "time": ev[-1]["time"] + 60, "run": "run-3-7f2a", "job": "run-3-7f2a/eval",
           "kind": "checkpoint", "message": "live update from the browser test"})
json.dump(ev, open(p + ".tmp", "w"))
PY
mv "$tmp/data/events.json.tmp" "$tmp/data/events.json"
kill -HUP $pid
SH

python3 "$here/check_dashboard.py" "$url" "$art" --fixture --live-cmd "sh $tmp/change.sh" \
  --live-expect "live update from the browser test"
rc=$?
kill "$pid"
wait "$pid"
hrc=$?
pid=
if [ $hrc -ne 0 ]; then echo "FAIL: the test host exited with $hrc"; cat "$tmp/host.log"; rc=1; fi

# a coordinator that has nothing yet
mkdir -p "$tmp/empty" "$tmp/etok"
for f in runs workers events; do echo '[]' > "$tmp/empty/$f.json"; done
: > "$tmp/empty/metrics.prom"
"$host" "$tmp/empty" 127.0.0.1:0 "$tmp/etok" "$tmp/url-empty" 2> "$tmp/host-empty.log" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/url-empty" ] && break; sleep 0.1; done
python3 "$here/check_dashboard.py" "$(cat "$tmp/url-empty")" "$art" --empty || rc=1
[ -f "$art/dashboard.png" ] && echo "screenshot: $art/dashboard.png"
exit $rc
