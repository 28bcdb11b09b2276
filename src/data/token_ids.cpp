// Token-id files: text, NumPy .npy, safetensors (see data/token_ids.hpp).
#include "moescope/data/token_ids.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "moescope/util/error.hpp"
#include "moescope/util/strings.hpp"
#include "tokenizer_parts.hpp"  // detail::printable

namespace moescope {

namespace {

constexpr std::uint64_t kMaxHeader = 100'000'000;  // as safetensors' reference implementation

// Ids must be below this: the vocabulary size, and never past int32.
std::int64_t id_limit(std::int64_t vocab) {
  const std::int64_t int32_end = static_cast<std::int64_t>(std::numeric_limits<std::int32_t>::max()) + 1;
  return vocab > 0 ? std::min(vocab, int32_end) : int32_end;
}

std::uint64_t read_le(const unsigned char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t k = n; k-- > 0;) v = (v << 8) | p[k];
  return v;
}

std::uint64_t read_be(const unsigned char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t k = 0; k < n; ++k) v = (v << 8) | p[k];
  return v;
}

// Element type of a binary array.
struct IntType {
  std::size_t size = 4;
  bool is_signed = true;
  bool big_endian = false;
};

// Range-checks and appends `count` elements starting at `data`.
void convert(const unsigned char* data, std::uint64_t count, IntType t, const std::string& name, std::int64_t vocab,
             std::vector<std::int32_t>& out) {
  const std::int64_t limit = id_limit(vocab);
  out.reserve(out.size() + static_cast<std::size_t>(count));
  for (std::uint64_t i = 0; i < count; ++i) {
    const unsigned char* p = data + i * t.size;
    const std::uint64_t raw = t.big_endian ? read_be(p, t.size) : read_le(p, t.size);
    bool ok;
    std::string shown;
    std::int64_t v = 0;
    if (t.is_signed) {
      const unsigned bits = static_cast<unsigned>(8 * t.size);
      // sign-extend the low `bits` bits
      v = bits == 64 ? static_cast<std::int64_t>(raw)
                     : static_cast<std::int64_t>(raw << (64 - bits)) >> (64 - bits);
      ok = v >= 0 && v < limit;
      shown = std::to_string(v);
    } else {
      ok = raw < static_cast<std::uint64_t>(limit);
      v = static_cast<std::int64_t>(raw);
      shown = std::to_string(raw);
    }
    if (!ok) {
      fail_input(name, "position " + std::to_string(i) + ": id " + shown + " is outside the vocabulary [0, " +
                           std::to_string(limit) + ")");
    }
    out.push_back(static_cast<std::int32_t>(v));
  }
}

// ------------------------------------------------------------------------------------------------ text

