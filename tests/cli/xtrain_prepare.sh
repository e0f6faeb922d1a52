#!/bin/sh
# xtrain prepare on a small corpus with the default teacher's tokenizer, as a user runs it: counts,
# byte-identical re-runs, decoding the shards back to the input text, and the errors.
# usage: xtrain_prepare.sh XTRAIN DATA_DIR MODELS_DIR
set -u
xtrain=$1 gguf=$3/SmolLM2-135M-Instruct.Q4_1.gguf
case $xtrain in /*) ;; *) xtrain=$(pwd)/$xtrain ;; esac
case $gguf in /*) ;; *) gguf=$(pwd)/$gguf ;; esac
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$gguf" ] || { echo "FAIL: $gguf missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

# 7 documents: a.txt, b.md, sub/c.py, two lines of t.jsonl (a blank line between), two chats.
# Left out: a hidden file (not counted), a binary file and one that is not UTF-8 (skipped: 2), and a
# symlink back up the tree (not followed twice).
mkdir -p corpus/sub
printf 'The lighthouse keeper climbed the stairs at dusk.\n' > corpus/a.txt
printf '# Notes\n\nSome *markdown* with a list:\n\n- one\n- two\n' > corpus/b.md
printf 'def f(x):\n    return x + 1\n' > corpus/sub/c.py
printf 'a hidden file\n' > corpus/.hidden.txt
printf 'ab\000cd' > corpus/blob.dat
printf 'Latin-1 caf\351\n' > corpus/latin1.txt
ln -s .. corpus/sub/loop
printf '{"text": "First jsonl document."}\n\n{"text": "Second one, with \\"quotes\\"."}\n' > corpus/t.jsonl
cat > chat.jsonl <<'EOF'
{"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}]}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
EOF

"$xtrain" prepare --tokenizer "$gguf" --out out1 --val-fraction 0.4 --seed 3 --shard-tokens 40 \
  --domain demo corpus chat.jsonl > p1.out 2> p1.err; rc=$?
cat p1.err
check "prepare succeeds (rc=$rc)" "[ $rc -eq 0 ] && [ -f out1/manifest.json ]"
"$xtrain" prepare --inspect out1 > i1.out 2> i1.err; rc=$?
cat i1.out i1.err
check "--inspect verifies the directory (rc=$rc)" "[ $rc -eq 0 ] && grep -q '^verified: ' i1.out"
docs=$(awk '$1 == "train" || $1 == "val" { n += $(NF - 1) } END { print n }' i1.out)
check "7 documents in train + val ($docs)" "[ '$docs' = 7 ]"
check "the manifest counts 2 skipped files, the domain and the inputs" \
  "grep -q '\"skipped\": 2' out1/manifest.json && grep -q '\"domain\": \"demo\"' out1/manifest.json && grep -q '\"path\": \"chat.jsonl\"' out1/manifest.json"
check "the manifest names the format and the tokenizer" \
  "grep -q '\"format\": \"xdistill-shards\"' out1/manifest.json && grep -q '\"vocab_size\": 49152' out1/manifest.json && grep -q '\"eos_id\": 2' out1/manifest.json"
check "both splits are used and train has several shards" "[ -f out1/val-00000.bin ] && [ -f out1/train-00001.bin ]"
check "the shard header: magic, version 1, 2-byte ids" \
  "[ \"\$(head -c 8 out1/train-00000.bin)\" = XDTOKSH1 ] && [ \"\$(od -An -tu4 -j8 -N8 out1/train-00000.bin | tr -s ' ')\" = ' 1 2' ]"
check "the skipped files are reported" "grep -q 'skipped 2 (binary 2' p1.err"

# The same command gives byte-identical shards and manifest, in another directory or with --force.
"$xtrain" prepare --tokenizer "$gguf" --out out2 --val-fraction 0.4 --seed 3 --shard-tokens 40 \
  --domain demo corpus chat.jsonl 2> /dev/null
same=1
for f in out1/*; do cmp -s "$f" "out2/$(basename "$f")" || same=0; done
check "a re-run is byte-identical ($(ls out1 | wc -l) files)" "[ $same = 1 ] && [ \$(ls out1 | wc -l) = \$(ls out2 | wc -l) ]"
"$xtrain" prepare --tokenizer "$gguf" --out out1 corpus > /dev/null 2> e.err; rc=$?
check "an existing directory is not overwritten without --force (rc=$rc)" \
  "[ $rc -eq 1 ] && grep -q 'already holds token shards (--force to overwrite)' e.err && cmp -s out1/manifest.json out2/manifest.json"
"$xtrain" prepare --tokenizer "$gguf" --out out1 --val-fraction 0.4 --seed 3 --shard-tokens 40 \
  --domain demo corpus chat.jsonl --force 2> /dev/null
check "--force rewrites the same shards" "cmp -s out1/manifest.json out2/manifest.json"
"$xtrain" prepare --tokenizer "$gguf" --out out3 --val-fraction 0.4 --seed 4 --shard-tokens 40 \
  --domain demo corpus chat.jsonl 2> /dev/null
check "another seed gives another split" "! cmp -s out1/manifest.json out3/manifest.json"

# The first tokens of a train shard decode back to the input (no val: the first document is a.txt).
"$xtrain" prepare --tokenizer "$gguf" --out one --val-fraction 0 corpus/a.txt chat.jsonl 2> /dev/null
"$xtrain" prepare --inspect one --decode 200 > d.out 2> d.err; rc=$?
cat d.out d.err
check "decoding gives the text back (rc=$rc)" "[ $rc -eq 0 ] && grep -q '^The lighthouse keeper climbed the stairs at dusk.$' d.out"
check "documents end with EOS and chats use the template" \
  "grep -q '^<|im_end|><|im_start|>system$' d.out && grep -q '^Hi there<|im_end|>$' d.out && grep -q '^<|im_start|>assistant$' d.out"
check "no val shard with --val-fraction 0" "[ ! -f one/val-00000.bin ] && grep -q '\"val\": \\[\\]' one/manifest.json"

# An output directory inside the corpus is not read as input, so a re-run with --force is identical.
mkdir inner; cp corpus/a.txt inner/
"$xtrain" prepare --tokenizer "$gguf" --out inner/shards inner 2> /dev/null
cp inner/shards/manifest.json inner.json
"$xtrain" prepare --tokenizer "$gguf" --out inner/shards inner --force 2> /dev/null
check "an output directory inside the corpus is left out" \
  "cmp -s inner.json inner/shards/manifest.json && grep -q '\"skipped\": 0' inner.json && grep -q '\"train\": 1,' inner.json"

# Errors: the message names the input and the problem.
"$xtrain" prepare --tokenizer "$gguf" --out x corpus missing.txt > /dev/null 2> e1; rc=$?
check "a missing input (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'missing.txt: No such file or directory' e1 && [ ! -e x ]"
mkdir empty; : > empty/nothing.txt; mkdir empty/.git; printf 'x' > empty/.git/HEAD
"$xtrain" prepare --tokenizer "$gguf" --out x empty > /dev/null 2> e2; rc=$?
check "an empty corpus (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'no tokens' e2 && [ ! -f x/manifest.json ]"
"$xtrain" prepare --tokenizer "$gguf" --out x --val-fractoin 0.1 corpus > /dev/null 2> e3; rc=$?
check "an unknown flag (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'unknown flag --val-fractoin (did you mean --val-fraction?)' e3"
printf '{"text": "fine"}\n[1, 2]\n' > notobj.jsonl
"$xtrain" prepare --tokenizer "$gguf" --out x notobj.jsonl > /dev/null 2> e4; rc=$?
check "a .jsonl line that is not an object (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'notobj.jsonl:2: not a JSON object' e4"
printf '{"body": "no text field"}\n' > nofield.jsonl
"$xtrain" prepare --tokenizer "$gguf" --out x nofield.jsonl > /dev/null 2> e5; rc=$?
check "a .jsonl line without the field (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'nofield.jsonl:1: no \"text\" field' e5"
"$xtrain" prepare --tokenizer "$gguf" --out body --field body nofield.jsonl > /dev/null 2>&1; rc=$?
check "--field names another field (rc=$rc)" "[ $rc -eq 0 ] && grep -q '\"train\": 1' body/manifest.json"
printf '{"text": "ok"}\n{"text": "unterminated}\n' > badjson.jsonl
"$xtrain" prepare --tokenizer "$gguf" --out x badjson.jsonl > /dev/null 2> e6; rc=$?
check "invalid JSON (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'badjson.jsonl:2: invalid JSON' e6"
"$xtrain" prepare --out x corpus > /dev/null 2> e7; rc=$?
check "--tokenizer is required (rc=$rc)" "[ $rc -eq 2 ] && grep -q -- '--tokenizer is required' e7"
printf 'X' | dd of=out2/train-00001.bin bs=1 seek=70 conv=notrunc 2> /dev/null
"$xtrain" prepare --inspect out2 > /dev/null 2> e8; rc=$?
check "--inspect finds a changed shard (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'train-00001.bin: sha256 is' e8"
rm out2/manifest.json
"$xtrain" prepare --inspect out2 > /dev/null 2> e9; rc=$?
check "a directory without a manifest is incomplete (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'xtrain prepare did not finish' e9"
exit $fail
