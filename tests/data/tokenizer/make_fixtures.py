#!/usr/bin/env python3
"""Writes the tokenizer test fixtures of tests/data/test_tokenizer*.cpp (run offline; the outputs are committed).

Trains nothing. From a real byte-level BPE tokenizer.json (Qwen3's, Apache-2.0; Qwen2/Qwen2-MoE use the same
vocabulary and merges) it keeps the first --merges merges plus the merges that build a few hundred tokens of
interest (CJK, accented letters, emoji pieces, words of the test texts), with their original relative ranks:
  bpe_bytelevel.json   {"model": BPE over GPT-2's byte-to-unicode alphabet}
  bpe_metaspace.json   {"model": the same vocabulary as text, " " as "▁", <unk> <s> </s> and the 256 <0xXX> byte
                        tokens first, as Llama 2 / Mistral lay theirs out; only tokens that are whole UTF-8}
  variants.json        the tokenizer configurations tested (normalizer, pre_tokenizer, post_processor, decoder,
                        added_tokens, model options) in the styles of GPT-2/OLMoE, Qwen2, Llama 3, DeepSeek,
                        Llama 2/Mixtral, and ones that exercise every Split behavior and added-token flag
  texts.json           the texts: hand-picked edge cases and seeded random strings over many scripts
The expected ids and decodings (reference.json) come from make_reference.js, which runs the tokenizers
library itself (npm package "tokenizers", the Rust library's Node binding) on the same JSON.

usage: make_fixtures.py QWEN_TOKENIZER_JSON [--merges 3000] [--out DIR]
"""
import argparse
import json
import os
import random


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()
U2B = {c: b for b, c in B2U.items()}


def to_bytes(token):
    return bytes(U2B[c] for c in token)


def to_mapped(data):
    return "".join(B2U[b] for b in data)


def prune(model, keep_merges, interesting):
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    result_of = {}
    for rank, (a, b) in enumerate(merges):
        result_of.setdefault(a + b, rank)
    chosen = set(range(min(keep_merges, len(merges))))

    def need(token):
        rank = result_of.get(token)
        if rank is None or rank in chosen:
            return
        chosen.add(rank)
        need(merges[rank][0])
        need(merges[rank][1])

    for text in interesting:
        mapped = to_mapped(text.encode("utf-8"))
        for i in range(len(mapped)):
            for j in range(i + 1, min(len(mapped), i + 12) + 1):
                if mapped[i:j] in model["vocab"]:
                    need(mapped[i:j])
    for rank in list(chosen):
        for part in merges[rank]:
            need(part)
    kept = [merges[r] for r in sorted(chosen)]
    tokens = {B2U[b] for b in range(256)}
    for a, b in kept:
        tokens.update((a, b, a + b))
    for t in tokens:
        assert t in model["vocab"], t
    # ids in the original order, renumbered densely
    order = sorted(tokens, key=lambda t: model["vocab"][t])
    return {t: i for i, t in enumerate(order)}, kept


def metaspace_model(vocab, merges):
    """The byte-level vocabulary as text ("▁" for spaces), for sentencepiece-style BPE with byte fallback."""
    specials = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    text_of = {}
    for t in vocab:
        try:
            s = to_bytes(t).decode("utf-8")
        except UnicodeDecodeError:
            continue
        text_of[t] = s.replace(" ", "\u2581")
    out = {s: i for i, s in enumerate(specials)}
    for t in sorted(text_of, key=lambda t: vocab[t]):
        s = text_of[t]
        if s not in out:
            out[s] = len(out)
    kept = []
    seen = set()
    for a, b in merges:
        if a in text_of and b in text_of and (a + b) in text_of:
            pair = (text_of[a], text_of[b])
            if pair not in seen:
                seen.add(pair)
                kept.append(pair)
    return out, kept


QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
DEEPSEEK_V3_SPLITS = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
]


def bytelevel(add_prefix_space=False, use_regex=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": False, "use_regex": use_regex}


def split(pattern, behavior="Isolated", invert=False, literal=False):
    return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern}, "behavior": behavior,
            "invert": invert}


