#!/usr/bin/env python3
"""Opens the dashboard in headless Chromium and checks what it shows against its own API.

usage: check_dashboard.py URL OUT_DIR [--fixture] [--live-cmd CMD --live-expect TEXT]

URL is the address the server printed (http://HOST:PORT/?token=...). Works against any server of
coordinator/http.h, the test host or the real xcoord: for every run (up to 6) the pipeline graph
must have one node per job with the job's state as its class and one arrow per dependency; the
selected job's curves and the eval report's charts must be drawn (Chart.js has rendered points);
the workers table and the events list must match the API; the live stream must be open; and the
page must log no error (exceptions, CSP, failed requests). Screenshots and the DOM go to OUT_DIR:
dashboard.png (a run with an eval report when there is one), dashboard-RUN.png per run,
dashboard.html.

--empty checks a server with no runs and no workers instead.
--fixture adds what the fixture in tests/data/dashboard guarantees: all nine job states appear,
the align job draws one line per layer and the distill jobs CE and KL.
--live-cmd runs CMD (which changes the data and tells the server), then waits for TEXT to appear
in the events list without the page reloading."""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser, CDPError  # noqa: E402

STATES = ["pending", "ready", "dispatched", "running", "succeeded", "failed", "cancelled", "held", "upstream_failed"]
failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


def api(b, path):
    return b.eval("fetch(%s, {credentials: 'same-origin'}).then(r => r.ok ? r.json() : null)" % json.dumps(path))


def chart(b, box):
    return b.eval("(() => { const e = document.getElementById(%s); return e ? {rendered: e.dataset.rendered, "
                  "points: Number(e.dataset.points || 0), series: (e.dataset.series || '').split('|').filter(Boolean), "
                  "hidden: e.hidden, w: e.clientWidth, h: e.clientHeight} : null; })()" % json.dumps(box))


def wait_chart(b, box, timeout=15):
    b.wait_for("(() => { const e = document.getElementById(%s); return e && e.dataset.rendered === 'true'; })()"
               % json.dumps(box), timeout)
    return chart(b, box)


def show(b, run, job=None):
    h = "#run=" + run + ("&job=" + job if job else "")
    b.eval("location.hash = %s; true" % json.dumps(h))


