#!/bin/sh
# Bad input to the training stages is a clear error before any work starts.
# usage: stage_errors.sh XTRAIN SOURCE_DIR MODELS_DIR
set -u
xtrain=$1 src=$2 teacher=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; cat "$tmp/err"; fail=1; fi; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/in"; cp "$src/tests/data/english.txt" "$tmp/in/"
"$xtrain" prepare --tokenizer "$teacher" --out "$tmp/data" --val-fraction 0 "$tmp/in" > /dev/null 2>&1
"$xtrain" init --teacher "$teacher" --out "$tmp/student" --window 16 --chunk 8 > /dev/null
base="teacher: $teacher
student: $tmp/student
out: $tmp/out
data: [$tmp/data]
seq_len: 32
batch: 1
steps: 2"
try() { printf '%s\n%s\n' "$base" "$2" > "$tmp/c.yaml"; "$xtrain" $1 --config "$tmp/c.yaml" $3 > /dev/null 2> "$tmp/err"; }

try align "learning_rate: 0.1" ""; rc=$?
check "an unknown key names the nearest (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'unknown key \"learning_rate\"' '$tmp/err' && grep -q 'line 8' '$tmp/err'"
try distill "lr: fast" ""; rc=$?
check "a wrong type is named (rc=$rc)" "[ $rc -eq 2 ] && grep -q '\"lr\" must be a number, got \"fast\"' '$tmp/err'"
try align "" "--set steps=0"; rc=$?
check "an out-of-range value is named (rc=$rc)" "[ $rc -eq 2 ] && grep -q '\"steps\" = 0 is outside' '$tmp/err'"
try align "" "--layers 5-99"; rc=$?
check "layers past the model are refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'layers \"5-99\"' '$tmp/err'"
try distill "" "--set data=$tmp/nowhere"; rc=$?
check "a missing data directory is named (rc=$rc)" "[ $rc -eq 1 ] && grep -q '$tmp/nowhere' '$tmp/err'"
try align "" "--set student=$src/tests/data/golden/llama"; rc=$?
check "a model that is not a student is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'is not a student' '$tmp/err'"
"$xtrain" init --teacher "$src/tests/data/golden/llama" --out "$tmp/foreign" > /dev/null 2>&1
try align "" "--set student=$tmp/foreign"; rc=$?
check "a student of another teacher is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'does not belong to teacher' '$tmp/err'"
"$xtrain" align --confg x > /dev/null 2> "$tmp/err"; rc=$?
check "an unknown flag suggests --config (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'did you mean --config' '$tmp/err'"
try distill "" "--device cuda:x"; rc=$?
check "a bad device is named (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'device \"cuda:x\": expected cpu, cuda or cuda:N' '$tmp/err'"
try align "" "--device tpu"; rc=$?
check "an unknown device is named (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'device \"tpu\"' '$tmp/err'"
try distill "micro_batch: 3" "--set batch=4"; rc=$?
check "a micro-batch that does not divide the batch is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'micro_batch 3 does not divide batch 4' '$tmp/err'"
if ! nvidia-smi -L > /dev/null 2>&1; then
  # no GPU here: a CPU-only build says it has no CUDA backend, a CUDA build that it finds no device
  try distill "" "--device cuda"; rc=$?
  check "cuda without a GPU is a clear error (rc=$rc)" "[ $rc -eq 1 ] && grep -Eq 'without the CUDA backend|device \"cuda\": .*(CUDA|device)' '$tmp/err'"
fi
# eval, ppl and generate take a device too, checked before any work
printf 'teacher: %s\nstudent: %s\nout: %s\ndata: [%s]\ndevice: cuda:x\n' "$teacher" "$tmp/student" "$tmp/report.json" \
  "$tmp/data" > "$tmp/e.yaml"
