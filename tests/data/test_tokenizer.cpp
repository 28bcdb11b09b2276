// data/tokenizer: the whole pipeline against the tokenizers library's own output (tests/data/tokenizer/
// reference.json, written by make_reference.js with the library's Node binding from the fixtures that
// make_fixtures.py derives from Qwen3's tokenizer.json), round trips, lookups and malformed files.
#include "moescope/data/tokenizer.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "data/helpers.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using nlohmann::json;
using testing::expect_input_error;

const std::string kTokenizerDir = std::string(MOESCOPE_SOURCE_DIR) + "/tests/data/tokenizer/";

json read_json(const std::string& file) {
  std::ifstream in(kTokenizerDir + file, std::ios::binary);
  EXPECT_TRUE(in.good()) << kTokenizerDir + file;
  std::ostringstream s;
  s << in.rdbuf();
  return json::parse(s.str());
}

// The tokenizer.json of a variant, assembled as make_reference.js assembles it.
json assemble(const json& variant) {
  static std::map<std::string, json> bases;
  const std::string base = variant.at("base");
  if (!bases.count(base)) bases[base] = read_json(base);
  json model = bases[base].at("model");
  if (variant.contains("model")) model.update(variant.at("model"));
  json j = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"model", model}};
  j["added_tokens"] = variant.value("added_tokens", json::array());
  for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "decoder"}) {
    j[key] = variant.contains(key) ? variant.at(key) : json(nullptr);
  }
  return j;
}

const json& variants() {
  static const json v = read_json("variants.json");
  return v;
}

const json& variant(const std::string& name) {
  for (const auto& v : variants()) {
    if (v.at("name") == name) return v;
  }
  throw std::runtime_error("no variant " + name);
}

Tokenizer make(const std::string& name) { return Tokenizer::from_json(assemble(variant(name)), name); }

std::string show(const std::vector<std::int32_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

// Every variant, every text: ids with and without special tokens, and both decodings, equal the library's.
TEST(TokenizerReference, MatchesTheTokenizersLibrary) {
  const json texts = read_json("texts.json");
  const json ref = read_json("reference.json");
  ASSERT_EQ(ref.at("variants").size(), variants().size());
  std::size_t compared = 0;
  for (const auto& v : variants()) {
    const std::string name = v.at("name");
    SCOPED_TRACE(name);
    const Tokenizer tok = Tokenizer::from_json(assemble(v), name);
    const json& rows = ref.at("variants").at(name);
    ASSERT_EQ(rows.size(), texts.size());
    int reported = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i];
      const json& row = rows[i];
      const auto want_ids = row[0].get<std::vector<std::int32_t>>();
      const auto want_plain = row[1].is_null() ? want_ids : row[1].get<std::vector<std::int32_t>>();
      const std::string want_decoded = row[2].is_null() ? text : row[2].get<std::string>();
      const std::string want_skipped = row[3].is_null() ? want_decoded : row[3].get<std::string>();
      const auto ids = tok.encode(text, true);
      const auto plain = tok.encode(text, false);
      const std::string decoded = tok.decode(want_ids, false), skipped = tok.decode(want_ids, true);
      const bool ok = ids == want_ids && plain == want_plain && decoded == want_decoded && skipped == want_skipped;
      ++compared;
      if (!ok && reported++ < 5) {
        ADD_FAILURE() << "text " << i << ": " << json(text).dump() << "\n  ids   " << show(ids) << "\n  want  "
                      << show(want_ids) << "\n  plain " << show(plain) << "\n  want  " << show(want_plain)
                      << "\n  decoded " << json(decoded).dump() << " want " << json(want_decoded).dump()
                      << "\n  skipped " << json(skipped).dump() << " want " << json(want_skipped).dump();
      }
    }
    EXPECT_EQ(reported, 0) << "mismatches in " << name;
  }
  EXPECT_EQ(compared, variants().size() * texts.size());
}

