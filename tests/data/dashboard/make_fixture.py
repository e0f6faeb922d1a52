#!/usr/bin/env python3
"""Writes the dashboard's fixture (what tests/integration/http_host serves) into this directory.

Three runs as the coordinator's HTTP API returns them (coordinator/http.h, docs/dashboard.md):
  run-3-7f2a  smollm2-135m-4dom   succeeded: 11 jobs (init, 2 align blocks, the join, 4 experts,
              merge, final, eval), a retried expert, metrics of every training job, the eval report
  run-4-b01c  llama-3.2-1b-math-code  running: jobs running, dispatched, ready, pending, held
  run-2-e4d9  smollm2-ablation-w256   failed: failed, cancelled and upstream_failed jobs
Deterministic (seeded): rerun it and the files are identical.  usage: make_fixture.py [DIR]
"""
import json
import math
import os
import random
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20251123)
T0 = 1763880000.0  # 2025-11-23 06:40 UTC


def dump(rel, obj):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1 if not rel.startswith("jobs/") else None, separators=None)
        f.write("\n")


def r6(x):
    return float("%.6g" % x)


def lr_at(step, peak, lo, warmup, total, schedule):
    if step <= warmup:
        return peak * step / warmup
    if schedule == "constant":
        return peak
    p = (step - warmup) / max(1, total - warmup)
    return lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * p))


def align_metrics(first, n_layers, total, upto, every=5, tps=41000.0):
    init = [0.018 * (1 + (first + i) / 5.0) * (0.8 + 0.4 * rng.random()) for i in range(n_layers)]
    floor = [v * (0.09 + 0.05 * rng.random()) for v in init]
    tau = [40 + 60 * rng.random() for _ in range(n_layers)]
    out = []
    for step in range(every, upto + 1, every):
        mse = [floor[i] + (init[i] - floor[i]) * math.exp(-step / tau[i]) for i in range(n_layers)]
        mse = [r6(v * (1 + 0.06 * (rng.random() - 0.5))) for v in mse]
        out.append({
            "step": step, "tokens": step * 8 * 2048, "loss": r6(sum(mse) / n_layers), "mse_layer": mse,
            "first_layer": first, "lr": r6(lr_at(step, 1e-2, 1e-5, 10, total, "cosine")),
            "grad_norm": r6(0.9 * math.exp(-step / 120) + 0.08 + 0.03 * rng.random()),
            "tokens_per_s": round(tps * (1 + 0.04 * (rng.random() - 0.5)), 1), "skipped": False})
    return out


def distill_metrics(total, upto, ce0, ce1, kl0, kl1, every=10, tps=276000.0, warmup=10):
    out = []
    for step in range(every, upto + 1, every):
        d = math.exp(-step / (total / 4))
        ce = ce1 + (ce0 - ce1) * d + 0.05 * (rng.random() - 0.5)
        kl = kl1 + (kl0 - kl1) * d + 0.02 * (rng.random() - 0.5)
        out.append({
            "step": step, "tokens": step * 8 * 2048, "loss": r6(0.9 * ce + 0.1 * kl), "ce": r6(ce), "kl": r6(kl),
            "lr": r6(lr_at(step, 1e-5, 1e-5, warmup, total, "constant")),
            "grad_norm": r6(0.6 * d + 0.25 + 0.05 * rng.random()),
            "tokens_per_s": round(tps * (1 + 0.03 * (rng.random() - 0.5)), 1), "skipped": False})
    return out


def log_lines(stage, name, metrics, total, done):
    lines = ["xtrain %s --config %s.yaml" % (stage, name)]
    for m in metrics[-6:]:
        loss = "nan (update skipped)" if m["loss"] is None else "%.5f" % m["loss"]
        lines.append("[%s] step %d/%d loss %s lr %.2e %.1fk tok/s" % (
            stage, m["step"], total, loss, m["lr"], m["tokens_per_s"] / 1000))
        if m["step"] % 50 == 0:
            lines.append("[%s] checkpoint step-%08d written" % (stage, m["step"]))
    if done:
        lines.append("[%s] done: model/ written" % stage)
    return lines


class Run:
    def __init__(self, rid, name, state, created):
        self.id, self.name, self.state, self.created = rid, name, state, created
        self.jobs = []
        self.report = None

    def job(self, name, stage, state, deps, **kw):
        j = {"id": "%s/%s" % (self.id, name), "name": name, "stage": stage, "state": state,
             "deps": ["%s/%s" % (self.id, d) for d in deps], "attempts": 0, "progress": None, "worker": None}
        j.update(kw)
        self.jobs.append(j)
        return j


events = []


def event(t, run, job, kind, message):
    events.append({"id": 0, "time": round(t, 3), "run": run, "job": job, "kind": kind, "message": message})


