// tokenizer.json: parsing into a pipeline (added tokens -> normaliser -> pre-tokeniser -> BPE -> post-processor,
// and the decoder), following the tokenizers library's semantics step by step; see data/tokenizer.hpp.
#include "moescope/data/tokenizer.hpp"

#include <algorithm>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "moescope/util/error.hpp"
#include "tokenizer_parts.hpp"

namespace moescope {

using nlohmann::json;
using detail::Regex;
using detail::Span;

namespace {

// ------------------------------------------------------------------------------------- JSON helpers

// Where we are in the file, for messages: "<file>: <json path>".
struct At {
  const std::string& file;
  std::string path;
  At sub(const std::string& key) const { return At{file, path.empty() ? key : path + "." + key}; }
  At index(std::size_t i) const { return At{file, path + "[" + std::to_string(i) + "]"}; }
  std::string where() const { return file + ": " + path; }
  [[noreturn]] void fail(const std::string& what) const { throw InputError(detail::printable(where() + " " + what, 4000)); }
};

std::string json_kind(const json& j) {
  if (j.is_null()) return "null";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "an array";
  return "an object";
}

const json& required(const json& obj, const char* key, const At& at) {
  const auto it = obj.find(key);
  if (it == obj.end()) at.fail(std::string("has no '") + key + "'");
  return *it;
}

const json* optional_field(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

void expect_object(const json& j, const At& at) {
  if (!j.is_object()) at.fail("is " + json_kind(j) + ", not an object");
}

bool get_bool(const json& obj, const char* key, const At& at, bool fallback) {
  const json* v = optional_field(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) at.sub(key).fail("is " + json_kind(*v) + ", not a boolean");
  return v->get<bool>();
}

std::string get_string(const json& v, const At& at) {
  if (!v.is_string()) at.fail("is " + json_kind(v) + ", not a string");
  return v.get<std::string>();
}

std::int64_t get_int(const json& v, const At& at, std::int64_t lo, std::int64_t hi) {
  std::int64_t x = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(hi)) at.fail(std::to_string(u) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    x = static_cast<std::int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<std::int64_t>();
  } else {
    at.fail("is " + json_kind(v) + ", not an integer");
  }
  if (x < lo || x > hi) at.fail(std::to_string(x) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

std::int32_t get_id(const json& v, const At& at) {
  return static_cast<std::int32_t>(get_int(v, at, 0, std::numeric_limits<std::int32_t>::max()));
}

// A single character (Rust's `char` fields: Metaspace.replacement, Strip.content).
char32_t get_char(const json& v, const At& at) {
  const std::string s = get_string(v, at);
  std::size_t i = 0;
  if (s.empty() || detail::utf8_length_at(s, 0) != s.size()) at.fail("'" + detail::printable(s) + "' is not a single character");
  return detail::utf8_next(s, i);
}

std::string type_of(const json& obj, const At& at) {
  expect_object(obj, at);
  return get_string(required(obj, "type", at), at.sub("type"));
}

[[noreturn]] void unsupported_type(const std::string& type, const At& at) {
  at.sub("type").fail("'" + detail::printable(type) + "' is not supported");
}

// {"String": s} (matched literally) or {"Regex": r}.
std::shared_ptr<const Regex> get_pattern(const json& obj, const At& at) {
  const At pat = at.sub("pattern");
  const json& p = required(obj, "pattern", at);
  expect_object(p, pat);
  if (p.size() != 1) pat.fail("must hold exactly one of 'String' and 'Regex'");
  if (const auto it = p.find("String"); it != p.end()) {
    return std::make_shared<Regex>(get_string(*it, pat.sub("String")), true, pat.sub("String").where());
  }
  if (const auto it = p.find("Regex"); it != p.end()) {
    return std::make_shared<Regex>(get_string(*it, pat.sub("Regex")), false, pat.sub("Regex").where());
  }
  pat.fail("'" + detail::printable(p.begin().key()) + "' is not 'String' or 'Regex'");
}

// ---------------------------------------------------------------------------------------- splitting

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior get_behavior(const json& v, const At& at) {
  const std::string b = get_string(v, at);
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  at.fail("'" + detail::printable(b) + "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

// The library's NormalizedString::split: `matches` cover no text or all of it in order; returns the kept,
// non-empty pieces.
void split_by(std::size_t n, const std::vector<Span>& found, Behavior behavior, bool invert, std::vector<Span>& out) {
  out.clear();
  if (behavior == Behavior::Isolated && !invert) {  // the common case: every match and every gap, in order
    std::size_t prev = 0;
    for (const Span& m : found) {
      if (prev < m.begin) out.push_back({prev, m.begin});
      if (m.begin < m.end) out.push_back(m);
      prev = m.end;
    }
    if (prev < n) out.push_back({prev, n});
    return;
  }
  struct Part {
    Span span;
    bool match;
  };
  std::vector<Part> parts;
  if (n == 0) {
    parts.push_back({{0, 0}, false});
  } else {
    std::size_t prev = 0;
    for (const Span& m : found) {
      if (prev != m.begin) parts.push_back({{prev, m.begin}, false});
      parts.push_back({m, true});
      prev = m.end;
    }
    if (prev != n) parts.push_back({{prev, n}, false});
  }
  if (invert) {
    for (auto& p : parts) p.match = !p.match;
  }
  std::vector<Part> kept;  // match = "remove" from here on
  kept.reserve(parts.size());
  bool previous = false;
  switch (behavior) {
    case Behavior::Isolated:
      for (const auto& p : parts) kept.push_back({p.span, false});
      break;
    case Behavior::Removed:
      kept = parts;
      break;
    case Behavior::Contiguous:
      for (const auto& p : parts) {
        if (p.match == previous && !kept.empty()) {
          kept.back().span.end = p.span.end;
        } else {
          kept.push_back({p.span, false});
        }
        previous = p.match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const auto& p : parts) {
        if (p.match && !previous && !kept.empty()) {
          kept.back().span.end = p.span.end;
        } else {
          kept.push_back({p.span, false});
        }
        previous = p.match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !previous && !kept.empty()) {
          kept.back().span.begin = it->span.begin;
        } else {
          kept.push_back({it->span, false});
        }
        previous = it->match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  out.clear();
  for (const auto& p : kept) {
    if (!p.match && p.span.end > p.span.begin) out.push_back(p.span);
  }
}

// Two span vectors per nesting level of pre-tokenisers, reused across calls on this thread (run() calls nest
// through the sinks, so each level needs its own).
class SpanScratch {
 public:
  SpanScratch() : level_(depth()++) {
    auto& pool = pools();
    if (pool.size() <= level_) pool.resize(level_ + 1);
  }
  ~SpanScratch() { --depth(); }
  SpanScratch(const SpanScratch&) = delete;
  SpanScratch& operator=(const SpanScratch&) = delete;
  std::vector<Span>& found() { return pools()[level_].first; }
  std::vector<Span>& parts() { return pools()[level_].second; }

 private:
  static std::size_t& depth() {
    thread_local std::size_t d = 0;
    return d;
  }
  static std::deque<std::pair<std::vector<Span>, std::vector<Span>>>& pools() {  // deque: growing keeps references
    thread_local std::deque<std::pair<std::vector<Span>, std::vector<Span>>> p;
    return p;
  }
  std::size_t level_;
};

// --------------------------------------------------------------------------------------- normalisers

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};

struct UnicodeNormalizer final : Normalizer {
  detail::UnicodeForm form;
  explicit UnicodeNormalizer(detail::UnicodeForm f) : form(f) {}
  void apply(std::string& s) const override { s = detail::unicode_normalize(s, form); }
};

struct PrependNormalizer final : Normalizer {
  std::string prepend;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend);
  }
};

// Replaces every match (non-overlapping, left to right) with `content`; used as normaliser and as decoder.
struct Replacer {
  std::shared_ptr<const Regex> regex;
  std::string content;
  void apply(std::string& s) const {
    std::vector<Span> found;
    regex->find_all(s, found);
    if (found.empty()) return;
    std::string out;
    out.reserve(s.size());
    std::size_t prev = 0;
    for (const Span& m : found) {
      out.append(s, prev, m.begin - prev).append(content);
      prev = m.end;
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
  }
};

struct ReplaceNormalizer final : Normalizer {
  Replacer replacer;
  void apply(std::string& s) const override { replacer.apply(s); }
};

struct SequenceNormalizer final : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> items;
  void apply(std::string& s) const override {
    for (const auto& n : items) n->apply(s);
  }
};

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const At& at) {
  const std::string type = type_of(j, at);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(detail::UnicodeForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(detail::UnicodeForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(detail::UnicodeForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(detail::UnicodeForm::NFKD);
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prepend = get_string(required(j, "prepend", at), at.sub("prepend"));
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->replacer.regex = get_pattern(j, at);
    n->replacer.content = get_string(required(j, "content", at), at.sub("content"));
    return n;
  }
  if (type == "Sequence") {
    const At items = at.sub("normalizers");
    const json& list = required(j, "normalizers", at);
    if (!list.is_array()) items.fail("is " + json_kind(list) + ", not an array");
    auto n = std::make_unique<SequenceNormalizer>();
    for (std::size_t i = 0; i < list.size(); ++i) n->items.push_back(parse_normalizer(list[i], items.index(i)));
    return n;
  }
  unsupported_type(type, at);
}

// ----------------------------------------------------------------------------------- pre-tokenisers

// Receives the pieces a pre-tokeniser makes. at_origin: the piece starts at offset 0 of the input text
// (Metaspace's prepend_scheme "first" looks at it).
struct PieceSink {
  virtual ~PieceSink() = default;
  virtual void take(std::string_view piece, bool at_origin) = 0;
  // A piece given as raw bytes; its text is their GPT-2 byte-level mapping. The model takes the bytes directly.
  virtual void take_bytes(std::string_view raw, bool at_origin) {
    std::string mapped;
    mapped.reserve(2 * raw.size());
    for (char b : raw) mapped += detail::byte_level_chars()[static_cast<unsigned char>(b)];
    take(mapped, at_origin);
  }
};

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  // Splits/transforms one piece and passes the results on.
  virtual void run(std::string_view piece, bool at_origin, PieceSink& next) const = 0;
};

struct SplitPreTokenizer final : PreTokenizer {
  std::shared_ptr<const Regex> regex;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  void run(std::string_view piece, bool at_origin, PieceSink& next) const override {
    SpanScratch scratch;
    std::vector<Span>&found = scratch.found(), &parts = scratch.parts();
    found.clear();
    if (!piece.empty()) regex->find_all(piece, found);
    split_by(piece.size(), found, behavior, invert, parts);
    for (const Span& p : parts) next.take(piece.substr(p.begin, p.end - p.begin), at_origin && p.begin == 0);
  }
};

// GPT-2's split pattern, which ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteLevelPreTokenizer final : PreTokenizer {
  bool add_prefix_space = true;
  std::shared_ptr<const Regex> regex;  // null when use_regex is false
  void run(std::string_view piece, bool at_origin, PieceSink& next) const override {
    std::string prefixed;
    if (add_prefix_space && (piece.empty() || piece.front() != ' ')) {
      prefixed.reserve(piece.size() + 1);
      prefixed.append(" ").append(piece);
      piece = prefixed;
    }
    auto emit = [&](std::string_view part, bool origin) { next.take_bytes(part, origin); };
    if (!regex) {
      if (!piece.empty()) emit(piece, at_origin);
      return;
    }
    SpanScratch scratch;
    std::vector<Span>&found = scratch.found(), &parts = scratch.parts();
    regex->find_all(piece, found);
    split_by(piece.size(), found, Behavior::Isolated, false, parts);
    for (const Span& p : parts) emit(piece.substr(p.begin, p.end - p.begin), at_origin && p.begin == 0);
  }
};

enum class PrependScheme { First, Always, Never };

PrependScheme get_prepend_scheme(const json& j, const At& at) {
  // The library's Metaspace: prepend_scheme (default "always"); files from before it have add_prefix_space,
  // where false means "never".
  const json* scheme = optional_field(j, "prepend_scheme");
  const json* add = optional_field(j, "add_prefix_space");
  PrependScheme s = PrependScheme::Always;
  if (scheme) {
    const std::string v = get_string(*scheme, at.sub("prepend_scheme"));
    if (v == "first") s = PrependScheme::First;
    else if (v == "always") s = PrependScheme::Always;
    else if (v == "never") s = PrependScheme::Never;
    else at.sub("prepend_scheme").fail("'" + detail::printable(v) + "' is not one of first, always, never");
  }
  if (add) {
    if (!add->is_boolean()) at.sub("add_prefix_space").fail("is " + json_kind(*add) + ", not a boolean");
    if (!add->get<bool>()) {
      if (scheme && s != PrependScheme::Never) at.sub("add_prefix_space").fail("false does not match prepend_scheme");
      s = PrependScheme::Never;
    }
  }
  return s;
}

struct MetaspacePreTokenizer final : PreTokenizer {
  std::string replacement;  // one character, UTF-8
  PrependScheme scheme = PrependScheme::Always;
  std::shared_ptr<const Regex> split;  // the replacement, literally; null when split is false
  void run(std::string_view piece, bool at_origin, PieceSink& next) const override {
    std::string s;
    s.reserve(piece.size() + 8);
    for (char c : piece) {
      if (c == ' ') s += replacement;
      else s.push_back(c);
    }
    const bool starts = s.compare(0, replacement.size(), replacement) == 0;
    // The library prepends only to non-empty text (NormalizedString::prepend needs a first character).
    if (!s.empty() && !starts && (scheme == PrependScheme::Always || (scheme == PrependScheme::First && at_origin))) {
      s.insert(0, replacement);
    }
    if (!split) {
      if (!s.empty()) next.take(s, at_origin);
      return;
    }
    SpanScratch scratch;
    std::vector<Span>&found = scratch.found(), &parts = scratch.parts();
    found.clear();
    if (!s.empty()) split->find_all(s, found);
    split_by(s.size(), found, Behavior::MergedWithNext, false, parts);
    for (const Span& p : parts) next.take(std::string_view(s).substr(p.begin, p.end - p.begin), at_origin && p.begin == 0);
  }
};

void parse_pre_tokenizer(const json& j, const At& at, std::vector<std::unique_ptr<PreTokenizer>>& chain) {
  const std::string type = type_of(j, at);
  if (type == "Sequence") {
    const At items = at.sub("pretokenizers");
    const json& list = required(j, "pretokenizers", at);
    if (!list.is_array()) items.fail("is " + json_kind(list) + ", not an array");
    for (std::size_t i = 0; i < list.size(); ++i) parse_pre_tokenizer(list[i], items.index(i), chain);
    return;
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPreTokenizer>();
    p->regex = get_pattern(j, at);
    p->behavior = get_behavior(required(j, "behavior", at), at.sub("behavior"));
    p->invert = get_bool(j, "invert", at, false);
    chain.push_back(std::move(p));
    return;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPreTokenizer>();
    p->add_prefix_space = get_bool(j, "add_prefix_space", at, true);
    if (get_bool(j, "use_regex", at, true)) p->regex = std::make_shared<Regex>(kGpt2Pattern, false, at.where() + " (GPT-2 pattern)");
    chain.push_back(std::move(p));
    return;
  }
  if (type == "Digits") {
    // char::is_numeric is General_Category N; grouped runs (Contiguous) or one digit per piece
    auto p = std::make_unique<SplitPreTokenizer>();
    const bool individual = get_bool(j, "individual_digits", at, false);
    p->regex = std::make_shared<Regex>(individual ? "\\p{N}" : "\\p{N}+", false, at.where());
    p->behavior = Behavior::Isolated;
    chain.push_back(std::move(p));
    return;
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePreTokenizer>();
    const char32_t r = j.contains("replacement") ? get_char(j["replacement"], at.sub("replacement")) : U'\u2581';
    detail::utf8_append(p->replacement, r);
    p->scheme = get_prepend_scheme(j, at);
    if (get_bool(j, "split", at, true)) p->split = std::make_shared<Regex>(p->replacement, true, at.where());
    chain.push_back(std::move(p));
    return;
  }
  unsupported_type(type, at);
}

// ------------------------------------------------------------------------------------------ decoders

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

struct ByteLevelDecoder final : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      const std::size_t mark = bytes.size();
      bool all = true;
      for (std::size_t i = 0; i < t.size() && all;) {
        const int b = detail::byte_level_byte(detail::utf8_next(t, i));
        if (b < 0) all = false;
        else bytes.push_back(static_cast<char>(b));
      }
      if (!all) {  // a token with a character outside the map is taken as its own UTF-8 bytes
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, detail::utf8_valid(bytes) ? bytes : detail::utf8_replace_invalid(bytes));
  }
};

struct ByteFallbackDecoder final : Decoder {
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  // "<0xHH>" -> the byte (Rust's u8::from_str_radix(_, 16) also takes "+H")
  static int byte_of(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    if (t[3] == '+') return hex(t[4]);
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (detail::utf8_valid(pending)) {
        out.push_back(pending);
      } else {
        for (std::size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");  // one U+FFFD per byte
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      const int b = byte_of(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDecoder final : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

struct StripDecoder final : Decoder {
  char32_t content = U' ';
  std::size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<char32_t> chars;
      for (std::size_t i = 0; i < t.size();) chars.push_back(detail::utf8_next(t, i));
      std::size_t begin = 0;
      while (begin < std::min(start, chars.size()) && chars[begin] == content) ++begin;
      std::size_t end = chars.size();
      // (the library panics when start and stop overlap; here the token just becomes empty)
      for (std::size_t k = 0; k < stop && end > begin && chars[end - 1] == content; ++k) --end;
      std::string out;
      for (std::size_t k = begin; k < end; ++k) detail::utf8_append(out, chars[k]);
      t = std::move(out);
    }
  }
};

struct ReplaceDecoder final : Decoder {
  Replacer replacer;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) replacer.apply(t);
  }
};

struct MetaspaceDecoder final : Decoder {
  char32_t replacement = U'\u2581';
  bool prepend = true;  // prepend_scheme is not "never": the first token loses its replacement characters
  void apply(std::vector<std::string>& tokens) const override {
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      const std::string& t = tokens[k];
      std::string out;
      out.reserve(t.size());
      for (std::size_t i = 0; i < t.size();) {
        const char32_t c = detail::utf8_next(t, i);
        if (c != replacement) detail::utf8_append(out, c);
        else if (k != 0 || !prepend) out.push_back(' ');
      }
      tokens[k] = std::move(out);
    }
  }
};

struct SequenceDecoder final : Decoder {
  std::vector<std::unique_ptr<Decoder>> items;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : items) d->apply(tokens);
  }
};

