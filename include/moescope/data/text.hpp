#pragma once
// Language-modelling corpora as token ids: word level (WikiText-103 / PTB token files), byte level and
// character level (TinyStories-style plain text). Each split is a flat std::vector<int32_t>.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moescope/data/split.hpp"

namespace moescope {

/// The unknown-word token, and the end-of-line token of word-level corpora.
inline constexpr const char* kUnkToken = "<unk>";
inline constexpr const char* kEosToken = "<eos>";

/// A bijection between tokens (non-empty byte strings) and ids 0..size()-1, in insertion order.
class Vocabulary {
 public:
  /// Adds `token` if it is new; returns its id. Throws std::invalid_argument for an empty token.
  std::int32_t add(const std::string& token);
  /// The id of `token`, or -1 when absent.
  std::int32_t find(const std::string& token) const;
  /// The id of `token`, or the id of "<unk>" when absent; throws std::logic_error when both are absent.
  std::int32_t id(const std::string& token) const;
  /// The token of `id`; throws std::out_of_range.
  const std::string& token(std::int32_t id) const;
  std::int32_t size() const { return static_cast<std::int32_t>(tokens_.size()); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  /// The tokens of `ids` joined by `separator` (" " for words, "" for bytes and characters).
  std::string decode(const std::vector<std::int32_t>& ids, std::string_view separator) const;

  /// Writes "moescope-vocabulary 1" and then one token per line (line k + 2 holds id k), with \\, \n, \r
  /// and \t escaped; written to "<path>.tmp" and renamed. Throws InputError when the file cannot be written.
  void save(const std::string& path) const;
  /// Reads what save() writes. Throws InputError naming the file and line on a missing header, an empty
  /// or duplicate token, or a bad escape.
  static Vocabulary load(const std::string& path);

  bool operator==(const Vocabulary& other) const { return tokens_ == other.tokens_; }
  bool operator!=(const Vocabulary& other) const { return !(*this == other); }

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, std::int32_t> ids_;
};

/// A tokenised corpus: the vocabulary (its size is the model's output size) and the ids of each split.
struct TextCorpus {
  Vocabulary vocab;
  std::vector<std::int32_t> train;
  std::vector<std::int32_t> valid;
  std::vector<std::int32_t> test;
  std::int64_t unknown_valid = 0;  // valid tokens not in the vocabulary, mapped to <unk>
  std::int64_t unknown_test = 0;   // likewise for test
  std::int64_t invalid_utf8 = 0;   // character level: ill-formed UTF-8 sequences replaced by U+FFFD
};

/// Word level, as the WikiText/PTB token files are meant to be read: every line (blank ones too) is its
/// whitespace-separated tokens (ASCII space, \t, \r, \v, \f) followed by "<eos>"; a final line without
/// '\n' counts when non-empty. The vocabulary is "<unk>" = 0, "<eos>" = 1, then the training tokens in
/// order of first occurrence; valid and test tokens outside it map to <unk>.
TextCorpus word_corpus(std::string_view train, std::string_view valid, std::string_view test);

/// word_corpus() of wiki.{train,valid,test}.tokens (WikiText-2/103) or ptb.{train,valid,test}.txt in `dir`.
/// Throws InputError when `dir` holds neither set.
TextCorpus read_word_corpus(const std::string& dir);

/// A file's bytes, or for a folder its regular files in sorted name order, concatenated with a '\n'
/// added after any file not ending in one. In a folder only files with no extension or ".txt" are read
/// (fortune's text files have none; its .dat indexes and .u8 links are skipped), hidden files and
/// subfolders are not. Throws InputError when the path is missing or a folder holds no such file.
std::string read_text(const std::string& path);

/// Byte level: ids are the bytes (vocabulary of the 256 one-byte tokens, id = byte value), split into
/// contiguous train/valid/test parts by `fractions` (split_contiguous over the bytes).
TextCorpus byte_corpus(std::string_view text, const SplitFractions& fractions = {});

/// Character level: the text is decoded as UTF-8 (ill-formed sequences become U+FFFD, one per maximal
/// ill-formed subpart, as the Unicode standard recommends) and split contiguously by `fractions` over code
/// points. The vocabulary is "<unk>" = 0, then the code points seen in train in ascending order (each as
/// its UTF-8 string); valid/test code points outside it map to <unk>.
TextCorpus char_corpus(std::string_view text, const SplitFractions& fractions = {});

}  // namespace moescope
