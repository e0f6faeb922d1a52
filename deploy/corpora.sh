#!/usr/bin/env bash
# Assembles the embedded default corpora — code, math, science/technical and chat — from Debian
# packages and from the teacher's own replies, into OUT_DIR (default data/corpora):
#   OUT_DIR/{code,math,science,chat}/*.jsonl   one {"text": ..., "source": ...} a line (chat:
#                                             {"messages": [user, assistant], ...}), files <= 1 MB
#   OUT_DIR/SOURCES.md                        packages, versions, licences, sizes, document counts
#
#   deploy/corpora.sh [OUT_DIR] [--max-mb N] [--chat-prompts N] [--max-new N] [--jobs N]
#                     [--xtrain PATH] [--model PATH] [--cache DIR] [--force]
#
# Idempotent: a complete earlier run with the same settings (OUT_DIR/.complete, written last) is
# reused. Deterministic: the same packages and teacher give the same files. The source packages
# are fetched with `apt-get download` into a cache and unpacked there (slim images drop
# /usr/share/doc and /usr/share/man on install, and nothing needs root); the teacher's replies are
# cached too, by prompt, seed, settings and the model's sha256. docs/corpora.md says more.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
say() { echo "corpora: $*"; }
die() { echo "corpora: error: $*" >&2; exit 1; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

out=
max_mb=4
chat_prompts=64
max_new=96
jobs=$(nproc 2>/dev/null || echo 1)
xtrain=
model=
cache=${XD_CORPORA_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/xdistill/corpora}
force=0
while [ $# -gt 0 ]; do
  case $1 in
    --max-mb) [ $# -ge 2 ] || die "--max-mb needs a value"; max_mb=$2; shift 2 ;;
    --chat-prompts) [ $# -ge 2 ] || die "--chat-prompts needs a value"; chat_prompts=$2; shift 2 ;;
    --max-new) [ $# -ge 2 ] || die "--max-new needs a value"; max_new=$2; shift 2 ;;
    --jobs) [ $# -ge 2 ] || die "--jobs needs a value"; jobs=$2; shift 2 ;;
    --xtrain) [ $# -ge 2 ] || die "--xtrain needs a value"; xtrain=$2; shift 2 ;;
    --model) [ $# -ge 2 ] || die "--model needs a value"; model=$2; shift 2 ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a value"; cache=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown flag $1 (see --help)" ;;
    *) [ -z "$out" ] || die "one OUT_DIR only (got '$out' and '$1')"; out=$1; shift ;;
  esac
done
out=${out:-data/corpora}
if ! [[ $max_mb =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || ! awk -v m="$max_mb" 'BEGIN { exit !(m > 0) }'; then
  die "--max-mb must be a positive number of MB (got '$max_mb')"
fi
[[ $chat_prompts =~ ^[0-9]+$ ]] || die "--chat-prompts must be a whole number (got '$chat_prompts')"
[[ $max_new =~ ^[1-9][0-9]*$ ]] || die "--max-new must be a positive whole number (got '$max_new')"
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive whole number (got '$jobs')"

# --- reuse a complete run with the same settings -------------------------------------------------
# The settings a corpus is made with, as recorded in its marker.
make_key() {
  local m k
  k="corpora v1; max-mb $max_mb; chat-prompts $chat_prompts; max-new $max_new"
  k+="; scripts $(cat "$here/corpora.sh" "$here/corpora.py" | sha256sum | cut -c1-16)"
  if [ "$chat_prompts" -gt 0 ]; then
    m=${model:-${XD_MODELS:-$repo/models}/SmolLM2-135M-Instruct.Q4_1.gguf}
    k+="; teacher $(basename "$m") $(stat -c %s "$m" 2>/dev/null || echo missing)"
  fi
  printf '%s' "$k"
}
key=$(make_key)
if [ $force -eq 0 ] && [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$key" ]; then
  say "$out is complete with these settings; reusing it (--force rebuilds)"
  exit 0
fi
if [ -e "$out" ] && [ ! -f "$out/.complete" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  die "$out exists, is not empty and is not a corpus made by this script; choose another OUT_DIR"
fi

# --- tools: installed like deploy/install-deps.sh does, only when missing ----------------------
tools=(python3 groff-base)   # groff renders the man pages; dpkg and apt are always there
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_updated=0
apt_update() {
  [ $apt_updated -eq 1 ] && return 0
  say "apt-get update"
  $SUDO apt-get update -q > /dev/null || die "apt-get update failed"
  apt_updated=1
}
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_update
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null \
    || die "cannot install ${missing[*]}"
fi
pool=$(python3 "$here/corpora.py" pool-size) || die "deploy/corpora.py does not run"
[ "$chat_prompts" -le "$pool" ] || die "--chat-prompts $chat_prompts: there are $pool prompts to choose from"

# --- the teacher, for the chat domain ------------------------------------------------------------
if [ "$chat_prompts" -gt 0 ]; then
  if [ -z "$model" ]; then
    model=${XD_MODELS:-$repo/models}/SmolLM2-135M-Instruct.Q4_1.gguf
    if [ ! -f "$model" ]; then
      say "the teacher is missing: running deploy/fetch-teacher.sh"
      bash "$repo/deploy/fetch-teacher.sh" "$(dirname "$model")" || die "cannot fetch the teacher"
    fi
  fi
  [ -f "$model" ] || die "no teacher model at $model (deploy/fetch-teacher.sh fetches it)"
  if [ -z "$xtrain" ]; then
    xtrain=$repo/build/stages/xtrain
    if [ ! -x "$xtrain" ]; then
      say "$xtrain is not built: building the xtrain target"
      { cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null \
          && cmake --build "$repo/build" -j"$jobs" --target xtrain > /dev/null; } \
        || die "cannot build xtrain; run deploy/install-deps.sh and deploy/build.sh, or pass --xtrain PATH"
    fi
  fi
  [ -x "$xtrain" ] || die "xtrain not found or not executable: $xtrain (deploy/build.sh builds it)"
fi

# --- the source packages: downloaded into the cache, unpacked there ------------------------------
mapfile -t packages < <(python3 "$here/corpora.py" packages)
debs=$cache/debs
mkdir -p "$debs" "$cache/root"
# "package version" for each package apt can install (one apt-cache call: each costs a second)
candidates() {
  apt-cache policy "$@" 2>/dev/null \
    | awk '/^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) } /^  Candidate:/ && $2 != "(none)" { print p, $2 }'
}
declare -A version=()
while read -r p v; do version[$p]=$v; done < <(candidates "${packages[@]}")
if [ ${#version[@]} -lt ${#packages[@]} ]; then
  apt_update
  while read -r p v; do version[$p]=$v; done < <(candidates "${packages[@]}")
fi
pkgs_tsv=$(mktemp)
stage=
cleanup() { rm -f "$pkgs_tsv"; [ -z "$stage" ] || rm -rf "$stage"; }
trap cleanup EXIT
for p in "${packages[@]}"; do
  v=${version[$p]:-}
  [ -n "$v" ] || die "Debian package $p is not in the apt lists (apt-get update did not help)"
  fv=${v//:/%3a}
  deb=$(find "$debs" -maxdepth 1 -name "${p}_${fv}_*.deb" | sort | head -n 1)
  if [ -z "$deb" ]; then
    say "downloading $p $v"
    find "$debs" -maxdepth 1 -name "${p}_*.deb" -delete   # older versions
    (cd "$debs" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$p=$v" > /dev/null) \
      || die "apt-get download $p=$v failed"
    deb=$(find "$debs" -maxdepth 1 -name "${p}_${fv}_*.deb" | sort | head -n 1)
    [ -n "$deb" ] || die "apt-get download $p=$v left no ${p}_${fv}_*.deb in $debs"
  fi
  root=$cache/root/${p}_$fv
  if [ ! -f "$root/.unpacked" ]; then
    rm -rf "$root" "$root.part"
    dpkg-deb -x "$deb" "$root.part" || die "cannot unpack $deb"
    touch "$root.part/.unpacked"
    mv "$root.part" "$root"
  fi
  printf '%s\t%s\t%s\n' "$p" "$v" "$root" >> "$pkgs_tsv"
done
say "${#packages[@]} source packages ready in $cache"

# --- build into a staging directory, then put it in place ----------------------------------------
parent=$(dirname "$out")
mkdir -p "$parent"
stage=$(mktemp -d "$parent/.corpora.tmp.XXXXXX")
chmod 755 "$stage"   # mktemp makes it private
say "building $out: up to $max_mb MB per text domain, $chat_prompts chat prompts"
start=$SECONDS
build=(python3 "$here/corpora.py" build --pkgs "$pkgs_tsv" --out "$stage" --max-mb "$max_mb"
       --chat-prompts "$chat_prompts" --max-new "$max_new" --jobs "$jobs" --cache "$cache")
[ "$chat_prompts" -eq 0 ] || build+=(--xtrain "$xtrain" --model "$model")
"${build[@]}" || die "building the corpora failed (see above)"
make_key > "$stage/.complete"   # the teacher may have been fetched meanwhile
rm -rf "$out"
mv "$stage" "$out"
stage=
say "done in $((SECONDS - start)) s: $(du -sh --exclude=.complete "$out" | cut -f1) in $out (see $out/SOURCES.md)"
