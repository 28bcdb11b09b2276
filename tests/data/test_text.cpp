#include "moescope/data/text.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/helpers.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::expect_input_error;
using testing::TempDir;
using testing::write_bytes;
using testing::write_text;
using Ids = std::vector<std::int32_t>;

TEST(Vocabulary, AddFindIdAndDecode) {
  Vocabulary v;
  EXPECT_EQ(v.add("<unk>"), 0);
  EXPECT_EQ(v.add("the"), 1);
  EXPECT_EQ(v.add("cat"), 2);
  EXPECT_EQ(v.add("the"), 1);  // existing token keeps its id
  EXPECT_EQ(v.size(), 3);
  EXPECT_EQ(v.find("cat"), 2);
  EXPECT_EQ(v.find("dog"), -1);
  EXPECT_EQ(v.id("dog"), 0);  // falls back to <unk>
  EXPECT_EQ(v.token(2), "cat");
  EXPECT_EQ(v.decode({1, 2, 0}, " "), "the cat <unk>");
  EXPECT_THROW(v.token(3), std::out_of_range);
  EXPECT_THROW(v.add(""), std::invalid_argument);
  Vocabulary no_unk;
  no_unk.add("a");
  EXPECT_THROW(no_unk.id("b"), std::logic_error);
}

TEST(Vocabulary, SaveLoadRoundTripIncludingAwkwardTokens) {
  TempDir d;
  Vocabulary v;
  for (const char* t : {"<unk>", "<eos>", "hello", "\n", " ", "a b", "\\", "\\n", "\t", "\r", "x\r", "\xc3\xa9", "#"}) {
    v.add(t);
  }
  v.save(d.file("vocab.txt"));
  EXPECT_FALSE(testing::file_exists(d.file("vocab.txt.tmp")));
  const Vocabulary w = Vocabulary::load(d.file("vocab.txt"));
  EXPECT_EQ(w, v);
  EXPECT_EQ(w.find("\\n"), v.find("\\n"));
  EXPECT_EQ(w.tokens(), v.tokens());
}

TEST(Vocabulary, LoadAcceptsCrlfAndRejectsBadFiles) {
  TempDir d;
  write_text(d.file("crlf"), "moescope-vocabulary 1\r\nfoo\r\nbar\r\n");
  const Vocabulary v = Vocabulary::load(d.file("crlf"));
  EXPECT_EQ(v.tokens(), (std::vector<std::string>{"foo", "bar"}));

  write_text(d.file("nohdr"), "foo\nbar\n");
  expect_input_error([&] { Vocabulary::load(d.file("nohdr")); }, {"nohdr", "line 1", "header"});
  write_text(d.file("empty"), "");
  expect_input_error([&] { Vocabulary::load(d.file("empty")); }, {"empty", "header"});
  write_text(d.file("dup"), "moescope-vocabulary 1\nfoo\nbar\nfoo\n");
  expect_input_error([&] { Vocabulary::load(d.file("dup")); }, {"dup", "line 4", "duplicate", "line 2"});
  write_text(d.file("blank"), "moescope-vocabulary 1\nfoo\n\nbar\n");
  expect_input_error([&] { Vocabulary::load(d.file("blank")); }, {"blank", "line 3", "empty token"});
  write_text(d.file("esc"), "moescope-vocabulary 1\nfo\\q\n");
  expect_input_error([&] { Vocabulary::load(d.file("esc")); }, {"esc", "line 2", "escape"});
  write_text(d.file("tail"), "moescope-vocabulary 1\nfoo\\\n");
  expect_input_error([&] { Vocabulary::load(d.file("tail")); }, {"tail", "line 2", "backslash"});
  expect_input_error([&] { Vocabulary::load(d.file("missing")); }, {"missing"});
  // Bytes of the file quoted in a message are escaped: one line whatever the file holds (found by fuzz_text:
  // tests/data/fuzz/fuzz_text/header-with-control-bytes, a header with a CR and a DEL in it).
  write_text(d.file("ctl"), "moescope\r\x7f" "ocabulary 1\nfoo\n");
  write_text(d.file("dupctl"), "moescope-vocabulary 1\nf\roo\nf\roo\n");
  for (const char* f : {"ctl", "dupctl"}) {
    try {
      Vocabulary::load(d.file(f));
      ADD_FAILURE() << f << ": no error";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).find_first_of("\r\n\x7f"), std::string::npos) << e.what();
    }
  }
}

