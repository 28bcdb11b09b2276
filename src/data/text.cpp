#include "moescope/data/text.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "moescope/util/error.hpp"
#include "moescope/util/strings.hpp"

namespace moescope {

namespace {

constexpr const char* kVocabHeader = "moescope-vocabulary 1";
constexpr std::int32_t kReplacementChar = 0xFFFD;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// Calls emit(token) for each token of each line and emit("<eos>") at each line's end.
template <class Emit>
void for_each_word(std::string_view text, Emit&& emit) {
  const std::string_view eos(kEosToken);
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::size_t i = pos;
    while (i < end) {
      while (i < end && is_space(text[i])) ++i;
      std::size_t j = i;
      while (j < end && !is_space(text[j])) ++j;
      if (j > i) emit(text.substr(i, j - i));
      i = j;
    }
    emit(eos);
    pos = end + 1;
  }
}

// Maps text to ids with a fixed vocabulary; returns how many tokens fell back to <unk>.
std::int64_t encode_words(std::string_view text, const Vocabulary& vocab, std::vector<std::int32_t>& out) {
  const std::int32_t unk = vocab.find(kUnkToken);
  std::int64_t unknown = 0;
  std::string key;  // reused so that lookups do not allocate per token
  for_each_word(text, [&](std::string_view tok) {
    key.assign(tok.data(), tok.size());
    std::int32_t id = vocab.find(key);
    if (id < 0) {
      id = unk;
      ++unknown;
    }
    out.push_back(id);
  });
  return unknown;
}

std::string read_whole_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail_input(path, "no such file");
  const std::uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) fail_input(path, "cannot read its size: " + ec.message());
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_input(path, std::string("cannot open: ") + std::strerror(errno));
  std::string s(static_cast<std::size_t>(size), '\0');
  if (!s.empty() && !f.read(s.data(), static_cast<std::streamsize>(s.size()))) {
    fail_input(path, "read fewer than its " + std::to_string(size) + " bytes");
  }
  return s;
}

// UTF-8 to code points; ill-formed input becomes U+FFFD per maximal subpart (Unicode 3.9, table 3-7).
std::vector<std::int32_t> decode_utf8(std::string_view s, std::int64_t& invalid) {
  std::vector<std::int32_t> out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    int need = 0;
    std::int32_t cp = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the next byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 1;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2;
      cp = b0 & 0x0F;
      if (b0 == 0xE0) lo = 0xA0;  // overlong
      if (b0 == 0xED) hi = 0x9F;  // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 3;
      cp = b0 & 0x07;
      if (b0 == 0xF0) lo = 0x90;  // overlong
      if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      out.push_back(kReplacementChar);
      ++invalid;
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= n) {
        ok = false;
        break;
      }
      const auto b = static_cast<unsigned char>(s[j]);
      if (b < lo || b > hi) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (b & 0x3F);
      lo = 0x80;
      hi = 0xBF;
    }
    if (ok) {
      out.push_back(cp);
    } else {
      out.push_back(kReplacementChar);
      ++invalid;
    }
    i = j;  // on failure j is the first byte not part of the ill-formed subpart
  }
  return out;
}

std::string encode_utf8(std::int32_t cp) {
  std::string s;
  const auto c = static_cast<std::uint32_t>(cp);
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

std::string escape_token(const std::string& t) {
  std::string s;
  for (char c : t) {
    switch (c) {
      case '\\': s += "\\\\"; break;
      case '\n': s += "\\n"; break;
      case '\r': s += "\\r"; break;
      case '\t': s += "\\t"; break;
      default: s += c;
    }
  }
  return s;
}

std::string at_line(std::size_t line) { return "line " + std::to_string(line) + ": "; }

std::string unescape_token(std::string_view line, const std::string& file, std::size_t line_no) {
  std::string t;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\') {
      t += line[i];
      continue;
    }
    if (i + 1 == line.size()) fail_input(file, at_line(line_no) + "backslash at end of line");
    switch (line[++i]) {
      case '\\': t += '\\'; break;
      case 'n': t += '\n'; break;
      case 'r': t += '\r'; break;
      case 't': t += '\t'; break;
      default: fail_input(file, at_line(line_no) + "unknown escape '\\" + std::string(1, line[i]) + "'");
    }
  }
  return t;
}

