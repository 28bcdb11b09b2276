#!/usr/bin/env python3
"""Seed corpora for the fuzzers: every tokenizer configuration of tests/data/tokenizer/variants.json over a
small vocabulary (the first 400 tokens of its base and the merges among them), and the token-id fixtures.
usage: make_seeds.py TOKENIZER_CORPUS_DIR TOKEN_IDS_CORPUS_DIR"""
import json
import os
import shutil
import sys

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "data", "tokenizer")
tok_dir, ids_dir = sys.argv[1], sys.argv[2]
os.makedirs(tok_dir, exist_ok=True)
os.makedirs(ids_dir, exist_ok=True)
variants = json.load(open(os.path.join(fixtures, "variants.json"), encoding="utf-8"))
for v in variants:
    base = json.load(open(os.path.join(fixtures, v["base"]), encoding="utf-8"))["model"]
    vocab = {t: i for t, i in base["vocab"].items() if i < 400}
    merges = []
    for m in base["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    model = dict(base, vocab=vocab, merges=merges)
    model.update(v.get("model", {}))
    added, next_id = [], len(vocab)
    for t in v.get("added_tokens", []):
        t = dict(t)
        t["id"] = vocab.get(t["content"], next_id)
        if t["content"] not in vocab:
            next_id += 1
        added.append(t)
    j = {"version": "1.0", "added_tokens": added, "model": model}
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        j[key] = json.loads(json.dumps(v.get(key)))
    # template ids refer to the full vocabulary: point them at the renumbered added tokens
    new_id = {t["content"]: t["id"] for t in added}

    def renumber(pp):
        if not pp:
            return
        for p in pp.get("processors", []):
            renumber(p)
        for spec in pp.get("special_tokens", {}).values():
            spec["ids"] = [new_id[c] for c in spec["tokens"]]

    renumber(j["post_processor"])
    text = json.dumps(j, ensure_ascii=False)
    with open(os.path.join(tok_dir, v["name"] + ".json"), "w", encoding="utf-8") as f:
        f.write(text)
ids_fixtures = os.path.join(here, "..", "data", "token_ids")
for name in os.listdir(ids_fixtures):
    if not name.endswith(".py"):
        shutil.copy(os.path.join(ids_fixtures, name), os.path.join(ids_dir, name))
print(len(variants), "tokenizer seeds,", len(os.listdir(ids_dir)), "token-id seeds")