// The same files read through from_file, and the file name in messages.
TEST(TokenizerFile, ReadsAFileAndNamesIt) {
  testing::TempDir dir;
  const std::string path = dir.file("tokenizer.json");
  testing::write_text(path, assemble(variant("qwen2")).dump());
  const Tokenizer tok = Tokenizer::from_file(path);
  EXPECT_EQ(tok.name(), path);
  EXPECT_EQ(tok.encode("Hello world"), make("qwen2").encode("Hello world"));
  expect_input_error([&] { Tokenizer::from_file(dir.file("missing.json")); }, {"missing.json", "cannot open"});
  testing::write_text(dir.file("bad.json"), "{\"model\": ");
  expect_input_error([&] { Tokenizer::from_file(dir.file("bad.json")); }, {"bad.json", "not valid JSON"});
}

// decode(encode(text)) gives the text back for byte-level models and for byte-fallback models, whatever the script.
TEST(TokenizerRoundTrip, ByteLevelAndByteFallbackGiveTheTextBack) {
  const std::vector<std::string> texts = {
      "plain ASCII text, with punctuation!?", "  leading and trailing whitespace  ", "tabs\tand\nnewlines\r\n\n",
      "digits 0123456789 and 3.14159e-10", "CJK 中文字符 日本語 한국어", "emoji 👍🏽 👨‍👩‍👧 🇫🇷",
      "combining e\u0301 a\u0308 \u0301 marks", "runs      of        spaces", "\x01\x02\x7f controls",
      std::string(1000, 'z'), "mixedΣσς"};
  for (const char* name : {"gpt2", "llama3", "deepseek_v3", "deepseek_llm"}) {
    const Tokenizer tok = make(name);
    for (const auto& t : texts) EXPECT_EQ(tok.decode(tok.encode(t, true), true), t) << name << ": " << t;
  }
  // sentencepiece style: the decoder strips the one "▁" the Llama 2 normaliser put in front
  const Tokenizer llama2 = make("llama2");
  for (const auto& t : texts) EXPECT_EQ(llama2.decode(llama2.encode(t, true), true), t) << t;
  // Metaspace "first" puts no "▁" before text that starts with a space, yet the decoder strips one space: a
  // leading space is lost, as in the library (checked with it: "  leading..." -> " leading...")
  const Tokenizer mixtral = make("mixtral_metaspace");
  for (const auto& t : texts) {
    const std::string want = t[0] == ' ' ? t.substr(1) : t;
    EXPECT_EQ(mixtral.decode(mixtral.encode(t, true), true), want) << t;
  }
}

// Ill-formed UTF-8 is encoded as the text with U+FFFD for each maximal subpart (Python's errors="replace").
TEST(TokenizerInput, IllFormedUtf8BecomesReplacementCharacters) {
  // \xC3 alone (truncated 2-byte), \xE2\x82 (truncated 3-byte: one subpart), \xF0\x80 (F0 needs 90..BF: two
  // subparts), \xED\xA0\x80 (a surrogate: three), \xFF (never valid), overlong \xC0\xAF (two)
  const std::string bad = "a\xC3 b\xE2\x82 c\xF0\x80 d\xED\xA0\x80 e\xFF f\xC0\xAF";
  const std::string fixed = "a\uFFFD b\uFFFD c\uFFFD\uFFFD d\uFFFD\uFFFD\uFFFD e\uFFFD f\uFFFD\uFFFD";
  for (const char* name : {"gpt2", "qwen2", "llama2", "metaspace_unk"}) {
    const Tokenizer tok = make(name);
    EXPECT_EQ(tok.encode(bad), tok.encode(fixed)) << name;
  }
  const Tokenizer gpt2 = make("gpt2");
  EXPECT_EQ(gpt2.decode(gpt2.encode(bad)), fixed);
  // byte-level decoding of ids whose bytes are not UTF-8: lossy, one U+FFFD per maximal subpart
  const auto c3 = gpt2.token_id("\u00c3");  // byte 0xC3 in GPT-2's map
  ASSERT_TRUE(c3.has_value());
  EXPECT_EQ(gpt2.decode({*c3, *gpt2.token_id("a")}), "\uFFFDa");
}

