#!/bin/sh
# The whole local pipeline on the default teacher with tiny budgets, as the quickstart runs it:
# prepare two domains -> init -> align -> distill per domain -> merge -> eval. Checks that the align
# MSE falls by at least half, the distill loss falls, and the eval report has every field.
# usage: pipeline.sh XTRAIN SOURCE_DIR MODELS_DIR
set -u
xtrain=$1 src=$2 teacher=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$teacher" ] || { echo "FAIL: $teacher missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
num() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1"; }

# Two domains of real text from the repository: C code, and English prose.
mkdir -p "$tmp/in/code" "$tmp/in/prose"
cp "$src"/model/config.c "$src"/model/layout.c "$src"/common/file.c "$src"/common/error.c "$src"/stages/args.c "$tmp/in/code/"
cp "$src"/tests/data/english.txt "$src"/docs/method.md "$src"/docs/architecture.md "$src"/docs/testing.md "$src"/README.md "$tmp/in/prose/"
for d in code prose; do
  "$xtrain" prepare --tokenizer "$teacher" --out "$tmp/$d" --domain $d --val-fraction 0.4 --seed 1 "$tmp/in/$d" || fail=1
done
# The experts' budgets are tiny, so each trains on a short text it sees several times (a few
# sequences an epoch): its loss must then fall, whatever order the batches come in.
mkdir -p "$tmp/in/code-small" "$tmp/in/prose-small"
head -c 600 "$src/model/layout.c" > "$tmp/in/code-small/a.c"
head -c 600 "$src/tests/data/english.txt" > "$tmp/in/prose-small/a.txt"
for d in code prose; do
  "$xtrain" prepare --tokenizer "$teacher" --out "$tmp/$d-small" --domain $d --val-fraction 0 "$tmp/in/$d-small" || fail=1
done

"$xtrain" init --teacher "$teacher" --out "$tmp/student" --window 16 --sinks 2 --chunk 8 > /dev/null || fail=1
# align in two layer blocks (two jobs), joined by merge's layers mode
for b in 0-14 15-29; do
  cat > "$tmp/align-$b.yaml" <<YAML
teacher: $teacher
student: $tmp/student
out: $tmp/align-$b
data: [{path: $tmp/code, weight: 1}, {path: $tmp/prose, weight: 1}]
seq_len: 32
batch: 2
steps: 6
warmup: 1
checkpoint_every: 6
YAML
  "$xtrain" align --config "$tmp/align-$b.yaml" --layers $b || fail=1
  first=$(head -n 1 "$tmp/align-$b/metrics.jsonl" | sed 's/.*"loss":\([-0-9.e+]*\),.*/\1/')
  last=$(tail -n 1 "$tmp/align-$b/metrics.jsonl" | sed 's/.*"loss":\([-0-9.e+]*\),.*/\1/')
  check "align layers $b: MSE falls by at least half ($first -> $last)" "awk -v a='$first' -v b='$last' 'BEGIN { exit !(b <= a / 2) }'"
  check "align layers $b: metrics carry the MSE of each of its 15 layers" "head -n 1 '$tmp/align-$b/metrics.jsonl' | grep -q '\"mse_layer\":\[\([^],]*,\)\{14\}[^],]*\]'"
  check "align layers $b wrote its model and DONE" "[ -f '$tmp/align-$b/model/model.safetensors' ] && [ -f '$tmp/align-$b/DONE' ]"
  check "align layers $b: its model is its last checkpoint's file, stored once (hard link)" \
    "[ \$(stat -c %i '$tmp/align-$b/model/model.safetensors') = \$(stat -c %i '$tmp/align-$b/checkpoints/step-00000006/model.safetensors') ]"
  check "align layers $b: its tokenizer comes along (hard-linked) and is not named by path" \
    "[ \$(stat -c %i '$tmp/align-$b/model/tokenizer.json') = \$(stat -c %i '$tmp/align-$b/checkpoints/step-00000006/tokenizer.json') ] && [ -f '$tmp/align-$b/model/tokenizer_config.json' ] && ! grep -q tokenizer_source '$tmp/align-$b/model/config.json'"
