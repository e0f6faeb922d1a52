#!/bin/sh
# Data-parallel distill with a one-rank communicator equals the plain GPU run, bit for bit: on a
# GPU host (not a ctest: CI has no GPU). A tiny random Llama teacher (tests/cuda/make_tiny_teacher.py,
# head size 64 as the CUDA student needs) with the llama3 test tokenizer, a student from xtrain init,
# then distill on one GPU three ways:
#   plain   --device cuda:N
#   dp      --device cuda:N --dp-id FILE             (data parallel, one rank: NCCL all-reduces)
#   resumed the dp run stopped after 3 steps, then started again to 6 (from its checkpoint)
# and compares each step's numbers (step, tokens, loss, ce, kl, lr, grad_norm, skipped: all but
# tokens_per_s) and the final model's bytes. micro_batch 2 of batch 4: two passes a step.
# usage: dp_one_rank.sh BUILD_DIR [DEVICE (default cuda:0)]
set -u
build=${1:?usage: dp_one_rank.sh BUILD_DIR [DEVICE]} device=${2:-cuda:0}
src=$(cd "$(dirname "$0")/../.." && pwd)
xtrain=$build/stages/xtrain
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -x "$xtrain" ] || { echo "FAIL: no $xtrain (build first)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

python3 "$src/tests/cuda/make_tiny_teacher.py" "$tmp/teacher" "$src/tests/data/tokenizer/llama3" || exit 1
mkdir -p "$tmp/in"
cp "$src/tests/data/english.txt" "$src"/docs/*.md "$tmp/in/"
"$xtrain" prepare --tokenizer "$tmp/teacher" --out "$tmp/data" --val-fraction 0 "$tmp/in" > /dev/null 2>&1 \
  || { echo "FAIL: prepare"; exit 1; }
"$xtrain" init --teacher "$tmp/teacher" --out "$tmp/student" --window 16 --sinks 2 --chunk 16 > /dev/null \
  || { echo "FAIL: init"; exit 1; }
config() { # name steps
  cat > "$tmp/$1.yaml" <<YAML
teacher: $tmp/teacher
student: $tmp/student
out: $tmp/$1
data: [$tmp/data]
seq_len: 64
batch: 4
micro_batch: 2
steps: $2
warmup: 2
lr: 1e-3
topk: 16
checkpoint_every: 3
keep_checkpoints: 2
YAML
}
config plain 6
config dp 6
"$xtrain" distill --config "$tmp/plain.yaml" --device "$device" > "$tmp/plain.log" 2>&1; rc=$?
check "plain distill on $device (rc=$rc)" "[ $rc -eq 0 ] && [ -f '$tmp/plain/DONE' ]"
"$xtrain" distill --config "$tmp/dp.yaml" --device "$device" --dp-id "$tmp/dp-id" > "$tmp/dp.log" 2>&1; rc=$?
check "one-rank data-parallel distill on $device (rc=$rc)" "[ $rc -eq 0 ] && [ -f '$tmp/dp/DONE' ]"
check "it formed a communicator of one rank" "grep -q 'rank 0 of 1: NCCL .* communicator up' '$tmp/dp.log'"
check "rank 0 removed the id file once every rank had joined" "[ ! -e '$tmp/dp-id' ]"
# the stopped and resumed data-parallel run (a constant lr after warm-up: 3 steps, then 6)
config resumed 3
"$xtrain" distill --config "$tmp/resumed.yaml" --device "$device" --dp-id "$tmp/dp-id" > "$tmp/resumed1.log" 2>&1; rc1=$?
sed -i 's/^steps: 3$/steps: 6/' "$tmp/resumed.yaml"
"$xtrain" distill --config "$tmp/resumed.yaml" --device "$device" --dp-id "$tmp/dp-id" > "$tmp/resumed2.log" 2>&1; rc2=$?
check "the data-parallel run resumed from its step-3 checkpoint (rc $rc1, $rc2)" \
  "[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && grep -q 'resuming from .*step-00000003' '$tmp/resumed2.log'"

curve() { sed 's/"tokens_per_s":[^,]*,//' "$1"; }
for run in plain dp resumed; do : > "$tmp/$run.curve"; [ -f "$tmp/$run/metrics.jsonl" ] && curve "$tmp/$run/metrics.jsonl" > "$tmp/$run.curve"; done
echo "compared, step by step (all of metrics.jsonl but tokens_per_s):"
for run in plain dp resumed; do
  echo "  $run:"
  [ -f "$tmp/$run.curve" ] && sed -e 's/^/    /' "$tmp/$run.curve"
done
check "6 steps each" "[ \$(wc -l < '$tmp/plain.curve') -eq 6 ] && [ \$(wc -l < '$tmp/dp.curve') -eq 6 ] && [ \$(wc -l < '$tmp/resumed.curve') -eq 6 ]"
check "one-rank data-parallel metrics = plain metrics, bit for bit" "cmp -s '$tmp/plain.curve' '$tmp/dp.curve'"
check "resumed data-parallel metrics = plain metrics, bit for bit" "cmp -s '$tmp/plain.curve' '$tmp/resumed.curve'"
echo "compared, the final models (model/model.safetensors):"
for run in plain dp resumed; do
  [ -f "$tmp/$run/model/model.safetensors" ] && echo "  $run: $(sha256sum < "$tmp/$run/model/model.safetensors" | cut -c1-64)"
done
check "one-rank data-parallel model = plain model, byte for byte" \
  "cmp -s '$tmp/plain/model/model.safetensors' '$tmp/dp/model/model.safetensors'"
check "resumed data-parallel model = plain model, byte for byte" \
  "cmp -s '$tmp/plain/model/model.safetensors' '$tmp/resumed/model/model.safetensors'"
if [ $fail -ne 0 ]; then
  for log in plain dp resumed1 resumed2; do echo "--- $log.log"; cat "$tmp/$log.log"; done
fi
exit $fail
