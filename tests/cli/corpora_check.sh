#!/bin/sh
# Checks a corpus directory made by deploy/corpora.sh:
#   corpora_check.sh DIR                    checks DIR
#   corpora_check.sh --make XTRAIN MODELS   makes a tiny corpus (0.2 MB a text domain, 2 chat
#                                           prompts) in a temporary directory, then checks it,
#                                           its reuse, and that a rebuild gives the same files
# Checks: SOURCES.md and the completion marker are there and name every domain; each of code,
# math, science and chat holds at least one non-empty file; files are .txt or .jsonl, at most
# 1 MB, valid UTF-8; every .jsonl line is a JSON object with a non-empty "text" (chat: a user
# then an assistant message, both non-empty); with --make, each text domain is within budget.
set -u
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
budget=
tmp=
if [ "${1:-}" = "--make" ]; then
  [ $# -eq 3 ] || { echo "usage: $0 --make XTRAIN MODELS_DIR" >&2; exit 2; }
  xtrain=$2 model=$3/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$model" ] || { echo "FAIL: $model missing (run deploy/fetch-teacher.sh)"; exit 1; }
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  dir=$tmp/corpora budget=200000
  set -- --max-mb 0.2 --chat-prompts 2 --max-new 24 --xtrain "$xtrain" --model "$model"
  bash "$repo/deploy/corpora.sh" "$dir" "$@" > "$tmp/make.log" 2>&1; rc=$?
  cat "$tmp/make.log"
  check "deploy/corpora.sh makes a tiny corpus (rc=$rc)" "[ $rc -eq 0 ]"
  [ $rc -eq 0 ] || exit 1
  bash "$repo/deploy/corpora.sh" "$dir" "$@" > "$tmp/again.log" 2>&1; rc=$?
  check "a second run reuses it (rc=$rc)" "[ $rc -eq 0 ] && grep -q reusing '$tmp/again.log'"
  bash "$repo/deploy/corpora.sh" "$tmp/again" "$@" > /dev/null 2>&1; rc=$?
  check "a rebuild elsewhere gives identical files (rc=$rc)" \
    "[ $rc -eq 0 ] && diff -r '$dir' '$tmp/again' > /dev/null"
  bash "$repo/deploy/corpora.sh" "$tmp/bad" --max-mb x > /dev/null 2> "$tmp/bad.err"; rc=$?
  check "a bad --max-mb is refused with a reason (rc=$rc)" \
    "[ $rc -ne 0 ] && grep -q 'max-mb must be a positive number' '$tmp/bad.err'"
else
  [ $# -eq 1 ] || { echo "usage: $0 DIR | $0 --make XTRAIN MODELS_DIR" >&2; exit 2; }
  dir=$1
fi

check "SOURCES.md is present" "[ -s '$dir/SOURCES.md' ]"
check "the completion marker is present" "[ -s '$dir/.complete' ]"
for d in code math science chat; do
  check "SOURCES.md has a section for $d" "grep -q '^## $d\$' '$dir/SOURCES.md'"
  check "$d holds non-empty files" "[ -n \"\$(find '$dir/$d' -type f -size +0 2>/dev/null)\" ]"
done
python3 - "$dir" "$budget" <<'EOF' || fail=1
import json, os, sys
root, budget = sys.argv[1], sys.argv[2]
bad = []
for domain in ("code", "math", "science", "chat"):
    d = os.path.join(root, domain)
    if not os.path.isdir(d):
        bad.append("%s: missing" % domain)
        continue
    total = docs = 0
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        size = os.path.getsize(path)
        total += size
        if not name.endswith((".txt", ".jsonl")):
            bad.append("%s: neither .txt nor .jsonl" % path)
        if size > 1_000_000:
            bad.append("%s: %d bytes, over 1 MB" % (path, size))
        try:
            text = open(path, "rb").read().decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append("%s: not UTF-8 (%s)" % (path, e))
            continue
        if not name.endswith(".jsonl"):
            docs += bool(text.strip())
            continue
        for n, line in enumerate(text.split("\n")[:-1], 1):
            try:
                rec = json.loads(line)
            except ValueError as e:
                bad.append("%s:%d: not JSON (%s)" % (path, n, e))
                continue
            if domain == "chat":
                m = rec.get("messages") if isinstance(rec, dict) else None
                ok = (isinstance(m, list) and len(m) >= 2 and [x.get("role") for x in m[-2:]] == ["user", "assistant"]
                      and all(isinstance(x.get("content"), str) and x["content"].strip() for x in m))
                what = "user and assistant messages"
            else:
                ok = isinstance(rec, dict) and isinstance(rec.get("text"), str) and rec["text"].strip()
                what = "a non-empty \"text\""
            if not ok:
                bad.append("%s:%d: no %s" % (path, n, what))
            docs += 1
        if not text.endswith("\n"):
            bad.append("%s: the last line has no newline" % path)
    print("%s: %d files, %d documents, %d bytes" % (domain, len(os.listdir(d)), docs, total))
    if docs == 0:
        bad.append("%s: no documents" % domain)
    if budget and domain != "chat" and total > int(budget):
        bad.append("%s: %d bytes, over the %s-byte budget" % (domain, total, budget))
for b in bad[:20]:
    print("  " + b)
print("ok: every file is UTF-8 and every line parses" if not bad else "FAIL: %d problems" % len(bad))
sys.exit(1 if bad else 0)
EOF
[ $fail -eq 0 ] && echo "corpora_check: all passed" || echo "corpora_check: FAILED"
exit $fail
