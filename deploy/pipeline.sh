#!/usr/bin/env bash
# The whole distillation pipeline on this machine (DESIGN 1.2), stage by stage with xtrain:
#   corpora -> prepare (one shard directory per domain) -> init -> align -> distill per domain
#   -> merge (the paper's weights) -> final distill on the mixture -> eval (prints the summary).
# Every stage resumes from its checkpoints when run again; a finished stage (its DONE) is skipped.
#   deploy/pipeline.sh [RUN_DIR (default runs/quickstart)]
# Budgets come from the environment (defaults: a few minutes a stage on 2 cores):
#   XD_CORPUS_MB=1 XD_CHAT_PROMPTS=24 XD_SEQ_LEN=64 XD_BATCH=2 XD_ALIGN_STEPS=40
#   XD_DISTILL_STEPS=12 XD_FINAL_STEPS=6 XD_WINDOW=64 XD_CHUNK=16
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/quickstart}
xtrain=build/stages/xtrain
teacher=$(pwd)/models/SmolLM2-135M-Instruct.Q4_1.gguf
corpus=$(pwd)/data/corpora
seq=${XD_SEQ_LEN:-64} batch=${XD_BATCH:-2}
domains=(code math science chat)
declare -A weight=([math]=0.35 [code]=0.35 [science]=0.20 [chat]=0.10)
[ -x "$xtrain" ] || { echo "pipeline: $xtrain missing: run deploy/build.sh" >&2; exit 1; }
[ -f "$teacher" ] || bash deploy/fetch-teacher.sh models
mkdir -p "$run"
run=$(cd "$run" && pwd)
say() { printf '\n== %s\n' "$*"; }

say "corpora (deploy/corpora.sh: four domains from Debian packages and the teacher's own replies)"
bash deploy/corpora.sh "$corpus" --max-mb "${XD_CORPUS_MB:-1}" --chat-prompts "${XD_CHAT_PROMPTS:-24}"

say "prepare: token shards per domain"
for d in "${domains[@]}"; do
  [ -f "$run/shards/$d/manifest.json" ] || "$xtrain" prepare --tokenizer "$teacher" --out "$run/shards/$d" \
    --domain "$d" --val-fraction 0.1 "$corpus/$d"
done

say "init: the hybrid student"
[ -f "$run/student/config.json" ] || "$xtrain" init --teacher "$teacher" --out "$run/student" \
  --window "${XD_WINDOW:-64}" --chunk "${XD_CHUNK:-16}"

common() { printf 'teacher: %s\nseq_len: %s\nbatch: %s\n' "$teacher" "$seq" "$batch"; }
mixture() { for d in "${domains[@]}"; do printf '  - {path: %s, weight: %s}\n' "$run/shards/$d" "${weight[$d]}"; done; }

say "align: every layer's attention against the teacher's"
{ common; printf 'student: %s\nout: %s\nsteps: %s\nwarmup: 4\ndata:\n' "$run/student" "$run/align" "${XD_ALIGN_STEPS:-40}"; mixture; } > "$run/align.yaml"
[ -f "$run/align/DONE" ] || "$xtrain" align --config "$run/align.yaml"

for d in "${domains[@]}"; do
  say "distill: the $d expert"
  { common; printf 'student: %s\nout: %s\nsteps: %s\nlr: 1e-4\nwarmup: 2\ndata: [%s]\n' "$run/align/model" \
      "$run/distill-$d" "${XD_DISTILL_STEPS:-12}" "$run/shards/$d"; } > "$run/distill-$d.yaml"
  [ -f "$run/distill-$d/DONE" ] || "$xtrain" distill --config "$run/distill-$d.yaml"
done

say "merge: math .35, code .35, science .20, chat .10"
{ printf 'out: %s\nexperts:\n' "$run/merged"; for d in "${domains[@]}"; do
    printf '  - {path: %s, weight: %s}\n' "$run/distill-$d/model" "${weight[$d]}"; done; } > "$run/merge.yaml"
[ -f "$run/merged/config.json" ] || "$xtrain" merge --config "$run/merge.yaml"

say "final distill: the merged student on the mixture"
{ common; printf 'student: %s\nout: %s\nsteps: %s\nlr: 5e-5\nwarmup: 2\ndata:\n' "$run/merged" "$run/final" "${XD_FINAL_STEPS:-6}"; mixture; } > "$run/final.yaml"
[ -f "$run/final/DONE" ] || "$xtrain" distill --config "$run/final.yaml"

say "eval: teacher and student on held-out text per domain and multiple-choice questions"
{ printf 'teacher: %s\nstudent: %s\nout: %s\nseq_len: %s\nmax_tokens: 1024\ndata:\n' "$teacher" "$run/final/model" \
    "$run/report.json" "$seq"; for d in "${domains[@]}"; do printf '  - %s\n' "$run/shards/$d"; done
  printf 'tasks: [%s]\n' "$(pwd)/deploy/tasks/general.jsonl"; } > "$run/eval.yaml"
"$xtrain" eval --config "$run/eval.yaml"
echo
echo "pipeline: done. The student is $run/final/model; the report is $run/report.json."