std::vector<std::int32_t> parse_text(std::string_view s, const std::string& name, std::int64_t vocab) {
  const std::int64_t limit = id_limit(vocab);
  std::vector<std::int32_t> out;
  std::size_t line = 1, i = 0;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (i < s.size()) {
    if (space(s[i])) {
      line += s[i] == '\n';
      ++i;
      continue;
    }
    const std::size_t start = i;
    while (i < s.size() && !space(s[i])) ++i;
    const std::string_view word = s.substr(start, i - start);
    const std::string where = "line " + std::to_string(line) + ", position " + std::to_string(out.size());
    std::size_t k = word[0] == '-' ? 1 : 0;
    if (k == word.size()) fail_input(name, where + ": '" + detail::printable(word, 40) + "' is not an integer");
    std::uint64_t v = 0;
    bool overflow = false;
    for (; k < word.size(); ++k) {
      const char c = word[k];
      if (c < '0' || c > '9') {
        fail_input(name, where + ": '" + detail::printable(word, 40) + "' is not an integer");
      }
      if (v > (std::numeric_limits<std::uint64_t>::max() - 9) / 10) overflow = true;
      else v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (word[0] == '-' || overflow || v >= static_cast<std::uint64_t>(limit)) {
      fail_input(name, where + ": id " + detail::printable(word, 40) + " is outside the vocabulary [0, " +
                           std::to_string(limit) + ")");
    }
    out.push_back(static_cast<std::int32_t>(v));
  }
  return out;
}

// ------------------------------------------------------------------------------------------------- npy

// A reader for the Python literal of an .npy header: {'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }
class PyLiteral {
 public:
  PyLiteral(std::string_view s, const std::string& name) : s_(s), name_(name) {}

  struct Value {
    enum Kind { String, Bool, Tuple } kind = String;
    std::string text;
    bool flag = false;
    std::vector<std::uint64_t> items;
  };

  std::vector<std::pair<std::string, Value>> dict() {
    std::vector<std::pair<std::string, Value>> out;
    expect('{');
    for (;;) {
      skip();
      if (peek() == '}') {
        ++i_;
        break;
      }
      std::string key = string();
      expect(':');
      out.emplace_back(std::move(key), value());
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}');
      break;
    }
    return out;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    fail_input(name_, "npy header: " + what + " at offset " + std::to_string(i_));
  }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  char peek() {
    skip();
    if (i_ >= s_.size()) bad("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    const std::size_t end = s_.find(q, i_ + 1);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string out(s_.substr(i_ + 1, end - i_ - 1));
    i_ = end + 1;
    return out;
  }
  Value value() {
    Value v;
    const char c = peek();
    if (c == '\'' || c == '"') {
      v.text = string();
    } else if (s_.compare(i_, 4, "True") == 0 || s_.compare(i_, 5, "False") == 0) {
      v.kind = Value::Bool;
      v.flag = s_[i_] == 'T';
      i_ += v.flag ? 4 : 5;
    } else if (c == '(') {
      v.kind = Value::Tuple;
      ++i_;
      for (;;) {
        if (peek() == ')') {
          ++i_;
          break;
        }
        if (s_[i_] < '0' || s_[i_] > '9') bad("shape entries must be non-negative integers");
        std::uint64_t x = 0;
        while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
          if (x > (std::uint64_t{1} << 62) / 10) bad("shape entry too large");
          x = x * 10 + static_cast<std::uint64_t>(s_[i_++] - '0');
        }
        v.items.push_back(x);
        if (peek() == ',') ++i_;
        else if (peek() != ')') bad("expected ',' or ')' in the shape");
      }
    } else {
      bad("expected a string, True, False or a tuple");
    }
    return v;
  }

  std::string_view s_;
  const std::string& name_;
  std::size_t i_ = 0;
};