done
cat > "$tmp/join.yaml" <<YAML
experts: [$tmp/align-0-14/model, $tmp/align-15-29/model]
mode: layers
layers: "0-14,15-29"
out: $tmp/align/model
YAML
mkdir -p "$tmp/align"
"$xtrain" merge --config "$tmp/join.yaml" || fail=1

for d in code prose; do
  cat > "$tmp/distill-$d.yaml" <<YAML
teacher: $teacher
student: $tmp/align/model
out: $tmp/distill-$d
data: [$tmp/$d-small]
seq_len: 32
batch: 2
steps: 8
lr: 3e-4
warmup: 1
checkpoint_every: 8
YAML
  "$xtrain" distill --config "$tmp/distill-$d.yaml" || fail=1
  # the first two steps against the last two: the expert learns its domain
  a=$(head -n 2 "$tmp/distill-$d/metrics.jsonl" | sed 's/.*"loss":\([-0-9.e+]*\),.*/\1/' | awk '{s += $1} END {print s / 2}')
  b=$(tail -n 2 "$tmp/distill-$d/metrics.jsonl" | sed 's/.*"loss":\([-0-9.e+]*\),.*/\1/' | awk '{s += $1} END {print s / 2}')
  check "distill $d loss falls ($a -> $b)" "awk -v a='$a' -v b='$b' 'BEGIN { exit !(b < a) }'"
  check "distill $d reports CE and KL" "grep -q '\"ce\":.*\"kl\":' '$tmp/distill-$d/metrics.jsonl'"
done

cat > "$tmp/merge.yaml" <<YAML
experts: [{path: $tmp/distill-code/model, weight: 0.6}, {path: $tmp/distill-prose/model, weight: 0.4}]
out: $tmp/merged
YAML
"$xtrain" merge --config "$tmp/merge.yaml" || fail=1
check "the merged model carries its tokenizer" "[ -f '$tmp/merged/tokenizer.json' ] && [ -f '$tmp/merged/tokenizer_config.json' ] && ! grep -q tokenizer_source '$tmp/merged/config.json'"
printf '%s\n' '{"context": "The capital of France is", "choices": [" Paris.", " Berlin.", " Madrid."], "label": 0}' \
  '{"context": "Two plus two equals", "choices": [" four.", " seven.", " ten."], "label": 0}' > "$tmp/tasks.jsonl"
cat > "$tmp/eval.yaml" <<YAML
teacher: $teacher
student: $tmp/merged
out: $tmp/report.json
data: [$tmp/code, $tmp/prose]
tasks: [$tmp/tasks.jsonl]
seq_len: 32
max_tokens: 256
passkey: "128"
passkey_samples: 2
YAML
"$xtrain" eval --config "$tmp/eval.yaml" || fail=1
for f in '"task": "ppl/code"' '"task": "ppl/prose"' '"task": "mc/tasks"' '"task": "passkey/128"' '"teacher_ppl"' \
         '"student_ppl"' '"top1_agreement"' '"by_position"' '"in_domain": true' '"teacher_acc"' '"student_acc_norm"' \
         '"window_only_acc"' '"recovery"' '"c_alpha"' '"c_alpha_tasks"' '"alpha_star"' '"lossless"'; do
  check "the eval report has $f" "grep -q '$f' '$tmp/report.json'"
done
check "C_alpha is given for the six alphas" "[ \$(grep -c '\"alpha\":' '$tmp/report.json') -eq 6 ]"

# Experts of different inits are refused.
"$xtrain" init --teacher "$teacher" --out "$tmp/other" > /dev/null
cat > "$tmp/bad-merge.yaml" <<YAML
experts: [$tmp/distill-code/model, $tmp/other]
out: $tmp/bad
YAML
"$xtrain" merge --config "$tmp/bad-merge.yaml" > /dev/null 2> "$tmp/e1"; rc=$?
check "merge refuses experts of another init (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'does not share an init' '$tmp/e1'"
exit $fail
