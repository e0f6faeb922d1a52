#!/bin/sh
# A stage killed with SIGKILL mid-run and restarted resumes from its newest complete checkpoint and
# continues the same loss curve as an uninterrupted run (align, then distill).
# usage: resume.sh XTRAIN SOURCE_DIR MODELS_DIR
set -u
xtrain=$1 src=$2 teacher=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$teacher" ] || { echo "FAIL: $teacher missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/in"
cp "$src/tests/data/english.txt" "$src/docs/method.md" "$tmp/in/"
"$xtrain" prepare --tokenizer "$teacher" --out "$tmp/data" --val-fraction 0 "$tmp/in" > /dev/null 2>&1 || fail=1
"$xtrain" init --teacher "$teacher" --out "$tmp/student" --window 16 --sinks 2 --chunk 8 > /dev/null || fail=1
# what a step's numbers are, without its wall-clock speed
curve() { sed 's/"tokens_per_s":[^,]*,//' "$1"; }

run_stage() { # stage name steps: an uninterrupted run, then one killed after its first checkpoint
  stage=$1 name=$2 steps=$3
  for v in straight killed; do
    cat > "$tmp/$name-$v.yaml" <<YAML
teacher: $teacher
student: $4
out: $tmp/$name-$v
data: [$tmp/data]
seq_len: 32
batch: 2
steps: $steps
warmup: 1
lr: $5
checkpoint_every: 2
keep_checkpoints: 1
YAML
  done
  "$xtrain" $stage --config "$tmp/$name-straight.yaml" > /dev/null 2>&1 || fail=1
  "$xtrain" $stage --config "$tmp/$name-killed.yaml" > /dev/null 2>&1 &
  pid=$!
  i=0
  while [ ! -f "$tmp/$name-killed/checkpoints/step-00000002/DONE" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
  kill -9 $pid 2> /dev/null; wait $pid 2> /dev/null
  killed_at=$(wc -l < "$tmp/$name-killed/metrics.jsonl")
  check "$name was killed mid-run (after $killed_at of $steps steps)" "[ $killed_at -lt $steps ] && [ ! -f '$tmp/$name-killed/DONE' ]"
  "$xtrain" $stage --config "$tmp/$name-killed.yaml" > "$tmp/$name-resume.out" 2>&1 || fail=1
  check "$name resumed from a checkpoint" "grep -q 'resuming from .*step-0000000[24]' '$tmp/$name-resume.out'"
  curve "$tmp/$name-straight/metrics.jsonl" > "$tmp/a"
  curve "$tmp/$name-killed/metrics.jsonl" > "$tmp/b"
  check "$name: the resumed loss curve equals the uninterrupted one, step for step" "cmp -s '$tmp/a' '$tmp/b' && [ \$(wc -l < '$tmp/a') -eq $steps ]"
  check "$name: the final models are identical" "cmp -s '$tmp/$name-straight/model/model.safetensors' '$tmp/$name-killed/model/model.safetensors'"
}
run_stage align align 6 "$tmp/student" 1e-2
run_stage distill distill 4 "$tmp/align-straight/model" 1e-4

# Two xtrain on one out (a fenced attempt's child still running on a frozen node while its job
# resumes elsewhere): the second waits for the first to end, then resumes from its last
# checkpoint; the run's metrics hold each step once.
sed -e "s|out: .*|out: $tmp/shared|" -e 's/^steps: .*/steps: 8/' "$tmp/align-straight.yaml" > "$tmp/shared.yaml"
"$xtrain" align --config "$tmp/shared.yaml" > "$tmp/first.out" 2>&1 &
first=$!
i=0
while [ ! -f "$tmp/shared/checkpoints/step-00000002/DONE" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
# the first is frozen (the node that stopped answering) until the second is seen waiting, so a
# loaded machine cannot let the first finish before the second reaches the lock
kill -STOP $first
"$xtrain" align --config "$tmp/shared.yaml" > "$tmp/second.out" 2>&1 &
second=$!
i=0
while ! grep -q 'waiting for it to end' "$tmp/second.out" && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
kill -CONT $first
check "the second xtrain on the same out waits, naming the first (pid $first)" "grep -q \"is in use by another xtrain (pid $first on \" '$tmp/second.out'"
wait $first; rc1=$?
wait $second; rc2=$?
check "both end well ($rc1, $rc2); the second went on after the first" "[ $rc1 = 0 ] && [ $rc2 = 0 ] && grep -q 'is free: going on' '$tmp/second.out'"
check "the second resumed from the first's last checkpoint" "grep -q 'resuming from .*step-00000008' '$tmp/second.out'"
[ $fail -eq 0 ] || { echo "--- second.out"; cat "$tmp/second.out"; }
check "metrics.jsonl has each of the 8 steps once, in order" \
  "[ \"\$(sed 's/^{\"step\":\([0-9]*\),.*/\1/' '$tmp/shared/metrics.jsonl' | tr '\\n' ' ')\" = '1 2 3 4 5 6 7 8 ' ]"
[ $fail -eq 0 ] || { echo "--- straight"; cat "$tmp/a"; echo "--- resumed"; cat "$tmp/b"; }
exit $fail
