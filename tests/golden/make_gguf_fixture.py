#!/usr/bin/env python3
"""Converts the golden HF fixture tests/data/golden/llama into a GGUF the way llama.cpp's
convert_hf_to_gguf.py does (llama.* metadata, blk.N.* names, q/k rows permuted for the interleaved
rope layout), so a test can check that the GGUF and the HF checkpoint give the same logits.
Needs the gguf, numpy and safetensors packages (pip install gguf safetensors numpy); no torch.
    python3 tests/golden/make_gguf_fixture.py tests/data/golden/llama tests/data/golden/llama.gguf
"""
import json
import sys

import numpy as np
from gguf import GGUFWriter
from safetensors.numpy import load_file


def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main(src, dst):
    cfg = json.load(open(f"{src}/config.json"))
    t = load_file(f"{src}/model.safetensors")
    H, G = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = GGUFWriter(dst, "llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(G)
    theta = cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    w.add_rope_freq_base(float(theta))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"].astype(np.float32))
    for layer in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            a = t[f"model.layers.{layer}.{hf}.weight"].astype(np.float32)
            if gg == "attn_q":
                a = permute(a, H)
            elif gg == "attn_k":
                a = permute(a, G)
            w.add_tensor(f"blk.{layer}.{gg}.weight", np.ascontiguousarray(a))
    w.add_tensor("output_norm.weight", t["model.norm.weight"].astype(np.float32))
    if "lm_head.weight" in t:
        w.add_tensor("output.weight", t["lm_head.weight"].astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
