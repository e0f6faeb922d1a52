#!/bin/sh
# xtrain eval's long-context report on the real teacher: perplexity by position, the window-only
# student, the pass key, which tasks C_alpha counts, and clear errors for bad settings.
# usage: eval.sh XTRAIN SOURCE_DIR MODELS_DIR
set -u
xtrain=$1 src=$2 teacher=$3/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
[ -f "$teacher" ] || { echo "FAIL: $teacher missing (run deploy/fetch-teacher.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
js() { python3 -c "import json, sys; r = json.load(open(sys.argv[1])); t = {x['task']: x for x in r['tasks']}; sys.exit(0 if ($2) else 1)" "$1"; }

mkdir -p "$tmp/in"
cp "$src"/tests/data/english.txt "$src"/docs/method.md "$src"/docs/architecture.md "$tmp/in/"
"$xtrain" prepare --tokenizer "$teacher" --out "$tmp/prose" --domain prose --val-fraction 0.5 --seed 3 "$tmp/in" > /dev/null 2>&1 || fail=1
# A fresh student: window 16 + 2 sinks. Its window-only form (output gates shut) has every teacher
# weight, so over positions 0..17 it is the teacher exactly and past them it can only lose.
"$xtrain" init --teacher "$teacher" --out "$tmp/s" --window 16 --sinks 2 --chunk 8 > /dev/null || fail=1
cat > "$tmp/e.yaml" <<YAML
teacher: $teacher
student: $tmp/s
out: $tmp/r.json
data: [$tmp/prose]
general: [$tmp/prose]
seq_len: 96
max_tokens: 192
passkey: "160"
passkey_samples: 2
YAML
"$xtrain" eval --config "$tmp/e.yaml" > "$tmp/out" 2> "$tmp/err" || { fail=1; cat "$tmp/err"; }
check "in-domain and general perplexity tasks, labelled" \
  "js '$tmp/r.json' \"t['ppl/prose']['in_domain'] is True and t['general/prose']['in_domain'] is False\""
check "positions 0-18, 18-32, 32-64, 64-96" \
  "js '$tmp/r.json' \"[(b['from'], b['to']) for b in t['general/prose']['by_position']] == [(0, 18), (18, 32), (32, 64), (64, 96)]\""
check "inside its window the window-only student is the teacher (ppl to 1e-4)" \
  "js '$tmp/r.json' \"abs(t['general/prose']['by_position'][0]['window_only_ppl'] / t['general/prose']['by_position'][0]['teacher_ppl'] - 1) < 1e-4 and t['general/prose']['by_position'][0]['window_only_kl'] < 1e-6\""
check "past its window the window-only student is worse than the teacher" \
  "js '$tmp/r.json' \"all(b['window_only_ppl'] > b['teacher_ppl'] * 1.01 for b in t['general/prose']['by_position'][1:])\""
check "the fresh student (an even mix) is not the teacher even inside the window" \
  "js '$tmp/r.json' \"t['general/prose']['by_position'][0]['kl'] > 1e-3\""
check "KL and top-1 agreement per task" \
  "js '$tmp/r.json' \"0 < t['general/prose']['kl'] and 0 < t['general/prose']['top1_agreement'] < 1\""
check "the in-domain task runs no window-only student" "js '$tmp/r.json' \"'window_only_ppl' not in t['ppl/prose']\""
check "the pass key at 160 tokens: two items, both beyond the window, the teacher finds them" \
  "js '$tmp/r.json' \"t['passkey/160']['samples'] == 2 and t['passkey/160']['beyond_window'] == 2 and t['passkey/160']['teacher_acc'] == 1 and len(t['passkey/160']['items']) == 2 and all(i['tokens'] <= 160 for i in t['passkey/160']['items'])\""
check "the window-only student cannot find a key beyond its window" \
  "js '$tmp/r.json' \"t['passkey/160']['window_only_acc'] == 0\""
check "C_alpha counts every task but the in-domain perplexity, and says so" \
  "js '$tmp/r.json' \"r['c_alpha_tasks'] == ['general/prose', 'passkey/160']\" && grep -q 'C_alpha over 2 of them (all but the in-domain perplexities)' '$tmp/out'"
check "the summary shows positions and the pass key" \
  "grep -q 'positions    64-96' '$tmp/err' && grep -q 'passkey/160 .*teacher 2/2' '$tmp/err'"

# The same prompts from the same seed; score: all counts the in-domain task too.
grep -v '^general:' "$tmp/e.yaml" > "$tmp/e2.yaml"
"$xtrain" eval --config "$tmp/e2.yaml" --set out="$tmp/r2.json" --set score=all --set window_only=false > /dev/null 2>&1 || fail=1
check "the pass keys come from the seed: the same keys again" \
  "python3 -c \"import json; k = lambda p: [i['key'] for x in json.load(open(p))['tasks'] if x['task'].startswith('passkey') for i in x['items']]; exit(k('$tmp/r.json') != k('$tmp/r2.json'))\""
check "score: all counts the in-domain task" "js '$tmp/r2.json' \"r['c_alpha_tasks'] == ['ppl/prose', 'passkey/160']\""
check "window_only: false runs no window-only student" "[ -s '$tmp/r2.json' ] && ! grep -q window_only_acc '$tmp/r2.json'"

# lm-evaluation-harness's task types: target (greedy match and target perplexity, LAMBADA's) and
# partial scoring (Winogrande's: one continuation under several contexts); a file holds one kind.
printf '%s\n' '{"context": "The capital of France is", "target": " Paris"}' \
  '{"context": "One, two, three, four, five, six,", "target": " seven"}' > "$tmp/lambada.jsonl"
printf '%s\n' '{"contexts": ["The cat sat on the mat because the cat", "The cat sat on the mat because the mat"], "continuation": " was tired.", "label": 0}' \
  '{"contexts": ["Paris is the capital of", "Paris is the capital of the moon and"], "continuation": " France.", "label": 0}' > "$tmp/wino.jsonl"
printf '%s\n' '{"context": "The capital of France is the city of", "choices": [" Paris", " Berlin"], "label": 0}' > "$tmp/mc.jsonl"
cat > "$tmp/t.yaml" <<YAML
teacher: $teacher
student: $tmp/s
out: $tmp/rt.json
tasks: [$tmp/lambada.jsonl, $tmp/wino.jsonl, $tmp/mc.jsonl]
passkey: none
YAML
"$xtrain" eval --config "$tmp/t.yaml" > /dev/null 2> "$tmp/terr" || { fail=1; cat "$tmp/terr"; }
check "a target task: the teacher completes both, its perplexity is that of the targets" \
  "js '$tmp/rt.json' \"t['target/lambada']['kind'] == 'target' and t['target/lambada']['teacher_acc'] == 1 and 1 < t['target/lambada']['teacher_ppl'] < 3 and t['target/lambada']['teacher'] == 1\""
check "a partial task: scored by acc, both items right for the teacher" \
  "js '$tmp/rt.json' \"t['partial/wino']['kind'] == 'partial' and t['partial/wino']['teacher_acc'] == 1 and 'teacher_acc_norm' not in t['partial/wino']\""
check "a multiple-choice task keeps acc and acc_norm" "js '$tmp/rt.json' \"t['mc/mc']['teacher_acc_norm'] == 1\""
printf '%s\n' '{"context": "x", "target": " y"}' '{"contexts": ["a", "b"], "continuation": " c", "label": 0}' > "$tmp/mixed.jsonl"
"$xtrain" eval --config "$tmp/t.yaml" --set tasks="$tmp/mixed.jsonl" --set out="$tmp/bad.json" > /dev/null 2> "$tmp/berr"; rc=$?
check "a file that mixes kinds is refused, naming the line (rc=$rc)" \
  "[ $rc -eq 1 ] && grep -q 'mixed.jsonl line 2: a partial item in a file of target items' '$tmp/berr'"

# In-domain perplexity alone: the report says C_alpha has nothing to count instead of a number.
grep -v -e '^general:' -e '^passkey' "$tmp/e.yaml" > "$tmp/e3.yaml"
"$xtrain" eval --config "$tmp/e3.yaml" --set out="$tmp/r3.json" --set passkey=none > "$tmp/out3" 2> /dev/null || fail=1
check "in-domain perplexity alone: no C_alpha, lossless null, and the summary says why" \
  "js '$tmp/r3.json' \"r['c_alpha'] == [] and r['lossless'] is None and r['c_alpha_tasks'] == []\" && grep -q 'all in-domain perplexity: no C_alpha' '$tmp/out3'"

bad() { # NAME EXPECTED_RC MESSAGE SETTINGS...
  name=$1 want=$2 msg=$3; shift 3
  "$xtrain" eval --config "$tmp/e.yaml" --set out="$tmp/bad.json" "$@" > /dev/null 2> "$tmp/berr"; rc=$?
  check "$name: exit $want naming the problem (rc=$rc)" "[ $rc -eq $want ] && grep -q '$msg' '$tmp/berr' && [ ! -e '$tmp/bad.json' ]"
}
bad "passkey lengths that are not numbers" 1 'passkey "12x": expected auto, none or up to' --set passkey=12x
bad "a pass key longer than the teacher's context" 1 'each 64..8192' --set passkey=9000
bad "a pass key too short for its prompt" 1 'length 64 is too short for the prompt' --set passkey=64
# (score is checked against the tasks once they ran: the cheapest config, in-domain perplexity alone)
"$xtrain" eval --config "$tmp/e3.yaml" --set out="$tmp/bad.json" --set passkey=none --set score=mc/ > /dev/null 2> "$tmp/berr"; rc=$?
check "score naming no task: exit 1 naming the problem (rc=$rc)" "[ $rc -eq 1 ] && grep -q 'score \"mc/\" names none of the' '$tmp/berr' && [ ! -e '$tmp/bad.json' ]"
bad "passkey_samples 0" 2 'passkey_samples' --set passkey_samples=0
exit $fail
