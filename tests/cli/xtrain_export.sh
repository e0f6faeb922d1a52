#!/bin/sh
# xtrain export of a student made from the default teacher, checked without torch: the files a
# Hugging Face directory needs, config.json's fields, the safetensors header (names, dtypes,
# shapes), bf16 weights equal to the f32 ones rounded, the f32 export still an xtrain model with
# the student's perplexity, and the errors a user can hit.
# usage: xtrain_export.sh XTRAIN DATA_DIR MODELS_DIR
set -u
xtrain=$1 data=$2 gguf=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$gguf" ] || { echo "FAIL: $gguf missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$xtrain" init --teacher "$gguf" --out "$tmp/student" --window 16 --sinks 2 --chunk 8 > /dev/null 2>&1 || fail=1
"$xtrain" export --model "$tmp/student" --out "$tmp/f32" --dtype f32 > "$tmp/out" 2>&1; rc=$?
cat "$tmp/out"
check "export --dtype f32 succeeds and says how to load it (rc=$rc)" "[ $rc -eq 0 ] && grep -q 'trust_remote_code=True' '$tmp/out'"
"$xtrain" export --model "$tmp/student" --out "$tmp/bf16" > /dev/null 2>&1; rc=$?
check "export in bf16 (the default) succeeds (rc=$rc)" "[ $rc -eq 0 ]"
for f in config.json model.safetensors generation_config.json tokenizer.json tokenizer_config.json \
         modeling_xlstm_hybrid.py configuration_xlstm_hybrid.py; do
  check "the export holds $f" "[ -s '$tmp/f32/$f' ] && [ -s '$tmp/bf16/$f' ]"
done
check "the modeling files are the repository's" \
  "cmp -s '$tmp/f32/modeling_xlstm_hybrid.py' '$data/../../model/hf/modeling_xlstm_hybrid.py' && cmp -s '$tmp/f32/configuration_xlstm_hybrid.py' '$data/../../model/hf/configuration_xlstm_hybrid.py'"

# Everything below reads JSON and safetensors with the standard library only.
python3 - "$tmp" > "$tmp/py.out" 2>&1 <<'PY'
import json, struct, sys
tmp = sys.argv[1]
def ok(what, cond):
    print(("ok: " if cond else "FAIL: ") + what)
def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n
c = json.load(open(tmp + "/f32/config.json"))
ok("config: model_type and auto_map name the shipped files",
   c["model_type"] == "xlstm_hybrid" and c["auto_map"] == {
       "AutoConfig": "configuration_xlstm_hybrid.XlstmHybridConfig",
       "AutoModelForCausalLM": "modeling_xlstm_hybrid.XlstmHybridForCausalLM"})
ok("config: the teacher's llama fields", all(c[k] == v for k, v in {
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "rope_theta": 100000.0,
    "tie_word_embeddings": True, "attention_bias": False, "hidden_act": "silu"}.items())
   and abs(c["rms_norm_eps"] - 1e-5) < 1e-9 and c["rope_scaling"] is None)
ok("config: the student's settings", c["window"] == 16 and c["sinks"] == 2 and c["chunk"] == 8
   and c["mlstm_eps"] == 1e-6 and c["xlstm_hybrid"]["window"] == 16 and c["teacher"]["model_type"] == "llama")
ok("config: the dtypes", c["torch_dtype"] == "float32"
   and json.load(open(tmp + "/bf16/config.json"))["torch_dtype"] == "bfloat16")
g = json.load(open(tmp + "/f32/generation_config.json"))
ok("generation_config: bos and eos", g.get("bos_token_id") == 1 and g.get("eos_token_id") == 2)
t = json.load(open(tmp + "/f32/tokenizer.json"))
tc = json.load(open(tmp + "/f32/tokenizer_config.json"))
ok("tokenizer: byte-level BPE with its merges and special tokens", t["model"]["type"] == "BPE"
   and len(t["model"]["vocab"]) == 49152 and len(t["model"]["merges"]) > 48000
   and t["decoder"]["type"] == "ByteLevel" and any(a["content"] == "<|im_end|>" and a["special"] for a in t["added_tokens"]))
ok("tokenizer_config: eos and the chat template", tc["eos_token"] == "<|im_end|>" and "<|im_start|>" in tc["chat_template"])

src, _ = header(tmp + "/student/model.safetensors")
h32, base32 = header(tmp + "/f32/model.safetensors")
h16, base16 = header(tmp + "/bf16/model.safetensors")
names = sorted(k for k in src if k != "__metadata__")
ok(f"safetensors: the student's {len(names)} tensors under their HF names, nothing else",
   names == sorted(k for k in h32 if k != "__metadata__") == sorted(k for k in h16 if k != "__metadata__")
   and "model.layers.29.self_attn.fmap_q" in names and "model.layers.0.self_attn.ogate.weight" in names
   and "lm_head.weight" not in names)
