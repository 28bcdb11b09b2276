// data/tokenizer_text: UTF-8 handling, the regex as the tokenizers library iterates Oniguruma matches,
// Unicode normalisation and the byte-level map. Expected values: Python's bytes.decode(errors="replace")
// for the replacements, and the library (npm "tokenizers" 0.23.2) for the regex cases, both run when the
// tests were written; the byte-level map is GPT-2's published bytes_to_unicode.
#include <gtest/gtest.h>

#include "../../src/data/tokenizer_parts.hpp"
#include "data/helpers.hpp"

namespace moescope::detail {
namespace {

using testing::expect_input_error;

std::vector<std::pair<std::size_t, std::size_t>> matches(const std::string& pattern, const std::string& text) {
  Regex re(pattern, false, "t.json: p");
  std::vector<Span> found;
  re.find_all(text, found);
  std::vector<std::pair<std::size_t, std::size_t>> out;
  for (const auto& s : found) out.emplace_back(s.begin, s.end);
  return out;
}

using Pairs = std::vector<std::pair<std::size_t, std::size_t>>;

TEST(TokenizerUtf8, LengthsFollowTable37) {
  EXPECT_EQ(utf8_length_at("a", 0), 1u);
  EXPECT_EQ(utf8_length_at("\xC3\xA9", 0), 2u);
  EXPECT_EQ(utf8_length_at("\xE4\xB8\xAD", 0), 3u);
  EXPECT_EQ(utf8_length_at("\xF0\x9F\x98\x80", 0), 4u);
  EXPECT_EQ(utf8_length_at("\xC0\xAF", 0), 0u);          // overlong
  EXPECT_EQ(utf8_length_at("\xE0\x9F\x80", 0), 0u);      // overlong 3-byte
  EXPECT_EQ(utf8_length_at("\xED\xA0\x80", 0), 0u);      // surrogate U+D800
  EXPECT_EQ(utf8_length_at("\xF4\x90\x80\x80", 0), 0u);  // above U+10FFFF
  EXPECT_EQ(utf8_length_at("\x80", 0), 0u);              // continuation byte
  EXPECT_EQ(utf8_length_at("\xE4\xB8", 0), 0u);          // truncated
  EXPECT_TRUE(utf8_valid("plain \xE4\xB8\xAD\xF0\x9F\x98\x80"));
  EXPECT_FALSE(utf8_valid("a\xFF"));
  EXPECT_EQ(utf8_count("a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80"), 4u);
}

TEST(TokenizerUtf8, MaximalSubpartsBecomeOneReplacementEach) {
  const std::string r = "\xEF\xBF\xBD";
  // expected strings as Python's decode("utf-8", "replace") gives them
  EXPECT_EQ(utf8_replace_invalid("a\xC3"), "a" + r);
  EXPECT_EQ(utf8_replace_invalid("\xE2\x82"), r);
  EXPECT_EQ(utf8_replace_invalid("\xE2\x82" "a"), r + "a");
  EXPECT_EQ(utf8_replace_invalid("\xF0\x80\x80"), r + r + r);
  EXPECT_EQ(utf8_replace_invalid("\xF0\x90\x80"), r);
  EXPECT_EQ(utf8_replace_invalid("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(utf8_replace_invalid("\xF4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(utf8_replace_invalid("\xC0\xAF"), r + r);
  EXPECT_EQ(utf8_replace_invalid("\xFF\xFE"), r + r);
  EXPECT_EQ(utf8_replace_invalid("\x80\x80"), r + r);
  EXPECT_EQ(utf8_replace_invalid("\xE0\x9F\x80"), r + r + r);
  EXPECT_EQ(utf8_replace_invalid("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(utf8_replace_invalid("\xF0\x9F\x98"), r);
  EXPECT_EQ(utf8_replace_invalid(std::string("a\0b", 3)), std::string("a\0b", 3));  // NUL is a character
}

TEST(TokenizerUtf8, DecodeAndEncodeCodePoints) {
  for (char32_t c : {U'\0', U'a', U'\u00e9', U'\u07ff', U'\u0800', U'\u4e2d', U'\uffff', U'\U00010000', U'\U0010ffff'}) {
    std::string s;
    utf8_append(s, c);
    EXPECT_TRUE(utf8_valid(s));
    std::size_t i = 0;
    EXPECT_EQ(utf8_next(s, i), c);
    EXPECT_EQ(i, s.size());
  }
}

// The onig crate's find_iter (6.5): an empty match where the last match ended is dropped and the search moves on
// by one character; other empty matches are kept. Results confirmed with the library's Split pre-tokeniser.
TEST(TokenizerRegex, EmptyMatchesAsTheOnigCrateIteratesThem) {
  EXPECT_EQ(matches("a*", "baaac"), (Pairs{{0, 0}, {1, 4}, {5, 5}}));  // not (4, 4): right after (1, 4)
  EXPECT_EQ(matches("a|(?=c)", "abc"), (Pairs{{0, 1}, {2, 2}}));       // (2, 2) does not follow a match
  EXPECT_EQ(matches("", "ab"), (Pairs{{0, 0}, {1, 1}, {2, 2}}));
  EXPECT_EQ(matches("", "\xC3\xA9x"), (Pairs{{0, 0}, {2, 2}, {3, 3}}));  // steps whole characters
  EXPECT_EQ(matches("x", ""), Pairs{});
  EXPECT_EQ(matches("x*", ""), (Pairs{{0, 0}}));
}

TEST(TokenizerRegex, AnchorsAreLineAnchorsAsInRubySyntax) {
  // library: "\s+$" on "ab  \ncd  \n  " splits off "  " before the first newline
  EXPECT_EQ(matches("\\s+$", "ab  \ncd  \n  "), (Pairs{{2, 4}, {7, 12}}));
  EXPECT_EQ(matches("^a", "ab\nab\nab"), (Pairs{{0, 1}, {3, 4}, {6, 7}}));
  EXPECT_EQ(matches("b$", "ab\nab\r\nab"), (Pairs{{1, 2}, {8, 9}}));  // not before "\r\n"
}

TEST(TokenizerRegex, UnicodeClassesCaseFoldingAndEscapes) {
  // \s is White_Space: U+180E (Mongolian vowel separator) is not, though PCRE2's own \s would take it
  EXPECT_EQ(matches("\\s", "a\xE1\xA0\x8E" "b"), Pairs{});
  EXPECT_EQ(matches("\\S+", "a\xE1\xA0\x8E" "b c"), (Pairs{{0, 5}, {6, 7}}));
  EXPECT_EQ(matches("[^\\s]+", "x\xC2\x85y\xE3\x80\x80z"), (Pairs{{0, 1}, {3, 4}, {7, 8}}));  // NEL, ideographic space
  // case-insensitive groups fold Unicode: 'ſ' (U+017F) matches s (library: "x'ſ" -> "x", "'ſ")
  EXPECT_EQ(matches("(?i:'s|'ll)", "it'S we'LL x'\xC5\xBF"), (Pairs{{2, 4}, {7, 10}, {12, 15}}));
  // \p{N} with a repeat count, across scripts (Arabic-Indic digits are Nd)
  EXPECT_EQ(matches("\\p{N}{1,3}", "12345a\xD9\xA3\xD9\xA4\xD9\xA5\xD9\xA6"), (Pairs{{0, 3}, {3, 5}, {6, 12}, {12, 14}}));
  // Ruby's \uHHHH, and \x{...}
  EXPECT_EQ(matches("\\u00e9+", "caf\xC3\xA9\xC3\xA9s"), (Pairs{{3, 7}}));
  EXPECT_EQ(matches("\\x{4e2d}", "a\xE4\xB8\xAD" "b"), (Pairs{{1, 4}}));
  // literal patterns take regex characters as themselves
  Regex lit("a.b", true, "t.json: p");
  std::vector<Span> found;
  lit.find_all("axb a.b", found);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].begin, 4u);
}

TEST(TokenizerRegex, RejectsWhatTheEnginesReadDifferently) {
  for (const char* p : {"\\w", "\\W+", "a\\b", "\\B", "\\h", "\\H", "[[:alpha:]]", "[a-z&&[^aeiou]]", "(?m)a", "(?s:.)", "[\\S]"}) {
    expect_input_error([&] { Regex(p, false, "t.json: p"); }, {"t.json: p", "not supported"});
  }
  // inside \Q...\E anything is literal, and an escaped backslash is no escape
  EXPECT_NO_THROW(Regex("\\Q\\w\\E", false, "t"));
  EXPECT_EQ(matches("\\\\w", "a\\wb"), (Pairs{{1, 3}}));
  expect_input_error([] { Regex("(a", false, "t.json: p"); }, {"t.json: p: regex does not compile at offset 2"});
}

TEST(TokenizerRegex, CatastrophicPatternsFailWithAnInputError) {
  // exponential backtracking reaches PCRE2's match limit: an error naming the pattern, not a hang
  Regex re("(a+)+$", false, "t.json: p");
  std::vector<Span> found;
  expect_input_error([&] { re.find_all(std::string(40, 'a') + "!", found); }, {"t.json: p", "regex matching failed"});
}

TEST(TokenizerNormalize, IcuForms) {
  const std::string decomposed = "e\xCC\x81";  // e + U+0301
  const std::string composed = "\xC3\xA9";     // U+00E9
  EXPECT_EQ(unicode_normalize(decomposed, UnicodeForm::NFC), composed);
  EXPECT_EQ(unicode_normalize(composed, UnicodeForm::NFD), decomposed);
  EXPECT_EQ(unicode_normalize("\xEF\xAC\x81", UnicodeForm::NFKC), "fi");        // U+FB01 ligature
  EXPECT_EQ(unicode_normalize("\xEF\xAC\x81", UnicodeForm::NFC), "\xEF\xAC\x81");  // canonical forms keep it
  EXPECT_EQ(unicode_normalize("\xEF\xBC\x91", UnicodeForm::NFKD), "1");         // fullwidth digit one
  EXPECT_EQ(unicode_normalize("A\xCC\x8A", UnicodeForm::NFC), "\xC3\x85");      // A + ring -> U+00C5
  EXPECT_EQ(unicode_normalize("plain ascii", UnicodeForm::NFKD), "plain ascii");
}

TEST(TokenizerByteLevel, Gpt2BytesToUnicode) {
  const auto& chars = byte_level_chars();
  EXPECT_EQ(chars['A'], "A");
  EXPECT_EQ(chars[' '], "\xC4\xA0");    // U+0120 'Ġ'
  EXPECT_EQ(chars['\n'], "\xC4\x8A");   // U+010A 'Ċ'
  EXPECT_EQ(chars[0], "\xC4\x80");      // U+0100
  EXPECT_EQ(chars[0x7F], "\xC4\xA1");   // U+0121
  EXPECT_EQ(chars[0xAD], "\xC5\x83");   // U+0143, the last one
  EXPECT_EQ(chars[0xE9], "\xC3\xA9");   // printable Latin-1 stands for itself
  for (int b = 0; b < 256; ++b) {
    std::size_t i = 0;
    EXPECT_EQ(byte_level_byte(utf8_next(chars[static_cast<std::size_t>(b)], i)), b);
  }
  EXPECT_EQ(byte_level_byte(U'\u0144'), -1);
  EXPECT_EQ(byte_level_byte(U' '), -1);  // space is mapped away
}

TEST(TokenizerUnicode, WhiteSpaceAndWordCharacters) {
  EXPECT_TRUE(is_white_space(U' '));
  EXPECT_TRUE(is_white_space(U'\u3000'));
  EXPECT_TRUE(is_white_space(U'\u0085'));
  EXPECT_FALSE(is_white_space(U'\u180E'));
  EXPECT_FALSE(is_white_space(U'\u200B'));  // zero-width space is not White_Space
  EXPECT_TRUE(is_word_char(U'a'));
  EXPECT_TRUE(is_word_char(U'_'));
  EXPECT_TRUE(is_word_char(U'\u0301'));  // a mark
  EXPECT_TRUE(is_word_char(U'\u4e2d'));
  EXPECT_TRUE(is_word_char(U'\u200D'));  // join control
  EXPECT_FALSE(is_word_char(U'-'));
  EXPECT_FALSE(is_word_char(U'\u00bd'));  // ½ is No, not Nd
}

}  // namespace
}  // namespace moescope::detail
