// UTF-8, Unicode properties and normalisation (ICU), regexes (PCRE2) and the byte-level map used by the
// tokenizer (see tokenizer_parts.hpp).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/utypes.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string>

#include "moescope/util/error.hpp"
#include "tokenizer_parts.hpp"

namespace moescope::detail {

// ---------------------------------------------------------------------------------------------- UTF-8

namespace {

// For a lead byte: the length of the sequence it starts and the allowed range of the second byte
// (Unicode Table 3-7); false for bytes that start no well-formed sequence (80..C1, F5..FF).
bool utf8_lead(unsigned char b, std::size_t& len, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (b < 0x80) {
    len = 1;
  } else if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;   // no overlong forms
    if (b == 0xED) hi = 0x9F;   // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;   // no overlong forms
    if (b == 0xF4) hi = 0x8F;   // nothing above U+10FFFF
  } else {
    return false;
  }
  return true;
}

// How many bytes from s[i] on are a prefix of a well-formed sequence (0 when s[i] is no lead), and the
// length the whole sequence would have.
std::size_t utf8_prefix(std::string_view s, std::size_t i, std::size_t& full) {
  unsigned char lo, hi;
  if (!utf8_lead(static_cast<unsigned char>(s[i]), full, lo, hi)) return 0;
  std::size_t k = 1;
  for (; k < full && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  return k;
}

}  // namespace

std::size_t utf8_length_at(std::string_view s, std::size_t i) {
  if (i >= s.size()) return 0;
  std::size_t full = 0;
  const std::size_t k = utf8_prefix(s, i, full);
  return k != 0 && k == full ? full : 0;
}

bool utf8_valid(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const std::size_t n = utf8_length_at(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_replace_invalid(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t full = 0;
    const std::size_t k = utf8_prefix(s, i, full);
    if (k != 0 && k == full) {
      out.append(s.substr(i, k));
      i += k;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal subpart (at least one byte)
      i += k == 0 ? 1 : k;
    }
  }
  return out;
}

char32_t utf8_next(std::string_view s, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  auto cont = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  char32_t c;
  if (b0 < 0xE0) {
    c = (static_cast<char32_t>(b0 & 0x1F) << 6) | cont(1);
    i += 2;
  } else if (b0 < 0xF0) {
    c = (static_cast<char32_t>(b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2);
    i += 3;
  } else {
    c = (static_cast<char32_t>(b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
    i += 4;
  }
  return c;
}

void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::size_t utf8_count(std::string_view s) {
  std::size_t n = 0;
  for (char ch : s) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
  return n;
}

std::string printable(std::string_view s, std::size_t max_bytes) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    if (i >= max_bytes) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F) {
      static const char* hex = "0123456789ABCDEF";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      const std::size_t n = utf8_length_at(s, i);
      if (n == 0) {  // a stray byte: shown as hex too
        static const char* hex = "0123456789ABCDEF";
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 15];
        ++i;
        continue;
      }
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out;
}

// ------------------------------------------------------------------------------------ Unicode (ICU)

bool is_white_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)) != 0; }

bool is_word_char(char32_t c) {
  const auto u = static_cast<UChar32>(c);
  return u_hasBinaryProperty(u, UCHAR_ALPHABETIC) ||
         (U_GET_GC_MASK(u) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 ||
         u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL);
}

std::string unicode_normalize(std::string_view s, UnicodeForm form) {
  bool ascii = true;
  for (char ch : s) {
    if (static_cast<unsigned char>(ch) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return std::string(s);  // ASCII is invariant under all four forms
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case UnicodeForm::NFC: n = icu::Normalizer2::getNFCInstance(status); break;
    case UnicodeForm::NFD: n = icu::Normalizer2::getNFDInstance(status); break;
    case UnicodeForm::NFKC: n = icu::Normalizer2::getNFKCInstance(status); break;
    case UnicodeForm::NFKD: n = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status) || n == nullptr) throw std::runtime_error(std::string("ICU normaliser unavailable: ") + u_errorName(status));
  const icu::StringPiece piece(s.data(), static_cast<int32_t>(s.size()));
  if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(s.size()));
  n->normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) throw std::runtime_error(std::string("ICU normalisation failed: ") + u_errorName(status));
  return out;
}

// --------------------------------------------------------------------------------------------- regex

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof(buf));
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<const char*>(buf));
}

// Unicode White_Space, which Oniguruma's \s matches; PCRE2's \s (10.42, UCP) also takes U+180E.
constexpr const char* kWhiteSpace = "\\t-\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

