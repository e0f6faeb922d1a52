#!/usr/bin/env python3
"""Moves a student's new parameters away from their starting values, in place: random Hedgehog
maps (identity + noise), input/forget gate weights and biases, output gate weights and biases. A
test-only stand-in for training (align steps are slow on a CPU), so that checks of the student's
maths (tests/golden/check_export.py) exercise the mLSTM, the gates and the mix, not the identity
maps and an even mix of xtrain init. Standard library only.

usage: perturb_student.py STUDENT_DIR [SEED]"""
import array
import json
import random
import struct
import sys

# noise std per tensor kind: gates land at O(1) pre-activations for RMS-normalised inputs
STD = {"fmap_q": 0.3, "fmap_k": 0.3, "igate.weight": 0.04, "igate.bias": 1.0,
       "fgate.weight": 0.04, "fgate.bias": 1.0, "ogate.weight": 0.05, "ogate.bias": 0.5}


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    path = sys.argv[1] + "/model.safetensors"
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) == 3 else 0)
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        changed = 0
        for name, t in header.items():
            if name == "__metadata__":
                continue
            kind = next((k for k in STD if name.endswith("self_attn." + k)), None)
            if kind is None:
                continue
            if t["dtype"] != "F32":
                sys.exit(f"{path}: {name} is {t['dtype']}, expected F32 (a student as xtrain writes it)")
            lo, hi = t["data_offsets"]
            f.seek(base + lo)
            a = array.array("f")
            a.frombytes(f.read(hi - lo))
            s = STD[kind]
            for i in range(len(a)):
                a[i] += rng.gauss(0.0, s)
            f.seek(base + lo)
            f.write(a.tobytes())
            changed += 1
    if changed == 0:
        sys.exit(f"{path}: no student tensors (fmap_q, igate, ...): not a student")
    print(f"perturbed {changed} tensors of {path}")


if __name__ == "__main__":
    main()
