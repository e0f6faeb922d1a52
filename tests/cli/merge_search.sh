#!/bin/sh
# merge's weights: search on real experts: two short distills of one student on two domains (C code,
# English prose), merged with the weighting that scores best on the domains' val split. Checks the
# report (every candidate with a finite score, the chosen one the best, its scores those eval
# computes), that the written model is exactly the merge given the chosen weights and loads, and
# the errors of bad settings.
# usage: merge_search.sh XTRAIN SOURCE_DIR MODELS_DIR
set -u
xtrain=$1 src=$2 teacher=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$teacher" ] || { echo "FAIL: $teacher missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
py() { python3 -c "import json, math, sys; r = json.load(open('$1')); $2"; }

# Two small domains with a val split, and one without (the search passes it over).
mkdir -p "$tmp/in/code" "$tmp/in/prose" "$tmp/in/noval"
head -c 3000 "$src/model/layout.c" > "$tmp/in/code/a.c"
head -c 2000 "$src/common/file.c" > "$tmp/in/code/b.c"
head -c 3000 "$src/tests/data/english.txt" > "$tmp/in/prose/a.txt"
head -c 2000 "$src/docs/method.md" > "$tmp/in/prose/b.md"
head -c 600 "$src/README.md" > "$tmp/in/noval/a.md"
for d in code prose; do
  "$xtrain" prepare --tokenizer "$teacher" --out "$tmp/$d" --domain $d --val-fraction 0.5 --seed 1 "$tmp/in/$d" > /dev/null || fail=1
done
"$xtrain" prepare --tokenizer "$teacher" --out "$tmp/noval" --domain noval --val-fraction 0 "$tmp/in/noval" > /dev/null || fail=1

"$xtrain" init --teacher "$teacher" --out "$tmp/student" --window 16 --sinks 2 --chunk 8 > /dev/null || fail=1
for d in code prose; do
  cat > "$tmp/distill-$d.yaml" <<YAML
teacher: $teacher
student: $tmp/student
out: $tmp/distill-$d
data: [$tmp/$d]
seq_len: 32
batch: 2
steps: 2
lr: 1e-3
warmup: 1
checkpoint_every: 2
YAML
  "$xtrain" distill --config "$tmp/distill-$d.yaml" 2> "$tmp/distill-$d.log" || { fail=1; cat "$tmp/distill-$d.log"; }
done
check "the two experts differ" "! cmp -s '$tmp/distill-code/model/model.safetensors' '$tmp/distill-prose/model/model.safetensors'"

cat > "$tmp/search.yaml" <<YAML
experts: [{path: $tmp/distill-code/model, weight: 0.6}, {path: $tmp/distill-prose/model, weight: 0.4}]
out: $tmp/merged
weights: search
data: [$tmp/code, $tmp/prose, $tmp/noval]
seq_len: 32
max_tokens: 48
YAML
"$xtrain" merge --config "$tmp/search.yaml" > "$tmp/search.out" 2> "$tmp/search.err"; rc=$?
check "merge with weights: search succeeds (rc=$rc)" "[ $rc -eq 0 ]" || cat "$tmp/search.err"
report=$tmp/merged/merge_report.json
check "the report lists the 8 candidates, given weights first, each with a finite score and its weights" \
  "py '$report' 'c = r[\"candidates\"]; sys.exit(not (len(c) == 8 and c[0][\"kind\"] == \"given\" and c[0][\"weights\"] == [0.6, 0.4] and all(isinstance(x[\"score\"], float) and math.isfinite(x[\"score\"]) and len(x[\"weights\"]) == 2 and abs(sum(x[\"weights\"]) - 1) < 1e-12 for x in c)))'"
check "the candidates are all different weightings, on both sides of uniform" \
  "py '$report' 'w = [tuple(x[\"weights\"]) for x in r[\"candidates\"]]; sys.exit(not (len(set(w)) == 8 and max(x[0] for x in w) >= 0.8 and min(x[0] for x in w) <= 0.2))'"
check "the chosen candidate has the best score, and it is the report's score and weights" \
  "py '$report' 'c = r[\"candidates\"]; b = max(c, key=lambda x: x[\"score\"]); sys.exit(not (r[\"chosen\"] == b[\"index\"] and b[\"chosen\"] and sum(x[\"chosen\"] for x in c) == 1 and r[\"score\"] == b[\"score\"] and r[\"chosen_weights\"] == b[\"weights\"]))'"
check "the scores differ between candidates (the experts are different)" \
  "py '$report' 'sys.exit(not len(set(x[\"score\"] for x in r[\"candidates\"])) > 1)'"
