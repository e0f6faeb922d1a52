#!/usr/bin/env python3
"""Loads a directory written by `xtrain export` with transformers (trust_remote_code) and compares
its logits with the ones `xtrain ppl --model STUDENT --ids-file IDS --dump-logits LOGITS` wrote
for the same tokens (float32 LE [n, vocab]). Prints the largest absolute difference and exits 1
when it is above the tolerance times the largest |logit| (1e-4, as tests/unit/test_teacher_smollm2.c
holds the teacher to; export with --dtype f32 for this): both sides run in float32 with their own
summation orders over every layer, so an absolute 1e-4 is below their rounding noise (SmolLM2's
logits reach ~35; PyTorch float32 against float64 alone differs by ~8e-4). Needs torch and
transformers, no network.

usage: check_export.py DIR LOGITS [--ids IDS] [--tol T] [--dtype float32|float64] [--device cpu|cuda]
  IDS defaults to LOGITS.ids: the whitespace-separated token ids given to xtrain ppl."""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("logits")
    ap.add_argument("--ids", help="token ids file (default: LOGITS.ids)")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest |diff| / largest |logit| (default 1e-4)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="what PyTorch computes in (float64 isolates xtrain's own rounding)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    ids_path = a.ids or a.logits + ".ids"
    for p in (a.dir + "/config.json", a.logits, ids_path):
        if not os.path.exists(p):
            sys.exit(f"check_export: {p} is missing")
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    ids = [int(x) for x in open(ids_path).read().split()]
    cfg = json.load(open(a.dir + "/config.json"))
    vocab = cfg["vocab_size"]
    want = np.fromfile(a.logits, dtype="<f4")
    if want.size != len(ids) * vocab:
        sys.exit(f"check_export: {a.logits} holds {want.size} floats, {len(ids)} ids x vocab {vocab} "
                 f"= {len(ids) * vocab} expected (xtrain ppl dumps the first window only: use one window)")
    want = want.reshape(len(ids), vocab)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; {a.dir}: "
          f"{cfg.get('torch_dtype')} weights, {len(ids)} tokens, window {cfg['window']}, sinks {cfg['sinks']}")
    if cfg.get("torch_dtype") != "float32":
        print("note: the weights are not float32 (export with --dtype f32 to compare to 1e-4)")
    major = int(transformers.__version__.split(".")[0])
    dtype_kw = {"dtype" if major >= 5 else "torch_dtype": getattr(torch, a.dtype)}
    model = AutoModelForCausalLM.from_pretrained(a.dir, trust_remote_code=True, local_files_only=True, **dtype_kw)
    model.to(a.device).eval()
    with torch.no_grad():
        got = model(torch.tensor([ids], device=a.device)).logits[0].float().cpu().numpy()
    diff = np.abs(got - want)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    agree = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"logits [{len(ids)}, {vocab}]: max |diff| {diff.max():.3e} at token {worst[0]}, id {worst[1]} "
          f"(transformers {got[worst]:.6f}, xtrain {want[worst]:.6f}); mean |diff| {diff.mean():.3e}; "
          f"argmax agreement {agree:.4f}; |logits| up to {np.abs(want).max():.2f}")
    if not np.isfinite(got).all():
        print("FAIL: transformers gave non-finite logits")
        sys.exit(1)
    rel = diff.max() / np.abs(want).max()
    print(f"max |diff| / max |logit| = {rel:.3e} (PyTorch in {a.dtype})")
    if rel > a.tol:
        print(f"FAIL: {rel:.3e} > {a.tol:g}")
        sys.exit(1)
    print(f"ok: the exported model's logits match xtrain's to {a.tol:g} of the largest logit")


if __name__ == "__main__":
    main()
