#!/usr/bin/env bash
# Held-out general English prose for `xtrain eval`'s `general` key: The Debian Administrator's
# Handbook (Debian package debian-handbook, CC-BY-SA-3.0 / GPL-2+), one document per chapter,
# as plain text. No training domain (code, math, science, chat) draws on it, so the student's
# agreement with the teacher there is not a measure of what it was fine-tuned on; its chapters run
# to thousands of tokens, long enough to see perplexity past a 512-token window.
#   deploy/general-text.sh [OUT_DIR (default data/general)] [--cache DIR]
# Writes OUT_DIR/handbook.jsonl ({"text": ..., "source": ...} a line); idempotent.
set -euo pipefail
out=data/general
cache=${XD_CORPORA_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/xdistill/corpora}
while [ $# -gt 0 ]; do
  case $1 in
    --cache) [ $# -ge 2 ] || { echo "general-text: --cache needs a value" >&2; exit 2; }; cache=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "general-text: unknown flag $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -s "$out/handbook.jsonl" ] && { echo "general-text: $out/handbook.jsonl exists"; exit 0; }
mkdir -p "$cache" "$out"
deb=$(ls "$cache"/debian-handbook_*.deb 2> /dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
  (cd "$cache" && apt-get download debian-handbook > /dev/null) || { echo "general-text: apt-get download debian-handbook failed" >&2; exit 1; }
  deb=$(ls "$cache"/debian-handbook_*.deb | head -n 1)
fi
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
python3 - "$root/usr/share/doc/debian-handbook/html/en-US" "$out/handbook.jsonl.tmp" <<'PY'
import html.parser, json, os, re, sys
src, dst = sys.argv[1], sys.argv[2]
class Text(html.parser.HTMLParser):
    skip = {"script", "style", "head", "title"}
    block = {"p", "div", "li", "pre", "h1", "h2", "h3", "h4", "h5", "tr", "br", "dt", "dd", "table"}
    def __init__(self):
        super().__init__(convert_charrefs=True); self.out = []; self.depth = 0; self.nav = 0
    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag in self.skip: self.depth += 1
        if tag == "div" and ("navheader" in cls or "navfooter" in cls or "toc" in cls): self.nav += 1
        elif tag == "div" and self.nav: self.nav += 1
        if tag in self.block: self.out.append("\n")
    def handle_endtag(self, tag):
        if tag in self.skip: self.depth -= 1
        if tag == "div" and self.nav: self.nav -= 1
        if tag in self.block: self.out.append("\n")
    def handle_data(self, data):
        if not self.depth and not self.nav: self.out.append(data)
n = 0
with open(dst, "w") as f:
    for name in sorted(os.listdir(src)):
        if not name.endswith(".html") or name in ("index.html",): continue
        p = Text(); p.feed(open(os.path.join(src, name), encoding="utf-8").read())
        text = re.sub(r"[ \t]+", " ", "".join(p.out))
        text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
        if len(text) < 2000: continue
        f.write(json.dumps({"text": text, "source": "debian-handbook:" + name}) + "\n"); n += 1
print(f"general-text: {n} chapters")
PY
mv "$out/handbook.jsonl.tmp" "$out/handbook.jsonl"
echo "general-text: $out/handbook.jsonl ($(du -h "$out/handbook.jsonl" | cut -f1))"