TEST(TokenizerLookups, IdsTokensSizesAndSpecialFlags) {
  const Tokenizer qwen = make("qwen2");
  // 5260 model tokens + the 7 added tokens (ids 5260..5266)
  EXPECT_EQ(qwen.vocab_size(), 5267);
  EXPECT_EQ(qwen.token_id("<|im_start|>"), 5261);
  EXPECT_EQ(qwen.token(5261), "<|im_start|>");
  EXPECT_TRUE(qwen.is_special(5261));
  EXPECT_FALSE(qwen.is_special(*qwen.token_id("<think>")));
  EXPECT_FALSE(qwen.is_special(0));
  EXPECT_EQ(qwen.token_id("!"), 0);
  EXPECT_EQ(qwen.token(0), "!");
  EXPECT_FALSE(qwen.token_id("no such token").has_value());
  EXPECT_FALSE(qwen.token(-1).has_value());
  EXPECT_FALSE(qwen.token(5267).has_value());
  // ids without a token are skipped by decode, as the library does
  EXPECT_EQ(qwen.decode({*qwen.token_id("Hello"), 999999, -5}), "Hello");
  // an added token whose content is a model token keeps the model's id
  const Tokenizer flags = make("added_flags");
  const std::int32_t the = read_json("bpe_bytelevel.json").at("model").at("vocab").at("\u0120the");
  EXPECT_EQ(flags.token_id("\u0120the"), the);
  EXPECT_EQ(flags.vocab_size(), 5260 + 5);  // six added tokens, one of them already a model token
  const Tokenizer llama = make("llama2");
  EXPECT_EQ(llama.token_id("<s>"), 1);
  EXPECT_EQ(llama.vocab_size(), 5228);
  EXPECT_EQ(llama.encode(""), std::vector<std::int32_t>({1}));  // only the template's <s>
  EXPECT_TRUE(llama.encode("", false).empty());
}

// The pieces the model sees (the library's pre_tokenize_str after normalisation and added tokens).
TEST(TokenizerPieces, PreTokenizeShowsWhatTheModelSees) {
  // GPT-2 splits off contractions, keeps the space with the word after it, and maps ' ' to 'Ġ'
  EXPECT_EQ(make("gpt2").pre_tokenize("I'm  here 42"),
            (std::vector<std::string>{"I", "'m", "\u0120", "\u0120here", "\u012042"}));
  // the lookahead \s+(?!\S) leaves the last space of a run to the next word; NFC composes e + U+0301
  EXPECT_EQ(make("qwen2").pre_tokenize("a   b cafe\u0301"),
            (std::vector<std::string>{"a", "\u0120\u0120", "\u0120b", "\u0120caf\u00c3\u00a9"}));
  // Llama 3 groups digits by three; Qwen2 takes them one by one
  EXPECT_EQ(make("llama3").pre_tokenize("1234567"), (std::vector<std::string>{"123", "456", "7"}));
  EXPECT_EQ(make("qwen2").pre_tokenize("123"), (std::vector<std::string>{"1", "2", "3"}));
  // Llama 2: the normaliser puts "▁" in front of each piece between added tokens and replaces spaces
  EXPECT_EQ(make("llama2").pre_tokenize("Hi there<s>x"), (std::vector<std::string>{"\u2581Hi\u2581there", "<s>", "\u2581x"}));
  // Metaspace "first": only the piece at the start of the text gets the "▁"
  EXPECT_EQ(make("mixtral_metaspace").pre_tokenize("Hi there<s>x"), (std::vector<std::string>{"\u2581Hi\u2581there", "<s>", "x"}));
  // Metaspace with split: each piece starts at a "▁"
  EXPECT_EQ(make("metaspace_split_always").pre_tokenize("a  b"), (std::vector<std::string>{"\u2581a", "\u2581", "\u2581b"}));
}