def attempt(job, epoch, worker, state, started, ended, exit_code=None, error=None):
    return {"id": "%s#%d" % (job["id"], epoch), "epoch": epoch, "worker": worker, "state": state,
            "started": round(started, 3), "ended": round(ended, 3) if ended else None, "exit_code": exit_code,
            "error": error}


details = {}  # job id -> (attempts, metrics, log)


def finish(run, j, attempts, metrics=None, total=None):
    j["attempts"] = len(attempts)
    if total:
        j["progress"] = {"step": metrics[-1]["step"] if metrics else 0, "total": total}
    j["worker"] = attempts[-1]["worker"] if attempts else None
    done = j["state"] == "succeeded"
    details[j["id"]] = (attempts, metrics or [],
                        log_lines(j["stage"], j["name"], metrics or [], total or 0, done) if attempts else [])
    for a in attempts:
        event(a["started"] - 2, run.id, j["id"], "dispatched", "%s assigned to %s (epoch %d)" % (j["name"], a["worker"], a["epoch"]))
        if a["state"] in ("succeeded", "failed", "lost", "cancelled") and a["ended"]:
            msg = {"succeeded": "%s succeeded" % j["name"],
                   "failed": "%s failed: %s" % (j["name"], a["error"]),
                   "lost": "%s: lease of %s expired; requeued from its last checkpoint" % (j["name"], a["worker"]),
                   "cancelled": "%s cancelled" % j["name"]}[a["state"]]
            event(a["ended"], run.id, j["id"], a["state"], msg)


# ---------------- run-3: finished, 11 jobs, with the eval report ----------------
A = Run("run-3-7f2a", "smollm2-135m-4dom", "succeeded", T0)
event(T0, A.id, None, "submitted", 'run "%s" submitted: 11 jobs' % A.name)
t = T0 + 3
j = A.job("init", "init", "succeeded", [])
finish(A, j, [attempt(j, 1, "gpu-node-1", "succeeded", t, t + 41, 0)])
t += 45
blocks = []
for i, (first, n) in enumerate([(0, 15), (15, 15)]):
    j = A.job("align-%d" % i, "align", "succeeded", ["init"])
    m = align_metrics(first, n, 500, 500)
    finish(A, j, [attempt(j, 1, "gpu-node-%d" % (i + 1), "succeeded", t, t + 1020 + 40 * i, 0)], m, 500)
    blocks.append(j)
t += 1080
j = A.job("align", "merge", "succeeded", ["align-0", "align-1"])
finish(A, j, [attempt(j, 1, "cpu-box", "succeeded", t, t + 22, 0)])
t += 25
domains = [("math", 2.61, 1.92, 0.92, 0.19), ("code", 1.98, 1.31, 0.81, 0.16),
           ("science", 2.94, 2.27, 0.95, 0.22), ("chat", 2.45, 1.88, 0.88, 0.2)]
