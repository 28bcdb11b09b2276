// Writes reference.json: what the tokenizers library (npm package "tokenizers", the Node binding of the Rust
// library Hugging Face's Python package wraps) makes of texts.json under each tokenizer of variants.json.
// Run offline after make_fixtures.py:
//   npm install --prefix /tmp/tokref tokenizers@0.23.2
//   NODE_PATH=/tmp/tokref/node_modules node make_reference.js
// Also, to compare whole real tokenizers on a text file (ids as whitespace-separated text, one line per line
// of input, for tools/bench/bench_tokenizer.cpp's comparison):
//   NODE_PATH=... node make_reference.js --encode TOKENIZER_JSON TEXT_FILE OUT_IDS
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require("tokenizers");

function assemble(variant, dir) {
  const base = JSON.parse(fs.readFileSync(path.join(dir, variant.base), "utf8"));
  const model = Object.assign({}, base.model, variant.model || {});
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: variant.added_tokens || [],
    normalizer: variant.normalizer || null,
    pre_tokenizer: variant.pre_tokenizer || null,
    post_processor: variant.post_processor || null,
    decoder: variant.decoder || null,
    model,
  };
}

async function references(dir) {
  const variants = JSON.parse(fs.readFileSync(path.join(dir, "variants.json"), "utf8"));
  const texts = JSON.parse(fs.readFileSync(path.join(dir, "texts.json"), "utf8"));
  const out = { library: "tokenizers (npm) " + require("tokenizers/package.json").version, variants: {} };
  for (const v of variants) {
    const tok = Tokenizer.fromString(JSON.stringify(assemble(v, dir)));
    const rows = [];
    for (const text of texts) {
      const ids = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
      const plain = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
      const decoded = await tok.decode(ids, false);
      const skipped = await tok.decode(ids, true);
      // null where a field repeats another: plain == ids, decoded == text, skipped == decoded
      rows.push([ids, JSON.stringify(plain) === JSON.stringify(ids) ? null : plain,
                 decoded === text ? null : decoded, skipped === decoded ? null : skipped]);
    }
    out.variants[v.name] = rows;
    console.log(v.name, "vocab", tok.getVocabSize(true));
  }
  fs.writeFileSync(path.join(dir, "reference.json"), JSON.stringify(out));
}

async function encodeFile(tokenizerJson, textFile, outFile) {
  const tok = Tokenizer.fromFile(tokenizerJson);
  const lines = fs.readFileSync(textFile, "utf8").split("\n");
  const rows = [];
  for (const line of lines) rows.push((await tok.encode(line, null, { addSpecialTokens: true })).getIds().join(" "));
  fs.writeFileSync(outFile, rows.join("\n") + "\n");
}

if (process.argv[2] === "--encode") {
  encodeFile(process.argv[3], process.argv[4], process.argv[5]);
} else {
  references(__dirname);
}
