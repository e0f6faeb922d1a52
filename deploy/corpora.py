#!/usr/bin/env python3
"""Builds the default per-domain corpora from unpacked Debian packages and the teacher's replies.

Called by deploy/corpora.sh, which downloads and unpacks the packages; only the standard library
is used. Subcommands:

  corpora.py packages                 the Debian packages the text domains come from, one a line
  corpora.py pool-size                how many chat prompts there are to choose from
  corpora.py build --pkgs TSV --out DIR --max-mb N [--chat-prompts N --xtrain X --model M ...]
                                      writes DIR/{code,math,science,chat}/ and DIR/SOURCES.md

Every choice is deterministic: files are listed in sorted order and shuffled with fixed seeds,
so the same packages (and the same teacher) give byte-identical output.
"""
import argparse
import ast
import concurrent.futures
import gzip
import hashlib
import inspect
import json
import os
import random
import re
import subprocess
import sys
import time

MB = 1_000_000          # sizes are decimal megabytes
SHARD_BYTES = 1_000_000  # each output file holds at most this many bytes
MAX_DOC = 64_000        # longer documents are cut at paragraph boundaries into parts
MIN_DOC = 200           # shorter documents are dropped

# ---------------------------------------------------------------------------------------------
# The sources. weight: the share of the domain's budget; a source that cannot fill its share
# passes the rest on to the next one, so each domain ends with its largest source.
# ---------------------------------------------------------------------------------------------
PY = "usr/lib/python3.11"
DIST = "usr/lib/python3/dist-packages"
SOURCES = {
    "code": [
        dict(name="sqlite3-header", pkg="libsqlite3-dev", kind="file", weight=0.16,
             licence="public domain (SQLite)",
             paths=["usr/include/sqlite3.h", "usr/include/sqlite3ext.h"],
             what="the SQLite C API header, its documentation comments included"),
        dict(name="curl-examples", pkg="libcurl4-doc", kind="file", weight=0.12,
             licence="curl (MIT-style)", paths=["usr/share/doc/libcurl4/examples/*.c"],
             what="libcurl example programs in C"),
        dict(name="python-stdlib-core", pkg="libpython3.11-minimal", kind="file", weight=0.22,
             licence="PSF-2.0", paths=[PY + "/**/*.py"], exclude=r"/(encodings|test|tests)/|/_sysconfigdata",
             what="Python 3.11 standard library sources: the core modules"),
        dict(name="python-stdlib", pkg="libpython3.11-stdlib", kind="file", weight=0.50,
             licence="PSF-2.0", paths=[PY + "/**/*.py"],
             exclude=r"/(test|tests|idle_test|encodings)/|/test_[^/]*$|/pydoc_data/|/_sysconfigdata",
             what="Python 3.11 standard library sources"),
    ],
    "math": [
        dict(name="mpmath-docs", pkg="python3-mpmath", kind="pydoc", weight=0.20,
             licence="BSD-3-Clause", paths=[DIST + "/mpmath/**/*.py"], exclude=r"/tests/",
             what="mpmath docstrings: special functions, series, quadrature, with formulas and examples"),
        dict(name="pari-tex", pkg="pari-doc", kind="tex", weight=0.25, licence="GPL-2+",
             paths=["usr/share/pari/doc/tutorial.tex", "usr/share/pari/doc/tutorial-mf.tex",
                    "usr/share/pari/doc/usersch*.tex"],
             what="PARI/GP tutorial and user's guide, TeX sources (number theory, algebra)"),
        dict(name="maxima-manual", pkg="maxima-doc", kind="info", weight=0.20, licence="GPL-2",
             paths=["usr/share/info/maxima.info-*.gz"],
             what="the Maxima computer algebra manual (info text, with 2-D rendered formulas)"),
        dict(name="sympy-docs", pkg="python3-sympy", kind="pydoc", weight=0.35,
             licence="BSD-3-Clause", paths=[DIST + "/sympy/**/*.py"],
             exclude=r"/(tests|benchmarks|_antlr)/|/conftest\.py$",
             what="SymPy docstrings: algebra, calculus, number theory, with doctest examples"),
    ],
    "science": [
        dict(name="units", pkg="units", kind="chunks", weight=0.08,
             licence="GPL-3+ (definitions), GFDL-1.3+ (manual)",
             paths=["usr/share/units/definitions.units", "usr/share/info/units.info.gz"],
             what="GNU units: the commented database of physical units and constants, and its manual"),
        dict(name="r-manuals", pkg="r-doc-info", kind="info", weight=0.15, licence="GPL-2",
             paths=["usr/share/info/R-*.gz"],
             what="the R manuals (introduction to R and statistics, data import, language, internals)"),
        dict(name="man-pages", pkg="manpages", kind="man", weight=0.08,
             licence="Linux man-pages licences (Linux-man-pages-copyleft, GPL-2+, BSD, Expat)",
             paths=["usr/share/man/man4/*.gz", "usr/share/man/man5/*.gz", "usr/share/man/man7/*.gz"],
             what="Linux man pages, sections 4, 5, 7 (devices, file formats, overviews), rendered with groff"),
        dict(name="man-pages-dev", pkg="manpages-dev", kind="man", weight=0.14,
             licence="Linux man-pages licences (Linux-man-pages-copyleft, GPL-2+, BSD, Expat)",
             paths=["usr/share/man/man2/*.gz", "usr/share/man/man3/*.gz"],
             what="Linux man pages, sections 2 and 3 (system calls, C library), rendered with groff"),
        dict(name="octave-manual", pkg="octave-doc", kind="info", weight=0.25, licence="GPL-3+",
             paths=["usr/share/info/octave.info-*.gz"],
             what="the GNU Octave manual: numerical linear algebra, ODEs, statistics, signal processing"),
        dict(name="astropy-docs", pkg="python3-astropy", kind="pydoc", weight=0.30,
             licence="BSD-3-Clause", paths=[DIST + "/astropy/**/*.py"],
             exclude=r"/(tests|extern|_dev)/|/conftest\.py$|/setup_package\.py$",
             what="Astropy docstrings: units, constants, cosmology, coordinates, time, statistics"),
    ],
}


