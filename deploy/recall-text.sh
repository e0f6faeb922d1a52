#!/usr/bin/env bash
# A long-range recall domain made from the text domains of deploy/corpora.sh: each document is a
# passage, then other text, then the same passage again. The teacher predicts the repeat almost
# perfectly by looking back (its induction heads); a student can do the same only through its
# mLSTM once the gap is longer than its window, so distilling on these documents is a signal for
# using context beyond the window, which ordinary short documents rarely give.
#   deploy/recall-text.sh CORPORA_DIR [OUT_DIR (default CORPORA_DIR/../recall)] [--max-mb N]
#                         [--passage-chars MIN,MAX] [--gap-chars MIN,MAX] [--seed S]
# Passages are 800 to 1600 characters and gaps 2500 to 12000 by default (about 200 to 400 and 700
# to 3500 tokens of SmolLM2's tokenizer: past a window of 512); scale both with the window. Writes OUT_DIR/recall-000.jsonl ({"text", "source"}).
set -euo pipefail
src= out= max_mb=4 gap=2500,12000 passage=800,1600 seed=1
while [ $# -gt 0 ]; do
  case $1 in
    --max-mb) max_mb=$2; shift 2 ;;
    --gap-chars) gap=$2; shift 2 ;;
    --passage-chars) passage=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "recall-text: unknown flag $1" >&2; exit 2 ;;
    *) if [ -z "$src" ]; then src=$1; elif [ -z "$out" ]; then out=$1; else echo "recall-text: too many arguments" >&2; exit 2; fi; shift ;;
  esac
done
[ -n "$src" ] && [ -d "$src" ] || { echo "recall-text: CORPORA_DIR (made by deploy/corpora.sh) is required" >&2; exit 2; }
out=${out:-$src/../recall}
mkdir -p "$out"
python3 - "$src" "$out/recall-000.jsonl" "$max_mb" "$gap" "$seed" "$passage" <<'PY'
import json, os, random, sys
src, dst, max_mb, gap, seed, passage = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
try:
    gmin, gmax = (int(x) for x in gap.split(","))
    pmin, pmax = (int(x) for x in passage.split(","))
except ValueError:
    sys.exit("recall-text: --gap-chars and --passage-chars take MIN,MAX (whole numbers)")
if not (0 < gmin <= gmax and 0 < pmin <= pmax): sys.exit("recall-text: each MIN,MAX needs 0 < MIN <= MAX")
docs = []
for domain in ("code", "math", "science"):
    d = os.path.join(src, domain)
    if not os.path.isdir(d): continue
    for name in sorted(os.listdir(d)):
        if name.endswith(".jsonl"):
            for line in open(os.path.join(d, name), encoding="utf-8"):
                t = json.loads(line).get("text", "")
                if len(t) >= 1000: docs.append(t)
if len(docs) < 10: sys.exit(f"recall-text: {src} has too few documents ({len(docs)})")
rng = random.Random(seed)
budget, written, n = int(max_mb * 1e6), 0, 0
with open(dst + ".tmp", "w", encoding="utf-8") as f:
    while written < budget:
        doc = rng.choice(docs)
        plen = rng.randint(pmin, pmax)
        start = rng.randint(0, max(0, len(doc) - plen))
        passage = doc[start:start + plen]
        want, parts = rng.randint(gmin, gmax), []
        while sum(len(p) for p in parts) < want:
            other = rng.choice(docs)
            o = rng.randint(0, max(0, len(other) - 3000))
            parts.append(other[o:o + 3000])
        middle = "\n\n".join(parts)[:want]
        text = passage + "\n\n" + middle + "\n\n" + passage
        line = json.dumps({"text": text, "source": f"recall:{n}"}, ensure_ascii=False) + "\n"
        f.write(line); written += len(line.encode()); n += 1
os.replace(dst + ".tmp", dst)
print(f"recall-text: {n} documents, {written / 1e6:.2f} MB in {dst}")
PY