TEST(WordCorpus, LinesEndWithEosAndVocabularyComesFromTrain) {
  const TextCorpus c = word_corpus(" the cat <unk> sat \n\n the  dog\tsat\n", "the bird sat\n", "a cat\nthe");
  // vocabulary: <unk>, <eos>, then train tokens by first occurrence
  EXPECT_EQ(c.vocab.tokens(), (std::vector<std::string>{"<unk>", "<eos>", "the", "cat", "sat", "dog"}));
  EXPECT_EQ(c.train, (Ids{2, 3, 0, 4, 1, 1, 2, 5, 4, 1}));  // the blank line is a lone <eos>
  EXPECT_EQ(c.valid, (Ids{2, 0, 4, 1}));                    // "bird" is unknown
  EXPECT_EQ(c.test, (Ids{0, 3, 1, 2, 1}));                  // a final line without '\n' still ends in <eos>
  EXPECT_EQ(c.unknown_valid, 1);
  EXPECT_EQ(c.unknown_test, 1);
  EXPECT_EQ(c.vocab.decode(c.valid, " "), "the <unk> sat <eos>");
}

TEST(WordCorpus, EmptyTextsAndLiteralUnk) {
  const TextCorpus c = word_corpus("", "<unk> <eos>\n", "");
  EXPECT_TRUE(c.train.empty());
  EXPECT_EQ(c.vocab.size(), 2);
  EXPECT_EQ(c.valid, (Ids{0, 1, 1}));
  EXPECT_EQ(c.unknown_valid, 0);  // the literal tokens are in the vocabulary
}

TEST(WordCorpus, ReadsWikiTextAndPtbFolders) {
  TempDir wiki, ptb, none;
  write_text(wiki.file("wiki.train.tokens"), " = Valkyria = \n\n Senjō no Valkyria 3 : <unk> Chronicles \n");
  write_text(wiki.file("wiki.valid.tokens"), " = Homarus = \n");
  write_text(wiki.file("wiki.test.tokens"), " Valkyria \n");
  const TextCorpus w = read_word_corpus(wiki.path());
  EXPECT_EQ(w.vocab.decode(w.valid, " "), "= <unk> = <eos>");
  EXPECT_EQ(w.vocab.decode(w.test, " "), "Valkyria <eos>");
  EXPECT_EQ(w.train.size(), 4u + 1u + 8u);

  write_text(ptb.file("ptb.train.txt"), " aer banknote berlitz \n");
  write_text(ptb.file("ptb.valid.txt"), " consumers may want \n");
  write_text(ptb.file("ptb.test.txt"), " no it was n't black monday \n");
  const TextCorpus p = read_word_corpus(ptb.path());
  EXPECT_EQ(p.vocab.size(), 5);
  EXPECT_EQ(p.unknown_valid, 3);
  EXPECT_EQ(p.unknown_test, 6);

  expect_input_error([&] { read_word_corpus(none.path()); }, {none.path(), "wiki.train.tokens", "ptb.train.txt"});
  write_text(none.file("ptb.train.txt"), "a\n");
  expect_input_error([&] { read_word_corpus(none.path()); }, {"ptb.valid.txt"});
}

TEST(ReadText, FileOrSortedFolderOfTextFiles) {
  TempDir d;
  write_text(d.file("one.txt"), "single file");
  EXPECT_EQ(read_text(d.file("one.txt")), "single file");

  // a fortune-style folder: text files without extension, .dat indexes and .u8 links to skip
  TempDir f;
  write_text(f.file("zippy"), "yow\n%\nare we having fun yet\n");
  write_text(f.file("art"), "art is long");  // no final newline: one is added
  write_bytes(f.file("art.dat"), {0, 0, 0, 2, 0xff, 0x13});
  write_bytes(f.file("zippy.dat"), {1, 2, 3});
  std::filesystem::create_symlink(f.file("art"), f.file("art.u8"));
  write_text(f.file("notes.txt"), "notes\n");
  write_text(f.file(".hidden"), "hidden\n");
  std::filesystem::create_directory(f.file("off"));
  write_text(f.file("off/rude"), "rude\n");
  EXPECT_EQ(read_text(f.path()), "art is long\nnotes\nyow\n%\nare we having fun yet\n");

  TempDir empty;
  write_bytes(empty.file("x.dat"), {1});
  expect_input_error([&] { read_text(empty.path()); }, {empty.path(), "no text files"});
  expect_input_error([&] { read_text(d.file("absent")); }, {"absent"});
}

