#pragma once
// Hugging Face tokenizer.json files (the `tokenizers` library's serialised Tokenizer), BPE models only:
// byte-level BPE (GPT-2, OLMoE, Qwen2/Qwen3-MoE, Llama 3, DeepSeek) and sentencepiece-style BPE with byte
// fallback (Llama 2, Mistral/Mixtral). Text becomes the ids that library's Tokenizer.encode(text,
// add_special_tokens) returns; decode() returns what its Tokenizer.decode(ids, skip_special_tokens) returns.
//
// What a file may use (anything else is an InputError naming the file and the JSON path):
//   model           BPE: vocab, merges ("a b" strings or ["a", "b"] pairs; rank = position), unk_token, fuse_unk,
//                   byte_fallback, ignore_merges; continuing_subword_prefix / end_of_word_suffix empty or null;
//                   dropout null or 0
//   normalizer      null, NFC, NFD, NFKC, NFKD (ICU), Prepend, Replace (String or Regex pattern), Sequence
//   pre_tokenizer   null, ByteLevel (add_prefix_space, use_regex: GPT-2's split pattern), Split (String or Regex
//                   pattern; behavior Removed / Isolated / MergedWithPrevious / MergedWithNext / Contiguous; invert),
//                   Digits (individual_digits), Metaspace (replacement, prepend_scheme first / always / never or the
//                   older add_prefix_space, split), Sequence
//   post_processor  null, TemplateProcessing (the single template), ByteLevel, RobertaProcessing, BertProcessing,
//                   Sequence; applied only when encode's add_special is true
//   decoder         null (tokens joined by " "), ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence
//   added_tokens    matched before normalisation (normalized: false) or in the normalised text (normalized: true),
//                   leftmost-longest, with single_word, lstrip and rstrip as the library applies them; their ids
//                   must be the ones the library gives them (the id of the same token in model.vocab, else the
//                   next free id after the vocabulary, in file order)
//   truncation, padding: ignored (encode returns every id)
// Regex patterns are compiled with PCRE2 in UTF mode with Unicode properties (\p{L}, \p{N}, case-insensitive
// groups, lookahead), with ^ and $ matching at line breaks (Oniguruma's Ruby syntax, the library's engine),
// Ruby's \uHHHH, \s as Unicode White_Space (PCRE2's own \s also takes U+180E), and matches iterated as the
// onig crate iterates them. Constructs the two engines read differently (\w \W \b \B \h \H, POSIX and nested
// classes, inline m/s options) are rejected rather than approximated. Known difference: Debian 12's PCRE2 10.42
// has Unicode 14 property tables and the library's Oniguruma Unicode 16, so characters assigned since Unicode 15
// (about 9,300 letters, among them CJK Extensions H and I and scripts such as Kawi, Garay and Todhri) are not
// \p{L} here; for all older characters \s, \S, \p{L}, \p{N}, \p{P}, \p{S}, \p{M} and GPT-2's and Qwen2's classes
// were checked to match the library's, code point by code point. Normalisation is ICU 72 (Unicode 15).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace moescope {

/// A tokenizer read from a tokenizer.json file. Cheap to copy (copies share the parsed tables and the word
/// cache); encode() and decode() are safe to call from several threads at once.
class Tokenizer {
 public:
  /// Reads and validates a tokenizer.json file. Throws InputError("<path>: <json path> <problem>") when the file
  /// cannot be read, is not JSON, or uses something listed as unsupported above, e.g.
  /// "tokenizer.json: pre_tokenizer.type 'Whitespace' is not supported", a merge naming a token not in the
  /// vocabulary, a duplicate or out-of-range id, or a regex PCRE2 cannot compile.
  static Tokenizer from_file(const std::string& tokenizer_json);
  /// The same from parsed JSON; `name` is used in messages in place of the file name.
  static Tokenizer from_json(const nlohmann::json& tokenizer, const std::string& name);

  /// The ids of `text` (UTF-8). Added tokens (special or not) are recognised in the text whatever
  /// `add_special`; `add_special` runs the post-processor (e.g. Llama/Mixtral's "<s>" in front).
  /// Ill-formed UTF-8 is first replaced by U+FFFD, one per maximal subpart (as Python's
  /// bytes.decode("utf-8", errors="replace") does), so that byte-level and byte-fallback models encode what
  /// Hugging Face would encode for the decoded string; decode() then returns the replaced text.
  /// Throws InputError when the model needs its unk_token and the vocabulary lacks it, or a regex hits
  /// PCRE2's match limit.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const;

  /// The text of `ids` through the file's decoder; ids that name no token are skipped, as the library does.
  /// With `skip_special`, special added tokens are left out. Always valid UTF-8 (byte-level decoding of bytes
  /// that do not form UTF-8 yields U+FFFD, as the library's lossy conversion does).
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = false) const;

  /// The pieces the model sees for `text`: after added-token extraction, normalisation and pre-tokenisation
  /// (byte-level pieces in their mapped form, e.g. "Ġworld"); added tokens appear as their content.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  /// One more than the largest id of the vocabulary and the added tokens: the rows an embedding needs.
  std::int64_t vocab_size() const;
  /// The id of a token (added tokens first, then the model's vocabulary), as the library's token_to_id.
  std::optional<std::int32_t> token_id(std::string_view token) const;
  /// The token of an id (added tokens first), as the library's id_to_token; std::nullopt when none.
  std::optional<std::string> token(std::int32_t id) const;
  /// True when `id` is an added token marked special.
  bool is_special(std::int32_t id) const;
  /// The name given to from_json, or the file path.
  const std::string& name() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace moescope
