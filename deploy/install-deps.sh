#!/usr/bin/env bash
# Installs the Debian 12 packages xdistill builds and tests with. Idempotent: packages already
# present are left alone, and apt is not touched when nothing is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git python3 python3-pip
  clang libclang-rt-dev          # the libFuzzer targets and the sanitizer runtime
  libopenblas-dev                # fp32 matrix products on the CPU
  libjansson-dev                 # JSON: config.json, tokenizer.json, metrics, reports
  libutf8proc-dev                # Unicode categories and NFC for the tokenizers' pre-tokenisers
  libyaml-dev                    # stage configuration files
  libmsgpack-dev                 # the wire messages between coordinator, workers and clients
  libzmq3-dev                    # ZeroMQ (with CURVE): xworker and xctl to the coordinator
  libuv1-dev                     # the worker's event loop: socket, timers, child process, signals
  unzip ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