TEST(ByteCorpus, IdsAreBytesAndSplitIsContiguous) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += static_cast<char>(i * 37 % 256);
  const TextCorpus c = byte_corpus(text, {0.1, 0.2});
  EXPECT_EQ(c.vocab.size(), 256);
  EXPECT_EQ(c.vocab.token(0x41), "A");
  ASSERT_EQ(c.train.size(), 70u);
  ASSERT_EQ(c.valid.size(), 10u);
  ASSERT_EQ(c.test.size(), 20u);
  Ids all = c.train;
  all.insert(all.end(), c.valid.begin(), c.valid.end());
  all.insert(all.end(), c.test.begin(), c.test.end());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(all[static_cast<std::size_t>(i)], i * 37 % 256);
  EXPECT_EQ(c.vocab.decode(all, ""), text);
  const TextCorpus empty = byte_corpus("", {});
  EXPECT_TRUE(empty.train.empty() && empty.valid.empty() && empty.test.empty());
  expect_input_error([&] { byte_corpus("abc", {0.6, 0.6}); }, {"valid + test < 1"});
}

TEST(CharCorpus, CodePointsSortedVocabularyAndUnknownInHeldOut) {
  // 10 code points: train "baébaé" (6), valid "zb" (2), test "a€" (2)
  const std::string text = "ba\xc3\xa9" "ba\xc3\xa9" "zb" "a\xe2\x82\xac";
  const TextCorpus c = char_corpus(text, {0.2, 0.2});
  EXPECT_EQ(c.vocab.tokens(), (std::vector<std::string>{"<unk>", "a", "b", "\xc3\xa9"}));
  EXPECT_EQ(c.train, (Ids{2, 1, 3, 2, 1, 3}));
  EXPECT_EQ(c.valid, (Ids{0, 2}));
  EXPECT_EQ(c.test, (Ids{1, 0}));
  EXPECT_EQ(c.unknown_valid, 1);
  EXPECT_EQ(c.unknown_test, 1);
  EXPECT_EQ(c.invalid_utf8, 0);
  EXPECT_EQ(c.vocab.decode(c.train, ""), "ba\xc3\xa9" "ba\xc3\xa9");
}

TEST(CharCorpus, IllFormedUtf8BecomesReplacementCharacters) {
  // lone continuation, overlong "/" (c0 af), truncated 3-byte sequence (e2 82) before 'x', surrogate (ed a0 80),
  // and a 4-byte sequence cut at the end (f0 9f 98)
  const std::string text = "a\x80" "b\xc0\xaf" "c\xe2\x82x" "\xed\xa0\x80" "d\xf0\x9f\x98";
  const TextCorpus c = char_corpus(text, {0.0, 0.0});
  const std::string r = "\xef\xbf\xbd";  // U+FFFD
  // Unicode's maximal-subpart rule: c0 -> 2 (c0, af), e2 82 -> 1, ed a0 80 -> 3, f0 9f 98 -> 1
  EXPECT_EQ(c.vocab.decode(c.train, ""), "a" + r + "b" + r + r + "c" + r + "x" + r + r + r + "d" + r);
  EXPECT_EQ(c.invalid_utf8, 8);  // 1 + 2 + 1 + 3 + 1
}

TEST(CharCorpus, AllFourUtf8LengthsRoundTrip) {
  const std::string text = "A\xc2\xa2\xe2\x82\xac\xf0\x9f\x98\x80\n";  // A ¢ € 😀 newline
  const TextCorpus c = char_corpus(text, {0.0, 0.0});
  EXPECT_EQ(c.train.size(), 5u);
  EXPECT_EQ(c.vocab.size(), 6);
  EXPECT_EQ(c.vocab.decode(c.train, ""), text);
  EXPECT_EQ(c.vocab.token(1), "\n");  // sorted by code point
}

TEST(CharCorpus, VocabularySavesAndLoads) {
  TempDir d;
  const TextCorpus c = char_corpus("hello\nworld\t\\ \xc3\xa9", {0.0, 0.0});
  c.vocab.save(d.file("chars.vocab"));
  EXPECT_EQ(Vocabulary::load(d.file("chars.vocab")), c.vocab);
}

}  // namespace
}  // namespace moescope