TEST(TokenizerThreads, ConcurrentEncodesAgreeWithOneThread) {
  const Tokenizer tok = make("qwen2");
  const json texts = read_json("texts.json");
  std::vector<std::vector<std::int32_t>> want;
  const Tokenizer single = make("qwen2");  // its own tables and cache
  for (const auto& t : texts) want.push_back(single.encode(t.get<std::string>()));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 3; ++rep) {
        for (std::size_t i = 0; i < texts.size(); ++i) bad[static_cast<std::size_t>(k)] += tok.encode(texts[i].get<std::string>()) != want[i];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

// ------------------------------------------------------------------------------------ malformed files

json minimal() {
  return json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
}

void expect_bad(const json& j, const std::vector<std::string>& parts) {
  expect_input_error([&] { Tokenizer::from_json(j, "tok.json"); }, parts);
}

TEST(TokenizerMalformed, StructureAndTypes) {
  EXPECT_EQ(Tokenizer::from_json(minimal(), "tok.json").encode("abab"), std::vector<std::int32_t>({2, 2}));
  expect_bad(json::array(), {"tok.json", "top level"});
  expect_bad(json::object(), {"tok.json", "has no model"});
  json j = minimal();
  j["model"]["type"] = "WordPiece";
  expect_bad(j, {"tok.json: model.type 'WordPiece' is not supported"});
  j = minimal();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_bad(j, {"tok.json: pre_tokenizer.type 'Whitespace' is not supported"});
  j = minimal();
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "Punctuation"}]})");
  expect_bad(j, {"tok.json: pre_tokenizer.pretokenizers[1].type 'Punctuation' is not supported"});
  j = minimal();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_bad(j, {"normalizer.type 'Lowercase' is not supported"});
  j = minimal();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_bad(j, {"decoder.type 'WordPiece' is not supported"});
  j = minimal();
  j["post_processor"] = {{"type", "Whatever"}};
  expect_bad(j, {"post_processor.type 'Whatever' is not supported"});
  j = minimal();
  j["normalizer"] = {{"kind", "NFC"}};
  expect_bad(j, {"normalizer has no 'type'"});
  j = minimal();
  j["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways", "invert": false})");
  expect_bad(j, {"pre_tokenizer.behavior 'Sideways'"});
  j = minimal();
  j["pre_tokenizer"] = json::parse(R"({"type": "Metaspace", "replacement": "ab"})");
  expect_bad(j, {"pre_tokenizer.replacement 'ab' is not a single character"});
  j = minimal();
  j["pre_tokenizer"] = json::parse(R"({"type": "Metaspace", "replacement": "_", "add_prefix_space": false, "prepend_scheme": "first"})");
  expect_bad(j, {"add_prefix_space false does not match prepend_scheme"});
}