def log(msg):
    print("corpora: " + msg, flush=True)


def die(msg):
    print("corpora: error: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------
CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def clean(text):
    """Unix newlines, no control characters but tab and newline, no trailing blanks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{4,}", "\n\n\n", text).strip("\n")


def nbytes(s):
    return len(s.encode("utf-8"))


def split_long(text, limit=MAX_DOC):
    """Cuts text into parts of at most limit bytes, at blank lines, else at lines, else anywhere."""
    if nbytes(text) <= limit:
        return [text]
    units = []
    for para in text.split("\n\n"):
        if nbytes(para) <= limit:
            units.append(para)
            continue
        for line in para.split("\n"):
            while nbytes(line) > limit:
                cut = line.encode("utf-8")[:limit].decode("utf-8", "ignore")
                units.append(cut)
                line = line[len(cut):]
            units.append(line)
    parts, cur, size = [], [], 0
    for u in units:
        b = nbytes(u) + 2
        if cur and size + b > limit:
            parts.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(u)
        size += b
    if cur:
        parts.append("\n\n".join(cur))
    return [p for p in (q.strip("\n") for q in parts) if p]


def read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---------------------------------------------------------------------------------------------
# Extractors: each turns one file into a list of documents (strings)
# ---------------------------------------------------------------------------------------------
def ex_file(path, rel):
    return split_long(clean(read_text(path)))


def ex_chunks(path, rel):
    return split_long(clean(info_text(read_text(path)) if ".info" in rel else read_text(path)), 16_000)


def ex_pydoc(path, rel):
    """The docstrings of a module, its classes, functions and methods, with their signatures, and
    long module-level string constants (mpmath keeps its function documentation that way)."""
    src = read_text(path)
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    mod = rel.split("dist-packages/", 1)[-1][:-3].replace("/", ".")
    mod = mod[:-len(".__init__")] if mod.endswith(".__init__") else mod
    entries = []
    doc = ast.get_docstring(tree)
    if doc:
        entries.append(doc)

    def sig(node):
        try:
            return ast.unparse(node.args)
        except Exception:  # noqa: BLE001 — a signature is a nicety
            return "..."

    def visit(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_") and node.name != "__init__":
                    continue
                d = ast.get_docstring(node)
                name = prefix + node.name
                if isinstance(node, ast.ClassDef):
                    if d and len(d) >= 40:
                        entries.append("class " + name + "\n\n" + d)
                    visit(node.body, name + ".")
                elif d and len(d) >= 40:
                    entries.append(name + "(" + sig(node) + ")\n\n" + d)
            elif (not prefix and isinstance(node, ast.Assign) and len(node.targets) == 1
                  and isinstance(node.targets[0], ast.Name)
                  and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                  and len(node.value.value) >= 200):
                entries.append(node.targets[0].id + "\n\n" + inspect.cleandoc(node.value.value))

    visit(tree.body, "")
    if not entries:
        return []
    return split_long(clean("Module " + mod + "\n\n" + "\n\n\n".join(entries)))


TEX_SECTION = re.compile(r"^\\(chapter|section|subsec|subsubsec)\b", re.M)


def ex_tex(path, rel):
    """TeX split at its sections; neighbours are merged up to about 2 KB so no part is a stub."""
    text = clean(read_text(path))
    starts = [m.start() for m in TEX_SECTION.finditer(text)]
    bounds = [0] + starts + [len(text)]
    pieces = [text[a:b].strip("\n") for a, b in zip(bounds, bounds[1:]) if text[a:b].strip()]
    docs, cur = [], ""
    for p in pieces:
        cur = cur + "\n\n" + p if cur else p
        if nbytes(cur) >= 2000:
            docs.extend(split_long(cur))
            cur = ""
    if cur:
        docs.extend(split_long(cur))
    return docs


INFO_MENU = re.compile(r"^\* (Menu:|[^\n]*::)", re.M)


def info_text(raw):
    """An info file's nodes as text: no node headers, menus, indices or tag tables."""
    nodes = []
    for node in raw.split("\x1f")[1:]:
        node = node.lstrip("\n")
        head, _, body = node.partition("\n")
        if not head.startswith("File:") or "Index" in head or "Node: Top," in head:
            continue
        lines = [ln for ln in body.split("\n") if not INFO_MENU.match(ln)]
        body = "\n".join(lines).strip("\n")
        if body:
            nodes.append(body)
    return "\n\n\n".join(nodes)


def ex_info(path, rel):
    """One document per info node (short nodes are merged with the next ones)."""
    raw = read_text(path)
    docs, cur = [], ""
    for node in info_text(raw).split("\n\n\n"):
        cur = cur + "\n\n" + node if cur else node
        if nbytes(cur) >= 1500:
            docs.extend(split_long(clean(cur)))
            cur = ""
    if cur:
        docs.extend(split_long(clean(cur)))
    return docs


# Left-justified text: every .ad request (the pages' own too) becomes ".ad l".
MAN_PRELUDE = b".ad l\n.rn ad xd@ad\n.de ad\n.xd@ad l\n..\n"


def ex_man(path, rel):
    """A man page rendered to plain UTF-8 text by groff (no hyphenation, left-justified)."""
    with gzip.open(path, "rb") as f:
        src = f.read()
    if src.lstrip().startswith(b".so ") and src.count(b"\n") <= 2:
        return []  # an alias of another page
    r = subprocess.run(["groff", "-k", "-t", "-man", "-Tutf8", "-rHY=0", "-P-cbou"],
                       input=MAN_PRELUDE + src, capture_output=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    if r.returncode != 0:
        return []
    return split_long(clean(r.stdout.decode("utf-8", "replace")))


EXTRACTORS = dict(file=ex_file, chunks=ex_chunks, pydoc=ex_pydoc, tex=ex_tex, info=ex_info,
                  man=ex_man)


# ---------------------------------------------------------------------------------------------
# Filling a domain
# ---------------------------------------------------------------------------------------------
def glob_files(root, patterns, exclude):
    import glob as g
    out = set()
    for pat in patterns:
        for p in g.glob(os.path.join(root, pat), recursive=True):
            if os.path.isfile(p) and not os.path.islink(p):
                rel = os.path.relpath(p, root)
                if not (exclude and re.search(exclude, "/" + rel)):
                    out.add(rel)
    return sorted(out)


class ShardWriter:
    def __init__(self, directory, prefix):
        self.dir, self.prefix = directory, prefix
        os.makedirs(directory, exist_ok=True)
        self.n, self.f, self.size, self.files = 0, None, 0, []

    def write(self, line):
        b = line.encode("utf-8")
        if self.f is None or self.size + len(b) > SHARD_BYTES:
            if self.f:
                self.f.close()
            name = "%s-%03d.jsonl" % (self.prefix, self.n)
            self.n += 1
            self.files.append(name)
            self.f = open(os.path.join(self.dir, name), "wb")
            self.size = 0
        self.f.write(b)
        self.size += len(b)

    def close(self):
        if self.f:
            self.f.close()


def doc_line(text, source, extra=None):
    rec = {"text": text, "source": source}
    if extra:
        rec.update(extra)
    return json.dumps(rec, ensure_ascii=False) + "\n"


def build_domain(domain, pkgs, out_dir, budget):
    lines, stats, carry = [], [], 0.0
    for src in SOURCES[domain]:
        pkg = src["pkg"]
        if pkg not in pkgs:
            die("package %s (for %s/%s) was not unpacked" % (pkg, domain, src["name"]))
        version, root = pkgs[pkg]
        quota = src["weight"] * budget + carry
        files = glob_files(root, src["paths"], src.get("exclude"))
        if not files:
            die("%s %s has no files matching %s" % (pkg, version, " ".join(src["paths"])))
        rng = random.Random("xdistill/%s/%s" % (domain, src["name"]))
        rng.shuffle(files)
        extract = EXTRACTORS[src["kind"]]
        # Documents from files whose sections should be mixed (TeX, info, chunks) are shuffled
        # as a whole; others are taken file by file, extracted only when reached.
        if src["kind"] in ("tex", "info", "chunks"):
            units = [(rel, d) for rel in files for d in extract(os.path.join(root, rel), rel)]
            rng.shuffle(units)
            stream = iter(units)
        else:
            stream = ((rel, d) for rel in files for d in extract(os.path.join(root, rel), rel))
        used, ndocs, used_files, misses = 0, 0, set(), 0
        parts = {}
        for rel, text in stream:
            if nbytes(text) < MIN_DOC:
                continue
            parts[rel] = parts.get(rel, 0) + 1
            line = doc_line(text, "%s:/%s" % (pkg, rel) + ("#%d" % parts[rel] if parts[rel] > 1 else ""))
            b = nbytes(line)
            if used + b <= quota:
                lines.append(line)
                used += b
                ndocs += 1
                used_files.add(rel)
                misses = 0
            else:
                misses += 1
                if quota - used < 4000 or misses >= 200:
                    break
        carry = quota - used
        stats.append(dict(domain=domain, name=src["name"], pkg=pkg, version=version,
                          licence=src["licence"], what=src["what"],
                          paths=src["paths"], files_total=len(files), files=len(used_files),
                          docs=ndocs, bytes=used))
        log("%-8s %-20s %-22s %4d of %4d files, %5d docs, %.2f MB"
            % (domain, src["name"], pkg, len(used_files), len(files), ndocs, used / MB))
    # The sources are interleaved, so any prefix of the files is a sample of the whole domain.
    random.Random("xdistill/%s" % domain).shuffle(lines)
    writer = ShardWriter(os.path.join(out_dir, domain), domain)
    for line in lines:
        writer.write(line)
    writer.close()
    return stats, writer.files


# ---------------------------------------------------------------------------------------------
# Chat: the teacher's replies to a fixed, shuffled pool of prompts
# ---------------------------------------------------------------------------------------------
TOPICS = [
    "composting", "learning a second language", "public libraries", "electric cars",
    "sleep hygiene", "personal budgeting", "volcanoes", "the water cycle", "jazz music",
    "chess", "working from home", "baking bread", "birdwatching", "recycling plastics",
    "photosynthesis", "the Roman Empire", "training for a marathon", "meditation",
    "solar panels", "video game design", "origami", "honeybees", "public speaking",
    "time management", "brewing coffee", "the printing press", "urban gardening",
    "basic first aid", "the Moon landings", "houseplants", "cycling to work",
    "saving for retirement", "board games", "writing poetry", "moving to a new city",
    "job interviews", "dinosaurs", "vaccines", "renewable energy", "camping", "learning to swim",
    "knitting", "the Olympic Games", "podcasts", "volunteering", "museums",
    "weather forecasts", "minimalism", "adopting a pet", "healthy breakfasts",
]
TEMPLATES = [
    "Explain {t} to a ten-year-old in a few sentences.",
    "What are three common misconceptions about {t}?",
    "Give me a short, practical checklist for getting started with {t}.",
    "Write a friendly two-paragraph introduction to {t}.",
    "What are the main pros and cons of {t}?",
    "Summarize the history of {t} in a few sentences.",
    "What questions should a beginner ask an expert about {t}?",
    "Tell me an interesting fact about {t} and why it matters.",
]
FREESTANDING = [
    "Hi! How are you today?",
    "Can you recommend a good kind of book for a long flight?",
    "Write a haiku about autumn rain.",
    "My friend is sad because her cat is sick. What could I say to her?",
    "Tell me a short joke about computers.",
    "Suggest a name for a small neighbourhood bakery.",
    "How do I politely decline an invitation to a party?",
    "Plan a simple three-day meal plan for a vegetarian.",
    "Write a short thank-you note to a teacher.",
    "What should I pack for a weekend hiking trip?",
    "Help me write a birthday message for my grandmother.",
    "Suggest five fun activities for a rainy afternoon.",
    "What's the difference between weather and climate?",
    "How can I stop procrastinating?",
    "Describe a sunset over the ocean in three sentences.",
    "Give me a riddle and its answer.",
    "What are some good questions to ask when meeting new colleagues?",
    "I have eggs, spinach and cheese. What can I cook for dinner?",
    "How do I apologise to a friend after an argument?",
    "Write a four-line poem about a cat who loves boxes.",
    "What is a good way to start learning to draw?",
    "Can you explain what a budget is in simple words?",
    "I'm nervous about my first day at a new job. Any advice?",
    "Give me three ideas for a short story.",
    "What are some easy ways to drink more water during the day?",
    "How do I keep a conversation going with someone I just met?",
    "What is the best way to memorise a short speech?",
    "Write a polite email asking my landlord to fix a leaking tap.",
    "Why is the sky blue?",
    "What makes a good friend?",
    "Recommend a simple stretching routine for people who sit all day.",
    "How can I make my small apartment feel bigger?",
    "Tell me a fun fact about octopuses.",
    "What should I consider before buying a used bicycle?",
    "Write a short motivational message for someone studying for exams.",
    "How do I teach a child to tie their shoes?",
    "What are good habits for keeping a tidy desk?",
    "Can you help me plan a surprise party for my brother?",
    "Explain the rules of tic-tac-toe.",
    "What is a polite way to ask someone to speak more slowly?",
]


def chat_prompts():
    pool = [tpl.format(t=t) for t in TOPICS for tpl in TEMPLATES] + FREESTANDING
    random.Random("xdistill/chat/prompts").shuffle(pool)
    return pool


TEMPERATURE, TOP_P = 0.7, 0.9
SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)|\n")
LIST_MARK = re.compile(r"(\n[ \t]*([0-9]+[.)]|[-*•]))+$")  # a list item with nothing after it


def trim_unfinished(reply):
    """A reply cut by the token limit ends at its last complete sentence (when most is kept)."""
    last = None
    for m in SENTENCE_END.finditer(reply):
        last = m.end()
    if last and last >= 0.4 * len(reply):
        reply = reply[:last]
    return LIST_MARK.sub("", reply.rstrip()).rstrip()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def generate(xtrain, model, prompt, seed, max_new, cache_file):
    if os.path.exists(cache_file):
        with open(cache_file, encoding="utf-8") as f:
            return json.load(f), True
    t0 = time.time()
    cmd = [xtrain, "generate", "--model", model, "--chat", "--prompt", prompt,
           "--max-new", str(max_new), "--temperature", str(TEMPERATURE), "--top-p", str(TOP_P),
           "--seed", str(seed)]
    r = subprocess.run(cmd, capture_output=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    if r.returncode != 0:
        raise RuntimeError("xtrain generate failed (exit %d) for prompt %r: %s"
                           % (r.returncode, prompt, r.stderr.decode("utf-8", "replace").strip()))
    m = re.search(r"(\d+) new tokens", r.stderr.decode("utf-8", "replace"))
    new_tokens = int(m.group(1)) if m else -1
    reply = r.stdout.decode("utf-8", "ignore").strip()
    res = dict(reply=reply, new_tokens=new_tokens, finished=0 <= new_tokens < max_new,
               seconds=round(time.time() - t0, 2))
    tmp = cache_file + ".tmp.%d" % os.getpid()
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=False)
    os.replace(tmp, cache_file)
    return res, False


def build_chat(args, out_dir):
    prompts = chat_prompts()
    n = args.chat_prompts
    if n > len(prompts):
        die("--chat-prompts %d: the pool has %d prompts" % (n, len(prompts)))
    model_sha = sha256_file(args.model)
    cache = os.path.join(args.cache, "chat")
    os.makedirs(cache, exist_ok=True)
    jobs = []
    for i, prompt in enumerate(prompts[:n]):
        seed = 1 + i
        key = json.dumps([prompt, seed, TEMPERATURE, TOP_P, args.max_new, model_sha])
        jobs.append((i, prompt, seed, os.path.join(cache, hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")))
    log("chat: %d prompts, up to %d new tokens each, temperature %g, top-p %g, %d at a time"
        % (n, args.max_new, TEMPERATURE, TOP_P, args.jobs))
    results = [None] * n
    t0, done, cached = time.time(), 0, 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as ex:
        futs = {ex.submit(generate, args.xtrain, args.model, p, s, args.max_new, c): i
                for i, p, s, c in jobs}
        for fut in concurrent.futures.as_completed(futs):
            i = futs[fut]
            try:
                res, hit = fut.result()
            except RuntimeError as e:
                for f in futs:
                    f.cancel()
                die(str(e))
            results[i] = res
            done += 1
            cached += hit
            el = time.time() - t0
            fresh = done - cached
            eta = (el / fresh) * (n - done) if fresh else 0
            log("chat %3d/%d  prompt %d: %s%d tokens  elapsed %ds  eta %ds"
                % (done, n, i + 1, "cached, " if hit else "", res["new_tokens"], el, eta))
    writer = ShardWriter(os.path.join(out_dir, "chat"), "chat")
    ndocs, used, unfinished = 0, 0, 0
    for (i, prompt, seed, _), res in zip(jobs, results):
        reply = res["reply"] if res["finished"] else trim_unfinished(res["reply"])
        unfinished += not res["finished"]
        if not reply:
            continue
        rec = {"messages": [{"role": "user", "content": prompt},
                            {"role": "assistant", "content": reply}],
               "source": "teacher:%s" % os.path.basename(args.model),
               "meta": {"seed": seed, "temperature": TEMPERATURE, "top_p": TOP_P,
                        "max_new": args.max_new, "new_tokens": res["new_tokens"],
                        "truncated": not res["finished"]}}
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        writer.write(line)
        used += nbytes(line)
        ndocs += 1
    writer.close()
    stat = dict(domain="chat", name="teacher-chat", pkg="(generated)", version=model_sha[:12],
                licence="Apache-2.0 (the teacher, SmolLM2-135M-Instruct); the prompts are this project's",
                what="%s's replies to %d prompts from a fixed pool of %d (topics x task templates plus "
                     "free-standing requests), temperature %g, top-p %g, seeds 1..%d, at most %d new tokens; "
                     "%d replies hit the limit and were cut at their last full sentence"
                     % (os.path.basename(args.model), n, len(prompts), TEMPERATURE, TOP_P, n,
                        args.max_new, unfinished),
                paths=[os.path.basename(args.model)], files_total=1, files=1, docs=ndocs, bytes=used)
    log("chat     %d conversations, %.3f MB, %d cut at the token limit, %.0f s"
        % (ndocs, used / MB, unfinished, time.time() - t0))
    return [stat], writer.files


# ---------------------------------------------------------------------------------------------
# SOURCES.md
# ---------------------------------------------------------------------------------------------
def write_sources(out_dir, stats, files, args):
    lines = ["# Sources of the default corpora", "",
             "Made by `deploy/corpora.sh` (see docs/corpora.md) with `--max-mb %g --chat-prompts %d "
             "--max-new %d`. Every line of every .jsonl file names its package and file in its "
             "`source` field (`package:/path`, `#N` for the N-th part of a long file). Sizes are "
             "the bytes of the JSON lines, in MB of 10^6 bytes." % (args.max_mb, args.chat_prompts, args.max_new),
             ""]
    for domain in ("code", "math", "science", "chat"):
        ds = [s for s in stats if s["domain"] == domain]
        lines += ["## %s" % domain, ""]
        if not ds:
            lines += ["(not built: --chat-prompts 0)", ""]
            continue
        tot_b = sum(s["bytes"] for s in ds)
        tot_d = sum(s["docs"] for s in ds)
        lines += ["%.2f MB, %d documents, in %s." % (tot_b / MB, tot_d, ", ".join(files[domain])), "",
                  "| source | Debian package (version) | licence | files used | documents | MB |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for s in ds:
            if s["pkg"] == "(generated)":
                pv, used = "none: the teacher's output (model sha256 %s...)" % s["version"], "-"
            else:
                pv, used = "%s (%s)" % (s["pkg"], s["version"]), "%d of %d" % (s["files"], s["files_total"])
            lines.append("| %s | %s | %s | %s | %d | %.2f |"
                         % (s["name"], pv, s["licence"], used, s["docs"], s["bytes"] / MB))
        lines.append("")
        for s in ds:
            lines.append("- **%s**: %s; from `%s`." % (s["name"], s["what"], "`, `".join(s["paths"])))
        lines.append("")
    with open(os.path.join(out_dir, "SOURCES.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def cmd_build(args):
    pkgs = {}
    with open(args.pkgs, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                name, version, root = line.rstrip("\n").split("\t")
                pkgs[name] = (version, root)
    budget = args.max_mb * MB
    stats, files = [], {}
    for domain in ("code", "math", "science"):
        s, fl = build_domain(domain, pkgs, args.out, budget)
        stats += s
        files[domain] = fl
    if args.chat_prompts > 0:
        s, fl = build_chat(args, args.out)
        stats += s
        files["chat"] = fl
    write_sources(args.out, stats, files, args)
    with open(os.path.join(args.out, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("packages")
    sub.add_parser("pool-size")
    b = sub.add_parser("build")
    b.add_argument("--pkgs", required=True, help="TSV: package, version, unpacked root")
    b.add_argument("--out", required=True)
    b.add_argument("--max-mb", type=float, required=True)
    b.add_argument("--chat-prompts", type=int, default=0)
    b.add_argument("--max-new", type=int, default=96)
    b.add_argument("--jobs", type=int, default=1)
    b.add_argument("--xtrain")
    b.add_argument("--model")
    b.add_argument("--cache")
    args = ap.parse_args()
    if args.cmd == "packages":
        print("\n".join(sorted({s["pkg"] for srcs in SOURCES.values() for s in srcs})))
    elif args.cmd == "pool-size":
        print(len(chat_prompts()))
    else:
        cmd_build(args)


if __name__ == "__main__":
    main()