std::unique_ptr<Decoder> parse_decoder(const json& j, const At& at) {
  const std::string type = type_of(j, at);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = get_char(required(j, "content", at), at.sub("content"));
    d->start = static_cast<std::size_t>(get_int(required(j, "start", at), at.sub("start"), 0, 1 << 30));
    d->stop = static_cast<std::size_t>(get_int(required(j, "stop", at), at.sub("stop"), 0, 1 << 30));
    return d;
  }
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->replacer.regex = get_pattern(j, at);
    d->replacer.content = get_string(required(j, "content", at), at.sub("content"));
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    if (j.contains("replacement")) d->replacement = get_char(j["replacement"], at.sub("replacement"));
    d->prepend = get_prepend_scheme(j, at) != PrependScheme::Never;
    return d;
  }
  if (type == "Sequence") {
    const At items = at.sub("decoders");
    const json& list = required(j, "decoders", at);
    if (!list.is_array()) items.fail("is " + json_kind(list) + ", not an array");
    auto d = std::make_unique<SequenceDecoder>();
    for (std::size_t i = 0; i < list.size(); ++i) d->items.push_back(parse_decoder(list[i], items.index(i)));
    return d;
  }
  unsupported_type(type, at);
}

// ---------------------------------------------------------------------------------- post-processors

