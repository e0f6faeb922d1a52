#!/usr/bin/env bash
# Configures and builds xdistill into build/ (or $XD_BUILD_DIR) with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${XD_BUILD_DIR:-build}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXD_WERROR=ON "$@" > "$dir.configure.log" 2>&1 \
  || { cat "$dir.configure.log"; exit 1; }
grep -E '^-- xdistill:' "$dir.configure.log" || true
cmake --build "$dir" -j"$(nproc)"
