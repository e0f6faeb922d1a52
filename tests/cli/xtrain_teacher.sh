#!/bin/sh
# xtrain ppl and generate on the default teacher, as a user runs them.
# usage: xtrain_teacher.sh XTRAIN DATA_DIR MODELS_DIR
set -u
xtrain=$1 data=$2 gguf=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$gguf" ] || { echo "FAIL: $gguf missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# Perplexity of the English text through our tokenizer equals transformers' (22.625751, float64).
"$xtrain" ppl --model "$gguf" --text "$data/english.txt" > "$tmp/ppl.out" 2> "$tmp/ppl.err"
echo "rc=$?"; cat "$tmp/ppl.out"
check "ppl last line is 'ppl X tokens 336'" "tail -n 1 '$tmp/ppl.out' | grep -Eq '^ppl [0-9.]+ tokens 336$'"
ppl=$(tail -n 1 "$tmp/ppl.out" | awk '{print $2}')
check "ppl $ppl within 1e-4 of 22.625751" "awk -v p='$ppl' 'BEGIN { d = p / 22.625751031581196 - 1; exit !(d < 1e-4 && d > -1e-4) }'"

"$xtrain" ppl --model "$gguf" --ids-file "$data/golden/smollm2/ids.txt" --ctx 100 --json --dump-logits "$tmp/l.f32" > "$tmp/ppl.json"
cat "$tmp/ppl.json"
check "--json prints one object with ppl and tokens" "grep -Eq '^\{\"ppl\": [0-9.]+, .*\"tokens\": 336,' '$tmp/ppl.json'"
check "--ctx 100 gives 4 windows" "grep -q '\"windows\": 4' '$tmp/ppl.json'"
check "--dump-logits writes [100, 49152] float32" "[ \$(stat -c %s '$tmp/l.f32') -eq $((100 * 49152 * 4)) ]"

# Greedy chat answers a simple question coherently (transformers' greedy reply: "The capital of France is Paris.").
"$xtrain" generate --model "$gguf" --chat --prompt "What is the capital of France?" --max-new 24 > "$tmp/gen.out" 2> "$tmp/gen.err"
cat "$tmp/gen.out" "$tmp/gen.err"
check "greedy chat reply is 'The capital of France is Paris.'" "grep -q '^The capital of France is Paris.' '$tmp/gen.out'"
"$xtrain" generate --model "$gguf" --prompt "Once upon a time" --max-new 16 --temperature 0.8 --top-p 0.9 --seed 7 > "$tmp/s1.out" 2>/dev/null
"$xtrain" generate --model "$gguf" --prompt "Once upon a time" --max-new 16 --temperature 0.8 --top-p 0.9 --seed 7 > "$tmp/s2.out" 2>/dev/null
check "sampling with a seed is reproducible" "cmp -s '$tmp/s1.out' '$tmp/s2.out' && [ -s '$tmp/s1.out' ]"

# Bad input: clear errors, exit codes.
"$xtrain" ppl --model "$gguf" --text "$data/english.txt" --ctxx 5 > /dev/null 2> "$tmp/e1"; rc=$?
check "unknown flag suggests the nearest (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'unknown flag --ctxx (did you mean --ctx?)' '$tmp/e1'"
printf '1 2 99999999\n' > "$tmp/bad_ids"
"$xtrain" ppl --model "$gguf" --ids-file "$tmp/bad_ids" > /dev/null 2> "$tmp/e2"; rc=$?
check "out-of-vocabulary id is named (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'token 3 = 99999999 is outside the vocabulary' '$tmp/e2'"
printf 'GGUF\003\000\000\000' > "$tmp/trunc.gguf"
"$xtrain" ppl --model "$tmp/trunc.gguf" --ids-file "$data/golden/smollm2/ids.txt" > /dev/null 2> "$tmp/e3"; rc=$?
cat "$tmp/e3"
check "truncated GGUF is a clear error naming the file (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'trunc.gguf' '$tmp/e3'"
exit $fail
