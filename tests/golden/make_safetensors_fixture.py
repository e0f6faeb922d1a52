#!/usr/bin/env python3
"""Writes tests/data/safetensors/golden.safetensors with the reference Python library, so the C
reader is checked against files it did not write itself. test_safetensors.c hard-codes the
values below; change both together.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install safetensors numpy
    /tmp/v/bin/python tests/golden/make_safetensors_fixture.py

safetensors.numpy has no bfloat16, so BF16 is covered by the C round trip only.
"""
import os

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "safetensors", "golden.safetensors")

tensors = {
    # 0.5 * i - 1 for i in 0..11, row-major [4, 3]
    "embed.weight": (np.arange(12, dtype=np.float32) * 0.5 - 1.0).reshape(4, 3),
    "model.norm.weight": np.array([1.0, -2.0, 0.5, 65504.0, 6.1035156e-05], dtype=np.float16),
    "positions": np.array([[0, 1, -1], [2**40, -(2**40), 7]], dtype=np.int64),
    "scalar": np.array(3.25, dtype=np.float32),
    "empty": np.zeros((0, 4), dtype=np.float32),
}
metadata = {"format": "np", "source": "xdistill fixture"}

os.makedirs(os.path.dirname(OUT), exist_ok=True)
save_file(tensors, OUT, metadata=metadata)
print(OUT, os.path.getsize(OUT), "bytes")
