// data/tokenizer_bpe: the BPE model on small vocabularies whose answers are worked out by hand (no
// pre-tokeniser, so the whole text is one word). Cases marked "library" were also run through the tokenizers
// library (npm "tokenizers" 0.23.2) when they were written, with the same result.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data/helpers.hpp"
#include "moescope/data/tokenizer.hpp"

namespace moescope {
namespace {

using nlohmann::json;
using Ids = std::vector<std::int32_t>;

Tokenizer bpe(const json& vocab, const json& merges, const json& extra = json::object()) {
  json model = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  model.update(extra);
  return Tokenizer::from_json(json{{"model", model}}, "test.json");
}

TEST(TokenizerBpe, LowestRankMergesFirst) {
  const json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
  // "abc": pairs (a,b) rank 1 and (b,c) rank 0 -> b+c first: [a, bc]; then (a,bc) rank 2 -> [abc]
  EXPECT_EQ(bpe(vocab, {"b c", "a b", "a bc"}).encode("abc"), Ids({5}));
  // ranks swapped: a+b first: [ab, c]; (ab,c) is no merge and (a,bc) never forms -> [ab, c]
  EXPECT_EQ(bpe(vocab, {"a b", "b c", "a bc"}).encode("abc"), Ids({3, 2}));
  // a rank on the right beats one on the left: (b,c) rank 0 before (a,b) rank 1 -> [a, bc]
  EXPECT_EQ(bpe(vocab, {"b c", "a b"}).encode("abc"), Ids({0, 4}));
}

TEST(TokenizerBpe, TiesGoToTheLeftmostPair) {
  const json vocab = {{"a", 0}, {"aa", 1}, {"aaaa", 2}};
  // "aaa": (a,a) at 0 and at 1, same rank: the left one -> [aa, a]
  EXPECT_EQ(bpe(vocab, {"a a"}).encode("aaa"), Ids({1, 0}));
  // "aaaaa": [aa, aa, a]
  EXPECT_EQ(bpe(vocab, {"a a"}).encode("aaaaa"), Ids({1, 1, 0}));
  // with (aa,aa): "aaaaa" -> [aa, aa, a] -> [aaaa, a]
  EXPECT_EQ(bpe(vocab, {"a a", "aa aa"}).encode("aaaaa"), Ids({2, 0}));
}

TEST(TokenizerBpe, NewPairsFormAfterMerges) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}, {"abab", 3}, {"ababab", 4}};
  // "ababab": -> [ab, ab, ab] -> (ab,ab) at 0 first -> [abab, ab] -> (abab,ab) rank 2 -> [ababab]
  EXPECT_EQ(bpe(vocab, {"a b", "ab ab", "abab ab"}).encode("ababab"), Ids({4}));
  // without the last merge: [abab, ab]
  EXPECT_EQ(bpe(vocab, {"a b", "ab ab"}).encode("ababab"), Ids({3, 2}));
}

TEST(TokenizerBpe, MergeFormsAndRanks) {
  const json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}};
  // pairs as ["a", "b"] arrays rank as the strings do
  EXPECT_EQ(bpe(vocab, json::array({json::array({"b", "c"}), json::array({"a", "b"})})).encode("abc"), Ids({0, 4}));
  // a "#version" header line is skipped and does not take a rank
  EXPECT_EQ(bpe(vocab, {"#version: 0.2", "b c", "a b"}).encode("abc"), Ids({0, 4}));
  // a pair listed twice keeps its later rank (library): (b,c) rank 2, (a,b) rank 1 -> [ab, c]
  EXPECT_EQ(bpe(vocab, {"b c", "a b", "b c"}).encode("abc"), Ids({3, 2}));
  // tokens may contain any character but the space separator of the string form
  const json vocab2 = {{"\u00e9", 0}, {"t\u00e9", 1}, {"t", 2}};
  EXPECT_EQ(bpe(vocab2, {"t \u00e9"}).encode("t\u00e9t"), Ids({1, 2}));
}

