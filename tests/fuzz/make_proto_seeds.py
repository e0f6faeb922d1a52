#!/usr/bin/env python3
"""Writes one valid message of every type (and a few in other msgpack forms) that seed fuzz_proto
(tests/fuzz/corpus/fuzz_proto/). A small msgpack packer of its own, no dependencies, so the seeds
do not come from the codec they test: python3 tests/fuzz/make_proto_seeds.py"""
import os
import struct


def pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack(">b", v)
        for fmt, code in ((">b", 0xD0), (">h", 0xD1), (">i", 0xD2), (">q", 0xD3)):
            try:
                return bytes([code]) + struct.pack(fmt, v)
            except struct.error:
                pass
        raise ValueError(v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n < 256:
            return b"\xd9" + bytes([n]) + b
        if n < 65536:
            return b"\xda" + struct.pack(">H", n) + b
        return b"\xdb" + struct.pack(">I", n) + b
    if isinstance(v, list):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(type(v))


def message(t, **fields):
    return pack({"v": 1, "t": t, **fields})


RUNNING = [{"attempt": "run-3/distill/a2", "epoch": 17}]
SEEDS = {
    "hello": message("hello", worker="gpu-node-07", pid=41234,
                     devices=[{"kind": "cuda", "index": 0, "name": "NVIDIA H100", "memory_mb": 81559},
                              {"kind": "cpu", "index": 0, "name": "EPYC", "memory_mb": 131072}],
                     running=RUNNING),
    "heartbeat": message("heartbeat", worker="gpu-node-07", running=RUNNING),
    "accept": message("accept", attempt="a2", epoch=17),
    "progress": message("progress", attempt="a2", epoch=17, step=1200, total=20000,
                        metrics='{"step":1200,"loss":2.3412,"lr":0.0003}'),
    "checkpoint": message("checkpoint", attempt="a2", epoch=17, step=1000, path="/runs/r/ckpt-001000"),
    "done": message("done", attempt="a2", epoch=17, ok=False, exit_code=-9, error="killed", output=""),
    "draining": message("draining", worker="gpu-node-07"),
    "welcome": message("welcome", worker_id="w-0001", heartbeat_ms=2000, lease_ms=15000),
    "assign": message("assign", attempt="run-3/align/a1", epoch=5, job="run-3/align", stage="align",
                      config="stage: align\nsteps: 2000\n", workdir="/runs/run-3/align", gpus=[0, 1]),
    "cancel": message("cancel", attempt="a2", epoch=17, reason="cancelled by the user"),
    "fence": message("fence", attempt="a2", epoch=17),
    "drain": message("drain"),
    "submit": message("submit", spec="stages: [init, distill]\n", name="tiny"),
    "query": message("query", run="run-3"),
    "query_all": message("query"),
    "control": message("control", action="hold", target="run-3/align"),
    "log_tail": message("log_tail", job="run-3/distill", lines=200),
    "events": message("events", run="run-3", since=1234567),
    "workers": message("workers"),
    "reply": message("reply", ok=True, body={"runs": [{"id": "run-3", "progress": 0.4375, "held": False,
                                                       "finished": None, "big": -5000000000}],
                                             "deep": [[[[[[7]]]]]]}),
    "reply_error": message("reply", ok=False, error="no run \"run-9\""),
    "error": message("error", code=400, message="progress: unknown field \"stepp\""),
    # other forms a foreign encoder may use: float32, wide integer forms, str8/str16, map16/array16
    "reply_float32": b"\x84\xa1v\x01\xa1t\xa5reply\xa2ok\xc3\xa4body\xca\x3f\xc0\x00\x00",
    "fence_wide": b"\x84\xa1v\xd3" + struct.pack(">q", 1) + b"\xa1t\xd9\x05fence"
                  + b"\xa7attempt\xda\x00\x02a1\xa5epoch\xce" + struct.pack(">I", 5),
    "reply_map16": b"\xde\x00\x03\xa1v\x01\xa1t\xa5reply\xa2ok\xc2",
    "reply_array16": b"\x84\xa1v\x01\xa1t\xa5reply\xa2ok\xc3\xa4body\xdc\x00\x03\x01\x02\x03",
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_proto")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name + ".msgpack"), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