// A copy of [begin, end) of `all`.
std::vector<std::int32_t> slice(const std::vector<std::int32_t>& all, std::int64_t begin, std::int64_t end) {
  return std::vector<std::int32_t>(all.begin() + begin, all.begin() + end);
}

}  // namespace

std::int32_t Vocabulary::add(const std::string& token) {
  if (token.empty()) throw std::invalid_argument("Vocabulary::add: empty token");
  const auto it = ids_.find(token);
  if (it != ids_.end()) return it->second;
  const auto id = static_cast<std::int32_t>(tokens_.size());
  tokens_.push_back(token);
  ids_.emplace(token, id);
  return id;
}

std::int32_t Vocabulary::find(const std::string& token) const {
  const auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

std::int32_t Vocabulary::id(const std::string& token) const {
  std::int32_t i = find(token);
  if (i < 0) i = find(kUnkToken);
  if (i < 0) throw std::logic_error("Vocabulary::id: token not found and no <unk> in the vocabulary");
  return i;
}

const std::string& Vocabulary::token(std::int32_t id) const {
  if (id < 0 || id >= size()) {
    throw std::out_of_range("Vocabulary::token: id " + std::to_string(id) + " outside [0, " +
                            std::to_string(size()) + ")");
  }
  return tokens_[static_cast<std::size_t>(id)];
}

std::string Vocabulary::decode(const std::vector<std::int32_t>& ids, std::string_view separator) const {
  std::string s;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    if (k > 0) s += separator;
    s += token(ids[k]);
  }
  return s;
}

void Vocabulary::save(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail_input(path, std::string("cannot write: ") + std::strerror(errno));
    f << kVocabHeader << '\n';
    for (const std::string& t : tokens_) f << escape_token(t) << '\n';
    f.close();
    if (!f) fail_input(path, "cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);  // atomic: readers see the old file or the whole new one
  if (ec) fail_input(path, "cannot rename " + tmp + ": " + ec.message());
}

Vocabulary Vocabulary::load(const std::string& path) {
  const std::string text = read_whole_file(path);
  Vocabulary v;
  std::size_t pos = 0;
  std::size_t line_no = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // written raw \r is always escaped: CRLF
    if (line_no == 1) {
      if (line != kVocabHeader) {
        fail_input(path, at_line(1) + "expected the header '" + kVocabHeader + "', found " +
                             moescope::quoted(line.substr(0, 40)));
      }
      continue;
    }
    if (line.empty()) fail_input(path, at_line(line_no) + "empty token");
    std::string token = unescape_token(line, path, line_no);
    const std::int32_t prev = v.find(token);
    if (prev >= 0) {
      fail_input(path, at_line(line_no) + "duplicate token " + moescope::quoted(line) + " (also line " +
                           std::to_string(prev + 2) + ")");
    }
    v.add(token);
  }
  if (line_no == 0) fail_input(path, "empty file, expected the header '" + std::string(kVocabHeader) + "'");
  return v;
}

TextCorpus word_corpus(std::string_view train, std::string_view valid, std::string_view test) {
  TextCorpus c;
  c.vocab.add(kUnkToken);
  c.vocab.add(kEosToken);
  std::string key;
  for_each_word(train, [&](std::string_view tok) {
    key.assign(tok.data(), tok.size());
    std::int32_t id = c.vocab.find(key);
    if (id < 0) id = c.vocab.add(key);
    c.train.push_back(id);
  });
  c.unknown_valid = encode_words(valid, c.vocab, c.valid);
  c.unknown_test = encode_words(test, c.vocab, c.test);
  return c;
}

TextCorpus read_word_corpus(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) fail_input(dir, "no such directory");
  std::string prefix, suffix;
  if (std::filesystem::exists(dir + "/wiki.train.tokens", ec)) {
    prefix = "wiki.";
    suffix = ".tokens";
  } else if (std::filesystem::exists(dir + "/ptb.train.txt", ec)) {
    prefix = "ptb.";
    suffix = ".txt";
  } else {
    fail_input(dir, "has neither wiki.train.tokens (WikiText) nor ptb.train.txt (PTB)");
  }
  const std::string train = read_whole_file(dir + "/" + prefix + "train" + suffix);
  const std::string valid = read_whole_file(dir + "/" + prefix + "valid" + suffix);
  const std::string test = read_whole_file(dir + "/" + prefix + "test" + suffix);
  return word_corpus(train, valid, test);
}