// What a post-processor does to a single sequence: ids before, the sequence, ids after.
struct Template {
  std::vector<std::int32_t> before, after;
};

void parse_post_processor(const json& j, const At& at, Template& t) {
  const std::string type = type_of(j, at);
  if (type == "ByteLevel") return;  // only offsets
  if (type == "Sequence") {
    const At items = at.sub("processors");
    const json& list = required(j, "processors", at);
    if (!list.is_array()) items.fail("is " + json_kind(list) + ", not an array");
    // each processor wraps the result of the previous one
    for (std::size_t i = 0; i < list.size(); ++i) {
      Template inner;
      parse_post_processor(list[i], items.index(i), inner);
      t.before.insert(t.before.begin(), inner.before.begin(), inner.before.end());
      t.after.insert(t.after.end(), inner.after.begin(), inner.after.end());
    }
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto token_id = [&](const char* key) {
      const At k = at.sub(key);
      const json& v = required(j, key, at);
      if (!v.is_array() || v.size() != 2) k.fail("is not a [token, id] pair");
      get_string(v[0], k.index(0));
      return get_id(v[1], k.index(1));
    };
    t.before.push_back(token_id("cls"));
    t.after.push_back(token_id("sep"));
    return;
  }
  if (type == "TemplateProcessing") {
    const At st = at.sub("special_tokens");
    std::map<std::string, std::vector<std::int32_t>> specials;
    if (const json* s = optional_field(j, "special_tokens")) {
      expect_object(*s, st);
      for (const auto& [name, v] : s->items()) {
        const At one = st.sub(name);
        expect_object(v, one);
        const json& ids = required(v, "ids", one);
        if (!ids.is_array()) one.sub("ids").fail("is " + json_kind(ids) + ", not an array");
        std::vector<std::int32_t> list;
        for (std::size_t i = 0; i < ids.size(); ++i) list.push_back(get_id(ids[i], one.sub("ids").index(i)));
        specials[name] = list;
      }
    }
    const At single = at.sub("single");
    const json& items = required(j, "single", at);
    if (!items.is_array()) single.fail("is " + json_kind(items) + ", not an array");
    bool seen_sequence = false;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const At item = single.index(i);
      expect_object(items[i], item);
      if (const auto it = items[i].find("SpecialToken"); it != items[i].end()) {
        expect_object(*it, item.sub("SpecialToken"));
        const std::string id = get_string(required(*it, "id", item.sub("SpecialToken")), item.sub("SpecialToken.id"));
        const auto sp = specials.find(id);
        if (sp == specials.end()) item.sub("SpecialToken.id").fail("'" + detail::printable(id) + "' is not in special_tokens");
        auto& side = seen_sequence ? t.after : t.before;
        side.insert(side.end(), sp->second.begin(), sp->second.end());
      } else if (const auto sq = items[i].find("Sequence"); sq != items[i].end()) {
        expect_object(*sq, item.sub("Sequence"));
        const std::string id = get_string(required(*sq, "id", item.sub("Sequence")), item.sub("Sequence.id"));
        if (id != "A") item.sub("Sequence.id").fail("'" + detail::printable(id) + "' in the single template (only A is)");
        if (seen_sequence) item.fail("repeats the sequence");
        seen_sequence = true;
      } else {
        item.fail("is neither a SpecialToken nor a Sequence");
      }
    }
    if (!seen_sequence) single.fail("has no Sequence A");
    return;
  }
  unsupported_type(type, at);
}