ok("safetensors: shapes as the config implies", h32["model.layers.0.self_attn.fmap_q"]["shape"] == [9, 64, 64]
   and h32["model.layers.0.self_attn.igate.weight"]["shape"] == [576, 9]
   and h32["model.layers.0.self_attn.ogate.weight"]["shape"] == [9, 192]
   and h32["model.layers.0.self_attn.k_proj.weight"]["shape"] == [192, 576]
   and h32["model.embed_tokens.weight"]["shape"] == [49152, 576]
   and all(h16[k]["shape"] == h32[k]["shape"] == src[k]["shape"] for k in names))
ok("safetensors: dtypes F32 and BF16", all(h32[k]["dtype"] == "F32" and h16[k]["dtype"] == "BF16" for k in names)
   and h32["__metadata__"]["format"] == "pt")

def bf16(bits):  # round to nearest even, as torch does
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF
f32, f16 = open(tmp + "/f32/model.safetensors", "rb"), open(tmp + "/bf16/model.safetensors", "rb")
same, checked, exact = True, 0, True
s = open(tmp + "/student/model.safetensors", "rb")
_, sbase = header(tmp + "/student/model.safetensors")
for k in names:
    a0, a1 = h32[k]["data_offsets"]
    b0, b1 = h16[k]["data_offsets"]
    n = (a1 - a0) // 4
    ok_size = b1 - b0 == 2 * n
    idx = range(0, n, max(1, n // 2000))  # every tensor, up to ~2000 values spread over it
    for i in idx:
        f32.seek(base32 + a0 + 4 * i); f16.seek(base16 + b0 + 2 * i)
        x = struct.unpack("<I", f32.read(4))[0]; y = struct.unpack("<H", f16.read(2))[0]
        same &= ok_size and bf16(x) == y
        checked += 1
    s0, s1 = src[k]["data_offsets"]
    s.seek(sbase + s0); f32.seek(base32 + a0)
    exact &= s.read(s1 - s0) == f32.read(a1 - a0)
ok(f"bf16 weights are the f32 ones rounded to nearest even ({checked} values)", same)
ok("f32 weights are the student's, bit for bit", exact)
PY
cat "$tmp/py.out"
check "the standard-library checks ran and passed" "grep -q '^ok: f32 weights' '$tmp/py.out' && ! grep -q '^FAIL' '$tmp/py.out'"

# The export is still a model xtrain reads: the same perplexity in f32.
head -c 3000 "$data/english.txt" > "$tmp/text.txt"
"$xtrain" ppl --model "$tmp/student" --text "$tmp/text.txt" > "$tmp/ppl-student" 2> /dev/null
"$xtrain" ppl --model "$tmp/f32" --text "$tmp/text.txt" > "$tmp/ppl-f32" 2> /dev/null; rc=$?
check "xtrain ppl on the f32 export ($(cat "$tmp/ppl-f32")) equals the student's ($(cat "$tmp/ppl-student"))" \
  "[ $rc -eq 0 ] && grep -q '^ppl ' '$tmp/ppl-f32' && cmp -s '$tmp/ppl-student' '$tmp/ppl-f32'"

"$xtrain" export --model "$tmp/student" --out "$tmp/x" --dtype f16 > /dev/null 2> "$tmp/e1"; rc=$?
check "--dtype f16 is refused (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'dtype must be bf16 or f32, not \"f16\"' '$tmp/e1'"
"$xtrain" export --model "$tmp/student" --ot "$tmp/x" > /dev/null 2> "$tmp/e2"; rc=$?
check "an unknown flag is refused with a suggestion (rc=$rc)" "[ $rc -eq 2 ] && grep -q -- '--out' '$tmp/e2'"
"$xtrain" export --model "$tmp/student" > /dev/null 2> "$tmp/e3"; rc=$?
check "--out is required (rc=$rc)" "[ $rc -eq 2 ] && grep -q -- '--out is required' '$tmp/e3'"
"$xtrain" export --model "$gguf" --out "$tmp/x" > /dev/null 2> "$tmp/e4"; rc=$?
check "a Transformer is not exported (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'not a student' '$tmp/e4' && [ ! -e '$tmp/x' ]"
"$xtrain" export --model "$tmp/student" --out "$tmp/f32" > /dev/null 2> "$tmp/e5"; rc=$?
check "a non-empty --out is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'already exists and is not empty' '$tmp/e5'"
mkdir "$tmp/empty"
"$xtrain" export --model "$tmp/student" --out "$tmp/empty" > /dev/null 2>&1; rc=$?
check "an empty --out is used (rc=$rc)" "[ $rc -eq 0 ] && [ -f '$tmp/empty/model.safetensors' ]"
"$xtrain" export --model "$tmp/nothing" --out "$tmp/y" > /dev/null 2> "$tmp/e6"; rc=$?
check "a missing model is named (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'nothing' '$tmp/e6'"
exit $fail