// The pattern as PCRE2 should read it to match what Oniguruma (Ruby syntax, what the library compiles) matches:
// \s and \S become explicit White_Space classes; constructs the two engines read differently are rejected.
std::string translate_pattern(std::string_view p, const std::string& where) {
  auto reject = [&](const std::string& what) {
    throw InputError(where + ": " + what + " is not supported (Oniguruma and PCRE2 read it differently)");
  };
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 'Q') {  // \Q...\E quotes literally
        const auto end = p.find("\\E", i + 2);
        const std::size_t stop = end == std::string_view::npos ? p.size() : end + 2;
        out.append(p.substr(i, stop - i));
        i = stop - 1;
        continue;
      }
      if (e == 'w' || e == 'W' || e == 'b' || e == 'B' || e == 'h' || e == 'H') reject(std::string("escape \\") + e);
      ++i;
      if (e == 'u' && i + 4 < p.size() && std::all_of(p.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                                                     p.begin() + static_cast<std::ptrdiff_t>(i) + 5,
                                                     [](char h) { return std::isxdigit(static_cast<unsigned char>(h)); })) {
        out.append("\\x{").append(p.substr(i + 1, 4)).append("}");  // Ruby's \uHHHH
        i += 4;
      } else if (e == 's') {
        out += in_class ? std::string(kWhiteSpace) : std::string("[") + kWhiteSpace + "]";
      } else if (e == 'S') {
        if (in_class) reject("\\S inside a character class");
        out += std::string("[^") + kWhiteSpace + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    out += c;
    if (in_class) {
      if (c == '[') reject("'[' inside a character class (POSIX class or nested set)");
      if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') reject("class intersection '&&'");
      if (c == ']') in_class = false;
      continue;
    }
    if (c == '[') {
      in_class = true;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal
      continue;
    }
    if (c == '(' && i + 2 < p.size() && p[i + 1] == '?') {
      std::size_t j = i + 2;
      bool m_or_s = false;
      while (j < p.size() && (std::isalpha(static_cast<unsigned char>(p[j])) || p[j] == '-')) {
        m_or_s = m_or_s || p[j] == 'm' || p[j] == 's';
        ++j;
      }
      if (j > i + 2 && j < p.size() && (p[j] == ':' || p[j] == ')') && m_or_s) reject("inline option m or s");
    }
  }
  return out;
}

// Per-thread matching state: match data for one pair of offsets and a JIT stack that can grow to 4 MiB.
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (!data || !context || !stack) throw std::bad_alloc();
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

}  // namespace

Regex::Regex(std::string_view pattern, bool literal, std::string where) : where_(std::move(where)) {
  const std::uint32_t options = literal ? PCRE2_LITERAL | PCRE2_UTF
                                        : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C;
  auto compile = [&](std::string_view text, int& error, PCRE2_SIZE& offset) {
    return pcre2_compile(reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), options, &error, &offset, nullptr);
  };
  int error = 0;
  PCRE2_SIZE offset = 0;
  const std::string translated = literal ? std::string(pattern) : translate_pattern(pattern, where_);
  pcre2_code* code = compile(translated, error, offset);
  if (!code) {
    // offsets count in the pattern as given only where the translation changed nothing
    const std::string at = translated == pattern ? " at offset " + std::to_string(offset) : "";
    throw InputError(where_ + ": regex does not compile" + at + ": " + pcre2_message(error));
  }
  code_.reset(code, [](pcre2_code* c) { pcre2_code_free(c); });
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

void Regex::find_all(std::string_view s, std::vector<Span>& out) const {
  out.clear();
  MatchState& st = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  const std::size_t n = s.size();
  std::size_t last_end = 0;
  bool matched = false;  // last_match_end is set
  std::size_t last_match_end = 0;
  while (last_end <= n) {
    int rc = jit_ ? pcre2_jit_match(code_.get(), subject, n, last_end, 0, st.data, st.context)
                  : pcre2_match(code_.get(), subject, n, last_end, PCRE2_NO_UTF_CHECK, st.data, st.context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // deep backtracking: the interpreter keeps its frames on the heap
      rc = pcre2_match(code_.get(), subject, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.data, st.context);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw InputError(where_ + ": regex matching failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const std::size_t ms = ov[0], me = ov[1];
    if (ms > me || me > n) throw InputError(where_ + ": regex reported a match outside the text (\\K?)");
    if (ms == me && matched && last_match_end == me) {  // an empty match where the last one ended: step on
      const std::size_t step = last_end < n ? utf8_length_at(s, last_end) : 1;
      last_end += step == 0 ? 1 : step;
      continue;
    }
    last_end = me;
    last_match_end = me;
    matched = true;
    out.push_back({ms, me});
  }
}

// --------------------------------------------------------------------------------------- byte level

namespace {

struct ByteLevelTables {
  std::array<std::string, 256> chars;
  std::array<int, 0x144> bytes{};  // the mapped characters are all below U+0144
  ByteLevelTables() {
    bytes.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, DEL, NBSP, soft hyphen)
    // take U+0100, U+0101, ... in byte order.
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = printable(b) ? static_cast<char32_t>(b) : next++;
      utf8_append(chars[static_cast<std::size_t>(b)], c);
      bytes[c] = b;
    }
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables;
  return tables;
}

}  // namespace

const std::array<std::string, 256>& byte_level_chars() { return byte_level_tables().chars; }

int byte_level_byte(char32_t c) { return c < 0x144 ? byte_level_tables().bytes[c] : -1; }

}  // namespace moescope::detail
