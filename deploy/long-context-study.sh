#!/usr/bin/env bash
# The long-context study of docs/results.md: what makes the student hold up past its window.
# Arms share the teacher, the data and the budgets and differ in one thing each; every arm runs
# init -> align -> eval -> distill -> eval on one GPU, several arms at once (the steps are
# launch-bound, so arms side by side use the GPU better than one after another).
#   deploy/long-context-study.sh OUT_DIR SHARDS_DIR [ARM...]
# SHARDS_DIR holds code/ math/ science/ (deploy/corpora.sh), recall/ (deploy/recall-text.sh) and
# general/ (deploy/general-text.sh), each prepared with xtrain prepare. Arms (default: all):
#   base     the defaults: b_f 3..6, align and distill on code+math+science, distill 0.9 CE + 0.1 KL, lr 1e-4
#   kl       base's align; distill on the KL alone (ce_weight 0, kl_weight 1)
#   lr5      base's align; distill at lr 1e-5 (the paper's)
#   fgate    b_f spread 3..12 over the heads (memory from ~20 to ~160k tokens)
#   recall   the recall domain (passages repeated past the window) mixed into align and distill
#   fgate-recall  both
# Environment: XTRAIN (default build/stages/xtrain), TEACHER (default models/SmolLM2-...gguf),
# XD_PARALLEL (arms at once, default 3), XD_ALIGN_STEPS (250), XD_DISTILL_STEPS (150), XD_SEQ (2048),
# XD_BATCH (8), XD_WINDOW (512), XD_EVAL_SEQ (4096), XD_EVAL_TOKENS (16384), XD_PASSKEY (1024,2048,4096),
# XD_PASSKEY_SAMPLES (8), XD_DEVICE (cuda).
set -uo pipefail
out=${1:?usage: long-context-study.sh OUT_DIR SHARDS_DIR [ARM...]} shards=${2:?SHARDS_DIR}
shift 2
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(base fgate recall fgate-recall kl lr5)
xtrain=${XTRAIN:-build/stages/xtrain} teacher=${TEACHER:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
seq=${XD_SEQ:-2048} batch=${XD_BATCH:-8} window=${XD_WINDOW:-512}
mkdir -p "$out"
log() { echo "[$(date +%T)] $*" | tee -a "$out/study.log"; }

data() { # the mixture, with the recall domain for the recall arms
  printf 'data:\n'
  for d in code math science; do printf '  - {path: %s/%s, weight: 1}\n' "$shards" "$d"; done
  case $1 in *recall*) printf '  - {path: %s/recall, weight: 1}\n' "$shards" ;; esac
}
evaluate() { # ARM_DIR STUDENT NAME
  cat > "$1/eval-$3.yaml" <<YAML
teacher: $teacher
student: $2
out: $1/eval-$3.json
general: [$shards/general]
seq_len: ${XD_EVAL_SEQ:-4096}
max_tokens: ${XD_EVAL_TOKENS:-16384}
passkey: "${XD_PASSKEY:-1024,2048,4096}"
passkey_samples: ${XD_PASSKEY_SAMPLES:-8}
tasks: [deploy/tasks/general.jsonl]
device: ${XD_DEVICE:-cuda}
YAML
  "$xtrain" eval --config "$1/eval-$3.yaml" > "$1/eval-$3.log" 2>&1
}
align() { # ARM_DIR ARM
  local fb=3,6
  case $2 in fgate*) fb=3,12 ;; esac
  "$xtrain" init --teacher "$teacher" --out "$1/student" --window "$window" --forget-bias "$fb" > "$1/init.log" 2>&1 || return 1
  { printf 'teacher: %s\nstudent: %s\nout: %s\nseq_len: %s\nbatch: %s\nsteps: %s\nwarmup: 20\n' "$teacher" \
      "$1/student" "$1/align" "$seq" "$batch" "${XD_ALIGN_STEPS:-250}"
    printf 'checkpoint_every: 100000\nkeep_checkpoints: 1\ndevice: %s\n' "${XD_DEVICE:-cuda}"; data "$2"; } > "$1/align.yaml"
  "$xtrain" align --config "$1/align.yaml" > "$1/align.log" 2>&1 || return 1
  evaluate "$1" "$1/align/model" align
}
distill() { # ARM_DIR ARM STUDENT
  local ce=0.9 kl=0.1 lr=1e-4
  case $2 in kl) ce=0 kl=1 ;; lr5) lr=1e-5 ;; esac
  { printf 'teacher: %s\nstudent: %s\nout: %s\nseq_len: %s\nbatch: %s\nmicro_batch: 2\nsteps: %s\n' "$teacher" \
      "$3" "$1/distill" "$seq" "$batch" "${XD_DISTILL_STEPS:-150}"
    printf 'lr: %s\nwarmup: 10\nce_weight: %s\nkl_weight: %s\ncheckpoint_every: 100000\nkeep_checkpoints: 1\ndevice: %s\n' \
      "$lr" "$ce" "$kl" "${XD_DEVICE:-cuda}"; data "$2"; } > "$1/distill.yaml"
  "$xtrain" distill --config "$1/distill.yaml" > "$1/distill.log" 2>&1 || return 1
  evaluate "$1" "$1/distill/model" final
}
arm() {
  local a=$1 dir=$out/$1 t0=$SECONDS
  mkdir -p "$dir"
  case $a in
    kl|lr5) # distill from base's aligned student
      while [ ! -f "$out/base/align/DONE" ]; do [ -f "$out/base/FAILED" ] && { log "$a: base failed"; return 1; }; sleep 5; done
      distill "$dir" "$a" "$out/base/align/model" ;;
    *) align "$dir" "$a" && distill "$dir" "$a" "$dir/align/model" ;;
  esac
  local rc=$?
  [ $rc -eq 0 ] || touch "$dir/FAILED"
  log "$a: rc $rc after $((SECONDS - t0)) s"
}
log "study: arms ${arms[*]}; align ${XD_ALIGN_STEPS:-250} x $batch x $seq, distill ${XD_DISTILL_STEPS:-150} x $batch x $seq, window $window"
running=0
for a in "${arms[@]}"; do
  arm "$a" &
  running=$((running + 1))
  if [ $running -ge "${XD_PARALLEL:-3}" ]; then wait -n; running=$((running - 1)); fi
done
wait
log "study: done"
