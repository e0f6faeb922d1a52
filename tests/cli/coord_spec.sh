#!/bin/sh
# xcoord turns a pipeline spec into a DAG of jobs in SQLite, or refuses it with a clear error and
# stores nothing; GPU jobs go only to workers with enough CUDA devices.
# usage: coord_spec.sh XCOORD COORD_PEER MODELS_DIR
xcoord=$1 peer=$2 teacher=$3/SmolLM2-135M-Instruct.Q4_1.gguf
. "$(dirname "$0")/coord_lib.sh"
[ -f "$teacher" ] || { echo "FAIL: $teacher missing (run deploy/fetch-teacher.sh)"; exit 1; }
start_coord

refused() { # name, expected fragment, spec text
  printf '%s\n' "$3" > "$tmp/bad.yaml"
  request submit --file spec="$tmp/bad.yaml" > "$tmp/reply"; rc=$?
  printf '%s\n' "$2" > "$tmp/want"
  check "$1: refused with $2" "[ $rc -eq 1 ] && grep -qF -f '$tmp/want' '$tmp/reply'"
  [ $rc -eq 1 ] && grep -qF -f "$tmp/want" "$tmp/reply" || echo "   got: $(cat "$tmp/reply")"
}
base='teacher: /m/t.gguf
domains: [{name: math, data: /d/math}]'
refused "unknown key" 'unknown key \"distil\" (did you mean \"distill\"?)' "$base
distil: {steps: 3}"
refused "unknown stage key" 'unknown key \"align.stpes\" (did you mean \"align.steps\"?)' "$base
align: {stpes: 3}"
refused "wrong type" '\"distill.steps\" must be an integer, got \"many\"' "$base
distill: {steps: many}"
refused "wrong section type" '\"eval\" must be a mapping' "$base
eval: [1, 2]"
refused "missing teacher" '\"teacher\" is required' 'domains: [{name: math, data: /d/math}]'
refused "empty domains" '\"domains\" is empty' 'teacher: /m/t.gguf
domains: []'
refused "relative path" 'must be an absolute path, got \"shards/math\"' 'teacher: /m/t.gguf
domains: [{name: math, data: shards/math}]'
refused "a key the coordinator writes" '\"align.out\" is written by the coordinator' "$base
align: {out: /x}"
refused "devices" 'unknown key \"devices.gpu\" (did you mean \"devices.gpus\"?)' "$base
devices: {gpu: 2}"
refused "duplicate domain" 'domain \"math\" named twice' 'teacher: /m/t.gguf
domains: [{name: math, data: /d/a}, {name: math, data: /d/b}]'
refused "not YAML" 'not valid YAML' 'teacher: [unclosed'
refused "merge search out of range" '\"merge.candidates\" = 0 is outside 1..64' "$base
merge: {weights: search, candidates: 0}"
refused "a search setting without the search" '\"merge.max_tokens\" is a setting of the weight search' "$base
merge: {max_tokens: 512}"
refused "layer blocks without the teacher" 'layer_blocks = 3 needs the teacher' "$base
align: {layer_blocks: 3}"
check "nothing was stored for refused specs" "[ \$(sql 'SELECT count(*) FROM runs') -eq 0 ] && [ \$(sql 'SELECT count(*) FROM jobs') -eq 0 ]"

# a good spec: align in 3 layer blocks (30 layers read from the GGUF), two domains, final distill
cat > "$tmp/spec.yaml" <<YAML
name: spec-test
teacher: $teacher
student: {window: 64, sinks: 4, chunk: 16}
domains:
  - {name: math, data: /data/math, weight: 0.35}
  - {name: chat, data: /data/chat, weight: 0.65}