TEST(TokenizerBpe, UnknownCharacters) {
  const json vocab = {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"ab", 3}};
  // no unk_token: characters outside the vocabulary are dropped, and their neighbours become adjacent
  EXPECT_EQ(bpe(vocab, {"a b"}).encode("aZb"), Ids({3}));
  EXPECT_EQ(bpe(vocab, json::array()).encode("aZb"), Ids({1, 2}));
  EXPECT_EQ(bpe(vocab, {"a b"}).encode("Zab"), Ids({3}));
  // unk_token: one <unk> per unknown character; they do not merge with their neighbours
  EXPECT_EQ(bpe(vocab, {"a b"}, {{"unk_token", "<unk>"}}).encode("aZZb"), Ids({1, 0, 0, 2}));
  // fuse_unk: a run of unknown characters is one <unk>
  EXPECT_EQ(bpe(vocab, {"a b"}, {{"unk_token", "<unk>"}, {"fuse_unk", true}}).encode("aZZbZab"), Ids({1, 0, 2, 0, 3}));
}

TEST(TokenizerBpe, ByteFallback) {
  // no "é" (C3 A9) in the vocabulary, but both of its byte tokens: the character becomes them
  const json vocab = {{"<unk>", 0}, {"a", 1}, {"<0xC3>", 2}, {"<0xA9>", 3}, {"b", 4}, {"<0xE4>", 5}};
  const json opts = {{"unk_token", "<unk>"}, {"byte_fallback", true}};
  EXPECT_EQ(bpe(vocab, json::array(), opts).encode("a\u00e9b"), Ids({1, 2, 3, 4}));
  // "中" is E4 B8 AD: <0xB8> is missing, so the character is <unk>
  EXPECT_EQ(bpe(vocab, json::array(), opts).encode("a\u4e2db"), Ids({1, 0, 4}));
  // library: an <unk> waits until the next in-vocabulary character (or the end), so byte tokens that come
  // between are written before it: "Zé" -> [<0xC3>, <0xA9>, <unk>]
  EXPECT_EQ(bpe(vocab, json::array(), opts).encode("Z\u00e9"), Ids({2, 3, 0}));
  EXPECT_EQ(bpe(vocab, json::array(), opts).encode("aZ\u00e9b"), Ids({1, 2, 3, 0, 4}));
  // byte tokens merge like any others
  const json vocab2 = {{"<0xC3>", 0}, {"<0xA9>", 1}, {"<0xC3><0xA9>", 2}};
  EXPECT_EQ(bpe(vocab2, {"<0xC3> <0xA9>"}, {{"byte_fallback", true}}).encode("\u00e9"), Ids({2}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWords) {
  // "hello" is a token but no merge sequence reaches it: merges give [he, ll, o]; ignore_merges gives [hello]
  const json vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"he", 4}, {"ll", 5}, {"hello", 6}};
  EXPECT_EQ(bpe(vocab, {"h e", "l l"}).encode("hello"), Ids({4, 5, 3}));
  EXPECT_EQ(bpe(vocab, {"h e", "l l"}, {{"ignore_merges", true}}).encode("hello"), Ids({6}));
  EXPECT_EQ(bpe(vocab, {"h e", "l l"}, {{"ignore_merges", true}}).encode("hell"), Ids({4, 5}));
}

TEST(TokenizerBpe, LongWordsAndTheCache) {
  // 300 'a's (longer than the cached length) and the same word twice: merges of "a a" give 150 "aa"
  const json vocab = {{"a", 0}, {"aa", 1}};
  const Tokenizer tok = bpe(vocab, {"a a"});
  const std::string long_word(300, 'a');
  EXPECT_EQ(tok.encode(long_word), Ids(150, 1));
  EXPECT_EQ(tok.encode(long_word), Ids(150, 1));
  EXPECT_EQ(tok.encode("aaa"), Ids({1, 0}));
  EXPECT_EQ(tok.encode("aaa"), Ids({1, 0}));  // from the cache
  // copies share tables and cache and agree
  const Tokenizer copy = tok;
  EXPECT_EQ(copy.encode("aaaaa"), Ids({1, 1, 0}));
}

TEST(TokenizerBpe, NoDecoderJoinsTokensWithSpaces) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}};
  EXPECT_EQ(bpe(vocab, {"a b"}).decode({2, 0, 1}), "ab a b");
  EXPECT_EQ(bpe(vocab, {"a b"}).decode({}), "");
}

}  // namespace
}  // namespace moescope