def added(content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False):
    return {"content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def template(bos=None, eos=None):
    single, specials = [], {}
    if bos:
        single.append({"SpecialToken": {"id": bos, "type_id": 0}})
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    if eos:
        single.append({"SpecialToken": {"id": eos, "type_id": 0}})
    for t in filter(None, [bos, eos]):
        specials[t] = {"id": t, "ids": ["@" + t], "tokens": [t]}  # "@token": the id, filled in later
    return {"type": "TemplateProcessing", "single": single,
            "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": specials}


QWEN_ADDED = [added("<|endoftext|>"), added("<|im_start|>"), added("<|im_end|>"),
              added("<tool_call>", special=False), added("</tool_call>", special=False),
              added("<think>", special=False), added("</think>", special=False)]
LLAMA_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
    {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
LLAMA_ADDED = [added("<unk>"), added("<s>"), added("</s>")]


def variants():
    bl_dec = bytelevel()
    return [
        # byte level
        {"name": "gpt2", "base": "bpe_bytelevel.json", "pre_tokenizer": bytelevel(False, True),
         "post_processor": bytelevel(False, True), "decoder": bl_dec, "added_tokens": [added("<|endoftext|>")]},
        {"name": "gpt2_prefix_space", "base": "bpe_bytelevel.json", "pre_tokenizer": bytelevel(True, True),
         "decoder": bl_dec, "added_tokens": [added("<|endoftext|>")]},
        {"name": "olmoe_neox", "base": "bpe_bytelevel.json", "normalizer": {"type": "NFC"},
         "pre_tokenizer": bytelevel(False, True), "decoder": bl_dec,
         "post_processor": template(eos="<|endoftext|>"),
         "added_tokens": [added("<|endoftext|>"), added("<|padding|>")] +
                         [added(" " * n, special=False, normalized=True) for n in (2, 3, 4, 8)] +
                         [added("|||EMAIL_ADDRESS|||", special=False, normalized=True)]},
        {"name": "qwen2", "base": "bpe_bytelevel.json", "normalizer": {"type": "NFC"},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(QWEN_SPLIT), bytelevel()]},
         "post_processor": bytelevel(), "decoder": bl_dec, "added_tokens": QWEN_ADDED},
        {"name": "llama3", "base": "bpe_bytelevel.json", "model": {"ignore_merges": True},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), bytelevel()]},
         "post_processor": {"type": "Sequence", "processors": [bytelevel(True), template(bos="<|begin_of_text|>")]},
         "decoder": bl_dec, "added_tokens": [added("<|begin_of_text|>"), added("<|end_of_text|>"),
                                             added("<|eot_id|>")]},
        {"name": "deepseek_v3", "base": "bpe_bytelevel.json", "normalizer": {"type": "Sequence", "normalizers": []},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(p) for p in DEEPSEEK_V3_SPLITS] + [bytelevel()]},
         "post_processor": template(bos="<\uff5cbegin\u2581of\u2581sentence\uff5c>"), "decoder": bl_dec,
         "added_tokens": [added("<\uff5cbegin\u2581of\u2581sentence\uff5c>"), added("<\uff5cend\u2581of\u2581sentence\uff5c>"),
                          added("<think>", special=False, normalized=True),
                          added("<\uff5cUser\uff5c>", special=False, normalized=True)]},
        {"name": "deepseek_llm", "base": "bpe_bytelevel.json",
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
             split("[\r\n]"), split(r"\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba]+"),
             split(r"\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"), split(r"\s+$"),
             split("[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"), {"type": "Digits", "individual_digits": True},
             bytelevel()]},
         "post_processor": template(bos="<\uff5cbegin\u2581of\u2581sentence\uff5c>"), "decoder": bl_dec,
         "added_tokens": [added("<\uff5cbegin\u2581of\u2581sentence\uff5c>"), added("<\uff5cend\u2581of\u2581sentence\uff5c>")]},
        {"name": "split_behaviors", "base": "bpe_bytelevel.json", "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": r"\d+"}, "content": "#"}]},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
             split(" ", "MergedWithPrevious", literal=True), split(r"\p{P}+", "MergedWithNext"),
             split(r"[aeiou]", "Contiguous"), split(r"x+", "Removed"), split(r"[^\s]+", "Removed", invert=True),
             {"type": "Digits", "individual_digits": False}, bytelevel(True, True)]},
         "decoder": bl_dec, "added_tokens": []},
        {"name": "empty_matches", "base": "bpe_bytelevel.json",
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
             split(r"[a-z]*", "MergedWithNext"), split(r"e|(?=o)", "MergedWithNext"), split(r"(?=[A-Z])", "MergedWithPrevious"),
             split(r"^\s*\p{L}", "Isolated"), split(r"\p{P}$", "MergedWithPrevious"), split(r"\d*", "Contiguous"),
             split(r"\u00e9|\x{4e2d}|\x41", "Isolated"), bytelevel()]},
         "decoder": bl_dec, "added_tokens": []},
        {"name": "added_flags", "base": "bpe_bytelevel.json", "normalizer": {"type": "NFD"},
         "pre_tokenizer": bytelevel(False, True), "decoder": bl_dec,
         "added_tokens": [added("<mask>", lstrip=True), added("<r>", special=False, rstrip=True),
                          added("[WORD]", special=False, single_word=True), added("Ġthe", special=False),
                          added("caf\u00e9", special=False, normalized=True), added("<mask>x", rstrip=True, lstrip=True)]},
        # sentencepiece style
        {"name": "llama2", "base": "bpe_metaspace.json",
         "model": {"unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True},
         "normalizer": {"type": "Sequence", "normalizers": [
             {"type": "Prepend", "prepend": "\u2581"},
             {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
         "post_processor": template(bos="<s>"), "decoder": LLAMA_DECODER, "added_tokens": LLAMA_ADDED},
        {"name": "mixtral_metaspace", "base": "bpe_metaspace.json",
         "model": {"unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True},
         "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
         "post_processor": template(bos="<s>"), "decoder": LLAMA_DECODER, "added_tokens": LLAMA_ADDED},
        {"name": "metaspace_split_always", "base": "bpe_metaspace.json",
         "model": {"unk_token": "<unk>", "fuse_unk": False, "byte_fallback": True},
         "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
         "post_processor": template(bos="<s>", eos="</s>"),
         "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}]},
         "added_tokens": LLAMA_ADDED + [added("<pad>", lstrip=True, rstrip=True)]},
        {"name": "metaspace_unk", "base": "bpe_metaspace.json",
         "model": {"unk_token": "<unk>", "fuse_unk": False, "byte_fallback": False},
         "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
         "decoder": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
         "added_tokens": LLAMA_ADDED},
        {"name": "metaspace_unk_fused", "base": "bpe_metaspace.json",
         "model": {"unk_token": "<unk>", "fuse_unk": True, "byte_fallback": False},
         "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True},
         "added_tokens": LLAMA_ADDED},
    ]


HAND_TEXTS = [
    "", " ", "  ", "Hello world", "Hello, world! How are you doing today?", " leading space", "trailing space ",
    "multiple   spaces\tand\ttabs", "line one\nline two\r\nline three\n\n\nend", "\n", "\t \n ",
    "I'm sure they'll say it's what we've done, don't you? I'LL IT'S ſ", "'s 're 'S",
    "numbers 1 12 123 1234 12345 1234567890 3.14159 1,000,000", "٣٤٥ ١٢٣ 123 Ⅻ ½ ² １２３",
    "你好世界，这是一个测试。中文没有空格", "こんにちは、カタカナとひらがな。", "안녕하세요 세계",
    "emoji 👍🏽🎉 family 👨‍👩‍👧 flag 🇫🇷", "e\u0301 vs \u00e9, A\u030a vs \u00c5, \u1e9b\u0323", "\u0301leading combining mark",
    "Ελληνικά και русский текст", "العربية والعبرية עברית", "हिन्दी देवनागरी", "ﬁ ligature Ｆｕｌｌ　ｗｉｄｔｈ",
    "\u00a0nbsp\u00a0\u2028ls\u2029ps\u0085nel\u180emvs\u200bzwsp\u3000ideo", "\x00\x01\x7f controls \x1b[0m",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "a<|endoftext|>b",
    "<think>reasoning</think> answer", "<s>hello</s> <s> x", "<unk>", "▁ already ▁metaspace▁", "<0x41> <0xZZ>",
    "KELVIN K and Kelvin K", "x" * 300, "supercalifragilisticexpialidocious " * 3, "the the the the",
    "a <mask> b<mask>c  <mask>   d <mask>x e", "<r>   after <r>x", "[WORD] a[WORD] [WORD]b x [WORD] y",
    "café cafe\u0301 Ġthe the", "  \u00a0  |||EMAIL_ADDRESS|||  x", "a  b   c    d         e",
    "<｜begin▁of▁sentence｜>Hi<｜User｜>yo", "1+1=2; x*y/z; (a,b) [c] {d} <e> 'f' \"g\" `h`", "foo.bar_baz-qux@example.com",
    "https://example.org/path?q=1&r=2#frag", "def f(x):\n    return x ** 2\n\n\tpass  \n", "ends with spaces   ",
    "ends with newline\n", "   ", "\u3000\u3000", "Ａｂｃ１２３", "<pad> padded <pad>", "mixed日本語English한국어123",
    "tab\there", "\r", "\r\n\r\n", "xxx yyy xxx", "...!!!???", "a.b,c;d:e", "CamelCaseWordsHere and snake_case_here",
]

SCRIPTS = [
    (0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E), (0x30, 0x39), (0xA0, 0x17F), (0x300, 0x36F), (0x370, 0x3FF),
    (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00),
    (0x1F300, 0x1F64F), (0x2000, 0x206F), (0xFF00, 0xFF5E), (0x1D400, 0x1D4FF),
]


def finalize(variant, vocab):
    """Gives the added tokens the ids the library gives them (the model's id of the same token, else the next
    id after the vocabulary) and puts those ids into the template's special_tokens."""
    next_id = len(vocab)
    ids = {}
    for t in variant.get("added_tokens", []):
        if t["content"] in ids:
            t["id"] = ids[t["content"]]
        elif t["content"] in vocab:
            t["id"] = vocab[t["content"]]
        else:
            t["id"] = next_id
            next_id += 1
        ids[t["content"]] = t["id"]
    variant["added_tokens"] = [dict(id=t.pop("id"), **t) for t in variant.get("added_tokens", [])]

    def fill(pp):
        if not pp:
            return
        for p in pp.get("processors", []):
            fill(p)
        for spec in pp.get("special_tokens", {}).values():
            spec["ids"] = [ids[i[1:]] if isinstance(i, str) else i for i in spec["ids"]]

    fill(variant.get("post_processor"))
    return variant


def random_texts(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            if kind < 0.15:
                parts.append(rng.choice([" ", "  ", "\n", "\t", " \n ", "\r\n", "   "]))
            elif kind < 0.25:
                parts.append(rng.choice(["<|endoftext|>", "<s>", "</s>", "<mask>", "<|im_end|>", "▁", "'s", "'LL",
                                         "<0x0A>", "[WORD]", "<r>", "  ", "café"]))
            else:
                lo, hi = rng.choice(SCRIPTS)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qwen_tokenizer_json")
    ap.add_argument("--merges", type=int, default=3000)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    with open(args.qwen_tokenizer_json, encoding="utf-8") as f:
        src = json.load(f)
    texts = HAND_TEXTS + random_texts(150, seed=20240501)
    interesting = ["的是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里用道行所然家种事",
                   "éèêàçñöüßøåæœ", "the and of to in is that for it with as was on be by this are from"]
    model = src["model"]
    vocab, merges = prune(model, args.merges, texts + interesting)
    with open(os.path.join(args.out, "bpe_bytelevel.json"), "w", encoding="utf-8") as f:
        json.dump({"model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                             "ignore_merges": False, "vocab": vocab, "merges": [list(m) for m in merges]}},
                  f, ensure_ascii=False, separators=(",", ":"))
    mvocab, mmerges = metaspace_model(vocab, merges)
    with open(os.path.join(args.out, "bpe_metaspace.json"), "w", encoding="utf-8") as f:
        json.dump({"model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                             "vocab": mvocab, "merges": [" ".join(m) for m in mmerges]}},
                  f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(args.out, "variants.json"), "w", encoding="utf-8") as f:
        bases = {"bpe_bytelevel.json": vocab, "bpe_metaspace.json": mvocab}
        json.dump([finalize(v, bases[v["base"]]) for v in variants()], f, ensure_ascii=False, indent=1)
    with open(os.path.join(args.out, "texts.json"), "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False, indent=0)
    print("byte-level vocabulary %d, merges %d; metaspace vocabulary %d, merges %d; %d texts"
          % (len(vocab), len(merges), len(mvocab), len(mmerges), len(texts)))


if __name__ == "__main__":
    main()