std::vector<std::int32_t> parse_npy(std::string_view s, const std::string& name, std::int64_t vocab) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  if (s.size() < 10 || s.compare(0, 6, "\x93NUMPY") != 0) fail_input(name, "not a NumPy .npy file (no \\x93NUMPY magic)");
  const unsigned major = b[6];
  if (major < 1 || major > 3) fail_input(name, "npy version " + std::to_string(major) + "." + std::to_string(b[7]) + " is not 1, 2 or 3");
  const std::size_t prefix = major == 1 ? 10 : 12;
  if (s.size() < prefix) fail_input(name, "npy file of " + std::to_string(s.size()) + " bytes ends inside its preamble");
  const std::uint64_t header_len = read_le(b + 8, major == 1 ? 2 : 4);
  if (header_len > s.size() - prefix) {
    fail_input(name, "npy header of " + std::to_string(header_len) + " bytes runs past the end of the file (" +
                         std::to_string(s.size()) + " bytes)");
  }
  PyLiteral lit(s.substr(prefix, header_len), name);
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  std::vector<std::uint64_t> shape;
  for (auto& [key, v] : lit.dict()) {
    if (key == "descr") {
      if (v.kind != PyLiteral::Value::String) fail_input(name, "npy header: descr is not a plain dtype string (structured arrays are not token ids)");
      descr = v.text;
      have_descr = true;
    } else if (key == "fortran_order") {
      if (v.kind != PyLiteral::Value::Bool) fail_input(name, "npy header: fortran_order is not True or False");
      fortran = v.flag;
      have_order = true;
    } else if (key == "shape") {
      if (v.kind != PyLiteral::Value::Tuple) fail_input(name, "npy header: shape is not a tuple");
      shape = v.items;
      have_shape = true;
    }
  }
  if (!have_descr || !have_order || !have_shape) fail_input(name, "npy header lacks descr, fortran_order or shape");
  IntType t;
  if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '>' && descr[0] != '|' && descr[0] != '=') ||
      (descr[1] != 'i' && descr[1] != 'u') || (descr[2] != '1' && descr[2] != '2' && descr[2] != '4' && descr[2] != '8')) {
    fail_input(name, "npy dtype '" + detail::printable(descr) + "' is not an integer type (i1 i2 i4 i8 u1 u2 u4 u8)");
  }
  t.is_signed = descr[1] == 'i';
  t.size = static_cast<std::size_t>(descr[2] - '0');
  t.big_endian = descr[0] == '>' && t.size > 1;
  std::uint64_t numel = 1;
  std::size_t big_dims = 0;
  for (std::uint64_t d : shape) {
    if (d > 1) ++big_dims;
    if (d != 0 && numel > (std::uint64_t{1} << 62) / d) fail_input(name, "npy shape overflows");
    numel *= d;
  }
  if (fortran && big_dims > 1) fail_input(name, "npy array is in Fortran order with more than one dimension above 1 (save it in C order)");
  const std::uint64_t data_len = s.size() - prefix - header_len;
  if (numel > (std::uint64_t{1} << 62) / t.size || numel * t.size != data_len) {
    fail_input(name, "npy shape and dtype need " + (numel > (std::uint64_t{1} << 62) / t.size ? std::string("too many") : std::to_string(numel * t.size)) +
                         " bytes of data, the file holds " + std::to_string(data_len));
  }
  std::vector<std::int32_t> out;
  convert(b + prefix + header_len, numel, t, name, vocab, out);
  return out;
}

// ------------------------------------------------------------------------------------------- safetensors

bool looks_like_safetensors(std::string_view s) {
  if (s.size() < 9) return false;
  const std::uint64_t n = read_le(reinterpret_cast<const unsigned char*>(s.data()), 8);
  return n <= s.size() - 8 && n > 0 && s[8] == '{';
}

