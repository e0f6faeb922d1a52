#!/usr/bin/env python3
"""Builds the tokenizer fixtures in tests/data/tokenizer/ with the Hugging Face `tokenizers`
library as the reference (pip install tokenizers gguf jinja2).

  smollm2_gguf.json   expected ids of TRICKY for SmolLM2-135M-Instruct, whose tokenizer is rebuilt
                      from the teacher GGUF's vocabulary and merges with SmolLM2's pre-tokenizer,
                      plus ChatML prompts rendered with the GGUF's jinja template.
  llama3/, qwen2/,    tiny tokenizers trained here, shaped like the real Llama-3, Qwen2 and
  llama2/             Llama-2 tokenizer.json files (same normalizer / pre_tokenizer / decoder /
                      post_processor structure), each with tokenizer.json, tokenizer_config.json,
                      expected.json and a tokenizer.gguf holding the same vocabulary as GGUF
                      metadata (llama2: "llama" model with scores).

Usage: python3 tests/golden/make_tokenizer_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import json
import os
import sys

import gguf
import jinja2.sandbox
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "tokenizer")
DEFAULT_GGUF = os.path.join(HERE, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

PAT_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PAT_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TRICKY = [
    "Hello world",
    "Hello, world! How's it going? I'm fine; you'll see, we'd've done it.",
    "DON'T SHOUT. It'S ok, they'RE here. 'quoted' and 'sup 'ſ \u017ftill",
    "don't won't can't shouldn't've y'all's",
    "  leading spaces",
    "trailing spaces   ",
    "   ",
    " ",
    "\n",
    "\n\n\n",
    "a\n\nb",
    "line1\r\nline2\r\n",
    "\t\ttabbed\tcode",
    "def f(x):\n    if x > 0:\n        return x ** 2\n\treturn -1  # comment\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n}\n",
    "    for i in range(10):\n        print(i)  \n\n\n    pass",
    "12345",
    "3.14159 and 1,000,000 and x=-12.5e+10",
    "in 2024 and 1999, call 555-0123",
    "\u0663\u0664\u0665 \u0661\u0662 \u00bd \u00b2 \u2167",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",
    "cafe\u0301 A\u030angstro\u0308m",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c \uc548\ub155\ud558\uc138\uc694",
    "I \u2764\ufe0f \U0001f355 and \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family \U0001f1eb\U0001f1f7",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd",
    "a \u00a0b\u3000c\u2003d\u00a0",
    "word \n word",
    "x  \n  y",
    "space before newline \n",
    "  \n\n  \t ",
    "!!!???...---",
    "...\n\n",
    "a.\r\n\r\nb",
    "(hello) [world] {x} <y>",
    "Zero\u200bwidth\u200djoiner \u2028sep\u2029",
    "ctrl\x01\x7f\x1b[0m",
    "\ufb01 ligature \U0001d518\U0001d52b\U0001d526 math",
    "supercalifragilisticexpialidocious" * 3,
    "<|im_start|>user\nHi there<|im_end|>\n",
    "text<|endoftext|>more",
    "<|im_start|><|im_end|>",
    "<|im_start no end",
    "<s>hello</s> <unk>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<tool_call>{\"a\": 1}</tool_call>",
]

CORPUS = """The quick brown fox jumps over the lazy dog. It's a sunny day, isn't it?
We'll see what they've done; I'd rather not say. You're right, they're here.
Tokenizers split text into pieces: words, numbers like 12345 and 3.14, and punctuation!!!
def main():
    for i in range(10):
        print(f"value {i}: {i * i}")
    return 0

int add(int a, int b) {
\treturn a + b;
}
The distillation of language models transfers knowledge from a teacher to a student.
Training uses the cross-entropy loss and the KL divergence between the output distributions.
café, naïve, résumé, Ångström, façade, jalapeño, über, Straße.
你好世界。这是一个测试。我们正在训练一个小的分词器。
こんにちは、世界。日本語のテキストです。
مرحبا بالعالم. هذا اختبار.
Hello hello HELLO world world WORLD the the the and and and of of to to in in.
    indented line with spaces
