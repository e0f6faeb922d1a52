#!/bin/sh
# xtrain init on the default teacher, then the student through ppl (chunkwise and step form) and
# generate, as a user runs them. usage: xtrain_student.sh XTRAIN DATA_DIR MODELS_DIR
set -u
xtrain=$1 data=$2 gguf=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$gguf" ] || { echo "FAIL: $gguf missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$xtrain" init --teacher "$gguf" --out "$tmp/student" --window 16 --sinks 2 --chunk 8 > "$tmp/init.out" 2>&1; rc=$?
cat "$tmp/init.out"
check "init succeeds and reports the new parameters (rc=$rc)" "[ $rc -eq 0 ] && grep -q 'new (1.91%)' '$tmp/init.out'"
check "the student config records its settings and its teacher" \
  "grep -q '\"model_type\": \"xlstm_hybrid\"' '$tmp/student/config.json' && grep -q '\"window\": 16' '$tmp/student/config.json' "
check "the student carries its tokenizer rather than the teacher's path" \
  "[ -f '$tmp/student/tokenizer.json' ] && grep -q '\"eos_token\": \"<|im_end|>\"' '$tmp/student/tokenizer_config.json' && ! grep -q tokenizer_source '$tmp/student/config.json'"

# 80 tokens: the window (16) and the chunk (8) are both exceeded several times.
head -c 400 "$data/golden/smollm2/ids.txt" | awk '{for (i = 1; i <= 80 && i <= NF; i++) printf "%s ", $i; print ""}' > "$tmp/ids"
"$xtrain" ppl --model "$tmp/student" --ids-file "$tmp/ids" --json > "$tmp/chunk.json"
"$xtrain" ppl --model "$tmp/student" --ids-file "$tmp/ids" --json --recurrent > "$tmp/rec.json"
cat "$tmp/chunk.json" "$tmp/rec.json"
a=$(sed 's/.*"ppl": \([0-9.e+-]*\),.*/\1/' "$tmp/chunk.json"); b=$(sed 's/.*"ppl": \([0-9.e+-]*\),.*/\1/' "$tmp/rec.json")
check "ppl --recurrent ($b) equals the chunkwise ppl ($a) to 1e-4 relative" \
  "awk -v a='$a' -v b='$b' 'BEGIN { d = b / a - 1; exit !(a > 1 && d < 1e-4 && d > -1e-4) }'"
check "modes are reported" "grep -q '\"mode\": \"chunkwise\"' '$tmp/chunk.json' && grep -q '\"mode\": \"recurrent\"' '$tmp/rec.json'"

"$xtrain" generate --model "$tmp/student" --prompt "The lighthouse" --max-new 8 > "$tmp/gen.out" 2> "$tmp/gen.err"; rc=$?
cat "$tmp/gen.err"
check "the student generates with a recurrent state (rc=$rc)" "[ $rc -eq 0 ] && grep -q 'recurrent state' '$tmp/gen.err'"
printf 'The lighthouse' > "$tmp/prompt.txt"
"$xtrain" generate --model "$tmp/student" --prompt-file "$tmp/prompt.txt" --max-new 8 > "$tmp/gen2.out" 2> /dev/null; rc=$?
check "--prompt-file gives what --prompt gives (rc=$rc)" "[ $rc -eq 0 ] && cmp -s '$tmp/gen.out' '$tmp/gen2.out'"

# A student copied elsewhere, its teacher gone, loads with its tokenizer: the same perplexity of a
# text, and a chat.
head -c 3000 "$data/english.txt" > "$tmp/text.txt"
cp "$gguf" "$tmp/teacher.gguf"
"$xtrain" init --teacher "$tmp/teacher.gguf" --out "$tmp/here" --window 16 --sinks 2 --chunk 8 > /dev/null 2>&1 || fail=1
"$xtrain" ppl --model "$tmp/here" --text "$tmp/text.txt" > "$tmp/ppl-here" 2>/dev/null || fail=1
mkdir "$tmp/elsewhere" && mv "$tmp/here" "$tmp/elsewhere/moved" && rm "$tmp/teacher.gguf"
"$xtrain" ppl --model "$tmp/elsewhere/moved" --text "$tmp/text.txt" > "$tmp/ppl-moved" 2> "$tmp/e0"; rc=$?
cat "$tmp/e0"
check "the moved student's ppl ($(tail -n 1 "$tmp/ppl-moved")) is the one before the move ($(tail -n 1 "$tmp/ppl-here"))" \
  "[ $rc -eq 0 ] && grep -q '^ppl ' '$tmp/ppl-moved' && cmp -s '$tmp/ppl-here' '$tmp/ppl-moved'"
"$xtrain" generate --model "$tmp/elsewhere/moved" --chat --prompt "Hi" --max-new 4 > /dev/null 2> "$tmp/e0"; rc=$?
check "the moved student chats (rc=$rc)" "[ $rc -eq 0 ]"
# a directory written before students carried their tokenizer still loads it from tokenizer_source
mkdir "$tmp/old" && cp "$tmp/student/model.safetensors" "$tmp/old/"
sed "s|^{|{\"tokenizer_source\": \"$gguf\",|" "$tmp/student/config.json" > "$tmp/old/config.json"
"$xtrain" ppl --model "$tmp/old" --text "$tmp/text.txt" > "$tmp/ppl-old" 2> "$tmp/e0"; rc=$?
"$xtrain" ppl --model "$tmp/student" --text "$tmp/text.txt" > "$tmp/ppl-new" 2> /dev/null
check "an old student directory naming its tokenizer_source still loads (rc=$rc)" "[ $rc -eq 0 ] && cmp -s '$tmp/ppl-old' '$tmp/ppl-new'"

"$xtrain" init --teacher "$gguf" --out "$tmp/student" > /dev/null 2> "$tmp/e1"; rc=$?
check "init refuses to overwrite without --force (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'already holds a model (--force to overwrite)' '$tmp/e1'"
"$xtrain" init --teacher "$gguf" --out "$tmp/s2" --window 0 > /dev/null 2> "$tmp/e2"; rc=$?
check "window 0 is refused (rc=$rc)" "[ $rc -eq 2 ] && grep -q -- '--window must be at least 1' '$tmp/e2'"
"$xtrain" init --teacher "$tmp/student" --out "$tmp/s3" > /dev/null 2> "$tmp/e3"; rc=$?
check "a student is not a teacher (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'is already a student' '$tmp/e3'"
"$xtrain" ppl --model "$gguf" --ids-file "$tmp/ids" --recurrent > /dev/null 2> "$tmp/e4"; rc=$?
check "--recurrent on a Transformer is refused (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'needs a student model' '$tmp/e4'"
exit $fail
