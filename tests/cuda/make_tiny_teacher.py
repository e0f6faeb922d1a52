#!/usr/bin/env python3
"""A tiny random Llama teacher the CUDA student accepts (head size 64), for GPU-host scripts.

usage: make_tiny_teacher.py OUT_DIR TOKENIZER_DIR [SEED]

Writes OUT_DIR/config.json, OUT_DIR/model.safetensors (F32, random weights, reproducible for a
seed) and copies TOKENIZER_DIR's tokenizer.json and tokenizer_config.json, so that `xtrain prepare
--tokenizer OUT_DIR` and `xtrain init --teacher OUT_DIR` work on it. The vocabulary is the
tokenizer's (its model vocabulary plus added tokens), as `xtrain prepare` records it. Plain Python:
no numpy or torch needed.
"""
import array
import json
import os
import random
import shutil
import struct
import sys


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    out, tok = sys.argv[1], sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) == 4 else 2026)
    with open(os.path.join(tok, "tokenizer.json"), encoding="utf-8") as f:
        t = json.load(f)
    ids = set(t["model"]["vocab"].values()) | {a["id"] for a in t.get("added_tokens", [])}
    vocab = max(ids) + 1
    D, H, G, d, I, L = 128, 2, 1, 64, 256, 2
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D,
        "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H,
        "num_key_value_heads": G, "head_dim": d, "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 1024, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "hidden_act": "silu", "torch_dtype": "float32",
    }
    tensors = [("model.embed_tokens.weight", [vocab, D], 0.5)]
    for l in range(L):
        p = "model.layers.%d." % l
        tensors += [
            (p + "input_layernorm.weight", [D], None),
            (p + "self_attn.q_proj.weight", [H * d, D], 0.09),
            (p + "self_attn.k_proj.weight", [G * d, D], 0.09),
            (p + "self_attn.v_proj.weight", [G * d, D], 0.09),
            (p + "self_attn.o_proj.weight", [D, H * d], 0.09),
            (p + "post_attention_layernorm.weight", [D], None),
            (p + "mlp.gate_proj.weight", [I, D], 0.09),
            (p + "mlp.up_proj.weight", [I, D], 0.09),
            (p + "mlp.down_proj.weight", [D, I], 0.06),
        ]
    tensors += [("model.norm.weight", [D], None), ("lm_head.weight", [vocab, D], 0.2)]
    header, blobs, offset = {}, [], 0
    for name, shape, std in tensors:
        n = 1
        for s in shape:
            n *= s
        a = array.array("f", [1.0] * n if std is None else [rng.gauss(0.0, std) for _ in range(n)])
        if sys.byteorder != "little":
            a.byteswap()
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tok, name)):
            shutil.copy(os.path.join(tok, name), os.path.join(out, name))
    print("%s: random llama teacher, vocab %d, %d x %d, %d heads of %d (%d kv), %d parameters"
          % (out, vocab, L, D, H, d, G, offset // 4))


if __name__ == "__main__":
    main()