std::string read_text(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail_input(path, "no such file or folder");
  if (!fs::is_directory(st)) return read_whole_file(path);

  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(path, ec)) {
    const std::string name = e.path().filename().string();
    const std::string ext = e.path().extension().string();
    if (name.empty() || name[0] == '.') continue;
    if (!ext.empty() && ext != ".txt") continue;
    std::error_code ec2;
    if (!fs::is_regular_file(e.path(), ec2)) continue;  // follows links; skips subfolders
    names.push_back(name);
  }
  if (ec) fail_input(path, "cannot list: " + ec.message());
  if (names.empty()) fail_input(path, "folder holds no text files (names with no extension or ending .txt)");
  std::sort(names.begin(), names.end());
  std::string all;
  for (const std::string& name : names) {
    all += read_whole_file(path + "/" + name);
    if (!all.empty() && all.back() != '\n') all += '\n';  // keep files from running into each other
  }
  return all;
}

TextCorpus byte_corpus(std::string_view text, const SplitFractions& fractions) {
  TextCorpus c;
  for (int b = 0; b < 256; ++b) c.vocab.add(std::string(1, static_cast<char>(b)));
  const ContiguousSplit s = split_contiguous(static_cast<std::int64_t>(text.size()), fractions);
  auto ids = [&](std::int64_t begin, std::int64_t end) {
    std::vector<std::int32_t> v(static_cast<std::size_t>(end - begin));
    for (std::int64_t i = begin; i < end; ++i) {
      v[static_cast<std::size_t>(i - begin)] = static_cast<unsigned char>(text[static_cast<std::size_t>(i)]);
    }
    return v;
  };
  c.train = ids(0, s.train_end);
  c.valid = ids(s.train_end, s.valid_end);
  c.test = ids(s.valid_end, s.n);
  return c;
}

TextCorpus char_corpus(std::string_view text, const SplitFractions& fractions) {
  TextCorpus c;
  std::vector<std::int32_t> cps = decode_utf8(text, c.invalid_utf8);
  const ContiguousSplit s = split_contiguous(static_cast<std::int64_t>(cps.size()), fractions);

  // A dense table up to the largest code point of the training text keeps the mapping a single load per character
  // (128 entries for ASCII; at most 4.4 MB). Ids in ascending code-point order.
  std::int32_t top = -1;
  for (std::int64_t i = 0; i < s.train_end; ++i) top = std::max(top, cps[static_cast<std::size_t>(i)]);
  std::vector<std::int32_t> id_of(static_cast<std::size_t>(top + 1), -1);
  for (std::int64_t i = 0; i < s.train_end; ++i) id_of[static_cast<std::size_t>(cps[static_cast<std::size_t>(i)])] = 0;
  const std::int32_t unk = c.vocab.add(kUnkToken);
  for (std::int32_t cp = 0; cp <= top; ++cp) {
    if (id_of[static_cast<std::size_t>(cp)] == 0) id_of[static_cast<std::size_t>(cp)] = c.vocab.add(encode_utf8(cp));
  }
  for (std::int64_t i = 0; i < s.n; ++i) {
    std::int32_t& v = cps[static_cast<std::size_t>(i)];
    const std::int32_t id = v <= top ? id_of[static_cast<std::size_t>(v)] : -1;
    if (id < 0) {
      if (i < s.valid_end) {
        ++c.unknown_valid;
      } else {
        ++c.unknown_test;
      }
    }
    v = id < 0 ? unk : id;
  }
  c.valid = slice(cps, s.train_end, s.valid_end);
  c.test = slice(cps, s.valid_end, s.n);
  cps.resize(static_cast<std::size_t>(s.train_end));  // reuse the big buffer for train
  c.train = std::move(cps);
  return c;
}

}  // namespace moescope
