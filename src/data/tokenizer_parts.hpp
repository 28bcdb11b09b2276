#pragma once
// Internal pieces of data/tokenizer.hpp: UTF-8 helpers, Unicode properties and normalisation (ICU), a regex
// (PCRE2) iterated as the tokenizers library iterates its Oniguruma matches, the GPT-2 byte-to-unicode map,
// and the BPE model with its word cache.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct pcre2_real_code_8;  // pcre2.h's pcre2_code (8-bit), kept out of this header

namespace moescope::detail {

// ---------------------------------------------------------------------------------------------- UTF-8

/// Length of the well-formed UTF-8 sequence that starts at s[i] (1..4), or 0 when none starts there
/// (Unicode Table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF).
std::size_t utf8_length_at(std::string_view s, std::size_t i);
/// True when all of s is well-formed UTF-8.
bool utf8_valid(std::string_view s);
/// s with every maximal subpart of an ill-formed sequence replaced by U+FFFD (Unicode 15, section 3.9,
/// "U+FFFD Substitution of Maximal Subparts"; what Python's errors="replace" and WHATWG decoders do).
std::string utf8_replace_invalid(std::string_view s);
/// The code point at s[i] (s well-formed); advances i past it.
char32_t utf8_next(std::string_view s, std::size_t& i);
/// Appends the UTF-8 encoding of c.
void utf8_append(std::string& out, char32_t c);
/// Number of code points of well-formed s.
std::size_t utf8_count(std::string_view s);
/// s for a one-line message: control characters written as \n, \r, \t or \xNN, and cut after about
/// `max_bytes` bytes (at a character boundary) with "...".
std::string printable(std::string_view s, std::size_t max_bytes = 80);

// ------------------------------------------------------------------------------------ Unicode (ICU)

/// Unicode White_Space (Rust's char::is_whitespace and the regex crate's \s).
bool is_white_space(char32_t c);
/// The regex crate's Unicode \w: Alphabetic, Mark, Decimal_Number, Connector_Punctuation, Join_Control.
bool is_word_char(char32_t c);

enum class UnicodeForm { NFC, NFD, NFKC, NFKD };
/// s (well-formed UTF-8) in the given normalisation form, by ICU.
std::string unicode_normalize(std::string_view s, UnicodeForm form);

// --------------------------------------------------------------------------------------------- regex

/// A byte range [begin, end) of a subject.
struct Span {
  std::size_t begin = 0;
  std::size_t end = 0;
};

/// A pattern compiled by PCRE2 (UTF, Unicode properties, ^ and $ at line breaks as in Oniguruma's Ruby syntax),
/// JIT-compiled where the platform allows.
class Regex {
 public:
  /// Compiles `pattern`, or matches it literally when `literal`. `where` ("<file>: <json path>") starts the
  /// messages. Ruby's \uHHHH becomes \x{HHHH}; \s and \S become explicit Unicode White_Space classes (PCRE2's
  /// \s also takes U+180E). Throws InputError for a pattern PCRE2 rejects or one using \w \W \b \B \h \H, \S in
  /// a class, POSIX or nested classes, class intersection, or an inline m / s option (the engines differ there).
  Regex(std::string_view pattern, bool literal, std::string where);
  /// The matches in `subject` (well-formed UTF-8), in order, as the onig crate's find_iter (6.5) yields them:
  /// each search starts where the last match ended, and an empty match where the last match ended is dropped
  /// and the search moved one character on. Throws InputError on a PCRE2 matching error (match or depth limit).
  void find_all(std::string_view subject, std::vector<Span>& out) const;