// ------------------------------------------------------------------------------------- added tokens

struct AddedToken {
  std::string content;
  std::string pattern;  // what is matched: the content, normalised for normalized tokens
  std::int32_t id = 0;
  bool special = false, normalized = true, lstrip = false, rstrip = false, single_word = false;
  bool same_as(const AddedToken& o) const {
    return content == o.content && special == o.special && normalized == o.normalized && lstrip == o.lstrip &&
           rstrip == o.rstrip && single_word == o.single_word;
  }
};

// A byte trie for leftmost-longest matching of the added tokens' patterns.
class TokenTrie {
 public:
  void add(const std::string& pattern, std::int32_t value) {
    std::int32_t node = 0;
    if (nodes_.empty()) nodes_.emplace_back();
    for (char ch : pattern) {
      const auto b = static_cast<unsigned char>(ch);
      auto& kids = nodes_[static_cast<std::size_t>(node)].kids;
      auto it = std::lower_bound(kids.begin(), kids.end(), b, [](const auto& k, unsigned char x) { return k.first < x; });
      if (it != kids.end() && it->first == b) {
        node = it->second;
      } else {
        const auto fresh = static_cast<std::int32_t>(nodes_.size());
        kids.insert(it, {b, fresh});
        nodes_.emplace_back();
        node = fresh;
      }
    }
    nodes_[static_cast<std::size_t>(node)].value = value;
    first_[static_cast<unsigned char>(pattern[0])] = true;
  }
  bool empty() const { return nodes_.empty(); }
  // The longest pattern starting at s[i]: its end and value, or value -1.
  std::pair<std::size_t, std::int32_t> longest_at(std::string_view s, std::size_t i) const {
    std::pair<std::size_t, std::int32_t> best{i, -1};
    if (!first_[static_cast<unsigned char>(s[i])]) return best;
    std::int32_t node = 0;
    for (std::size_t k = i; k < s.size(); ++k) {
      const auto b = static_cast<unsigned char>(s[k]);
      const auto& kids = nodes_[static_cast<std::size_t>(node)].kids;
      auto it = std::lower_bound(kids.begin(), kids.end(), b, [](const auto& x, unsigned char y) { return x.first < y; });
      if (it == kids.end() || it->first != b) break;
      node = it->second;
      if (nodes_[static_cast<std::size_t>(node)].value >= 0) best = {k + 1, nodes_[static_cast<std::size_t>(node)].value};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::int32_t>> kids;  // sorted by byte
    std::int32_t value = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_{};
};

// A piece of text between added tokens ([begin, end), token < 0) or an added token (token = its index).
struct Segment {
  std::size_t begin, end;
  std::int32_t token;
};

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return detail::is_word_char(detail::utf8_next(s, i));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t i = 0;
  return detail::is_word_char(detail::utf8_next(s, i));
}

// The library's AddedVocabulary::find_matches.
void find_added(std::string_view s, const TokenTrie& trie, const std::vector<AddedToken>& tokens,
                std::vector<Segment>& out) {
  out.clear();
  if (trie.empty() || s.empty()) {
    out.push_back({0, s.size(), -1});
    return;
  }
  std::size_t start_offset = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    const auto [stop0, value] = trie.longest_at(s, i);
    if (value < 0) {
      ++i;
      continue;
    }
    std::size_t start = i, stop = stop0;
    i = stop0;  // the next search starts after this match, taken or not
    const AddedToken& t = tokens[static_cast<std::size_t>(value)];
    if (t.single_word) {
      const bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
      const bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {  // take the white space before it, down to the end of the previous match
      std::size_t k = start;
      while (k > 0) {
        std::size_t j = k - 1;
        while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
        std::size_t q = j;
        if (!detail::is_white_space(detail::utf8_next(s, q))) break;
        k = j;
      }
      start = std::max(k, start_offset);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        std::size_t q = stop;
        if (!detail::is_white_space(detail::utf8_next(s, q))) break;
        stop = q;
      }
      i = std::max(i, stop);
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, value});
    start_offset = stop;
  }
  if (start_offset != s.size()) out.push_back({start_offset, s.size(), -1});
}

}  // namespace

