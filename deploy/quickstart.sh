#!/usr/bin/env bash
# The main job on the embedded default, on a fresh Debian 12 machine: install the packages, build,
# fetch the default teacher (SmolLM2-135M-Instruct), then run the whole distillation pipeline
# locally (deploy/pipeline.sh): corpora, shards, init, align, four domain experts, merge, final
# distill, eval — ending with the eval summary. Budgets: see deploy/pipeline.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
bash deploy/fetch-teacher.sh models
bash deploy/pipeline.sh "${1:-runs/quickstart}"