 private:
  std::shared_ptr<pcre2_real_code_8> code_;
  bool jit_ = false;
  std::string where_;
};

// --------------------------------------------------------------------------------------- byte level

/// GPT-2's bytes_to_unicode: the UTF-8 text of the character byte b stands for.
const std::array<std::string, 256>& byte_level_chars();
/// The byte a character stands for, or -1 when c is none of the 256.
int byte_level_byte(char32_t c);

// ---------------------------------------------------------------------------------------------- BPE

/// An open-addressing hash map from 64-bit keys (never ~0) to 64-bit values: the merge table.
class FlatMap64 {
 public:
  void reserve(std::size_t n);
  /// Inserts or overwrites.
  void set(std::uint64_t key, std::uint64_t value);
  /// The value of key, or nullptr.
  const std::uint64_t* find(std::uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.value;
      if (s.key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  struct Slot {
    std::uint64_t key = kEmpty;
    std::uint64_t value = 0;
  };
  std::size_t slot_of(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_) & mask_;
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0, count_ = 0;
  int shift_ = 0;
};

/// Words already encoded: an open-addressing table of (word, ids) with the bytes and ids in two arenas;
/// it stops taking words when full (as the library's cache does).
class WordCache {
 public:
  explicit WordCache(std::size_t max_words) : max_words_(max_words) {}
  /// Appends the ids of `word` to out and returns true when cached.
  bool find(std::string_view word, std::size_t hash, std::vector<std::int32_t>& out) const;
  void insert(std::string_view word, std::size_t hash, const std::int32_t* ids, std::size_t n);

 private:
  struct Slot {
    std::size_t hash = 0;
    std::uint32_t key = 0, key_len = 0, ids = 0, ids_len = 0;
    bool used = false;
  };
  std::size_t max_words_;
  std::size_t count_ = 0;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<std::int32_t> ids_;
};

/// A BPE model: vocabulary, ranked merges, unknown-token and byte-fallback rules, and a word cache.
class BpeModel {
 public:
  struct Options {
    std::optional<std::string> unk_token;
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;
  };
  /// `vocab`: (token, id) pairs (ids unique, >= 0); `merges`: (left, right) pairs in rank order. A pair listed
  /// twice keeps its last rank, as in the library. Throws InputError("<where>...") for a duplicate token or id,
  /// a merge naming a token that is not in the vocabulary, or a merge whose result is not in it.
  BpeModel(std::vector<std::pair<std::string, std::int32_t>> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, Options options, std::string where);

  /// Appends the ids of one pre-tokenised word (well-formed UTF-8). Throws InputError when an unknown
  /// character needs unk_token and the vocabulary lacks it.
  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const;
  /// The same for the word whose GPT-2 byte-level mapping is byte_level_chars() of each byte of `raw`, without
  /// building that mapping when the vocabulary holds all 256 byte characters.
  void encode_bytes(std::string_view raw, std::vector<std::int32_t>& out) const;

  std::optional<std::int32_t> id(std::string_view token) const;
  const std::string* token(std::int32_t id) const;
  std::int64_t size() const { return static_cast<std::int64_t>(tokens_.size()); }
  std::int32_t max_id() const { return max_id_; }

 private:
  // Appends the initial symbols of `word` (characters, byte tokens, unk) to sym.
  void initial_symbols(std::string_view word, std::vector<std::int32_t>& sym) const;
  // Merges sym in place.
  void merge(std::vector<std::int32_t>& sym) const;
  std::int32_t unk_id() const;

  Options options_;
  std::string where_;
  std::vector<std::string> tokens_;  // storage; the maps below view into it
  std::unordered_map<std::string_view, std::int32_t> vocab_;
  std::unordered_map<std::int32_t, std::size_t> by_id_;  // id -> index into tokens_
  FlatMap64 merges_;                                      // (left id << 32 | right id) -> (rank << 32 | merged id)
  std::vector<std::int32_t> bmp_ids_;                     // id of each one-character token below U+10000, or -1
  std::array<std::int32_t, 256> byte_ids_{};              // "<0xXX>" ids, -1 when absent
  std::array<std::int32_t, 256> byte_level_ids_{};        // id of the byte-level character of each byte
  bool byte_level_complete_ = false;                      // all 256 of them are tokens
  std::unordered_map<std::string, std::int32_t> raw_vocab_;  // byte-level tokens as raw bytes (ignore_merges)
  std::int32_t max_id_ = -1;

  static constexpr std::size_t kCacheWords = 1 << 16;  // words remembered (the library keeps 10,000)
  static constexpr std::size_t kCacheMaxBytes = 256;   // longer words are not cached (as the library)
  mutable std::mutex cache_mutex_;
  mutable WordCache cache_{kCacheWords};      // words as given to encode_word
  mutable WordCache raw_cache_{kCacheWords};  // raw words given to encode_bytes
};

}  // namespace moescope::detail
