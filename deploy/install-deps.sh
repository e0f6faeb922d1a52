#!/usr/bin/env bash
# Installs the Debian 12 packages xdistill builds and tests with. Idempotent: packages already
# present are left alone, and apt is not touched when nothing is missing.
# usage: install-deps.sh [--test]   (--test: also what only the tests need, e.g. a browser)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git python3 python3-pip
  clang libclang-rt-dev          # the libFuzzer targets and the sanitizer runtime
  libopenblas-dev                # fp32 matrix products on the CPU
  libjansson-dev                 # JSON: config.json, tokenizer.json, metrics, reports
  libutf8proc-dev                # Unicode categories and NFC for the tokenizers' pre-tokenisers
  libyaml-dev                    # stage configuration files
  libmsgpack-dev                 # the wire messages between coordinator, workers and clients
  libzmq3-dev                    # ZeroMQ: the coordinator's ROUTER socket, CURVE security
  libuv1-dev                     # the coordinator's event loop
  libsqlite3-dev sqlite3         # the coordinator's database (the CLI for the tests' checks)
  libhttp-parser-dev             # the dashboard's HTTP/1.1 request parser
  libjs-chart.js                 # Chart.js, embedded into the dashboard at build time
  unzip ca-certificates
)
test_packages=(
  chromium                       # tests/browser: the dashboard in headless Chromium
  curl                           # tests/cli/http_api.sh
)
if [ "${1:-}" = --test ]; then packages+=("${test_packages[@]}"); fi

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
