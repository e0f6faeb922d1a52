#!/usr/bin/env python3
"""Golden fixtures for the teacher forward pass, computed by Hugging Face transformers in float64.

Run where torch and transformers are installed (e.g. the GPU host; CPU is enough):
    python3 tests/golden/make_teacher_fixtures.py OUTDIR
For each small random model it writes OUTDIR/NAME/: config.json and model.safetensors (as
save_pretrained writes them), ids.txt (token ids), logits.f32 (float32 little-endian [T, vocab] of
the float64 logits). Weights are rounded to the dtype they are stored in before the logits are
computed, so the stored checkpoint is exactly the model that produced them. Norm weights and biases
are random (not 1 and 0), so a loader that drops them fails the comparison.

With --smollm2 GGUF TEXT it also writes OUTDIR/smollm2/: ids.txt (TEXT tokenised by transformers'
GGUF tokenizer), ppl.json (perplexity of that text under the GGUF model in float64) and
logits_head.f32 (the logits of the first 2 tokens), the reference for xtrain on the default teacher.
"""
import argparse
import json
import math
import os
import sys

import torch

torch.manual_seed(1234)


def randomize(model, dtype):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand_like(p) * 1.0 + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.3)
            else:
                p.copy_(torch.randn_like(p) * (1.0 / math.sqrt(p.shape[-1])) * 1.5)
            p.copy_(p.to(dtype).to(torch.float32))  # what the stored checkpoint will hold


def write_case(outdir, name, model, dtype, n_tokens, old_style_rope=None):
    from safetensors.torch import save_file

    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    randomize(model, dtype)
    model.config.torch_dtype = str(dtype).replace("torch.", "")
    model.config.save_pretrained(d)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    if old_style_rope is not None:
        # Rewrite config.json with the keys released Llama 3 checkpoints use.
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        cfg.pop("rope_parameters", None)
        cfg.update(old_style_rope)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
    ids = torch.randint(0, model.config.vocab_size, (1, n_tokens))
    m64 = model.to(torch.float64).eval()
    with torch.no_grad():
        logits = m64(ids).logits[0]
    with open(os.path.join(d, "ids.txt"), "w") as f:
        f.write(" ".join(str(int(i)) for i in ids[0]) + "\n")
    logits.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(d, "logits.f32"))
    print(name, "tokens", n_tokens, "max|logit|", float(logits.abs().max()), file=sys.stderr)


def tiny_models(outdir):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  max_position_embeddings=512, rms_norm_eps=1e-5)
    llama = LlamaForCausalLM(LlamaConfig(num_attention_heads=4, num_key_value_heads=2,
                                         rope_theta=10000.0, tie_word_embeddings=False, **common))
    write_case(outdir, "llama", llama, torch.float32, 64)

    qwen = Qwen2ForCausalLM(Qwen2Config(num_attention_heads=4, num_key_value_heads=1,
                                        rope_theta=1000000.0, tie_word_embeddings=True,
                                        use_sliding_window=False, **common))
    write_case(outdir, "qwen2", qwen, torch.bfloat16, 48)

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    cfg = LlamaConfig(num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=scaling,
                      **common)
    llama3 = LlamaForCausalLM(cfg)
    write_case(outdir, "llama3_rope", llama3, torch.float16, 128,
               old_style_rope={"rope_theta": 500000.0, "rope_scaling": scaling})


def smollm2(outdir, gguf_path, text_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = os.path.join(outdir, "smollm2")
    os.makedirs(d, exist_ok=True)
    gdir, gfile = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gfile)
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile, torch_dtype=torch.float64)
    model.eval()
    text = open(text_path, encoding="utf-8").read()
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="mean")
    ppl = float(torch.exp(nll))
    with open(os.path.join(d, "ids.txt"), "w") as f:
        f.write(" ".join(str(int(i)) for i in ids[0]) + "\n")
    logits[:2].to(torch.float32).numpy().astype("<f4").tofile(os.path.join(d, "logits_head.f32"))
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    chat_ids = tok(chat, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.generate(chat_ids, max_new_tokens=24, do_sample=False)
    reply = tok.decode(out[0, chat_ids.shape[1]:], skip_special_tokens=True)
    with open(os.path.join(d, "ppl.json"), "w") as f:
        json.dump({"ppl": ppl, "tokens": int(ids.shape[1]), "nll": float(nll),
                   "greedy_reply": reply}, f, indent=2)
    print("smollm2 ppl", ppl, "tokens", int(ids.shape[1]), "reply", repr(reply), file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--smollm2", nargs=2, metavar=("GGUF", "TEXT"))
    ap.add_argument("--skip-tiny", action="store_true")
    a = ap.parse_args()
    if not a.skip_tiny:
        tiny_models(a.outdir)
    if a.smollm2:
        smollm2(a.outdir, *a.smollm2)