\t\tindented with tabs
multiple\n\nnewlines\r\nand carriage returns
http://example.com/path?query=1&other=2 user@example.com #hashtag @mention
"""


def corpus_lines():
    lines = CORPUS.splitlines() * 3
    return lines + TRICKY


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


def encodings(tok, strings):
    """ids with special tokens parsed (the default) and not parsed."""
    tok.encode_special_tokens = False
    parsed = [tok.encode(s, add_special_tokens=False).ids for s in strings]
    tok.encode_special_tokens = True
    raw = [tok.encode(s, add_special_tokens=False).ids for s in strings]
    tok.encode_special_tokens = False
    return parsed, raw


def render_chat(template, messages, add_generation_prompt, **kw):
    # The environment transformers' apply_chat_template uses.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt, **kw)


CHATS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Arr, matey."},
      {"role": "user", "content": "Where's the treasure?\nTell me."}], True),
    ([{"role": "user", "content": "Hi"}], False),
    ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], True),
    ([], True),
]


def chat_fixture(template, tok):
    out = []
    for msgs, gen in CHATS:
        try:
            text = render_chat(template, msgs, gen)
        except jinja2.exceptions.UndefinedError:
            continue  # Qwen2.5's template needs a first message
        out.append({"messages": msgs, "add_generation_prompt": gen, "text": text,
                    "ids": tok.encode(text, add_special_tokens=False).ids})
    return out


# ------------------------------------------------------------------ SmolLM2 from the GGUF

def gguf_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def gguf_scalar(reader, key):
    f = reader.fields[key]
    return f.contents()


def smollm2(gguf_path):
    r = gguf.GGUFReader(gguf_path)
    assert gguf_scalar(r, "tokenizer.ggml.pre") == "smollm"
    tokens = gguf_strings(r, "tokenizer.ggml.tokens")
    tt = r.fields["tokenizer.ggml.token_type"]
    types = [int(tt.parts[i][0]) for i in tt.data]
    merges = [tuple(m.split(" ", 1)) for m in gguf_strings(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    parsed, raw = encodings(tok, TRICKY)
    template = gguf_scalar(r, "tokenizer.chat_template")
    write_json(os.path.join(OUT, "smollm2_gguf.json"), {
        "strings": TRICKY, "ids": parsed, "ids_raw": raw,
        "chat": chat_fixture(template, tok)})
    # A full tokenizer.json for checking the tokenizer.json loader by hand (not committed).
    if os.environ.get("XD_SMOLLM2_JSON"):
        os.makedirs(os.environ["XD_SMOLLM2_JSON"], exist_ok=True)
        tok.save(os.path.join(os.environ["XD_SMOLLM2_JSON"], "tokenizer.json"))


# ------------------------------------------------------------------ trained byte-level ones

def byte_level(name, pattern, nfc, specials, added, bos, config, gguf_pre):
    tok = Tokenizer(models.BPE(ignore_merges=(name == "llama3")))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=(name == "llama3"),
                                 use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(), trainer)
    # Real Llama-3 / Qwen2 keep their special tokens after the BPE vocabulary, as added tokens.
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in added])
    if bos:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    tok.save(path)
    if name == "llama3":
        # Llama-3's file has merges as "a b" strings (the older format): test both.
        j = json.load(open(path, encoding="utf-8"))
        j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
        write_json(path, j)
        tok = Tokenizer.from_file(path)
    write_json(os.path.join(d, "tokenizer_config.json"), config)
    parsed, raw = encodings(tok, TRICKY)
    exp = {"strings": TRICKY, "ids": parsed, "ids_raw": raw,
           "with_bos": tok.encode("Hello world").ids}
    if "chat_template" in config:
        exp["chat"] = chat_fixture(config["chat_template"], tok)
    if name == "llama3":
        # The same vocabulary behind the GPT-2 and the SmolLM2 pre-tokenizers: the C test swaps
        # them in and checks these.
        for key, pre in [("gpt2", pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)),
                         ("smollm", pre_tokenizers.Sequence([
                             pre_tokenizers.Digits(individual_digits=True),
                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]))]:
            v = Tokenizer.from_str(tok.to_str())
            v.pre_tokenizer = pre
            exp[key] = [v.encode(s, add_special_tokens=False).ids for s in TRICKY]
    write_json(os.path.join(d, "expected.json"), exp)

    # The same tokenizer as GGUF metadata.
    vocab = tok.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    tokens = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    types = [1] * n
    for i, at in tok.get_added_tokens_decoder().items():
        types[i] = 3 if at.special else 4
    merges = [" ".join(m) if isinstance(m, list) else m
              for m in json.loads(tok.to_str())["model"]["merges"]]
    w = gguf.GGUFWriter(os.path.join(d, "tokenizer.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(gguf_pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if bos:
        w.add_bos_token_id(tok.token_to_id(bos))
        w.add_add_bos_token(True)
    else:
        w.add_add_bos_token(False)
    eos = config.get("eos_token")
    if eos:
        w.add_eos_token_id(tok.token_to_id(eos))
    if "chat_template" in config:
        w.add_chat_template(config["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


QWEN25_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n    {{- \"\\n\\n# Tools\" }}\n    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"<|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n")


# ------------------------------------------------------------------ Llama-2 style (SentencePiece)

def llama2():
    # Train on words the way SentencePiece sees them (▁ in front, split at ▁) ...
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                         prepend_scheme="always", split=True)
    # Trained without the test strings, so their rarer scripts and emoji fall back to bytes.
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False)
    trainer_tok.train_from_iterator(CORPUS.splitlines() * 3, trainer)
    trained = sorted(trainer_tok.get_vocab().items(), key=lambda kv: kv[1])
    # ... then lay the vocabulary out as Llama-2's: <unk> <s> </s>, 256 byte tokens, the pieces.
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    tokens += [t for t, _ in trained if t not in tokens]
    vocab = {t: i for i, t in enumerate(tokens)}
    # SentencePiece scores: later pieces score lower. HF's converter makes a merge of every way a
    # piece splits into two pieces, ordered by the piece's score: do the same.
    scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(len(tokens) - 259)]
    merges = []
    for i, t in enumerate(tokens[259:], start=259):
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in vocab and b in vocab and vocab[a] >= 259 and vocab[b] >= 259:
                merges.append((vocab[t], vocab[a], vocab[b], a, b))
    merges.sort()
    merges = [(a, b) for _, _, _, a, b in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<unk>", "<s>", "</s>"]])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    d = os.path.join(OUT, "llama2")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False,
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False,
                      "normalized": False, "rstrip": False, "single_word": False},
        "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False,
                      "normalized": False, "rstrip": False, "single_word": False},
        "unk_token": "<unk>", "legacy": True, "tokenizer_class": "LlamaTokenizer"})
    parsed, raw = encodings(tok, TRICKY)
    exp = {"strings": TRICKY, "ids": parsed, "ids_raw": raw,
           "with_bos": tok.encode("Hello world").ids,
           "decoded": [tok.decode(ids, skip_special_tokens=False) for ids in parsed]}
    # Newer conversions use a Metaspace pre-tokenizer instead of the normalizer: the C test swaps
    # it in and checks these.
    for key, scheme, split in [("metaspace_first", "first", False),
                               ("metaspace_always_split", "always", True)]:
        v = Tokenizer.from_str(tok.to_str())
        v.normalizer = None
        v.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme,
                                                   split=split)
        exp[key] = [v.encode(s, add_special_tokens=False).ids for s in TRICKY]
    write_json(os.path.join(d, "expected.json"), exp)

    types = [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259)
    w = gguf.GGUFWriter(os.path.join(d, "tokenizer.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF
    smollm2(gguf_path)
    byte_level("llama3", PAT_LLAMA3, False,
               ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"], [], "<|begin_of_text|>",
               {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, "llama-bpe")
    byte_level("qwen2", PAT_QWEN2, True, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
               ["<tool_call>", "</tool_call>"], None,
               {"add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>", "chat_template": QWEN25_TEMPLATE}, "qwen2")
    llama2()


if __name__ == "__main__":
    main()