TEST(TokenizerMalformed, ModelTables) {
  json j = minimal();
  j["model"]["merges"] = {"a q"};
  expect_bad(j, {"tok.json: model.merges[0]: 'q' is not in the vocabulary"});
  j = minimal();
  j["model"]["merges"] = {"a \n"};  // control characters are escaped: the message stays one line
  expect_bad(j, {"tok.json: model.merges[0]: '\\n' is not in the vocabulary"});
  j = minimal();
  j["model"]["merges"] = {"b a"};
  expect_bad(j, {"model.merges[0]: the merged token 'ba' is not in the vocabulary"});
  j = minimal();
  j["model"]["merges"] = {"a b c"};
  expect_bad(j, {"model.merges[0]", "not two tokens"});
  j = minimal();
  j["model"]["merges"] = json::array({json::array({"a"})});
  expect_bad(j, {"model.merges[0]", "neither"});
  j = minimal();
  j["model"]["vocab"]["c"] = -1;
  expect_bad(j, {"model.vocab['c']", "out of range"});
  j = minimal();
  j["model"]["vocab"]["c"] = 4294967296LL;
  expect_bad(j, {"model.vocab['c']", "out of range"});
  j = minimal();
  j["model"]["vocab"]["c"] = 1.5;
  expect_bad(j, {"model.vocab['c']", "not an integer"});
  j = minimal();
  j["model"]["vocab"]["c"] = 1;
  expect_bad(j, {"model.vocab: id 1 is given to"});
  j = minimal();
  j["model"]["dropout"] = 0.1;
  expect_bad(j, {"model.dropout", "random"});
  j = minimal();
  j["model"]["dropout"] = 0.0;  // no dropout
  EXPECT_NO_THROW(Tokenizer::from_json(j, "tok.json"));
  j = minimal();
  j["model"]["continuing_subword_prefix"] = "##";
  expect_bad(j, {"model.continuing_subword_prefix '##' is not supported"});
  j = minimal();
  j["model"].erase("vocab");
  expect_bad(j, {"model has no 'vocab'"});
  // the unknown token is looked up when it is needed, as in the library
  j = minimal();
  j["model"]["unk_token"] = "<unk>";
  const Tokenizer tok = Tokenizer::from_json(j, "tok.json");
  EXPECT_EQ(tok.encode("ab"), std::vector<std::int32_t>({2}));
  expect_input_error([&] { tok.encode("abz"); }, {"tok.json: model.unk_token '<unk>' is not in the vocabulary"});
}

TEST(TokenizerMalformed, AddedTokensProcessorsAndPatterns) {
  json j = minimal();
  j["added_tokens"] = json::parse(R"([{"id": 7, "content": "<s>", "special": true}])");
  expect_bad(j, {"added_tokens[0].id 7 for '<s>' differs from the id the tokenizers library gives it, 3"});
  j["added_tokens"] = json::parse(R"([{"id": 3, "content": "<s>", "special": true}])");
  EXPECT_EQ(Tokenizer::from_json(j, "tok.json").encode("a<s>b"), std::vector<std::int32_t>({0, 3, 1}));
  j["added_tokens"] = json::parse(R"([{"id": 0, "content": "a", "special": true}])");  // a model token keeps its id
  EXPECT_EQ(Tokenizer::from_json(j, "tok.json").encode("ab"), std::vector<std::int32_t>({0, 1}));
  j["added_tokens"] = json::parse(R"([{"content": "<s>"}])");
  expect_bad(j, {"added_tokens[0] has no 'id'"});

  j = minimal();
  j["post_processor"] = json::parse(R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
      {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}})");
  expect_bad(j, {"post_processor.single[0].SpecialToken.id '<s>' is not in special_tokens"});
  j["post_processor"]["special_tokens"] = json::parse(R"({"<s>": {"id": "<s>", "ids": [9], "tokens": ["<s>"]}})");
  expect_bad(j, {"post_processor adds id 9, outside the vocabulary of 3"});
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {1};
  EXPECT_EQ(Tokenizer::from_json(j, "tok.json").encode("ab"), std::vector<std::int32_t>({1, 2}));
  j["post_processor"]["single"][1]["Sequence"]["id"] = "B";
  expect_bad(j, {"post_processor.single[1].Sequence.id 'B'"});

  j = minimal();
  j["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false})");
  expect_bad(j, {"tok.json: pre_tokenizer.pattern.Regex: regex does not compile"});
  j["pre_tokenizer"]["pattern"]["Regex"] = "\\w+";
  expect_bad(j, {"pre_tokenizer.pattern.Regex: escape \\w is not supported"});
  j["pre_tokenizer"]["pattern"]["Regex"] = "[[:alpha:]]";
  expect_bad(j, {"pre_tokenizer.pattern.Regex", "not supported"});
  j["pre_tokenizer"]["pattern"]["Regex"] = "(?m:a.b)";
  expect_bad(j, {"inline option m or s is not supported"});
  j["pre_tokenizer"]["pattern"] = {{"Glob", "*"}};
  expect_bad(j, {"pre_tokenizer.pattern 'Glob' is not 'String' or 'Regex'"});
}

}  // namespace
}  // namespace moescope
