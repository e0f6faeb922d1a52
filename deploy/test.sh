#!/usr/bin/env bash
# Every test, as CI runs them: install the packages, fetch the teacher, then
#   1. the build with warnings as errors, and its ctest;
#   2. the same tests under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the fuzz targets (clang libFuzzer), each for XD_FUZZ_SECONDS (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# The tests' scratch space (students of SmolLM2 are 0.5 GB a copy, several GB at the peak) lives
# beside the build, on the checkout's filesystem, not in /tmp, which may be a small tmpfs.
export TMPDIR="$PWD/build-tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
echo "== space: $(df -Pm . | awk 'NR == 2 { print $4 }') MB free in the checkout, $(df -Pm /tmp | awk 'NR == 2 { print $4 }') MB in /tmp"
bash deploy/install-deps.sh --test
bash deploy/fetch-teacher.sh models

echo "== build (-Werror) and tests"
bash deploy/build.sh
(cd build && ctest --output-on-failure -j"$jobs")

echo "== ASan + UBSan build and tests"
# Every test again under the sanitizers, except the three longest end-to-end runs (the whole local
# pipeline, the cluster with its killed worker and coordinator, and merge's weight search over two
# freshly distilled experts), which ran above: the stages
# and daemons they drive are exercised under ASan by the stage, resume, coordinator and worker
# tests, and running them twice would take CI past 20 minutes on 2 cores. XD_ASAN_ALL=1 runs them.
exclude='^(pipeline_cli|cluster_cli|merge_search_cli)$'
[ "${XD_ASAN_ALL:-0}" = 1 ] && exclude='^$'
# The sanitizers instrument C and the C++ test tools (nvcc's host code is not), so this build
# leaves CUDA out: the CUDA code was compiled, and the SWA kernels' host emulator run, in the build
# above; the mLSTM kernels' emulator (emu_cuda_mlstm, plain C++) runs here again, sanitized.
XD_BUILD_DIR=build-asan bash deploy/build.sh -DXD_SANITIZE=ON -DXD_CUDA=OFF
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$jobs" -E "$exclude")

echo "== fuzz targets"
CC=clang XD_BUILD_DIR=build-fuzz bash deploy/build.sh -DXD_FUZZ=ON -DXD_CUDA=OFF \
  -DXD_FUZZ_SECONDS="${XD_FUZZ_SECONDS:-20}"
(cd build-fuzz && ctest --output-on-failure -L fuzz -j"$jobs")