// ------------------------------------------------------------------------------------------ the Impl

struct Tokenizer::Impl {
  std::string name;
  std::unique_ptr<Normalizer> normalizer;
  std::vector<std::unique_ptr<PreTokenizer>> pre_tokenizers;  // a Sequence, flattened
  std::unique_ptr<detail::BpeModel> model;
  std::unique_ptr<Decoder> decoder;
  bool has_post = false;
  Template post;
  std::vector<AddedToken> added;  // by index
  std::unordered_map<std::string, std::int32_t> added_by_content;
  std::unordered_map<std::int32_t, std::size_t> added_by_id;
  std::unordered_set<std::string> special_contents;
  TokenTrie raw_trie, normalized_trie;
  std::int64_t vocab_size = 0;

  // Runs added-token extraction, normalisation and pre-tokenisation; calls on_token(token) for added tokens
  // and passes the pieces the model is to encode to `last`.
  template <class OnToken>
  void split(std::string_view text, OnToken&& on_token, PieceSink& last) const;
};

namespace {

// Chains the flattened pre-tokenisers: stage k feeds stage k + 1; the last stage feeds `last`.
class StageSink final : public PieceSink {
 public:
  StageSink(const PreTokenizer* stage, PieceSink* next) : stage_(stage), next_(next) {}
  void take(std::string_view piece, bool at_origin) override { stage_->run(piece, at_origin, *next_); }