end = t
for k, (dom, ce0, ce1, kl0, kl1) in enumerate(domains):
    j = A.job("distill-" + dom, "distill", "succeeded", ["align"])
    m = distill_metrics(1000, 1000, ce0, ce1, kl0, kl1)
    w = "gpu-node-%d" % (k % 2 + 1)
    if dom == "code":  # its first worker stopped heartbeating: requeued, resumed elsewhere
        atts = [attempt(j, 1, "gpu-node-2", "lost", t, t + 610), attempt(j, 2, "gpu-node-1", "succeeded", t + 660, t + 1590, 0)]
    else:
        atts = [attempt(j, 1, w, "succeeded", t + 300 * (k // 2), t + 300 * (k // 2) + 960 + 20 * k, 0)]
    finish(A, j, atts, m, 1000)
    end = max(end, atts[-1]["ended"])
t = end + 5
j = A.job("merge", "merge", "succeeded", ["distill-" + d[0] for d in domains])
finish(A, j, [attempt(j, 1, "cpu-box", "succeeded", t, t + 31, 0)])
t += 35
j = A.job("final", "distill", "succeeded", ["merge"])
m = distill_metrics(300, 300, 2.12, 1.87, 0.41, 0.17)
finish(A, j, [attempt(j, 1, "gpu-node-1", "succeeded", t, t + 300, 0)], m, 300)
t += 305
j = A.job("eval", "eval", "succeeded", ["final"])
finish(A, j, [attempt(j, 1, "gpu-node-2", "succeeded", t, t + 95, 0)])
event(t + 96, A.id, None, "run_succeeded", 'run "%s" succeeded' % A.name)

tasks = []
for dom, tp, sp, n in [("math", 6.84, 7.21, 8192), ("code", 4.12, 4.29, 8192), ("science", 11.9, 12.6, 8192),
                       ("chat", 8.75, 9.41, 6144)]:
    tasks.append({"task": "ppl/" + dom, "kind": "perplexity", "tokens": n, "teacher_ppl": tp, "student_ppl": sp,
                  "teacher": r6(1 / tp), "student": r6(1 / sp), "recovery": r6(tp / sp),
                  "top1_agreement": r6(0.83 + 0.08 * rng.random())})
for name, tn, sn, items in [("arc_easy", 0.642, 0.631, 2376), ("arc_challenge", 0.347, 0.352, 1172),
                            ("hellaswag", 0.429, 0.418, 10042), ("piqa", 0.683, 0.687, 1838),
                            ("winogrande", 0.529, 0.534, 1267), ("sciq", 0.812, 0.795, 1000)]:
    ta, sa = tn - 0.02 - 0.01 * rng.random(), sn - 0.02 - 0.01 * rng.random()
    tasks.append({"task": "mc/" + name, "kind": "multiple_choice", "items": items, "teacher_acc": r6(ta),
                  "student_acc": r6(sa), "teacher_acc_norm": tn, "student_acc_norm": sn, "teacher": tn,
                  "student": sn, "recovery": r6(sn / tn)})
curve, star = [], None
for a in [0, 0.01, 0.02, 0.05, 0.1, 0.2]:
    c = sum(1 for x in tasks if x["student"] >= (1 - a) * x["teacher"]) / len(tasks)
    curve.append({"alpha": a, "c": c})
    if star is None and c >= 0.5:
        star = a
A.report = {"teacher": "/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            "student": "/srv/xd/artifacts/run-3-7f2a/final/model", "tasks": tasks, "c_alpha": curve,
            "alpha_star": star, "lossless": curve[0]["c"] >= 0.5, "skipped_sources": []}

# ---------------- run-4: running ----------------
B = Run("run-4-b01c", "llama-3.2-1b-math-code", "running", T0 + 7200)
event(B.created, B.id, None, "submitted", 'run "%s" submitted: 11 jobs' % B.name)
t = B.created + 4
j = B.job("init", "init", "succeeded", [])
finish(B, j, [attempt(j, 1, "cpu-box", "succeeded", t, t + 118, 0)])
t += 125
j = B.job("align-0", "align", "succeeded", ["init"])
finish(B, j, [attempt(j, 1, "gpu-node-1", "succeeded", t, t + 1800, 0)], align_metrics(0, 4, 500, 500, tps=13500.0), 500)
j = B.job("align-1", "align", "running", ["init"])
finish(B, j, [attempt(j, 1, "gpu-node-1", "running", t + 1805, None)], align_metrics(4, 4, 500, 310, tps=13200.0), 500)
j = B.job("align-2", "align", "dispatched", ["init"])
finish(B, j, [attempt(j, 1, "gpu-node-2", "dispatched", t + 2990, None)], [], 500)
B.job("align-3", "align", "ready", ["init"], progress={"step": 0, "total": 500})
B.job("align", "merge", "pending", ["align-0", "align-1", "align-2", "align-3"])
B.job("distill-math", "distill", "held", ["align"], progress={"step": 0, "total": 2000})
event(t + 2400, B.id, B.id + "/distill-math", "held", "distill-math held: not dispatched until released")
B.job("distill-code", "distill", "pending", ["align"], progress={"step": 0, "total": 2000})
B.job("merge", "merge", "pending", ["distill-math", "distill-code"])
B.job("final", "distill", "pending", ["merge"])
B.job("eval", "eval", "pending", ["final"])

# ---------------- run-2: failed ----------------
C = Run("run-2-e4d9", "smollm2-ablation-w256", "failed", T0 - 86400)
event(C.created, C.id, None, "submitted", 'run "%s" submitted: 7 jobs' % C.name)
t = C.created + 3
j = C.job("init", "init", "succeeded", [])
finish(C, j, [attempt(j, 1, "gpu-node-2", "succeeded", t, t + 40, 0)])
t += 45
j = C.job("align", "align", "succeeded", ["init"])
finish(C, j, [attempt(j, 1, "gpu-node-2", "succeeded", t, t + 1900, 0)], align_metrics(0, 30, 500, 500), 500)
t += 1905
j = C.job("distill-math", "distill", "failed", ["align"])
m = distill_metrics(1000, 230, 2.61, 1.92, 0.92, 0.19)
for x in m[-4:]:
    x["loss"] = x["ce"] = x["kl"] = None
    x["skipped"] = True
err = "non-finite gradients for 50 consecutive steps (lr too high for window 256?)"
finish(C, j, [attempt(j, e, "gpu-node-%d" % (e % 2 + 1), "failed", t + 700 * (e - 1), t + 700 * (e - 1) + 640, 1, err)
              for e in (1, 2, 3)], m, 1000)
event(t + 2080, C.id, C.id + "/distill-math", "failed", "distill-math failed 3 times: no retries left")
j = C.job("distill-code", "distill", "cancelled", ["align"])
finish(C, j, [attempt(j, 1, "gpu-node-1", "cancelled", t, t + 2090, None, "cancelled by the user")],
       distill_metrics(1000, 720, 1.98, 1.31, 0.81, 0.16), 1000)
for name, deps in [("merge", ["distill-math", "distill-code"]), ("final", ["merge"]), ("eval", ["final"])]:
    C.job(name, "eval" if name == "eval" else "distill" if name == "final" else "merge", "upstream_failed", deps)
    event(t + 2081, C.id, "%s/%s" % (C.id, name), "upstream_failed", "%s will not run: distill-math did not succeed" % name)
event(t + 2095, C.id, None, "run_failed", 'run "%s" failed' % C.name)

# ---------------- write ----------------
runs = [B, A, C]
listing = []
for r in runs:
    counts = {}
    for j in r.jobs:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    listing.append({"id": r.id, "name": r.name, "state": r.state, "created": r.created, "jobs": counts})
    dump("runs/%s.json" % r.id, {"id": r.id, "name": r.name, "state": r.state, "created": r.created,
                                 "jobs": r.jobs, "report": r.report})
    for j in r.jobs:
        atts, metrics, log = details.get(j["id"], ([], [], []))
        dump("jobs/%s.json" % j["id"], {"id": j["id"], "name": j["name"], "stage": j["stage"], "state": j["state"],
                                        "attempts": atts, "metrics": metrics, "log": log})
dump("runs.json", listing)

events.sort(key=lambda e: e["time"])
for i, e in enumerate(events):
    e["id"] = i + 1
dump("events.json", events)

h100 = [{"kind": "cuda", "index": i, "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559} for i in range(8)]
dump("workers.json", [
    {"name": "gpu-node-1", "state": "alive", "devices": h100, "heartbeat_age_ms": 840,
     "attempt": "run-4-b01c/align-1#1", "job": "run-4-b01c/align-1", "draining": False},
    {"name": "gpu-node-2", "state": "alive", "devices": h100, "heartbeat_age_ms": 1630,
     "attempt": "run-4-b01c/align-2#1", "job": "run-4-b01c/align-2", "draining": False},
    {"name": "cpu-box", "state": "alive", "devices": [{"kind": "cpu", "index": 0, "name": "cpu", "memory_mb": 64000}],
     "heartbeat_age_ms": 2210, "attempt": None, "job": None, "draining": True}])

by_state = {}
for r in runs:
    for j in r.jobs:
        by_state[j["state"]] = by_state.get(j["state"], 0) + 1
last = details["run-4-b01c/align-1"][1][-1]
prom = ["# HELP xd_jobs Jobs by state.", "# TYPE xd_jobs gauge"]
for s in ["pending", "ready", "dispatched", "running", "succeeded", "failed", "cancelled", "held", "upstream_failed"]:
    prom.append('xd_jobs{state="%s"} %d' % (s, by_state.get(s, 0)))
prom += ["# HELP xd_workers Workers by state.", "# TYPE xd_workers gauge", 'xd_workers{state="alive"} 3',
         'xd_workers{state="lost"} 0',
         "# HELP xd_worker_heartbeat_age_seconds Time since the worker's last heartbeat.",
         "# TYPE xd_worker_heartbeat_age_seconds gauge",
         'xd_worker_heartbeat_age_seconds{worker="gpu-node-1"} 0.84',
         'xd_worker_heartbeat_age_seconds{worker="gpu-node-2"} 1.63',
         'xd_worker_heartbeat_age_seconds{worker="cpu-box"} 2.21',
         "# HELP xd_job_tokens_per_second Throughput of a running job (its last metrics line).",
         "# TYPE xd_job_tokens_per_second gauge",
         'xd_job_tokens_per_second{run="run-4-b01c",job="align-1",stage="align"} %s' % last["tokens_per_s"],
         "# HELP xd_job_loss Loss of a running job (its last metrics line).", "# TYPE xd_job_loss gauge",
         'xd_job_loss{run="run-4-b01c",job="align-1",stage="align"} %s' % last["loss"],
         "# HELP xd_job_step Optimizer step of a running job.", "# TYPE xd_job_step gauge",
         'xd_job_step{run="run-4-b01c",job="align-1",stage="align"} %d' % last["step"]]
with open(os.path.join(OUT, "metrics.prom"), "w") as f:
    f.write("\n".join(prom) + "\n")