align: {layer_blocks: 3, steps: 40, seq_len: 64}
distill: {steps: 12, lr: 1e-4}
merge: {weights: search, candidates: 4}
final_distill: {steps: 6, lr: 5e-5}
eval: {tasks: [/tasks/general.jsonl], max_tokens: 1024}
devices: {gpus: 2}
retries: 3
YAML
out=$(request submit --file spec="$tmp/spec.yaml"); rc=$?
run=$(echo "$out" | json "r['body']['run']")
check "a good spec is accepted with its run id" "[ $rc -eq 0 ] && [ -n '$run' ]"
check "the run and its 10 jobs are in the database" "[ \$(sql \"SELECT count(*) FROM jobs WHERE run = '$run'\") -eq 10 ]"
sql "SELECT j.name || ' <- ' || u.name FROM deps d JOIN jobs j ON j.id = d.job JOIN jobs u ON u.id = d.needs ORDER BY j.seq, u.seq" > "$tmp/deps"
cat > "$tmp/deps.expected" <<TXT
align-0 <- init
align-1 <- init
align-2 <- init
align <- align-0
align <- align-1
align <- align-2
distill-math <- align
distill-chat <- align
merge <- distill-math
merge <- distill-chat
final <- merge
eval <- final
TXT
check "the dependencies form the pipeline's DAG" "cmp -s '$tmp/deps' '$tmp/deps.expected'"
[ $fail -eq 0 ] || diff "$tmp/deps.expected" "$tmp/deps"
check "stages, states and devices per job" "[ \"\$(sql \"SELECT group_concat(name || ':' || stage || ':' || state || ':' || gpus, ' ') FROM (SELECT * FROM jobs WHERE run = '$run' ORDER BY seq)\")\" = 'init:init:ready:0 align-0:align:pending:2 align-1:align:pending:2 align-2:align:pending:2 align:merge:pending:0 distill-math:distill:pending:2 distill-chat:distill:pending:2 merge:merge:pending:1 final:distill:pending:2 eval:eval:pending:2' ]"
check "the layer blocks split 30 layers" "sql \"SELECT config FROM jobs WHERE id = '$run/align-2'\" | grep -q 'layers: \"20-29\"' && sql \"SELECT config FROM jobs WHERE id = '$run/align'\" | grep -q 'mode: layers'"
check "configs carry absolute paths under the artifacts" "sql \"SELECT config FROM jobs WHERE id = '$run/distill-chat'\" | grep -q \"student: \\\"$tmp/art/$run/align\\\"\""
check "merge weights are the domains'" "sql \"SELECT config FROM jobs WHERE id = '$run/merge'\" | grep -q 'distill-chat/model\", weight: 0.65}'"
check "the merge searches its weights on one GPU, on the domains' val split" "sql \"SELECT config FROM jobs WHERE id = '\$run/merge'\" | tr '\\n' '|' | grep -q 'weights: search|data:|  - \"/data/math\"|  - \"/data/chat\"|candidates: 4|device: cuda|'"
check "retries from the spec" "[ \$(sql \"SELECT DISTINCT retries FROM jobs WHERE run = '$run'\") -eq 3 ]"

# devices: a CPU-only worker runs init but never a 2-GPU job; a 2-GPU worker gets it with gpus 0,1
start_worker cpu1 --job-ms 200
wait_until 10 "[ \"\$(sql \"SELECT state FROM jobs WHERE id = '$run/init'\")\" = succeeded ]"
sleep 1
check "a CPU-only worker ran init and nothing else" "[ \$(grep -c '^assign' '$tmp/cpu1.log') -eq 1 ] && grep -q '/init init gpus=\$' '$tmp/cpu1.log'"
check "the 2-GPU align blocks wait for a GPU worker" "[ \$(sql \"SELECT count(*) FROM jobs WHERE run = '$run' AND state = 'ready'\") -eq 3 ]"
start_worker gpu2 --gpus 2 --job-ms 200
wait_until 10 "grep -q '^assign .*align-0 align gpus=0,1\$' '$tmp/gpu2.log'"
check "the 2-GPU worker gets an align block with gpus 0,1" "grep -q 'align gpus=0,1\$' '$tmp/gpu2.log'"
check "query shows the run" "request query | json \"[x['id'] for x in r['body']['runs']] == ['$run']\" | grep -q True"

# the shipped GPU preset (deploy/examples) is a valid spec: its eval measures past the window
sed "s|/srv/xdistill/models/SmolLM2-135M-Instruct.Q4_1.gguf|$teacher|" "$(dirname "$0")/../../deploy/examples/gpu-smollm2.yaml" > "$tmp/gpu.yaml"
out=$(request submit --file spec="$tmp/gpu.yaml"); rc=$?
grun=$(echo "$out" | json "r['body']['run']")
check "deploy/examples/gpu-smollm2.yaml is accepted (rc=$rc)" "[ $rc -eq 0 ] && [ -n '$grun' ]"
check "its eval job runs the pass key at 1k-4k on the general text, on a GPU worker" \
  "sql \"SELECT config FROM jobs WHERE id = '\$grun/eval'\" | tr '\\n' '|' | grep -q 'passkey: \"1024,2048,4096\"|.*general:|  - \"/srv/xdistill/shards/general\"|' && [ \"\$(sql \"SELECT gpus FROM jobs WHERE id = '\$grun/eval'\")\" = 1 ]"
stop_coord
check "xcoord stops cleanly on SIGTERM" "[ $coord_rc -eq 0 ]"
[ $fail -eq 0 ] || { cat "$tmp/xcoord.log"; cat "$tmp/evalcfg"; }
exit $fail