 private:
  const PreTokenizer* stage_;
  PieceSink* next_;
};

// The end of the chain for encode: pieces go to the model.
class ModelSink final : public PieceSink {
 public:
  ModelSink(const detail::BpeModel& model, std::vector<std::int32_t>& ids) : model_(model), ids_(ids) {}
  void take(std::string_view piece, bool) override { model_.encode_word(piece, ids_); }
  void take_bytes(std::string_view raw, bool) override { model_.encode_bytes(raw, ids_); }

 private:
  const detail::BpeModel& model_;
  std::vector<std::int32_t>& ids_;
};

// The end of the chain for pre_tokenize: pieces are collected.
class CollectSink final : public PieceSink {
 public:
  explicit CollectSink(std::vector<std::string>& pieces) : pieces_(pieces) {}
  void take(std::string_view piece, bool) override {
    if (!piece.empty()) pieces_.emplace_back(piece);
  }

 private:
  std::vector<std::string>& pieces_;
};

}  // namespace

template <class OnToken>
void Tokenizer::Impl::split(std::string_view text, OnToken&& on_token, PieceSink& last) const {
  std::string cleaned;
  if (!detail::utf8_valid(text)) {
    cleaned = detail::utf8_replace_invalid(text);
    text = cleaned;
  }
  std::vector<StageSink> stages;
  stages.reserve(pre_tokenizers.size());
  for (std::size_t k = pre_tokenizers.size(); k-- > 0;) {
    PieceSink* next = stages.empty() ? static_cast<PieceSink*>(&last) : &stages.back();
    stages.emplace_back(pre_tokenizers[k].get(), next);
  }
  PieceSink& first = stages.empty() ? static_cast<PieceSink&>(last) : stages.back();

  std::vector<Segment> raw, inner;
  find_added(text, raw_trie, added, raw);
  for (const Segment& seg : raw) {
    if (seg.token >= 0) {
      on_token(added[static_cast<std::size_t>(seg.token)]);
      continue;
    }
    if (seg.end == seg.begin) continue;
    std::string normalized(text.substr(seg.begin, seg.end - seg.begin));
    if (normalizer) normalizer->apply(normalized);
    find_added(normalized, normalized_trie, added, inner);
    for (const Segment& sub : inner) {
      if (sub.token >= 0) {
        on_token(added[static_cast<std::size_t>(sub.token)]);
        continue;
      }
      if (sub.end == sub.begin) continue;
      first.take(std::string_view(normalized).substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0);
    }
  }
}