"$xtrain" eval --config "$tmp/e.yaml" > /dev/null 2> "$tmp/err"; rc=$?
check "eval names a bad device and writes no report (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'device \"cuda:x\": expected cpu, cuda or cuda:N' '$tmp/err' && [ ! -e '$tmp/report.json' ]"
"$xtrain" ppl --model "$tmp/student" --text "$src/tests/data/english.txt" --device npu > /dev/null 2> "$tmp/err"; rc=$?
check "ppl names a bad device (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'xtrain ppl: device \"npu\": expected cpu, cuda or cuda:N' '$tmp/err'"
"$xtrain" generate --model "$tmp/student" --prompt hi --device cuda:1x > /dev/null 2> "$tmp/err"; rc=$?
check "generate names a bad device (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'xtrain generate: device \"cuda:1x\"' '$tmp/err'"
if ! nvidia-smi -L > /dev/null 2>&1; then
  for cmd in "ppl --model $tmp/student --text $src/tests/data/english.txt" "generate --model $tmp/student --prompt hi"; do
    "$xtrain" $cmd --device cuda > /dev/null 2> "$tmp/err"; rc=$?
    check "${cmd%% *} --device cuda without a GPU is a clear error (rc=$rc)" "[ $rc -eq 2 ] && grep -Eq 'without the CUDA backend|device \"cuda\": .*(CUDA|device)' '$tmp/err'"
  done
  sed 's/cuda:x/cuda/' "$tmp/e.yaml" > "$tmp/e2.yaml"
  "$xtrain" eval --config "$tmp/e2.yaml" > /dev/null 2> "$tmp/err"; rc=$?
  check "eval --device cuda without a GPU is a clear error (rc=$rc)" "[ $rc -eq 1 ] && grep -Eq 'without the CUDA backend|device \"cuda\": .*(CUDA|device)' '$tmp/err'"
fi
# data-parallel distill (stages/dp.h): its settings are checked before anything else, the same in
# every build; then a CPU-only build says it needs the CUDA backend, a CUDA build that it needs a GPU
try distill "dp_size: 2" "--set batch=3 --dp-rank 0"; rc=$?
check "a batch not divisible by dp_size is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'batch 3 is not divisible by dp_size 2' '$tmp/err'"
try distill "dp_size: 2" "--set batch=2 --dp-rank 2"; rc=$?
check "a --dp-rank outside 0 .. dp_size-1 is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q -- '--dp-rank 2 (dp_rank) is outside 0 .. 1 (dp_size 2)' '$tmp/err'"
try distill "" "--dp-rank 1"; rc=$?
check "--dp-rank without data parallelism is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q -- '--dp-rank 1 (dp_rank) needs data parallelism: set dp_size' '$tmp/err'"
try distill "dp_size: 2" "--set batch=2"; rc=$?
check "dp_size 2 without --dp-rank is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q -- 'dp_size 2: every rank needs its --dp-rank R' '$tmp/err'"
try distill "dp_size: 2" "--set batch=8 --set micro_batch=3 --dp-rank 1"; rc=$?
check "a micro_batch that does not divide a rank's share is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q \"micro_batch 3 does not divide a rank's share of the batch, 4 sequences (batch 8 / dp_size 2)\" '$tmp/err'"
try distill "" "--device cuda:1023"; rc=$?
if grep -q 'without the CUDA backend' "$tmp/err"; then
  try distill "dp_size: 2" "--set batch=2 --dp-rank 0"; rc=$?
  check "CPU-only build: data parallelism needs the CUDA backend (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'data parallelism (dp_size 2) needs the CUDA backend: this xtrain was built without it' '$tmp/err'"
  try distill "" "--dp-id $tmp/dp-id --device cuda"; rc=$?
  check "CPU-only build: --dp-id (one rank) needs the CUDA backend too (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'data parallelism (dp_size 1, dp_id given) needs the CUDA backend' '$tmp/err'"
else
  try distill "dp_size: 2" "--set batch=2 --dp-rank 0"; rc=$?
  check "dp_size with device cpu is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'data parallelism (dp_size 2) needs a CUDA device: give each rank its GPU' '$tmp/err'"
  try distill "" "--dp-id $tmp/dp-id"; rc=$?
  check "--dp-id (one rank) with device cpu is refused (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'data parallelism (dp_size 1, dp_id given) needs a CUDA device' '$tmp/err'"
fi
check "no id file was written by any of these" "[ ! -e '$tmp/dp-id' ]"
"$xtrain" distill --help 2> "$tmp/err"; rc=$?
check "distill --help lists --dp-rank and --dp-id (rc=$rc)" "[ $rc -eq 0 ] && grep -q -- '--dp-rank R' '$tmp/err' && grep -q -- '--dp-id FILE' '$tmp/err'"
"$xtrain" align --print-keys > "$tmp/keys"; rc=$?
check "--print-keys lists the settings (rc=$rc)" "[ $rc -eq 0 ] && grep -q '| \`lr\` | 1e-2 |' '$tmp/keys'"
check "no run directory was created by any of these" "[ ! -d '$tmp/out' ]"
mkdir -p "$tmp/empty"; : > "$tmp/empty/blank.txt"
"$xtrain" prepare --tokenizer "$teacher" --out "$tmp/none" "$tmp/empty" > /dev/null 2> "$tmp/err"; rc=$?
check "an empty corpus is refused (rc=$rc)" "[ $rc -ne 0 ] && grep -qi 'no tokens' '$tmp/err'"
exit $fail
