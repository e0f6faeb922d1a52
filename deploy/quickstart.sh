#!/usr/bin/env bash
# The main job on the embedded default, on a fresh Debian 12 machine: install the packages, build,
# fetch the default teacher (SmolLM2-135M-Instruct), and chat with it.
#   deploy/quickstart.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=${1:-"Explain in two sentences what a lighthouse does."}
bash deploy/install-deps.sh
bash deploy/build.sh
bash deploy/fetch-teacher.sh models
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
echo
echo "== perplexity of tests/data/english.txt under the teacher"
build/stages/xtrain ppl --model "$model" --text tests/data/english.txt
echo
echo "== chat: $prompt"
build/stages/xtrain generate --model "$model" --chat --prompt "$prompt" --max-new 200