// ----------------------------------------------------------------------------------------- parsing

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json) {
  std::ifstream in(tokenizer_json, std::ios::binary);
  if (!in) fail_input(tokenizer_json, "cannot open the file");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) fail_input(tokenizer_json, "read error");
  json j;
  try {
    j = json::parse(buf.str());
  } catch (const json::exception& e) {
    fail_input(tokenizer_json, std::string("not valid JSON: ") + e.what());
  }
  return from_json(j, tokenizer_json);
}

Tokenizer Tokenizer::from_json(const json& j, const std::string& name) {
  auto impl = std::make_shared<Impl>();
  impl->name = name;
  const At root{impl->name, ""};
  if (!j.is_object()) throw InputError(name + ": the top level is " + json_kind(j) + ", not an object");

  // model
  const At m{impl->name, "model"};
  const json* model = optional_field(j, "model");
  if (!model) throw InputError(name + ": has no model");
  expect_object(*model, m);
  if (const json* t = optional_field(*model, "type")) {
    const std::string type = get_string(*t, m.sub("type"));
    if (type != "BPE") unsupported_type(type, m);
  } else if (!model->contains("merges")) {
    m.fail("has no type (and no merges, so it is not a BPE model)");
  }
  if (const json* d = optional_field(*model, "dropout")) {
    if (!d->is_number() || d->get<double>() != 0.0) m.sub("dropout").fail("is not null or 0: BPE dropout is random and not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const json* v = optional_field(*model, key)) {
      if (!get_string(*v, m.sub(key)).empty()) m.sub(key).fail("'" + detail::printable(v->get<std::string>()) + "' is not supported (only empty or null)");
    }
  }
  detail::BpeModel::Options options;
  if (const json* u = optional_field(*model, "unk_token")) options.unk_token = get_string(*u, m.sub("unk_token"));
  options.fuse_unk = get_bool(*model, "fuse_unk", m, false);
  options.byte_fallback = get_bool(*model, "byte_fallback", m, false);
  options.ignore_merges = get_bool(*model, "ignore_merges", m, false);

  const json& vocab_j = required(*model, "vocab", m);
  expect_object(vocab_j, m.sub("vocab"));
  std::vector<std::pair<std::string, std::int32_t>> vocab;
  vocab.reserve(vocab_j.size());
  for (const auto& [token, id] : vocab_j.items()) vocab.emplace_back(token, get_id(id, At{impl->name, "model.vocab['" + detail::printable(token) + "']"}));

  const At mm = m.sub("merges");
  const json& merges_j = required(*model, "merges", m);
  if (!merges_j.is_array()) mm.fail("is " + json_kind(merges_j) + ", not an array");
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_j.size());
  for (std::size_t i = 0; i < merges_j.size(); ++i) {
    const json& e = merges_j[i];
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      if (s.rfind("#version", 0) == 0) continue;  // merges.txt header line, skipped as the library does
      const auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        mm.index(i).fail("'" + detail::printable(s) + "' is not two tokens separated by one space");
      }
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (e.is_array() && e.size() == 2) {
      merges.emplace_back(get_string(e[0], mm.index(i).index(0)), get_string(e[1], mm.index(i).index(1)));
    } else {
      mm.index(i).fail("is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  impl->model = std::make_unique<detail::BpeModel>(std::move(vocab), merges, options, m.where());

  // normaliser, pre-tokeniser, decoder, post-processor
  if (const json* n = optional_field(j, "normalizer")) impl->normalizer = parse_normalizer(*n, root.sub("normalizer"));
  if (const json* p = optional_field(j, "pre_tokenizer")) parse_pre_tokenizer(*p, root.sub("pre_tokenizer"), impl->pre_tokenizers);
  if (const json* d = optional_field(j, "decoder")) impl->decoder = parse_decoder(*d, root.sub("decoder"));
  if (const json* p = optional_field(j, "post_processor")) {
    parse_post_processor(*p, root.sub("post_processor"), impl->post);
    impl->has_post = true;
  }

  // added tokens, given ids as the library gives them (AddedVocabulary::add_tokens)
  std::int64_t max_id = impl->model->max_id();
  if (const json* list = optional_field(j, "added_tokens")) {
    const At at = root.sub("added_tokens");
    if (!list->is_array()) at.fail("is " + json_kind(*list) + ", not an array");
    std::int64_t next_id = impl->model->size();
    for (std::size_t i = 0; i < list->size(); ++i) {
      const At one = at.index(i);
      const json& e = (*list)[i];
      expect_object(e, one);
      AddedToken t;
      t.content = get_string(required(e, "content", one), one.sub("content"));
      t.id = get_id(required(e, "id", one), one.sub("id"));
      t.special = get_bool(e, "special", one, false);
      t.normalized = get_bool(e, "normalized", one, !t.special);
      t.lstrip = get_bool(e, "lstrip", one, false);
      t.rstrip = get_bool(e, "rstrip", one, false);
      t.single_word = get_bool(e, "single_word", one, false);
      if (t.content.empty()) continue;  // ignored by the library
      const auto known = impl->added_by_content.find(t.content);
      if (known != impl->added_by_content.end() && impl->added[impl->added_by_id.at(known->second)].same_as(t)) continue;
      std::int64_t id;
      if (known != impl->added_by_content.end()) id = known->second;
      else if (const auto mid = impl->model->id(t.content)) id = *mid;
      else id = next_id++;
      if (id != t.id) {
        one.sub("id").fail(std::to_string(t.id) + " for '" + detail::printable(t.content) + "' differs from the id the tokenizers library gives it, " +
                           std::to_string(id) + " (the id of the same token in model.vocab, else the next free id)");
      }
      t.pattern = t.content;
      if (t.normalized && impl->normalizer) impl->normalizer->apply(t.pattern);
      impl->added_by_content[t.content] = t.id;
      if (t.special) impl->special_contents.insert(t.content);
      if (const auto old = impl->added_by_id.find(t.id); old != impl->added_by_id.end()) {
        impl->added[old->second] = t;  // same token, new flags
      } else {
        impl->added_by_id[t.id] = impl->added.size();
        impl->added.push_back(t);
      }
      max_id = std::max<std::int64_t>(max_id, t.id);
    }
    std::set<std::string> raw_seen, norm_seen;
    for (std::size_t k = 0; k < impl->added.size(); ++k) {
      const AddedToken& t = impl->added[k];
      if (t.pattern.empty()) at.fail("token '" + detail::printable(t.content) + "' normalises to the empty string");
      auto& seen = t.normalized ? norm_seen : raw_seen;
      if (!seen.insert(t.pattern).second) at.fail("two tokens match the same text '" + detail::printable(t.pattern) + "'");
      (t.normalized ? impl->normalized_trie : impl->raw_trie).add(t.pattern, static_cast<std::int32_t>(k));
    }
  }
  impl->vocab_size = max_id + 1;
  if (impl->vocab_size <= 0) throw InputError(name + ": model.vocab is empty and there are no added tokens");
  for (const auto* side : {&impl->post.before, &impl->post.after}) {
    for (std::int32_t id : *side) {
      if (id >= impl->vocab_size) {
        root.sub("post_processor").fail("adds id " + std::to_string(id) + ", outside the vocabulary of " + std::to_string(impl->vocab_size));
      }
    }
  }
  return Tokenizer(std::move(impl));
}

// ----------------------------------------------------------------------------------------- encoding

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  const Impl& im = *impl_;
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special && im.has_post) ids = im.post.before;
  ModelSink sink(*im.model, ids);
  im.split(text, [&](const AddedToken& t) { ids.push_back(t.id); }, sink);
  if (add_special && im.has_post) ids.insert(ids.end(), im.post.after.begin(), im.post.after.end());
  return ids;
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string> pieces;
  CollectSink sink(pieces);
  impl_->split(text, [&](const AddedToken& t) { pieces.push_back(t.content); }, sink);
  return pieces;
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids, bool skip_special) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (std::int32_t id : ids) {
    std::optional<std::string> t = token(id);
    if (!t) continue;
    if (skip_special && im.special_contents.count(*t)) continue;
    tokens.push_back(std::move(*t));
  }
  if (!im.decoder) {
    std::string out;
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      if (k) out += ' ';
      out += tokens[k];
    }
    return out;
  }
  im.decoder->apply(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

// ------------------------------------------------------------------------------------------ lookups

std::int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<std::int32_t> Tokenizer::token_id(std::string_view token) const {
  const auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model->id(token);
}

std::optional<std::string> Tokenizer::token(std::int32_t id) const {
  // added tokens first, normalized ones in their normalised form (AddedVocabulary::simple_id_to_token)
  const auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added[it->second].pattern;
  if (const std::string* t = impl_->model->token(id)) return *t;
  return std::nullopt;
}

bool Tokenizer::is_special(std::int32_t id) const {
  const auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

const std::string& Tokenizer::name() const { return impl_->name; }

}  // namespace moescope