check "the domain without val tokens is passed over, and said so" \
  "py '$report' 'sys.exit(not (r[\"skipped_domains\"] == [\"$tmp/noval\"] and [d[\"tokens\"] for d in r[\"domains\"]] == [48, 48]))' && grep -q 'noval has no validation tokens' '$tmp/search.err'"
check "stderr has a table row per candidate, the chosen one starred" \
  "[ \$(grep -c '^\[merge\]  [ *] *[0-9]' '$tmp/search.err') -eq 8 ] && [ \$(grep -c '^\[merge\]  \* ' '$tmp/search.err') -eq 1 ]"
check "the merged model's config.json records the chosen weights" \
  "py '$tmp/merged/config.json' 'm = r[\"merge\"]; q = json.load(open(\"$report\")); sys.exit(not (m[\"weights\"] == \"search\" and m[\"chosen_weights\"] == q[\"chosen_weights\"]))'"

# The written model is the average with the chosen weights: merged again with them given, the
# same file, bit for bit.
w1=$(py "$report" 'print(repr(r["chosen_weights"][0]))')
w2=$(py "$report" 'print(repr(r["chosen_weights"][1]))')
cat > "$tmp/given.yaml" <<YAML
experts: [{path: $tmp/distill-code/model, weight: $w1}, {path: $tmp/distill-prose/model, weight: $w2}]
out: $tmp/given
YAML
"$xtrain" merge --config "$tmp/given.yaml" > /dev/null 2>&1 || fail=1
check "merging with the chosen weights ($w1, $w2) gives the same weights file" \
  "cmp -s '$tmp/merged/model.safetensors' '$tmp/given/model.safetensors'"

# The score is the student's val log-likelihood as eval measures it, domain by domain, and the
# merged directory (with its report) loads as a model.
cat > "$tmp/eval.yaml" <<YAML
teacher: $teacher
student: $tmp/merged
out: $tmp/eval.json
data: [$tmp/code, $tmp/prose]
seq_len: 32
max_tokens: 48
passkey: none
YAML
"$xtrain" eval --config "$tmp/eval.yaml" > /dev/null 2>&1 || fail=1
check "eval's student perplexities are exp(-score) of each domain of the chosen candidate" \
  "py '$tmp/eval.json' 'q = json.load(open(\"$report\")); b = [x for x in q[\"candidates\"] if x[\"chosen\"]][0][\"per_domain\"]; s = [t[\"student_ppl\"] for t in r[\"tasks\"] if t[\"task\"].startswith(\"ppl/\")]; sys.exit(not (len(s) == 2 and all(abs(math.log(p) + l) < 1e-5 for p, l in zip(s, b))))'"

# candidates bounds the search; the first are the given weights and uniform.
"$xtrain" merge --config "$tmp/search.yaml" --set candidates=2 --set out="$tmp/two" > /dev/null 2> "$tmp/two.err"; rc=$?
check "candidates: 2 scores the given weights and uniform only (rc=$rc)" \
  "[ $rc -eq 0 ] && py '$tmp/two/merge_report.json' 'sys.exit(not [x[\"kind\"] for x in r[\"candidates\"]] == [\"given\", \"uniform\"])'"

refused() { # name, expected fragment, settings...
  name=$1 want=$2; shift 2
  "$xtrain" merge --config "$tmp/search.yaml" --set out="$tmp/bad" "$@" > /dev/null 2> "$tmp/err"; rc=$?
  check "$name: refused with \"$want\" (rc=$rc)" "[ $rc -ne 0 ] && grep -qF '$want' '$tmp/err' && [ ! -e '$tmp/bad' ]" \
    || cat "$tmp/err"
}
refused "search with mode layers" "weights: search is for mode average" --set mode=layers --set layers=0-14,15-29
refused "an unknown objective" 'objective "val_ppl" is not known: the one objective is val_loglik' --set objective=val_ppl
refused "an unknown weights value" 'weights "best" must be given' --set weights=best
refused "candidates out of range" '"candidates" = 0 is outside 1..64' --set candidates=0
refused "max_tokens out of range" '"max_tokens" = 0 is outside' --set max_tokens=0
refused "data without the search" 'data is the search' --set weights=given
refused "data without val tokens" 'none of the 1 data directories has validation tokens' --set data="$tmp/noval"
refused "a data directory that is not one" "$tmp/nowhere" --set data="$tmp/nowhere"
cat > "$tmp/nodata.yaml" <<YAML
experts: [$tmp/distill-code/model, $tmp/distill-prose/model]
out: $tmp/bad
weights: search
YAML
"$xtrain" merge --config "$tmp/nodata.yaml" > /dev/null 2> "$tmp/err"; rc=$?
check "search without data: refused (rc=$rc)" "[ $rc -eq 2 ] && grep -q 'weights: search needs data' '$tmp/err'"
exit $fail