def dag(b):
    return b.eval("[...document.querySelectorAll('#dag .dag-node')].map(g => ({job: g.dataset.job, cls: g.getAttribute('class')}))")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--fixture", action="store_true")
    ap.add_argument("--live-cmd")
    ap.add_argument("--live-expect")
    ap.add_argument("--empty", action="store_true", help="a coordinator without runs or workers")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    b = Browser()
    try:
        b.open_page()
        b.navigate(a.url)
        ready = b.wait_for("document.body && document.body.dataset.ready === 'true'", 20)
        check(bool(ready), "the page loaded its data")
        check(b.eval("location.search") == "", "the token left the address bar (/?token= redirects to /)")
        check(b.eval("document.cookie") == "", "the token cookie is HttpOnly (not visible to scripts)")
        check(bool(b.wait_for("document.getElementById('conn').textContent === 'live'", 10)), "the live stream is open")
        runs = api(b, "/api/runs") or []
        if a.empty:
            check(runs == [] and "No runs yet" in b.eval("document.getElementById('runs').textContent"),
                  "no runs: the page says so")
            check("No workers" in b.eval("document.getElementById('workers').textContent"), "no workers: the page says so")
            b.screenshot(os.path.join(a.out, "dashboard-empty.png"))
            errs = b.errors()
            check(not errs, "the page logged no errors" + ("".join("\n    " + e for e in errs) if errs else ""))
            print("%d check(s) failed" % len(failures) if failures else "all checks passed")
            return 1 if failures else 0
        check(len(runs) > 0, "the API lists runs (%d)" % len(runs))
        items = b.eval("[...document.querySelectorAll('#runs .run-item')].map(li => li.dataset.run)")
        check(items == [r["id"] for r in runs], "the runs list shows every run in order")
        workers = api(b, "/api/workers") or []
        rows = b.eval("document.querySelectorAll('#workers tbody tr .w-name').length")
        check(rows == len(workers), "workers table: %d rows for %d workers" % (rows, len(workers)))

        seen_states, with_report, shots = set(), None, []
        for r in runs[:6]:
            rid = r["id"]
            detail = api(b, "/api/runs/" + rid.replace("/", "%2F")) or {}
            jobs = detail.get("jobs", [])
            show(b, rid)
            want = sorted((j["id"], j["state"]) for j in jobs)
            expr = ("(() => { const n = [...document.querySelectorAll('#dag .dag-node')]; const s = document.querySelector("
                    "'#dag .dag-node.selected'); return n.length === %d && n.every(g => g.dataset.job.startsWith(%s)) && "
                    "s && s.dataset.job.startsWith(%s); })()" % (len(jobs), json.dumps(rid + "/"), json.dumps(rid + "/")))
            b.wait_for(expr, 15)
            got = sorted((n["job"], next((c[6:] for c in n["cls"].split() if c.startswith("state-")), "?")) for n in dag(b))
            check(got == want, "%s: one node per job with its state (%d jobs)" % (rid, len(jobs)))
            seen_states.update(s for _, s in got)
            ids = {j["id"] for j in jobs}
            names = {j["name"]: j["id"] for j in jobs}
            n_deps = sum(len([d for d in j.get("deps", []) if d in ids or d in names]) for j in jobs)
            edges = b.eval("document.querySelectorAll('#dag .dag-edge').length")
            check(edges == n_deps, "%s: one arrow per dependency (%d)" % (rid, n_deps))
            check(b.eval("document.querySelectorAll('#legend .legend-item').length") == 9, "%s: the legend names the nine states" % rid)
            sel = b.wait_for("(() => { const g = document.querySelector('#dag .dag-node.selected'); return g && g.dataset.job; })()", 10)
            check(bool(sel), "%s: a job is selected (%s)" % (rid, sel))
            if sel:
                jd = api(b, "/api/jobs/" + sel.replace("/", "%2F")) or {}
                if jd.get("metrics"):
                    c = wait_chart(b, "chart-loss")
                    check(c and c["rendered"] == "true" and c["points"] > 0, "%s: loss curves of %s drawn (%s points)" % (rid, sel, c and c["points"]))
                    c = wait_chart(b, "chart-speed")
                    check(c and c["rendered"] == "true" and c["points"] > 0, "%s: tokens/s of %s drawn" % (rid, sel))
            rep = detail.get("report")
            if rep and rep.get("tasks"):
                with_report = with_report or rid
                c = wait_chart(b, "chart-recovery")
                check(c and c["rendered"] == "true" and c["points"] >= len(rep["tasks"]), "%s: recovery per task drawn (%d tasks)" % (rid, len(rep["tasks"])))
                c = wait_chart(b, "chart-calpha")
                check(c and c["rendered"] == "true" and c["points"] > 0, "%s: the C_alpha curve drawn" % rid)
                summ = b.eval("document.getElementById('eval-summary').textContent") or ""
                if "c_alpha_tasks" in rep:
                    want = "C_α over %d of %d tasks" % (len(rep["c_alpha_tasks"]), len(rep["tasks"]))
                    check(want in summ, "%s: the summary says which tasks C_alpha counts (%s)" % (rid, want))
                n_in = sum(1 for t in rep["tasks"] if t.get("in_domain") is True)
                if n_in:
                    check(("in-domain (fine-tuned on) %d" % n_in) in summ, "%s: %d in-domain tasks labelled" % (rid, n_in))
            else:
                check(bool(b.wait_for("!document.getElementById('eval-empty').hidden", 5)), "%s: no report: says so" % rid)
            evs = api(b, "/api/events?run=%s&since=0" % rid) or []
            b.wait_for("document.querySelectorAll('#events li:not(.empty)').length === %d" % min(200, len(evs)), 5)
            n = b.eval("document.querySelectorAll('#events li:not(.empty)').length")
            check(n == min(200, len(evs)), "%s: events list shows the run's events (%d)" % (rid, n))
            path = os.path.join(a.out, "dashboard-%s.png" % rid.replace("/", "_"))
            b.screenshot(path)
            shots.append(path)

        if a.fixture:
            check(seen_states == set(STATES), "all nine states are drawn: %s" % sorted(seen_states))
            show(b, "run-3-7f2a", "run-3-7f2a/align-0")
            b.wait_for("(() => { const e = document.getElementById('chart-loss'); return e.dataset.rendered === 'true' && "
                       "(e.dataset.series || '').includes('layer 14'); })()", 10)
            c = chart(b, "chart-loss")
            check(c and len([s for s in c["series"] if s.startswith("layer ")]) == 15 and "mean MSE (loss)" in c["series"],
                  "align-0: one line per layer (15) and the mean")
            check(b.eval("!document.getElementById('layer-scale').hidden"), "align-0: the layer colour scale is shown")
            show(b, "run-3-7f2a", "run-3-7f2a/distill-code")
            b.wait_for("(() => { const e = document.getElementById('chart-loss'); return e.dataset.rendered === 'true' && "
                       "(e.dataset.series || '').includes('CE'); })()", 10)
            c = chart(b, "chart-loss")
            check(c and {"loss", "CE", "KL (right)"} <= set(c["series"]), "distill-code: loss, CE and KL: %s" % (c and c["series"]))
            check(b.eval("document.querySelectorAll('#attempts tbody tr').length") == 2, "distill-code: both attempts listed (lost, then succeeded)")
            # by hand: a click on a run, then on a job of the graph
            b.eval("document.querySelector('.run-item[data-run=\"run-2-e4d9\"]').click(); true")
            ok = b.wait_for("[...document.querySelectorAll('#dag .dag-node')].length === 7 && "
                            "document.querySelector('#dag .dag-node').dataset.job.startsWith('run-2-e4d9/')", 10)
            check(bool(ok) and "run=run-2-e4d9" in b.eval("location.hash"), "a click on a run shows its pipeline")
            show(b, "run-3-7f2a")
            b.wait_for("!!document.querySelector('#dag .dag-node[data-job=\"run-3-7f2a/align-1\"]')", 10)
            b.eval("document.querySelector('#dag .dag-node[data-job=\"run-3-7f2a/align-1\"]')"
                   ".dispatchEvent(new MouseEvent('click', {bubbles: true})); true")
            ok = b.wait_for("(document.getElementById('chart-loss').dataset.series || '').includes('layer 29')", 10)
            check(bool(ok) and b.eval("document.querySelector('#dag .dag-node.selected').dataset.job") == "run-3-7f2a/align-1",
                  "a click on a job selects it and draws its curves (align-1: layers 15-29)")
            show(b, "run-3-7f2a")

        if with_report:
            show(b, with_report)
            wait_chart(b, "chart-calpha")
            b.pump(0.5)
        b.screenshot(os.path.join(a.out, "dashboard.png"))
        b.screenshot(os.path.join(a.out, "dashboard-full.png"), full_page=True)
        with open(os.path.join(a.out, "dashboard.html"), "w") as f:
            f.write(b.eval("document.documentElement.outerHTML"))

        if a.live_cmd:
            b.eval("window.__xd_no_reload = 1; true")
            before = b.eval("document.querySelectorAll('#events li').length")
            subprocess.run(a.live_cmd, shell=True, check=True)
            t0 = time.monotonic()
            shown = b.wait_for("document.getElementById('events').textContent.includes(%s)" % json.dumps(a.live_expect), 8)
            check(bool(shown), "a change is shown live, %.1f s after it (events %d -> %d)" % (
                time.monotonic() - t0, before, b.eval("document.querySelectorAll('#events li').length")))
            check(b.eval("window.__xd_no_reload === 1"), "without reloading the page")

        errs = b.errors()
        check(not errs, "the page logged no errors" + ("".join("\n    " + e for e in errs) if errs else ""))
    except CDPError as e:
        check(False, "chromium: %s" % e)
    finally:
        b.close()
    print("%d check(s) failed" % len(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