std::vector<std::int32_t> parse_safetensors(std::string_view s, const std::string& name, std::int64_t vocab) {
  using nlohmann::json;
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  if (s.size() < 8) fail_input(name, "safetensors file of " + std::to_string(s.size()) + " bytes has no header length");
  const std::uint64_t n = read_le(b, 8);
  if (n > kMaxHeader || n > s.size() - 8) {
    fail_input(name, "safetensors header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(s.size()) + " bytes)");
  }
  json h;
  try {
    h = json::parse(s.substr(8, n));
  } catch (const json::exception& e) {
    fail_input(name, std::string("safetensors header is not valid JSON: ") + e.what());
  }
  if (!h.is_object()) fail_input(name, "safetensors header is not a JSON object");
  const json* entry = nullptr;
  std::string tensor;
  for (const auto& [key, v] : h.items()) {
    if (key == "__metadata__") continue;
    if (entry) fail_input(name, "holds more than one tensor ('" + detail::printable(tensor) + "', '" + detail::printable(key) +
                           "'); token ids need exactly one");
    entry = &v;
    tensor = key;
  }
  if (!entry) fail_input(name, "holds no tensor");
  const std::string at = "tensor '" + detail::printable(tensor) + "': ";
  if (!entry->is_object() || !entry->contains("dtype") || !entry->contains("shape") || !entry->contains("data_offsets")) {
    fail_input(name, at + "needs dtype, shape and data_offsets");
  }
  const json& dt = (*entry)["dtype"];
  if (!dt.is_string()) fail_input(name, at + "dtype is not a string");
  const std::string dtype = dt.get<std::string>();
  IntType t;
  if (dtype == "I8") t = {1, true, false};
  else if (dtype == "U8") t = {1, false, false};
  else if (dtype == "I16") t = {2, true, false};
  else if (dtype == "U16") t = {2, false, false};
  else if (dtype == "I32") t = {4, true, false};
  else if (dtype == "U32") t = {4, false, false};
  else if (dtype == "I64") t = {8, true, false};
  else if (dtype == "U64") t = {8, false, false};
  else fail_input(name, at + "dtype " + detail::printable(dtype) + " is not an integer type (I8 U8 I16 U16 I32 U32 I64 U64)");
  const json& shape = (*entry)["shape"];
  if (!shape.is_array()) fail_input(name, at + "shape is not an array");
  std::uint64_t numel = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) fail_input(name, at + "shape " + shape.dump() + " has an entry that is not a non-negative integer");
    const auto x = d.get<std::uint64_t>();
    if (x != 0 && numel > (std::uint64_t{1} << 62) / x) fail_input(name, at + "shape " + shape.dump() + " overflows");
    numel *= x;
  }
  const json& off = (*entry)["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    fail_input(name, at + "data_offsets is not a pair of non-negative integers");
  }
  const auto begin = off[0].get<std::uint64_t>(), end = off[1].get<std::uint64_t>();
  const std::uint64_t data_len = s.size() - 8 - n;
  if (begin > end || end > data_len) {
    fail_input(name, at + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                         ") do not lie within the " + std::to_string(data_len) + " bytes of data");
  }
  if (begin != 0 || end != data_len) {
    fail_input(name, at + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                         ") do not cover the " + std::to_string(data_len) + " bytes of data");
  }
  if (numel > (std::uint64_t{1} << 62) / t.size || numel * t.size != end - begin) {
    fail_input(name, at + "shape " + shape.dump() + " of " + dtype + " does not match the " + std::to_string(end - begin) +
                         " bytes of data_offsets");
  }
  std::vector<std::int32_t> out;
  convert(b + 8 + n + begin, numel, t, name, vocab, out);
  return out;
}

}  // namespace

TokenIdFormat detect_token_id_format(std::string_view bytes, const std::string& name) {
  if (ends_with(name, ".npy")) return TokenIdFormat::Npy;
  if (ends_with(name, ".safetensors")) return TokenIdFormat::Safetensors;
  if (bytes.size() >= 6 && bytes.compare(0, 6, "\x93NUMPY") == 0) return TokenIdFormat::Npy;
  if (looks_like_safetensors(bytes)) return TokenIdFormat::Safetensors;
  return TokenIdFormat::Text;
}

std::vector<std::int32_t> parse_token_ids(std::string_view bytes, const std::string& name, std::int64_t vocab_size) {
  switch (detect_token_id_format(bytes, name)) {
    case TokenIdFormat::Npy: return parse_npy(bytes, name, vocab_size);
    case TokenIdFormat::Safetensors: return parse_safetensors(bytes, name, vocab_size);
    case TokenIdFormat::Text: break;
  }
  return parse_text(bytes, name, vocab_size);
}

std::vector<std::int32_t> read_token_ids(const std::string& path, std::int64_t vocab_size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_input(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_input(path, "not a regular file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return parse_token_ids(std::string_view(), path, vocab_size);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail_input(path, std::string("cannot map: ") + std::strerror(errno));
  struct Unmap {
    void* p;
    std::size_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};
  ::madvise(map, size, MADV_SEQUENTIAL);
  return parse_token_ids(std::string_view(static_cast<const char*>(map), size), path, vocab_size);
}

}  // namespace moescope
