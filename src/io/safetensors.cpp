// safetensors reading (validated header, memory-mapped data), sharded indexes, and writing.
#include "moescope/io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <set>
#include <system_error>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "moescope/util/error.hpp"

namespace moescope {
namespace {

using nlohmann::json;

std::string errno_text() { return std::strerror(errno); }

std::string in_quotes(const std::string& name) { return "'" + name + "'"; }

std::string range_text(std::uint64_t b, std::uint64_t e) {
  return "[" + std::to_string(b) + ", " + std::to_string(e) + ")";
}

// A JSON value plus the first duplicate key found while parsing it: nlohmann keeps the last value of a
// repeated key without saying so, and a header that names a tensor twice is ambiguous.
struct StrictJson {
  json value;
  bool has_duplicate = false;
  std::string duplicate_key;
  std::size_t duplicate_depth = 0;  // 1 = a key of the top-level object
  std::string duplicate_parent;     // the top-level key it was found under (depth > 1)
};

// Parses JSON text, recording duplicate keys. Throws InputError("<file>: <what> is not valid JSON ...").
StrictJson parse_strict_json(const char* first, const char* last, const std::string& file, const std::string& what) {
  StrictJson out;
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string top_key;
  auto cb = [&](int /*depth*/, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (ev == json::parse_event_t::key && !keys.empty() && parsed.is_string()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (keys.size() == 1) top_key = k;
      if (!keys.back().insert(k).second && !out.has_duplicate) {
        out.has_duplicate = true;
        out.duplicate_key = k;
        out.duplicate_depth = keys.size();
        out.duplicate_parent = top_key;
      }
    }
    return true;
  };
  // nlohmann stops at a raw NUL as if the input ended there; valid JSON never holds one unescaped.
  if (const void* nul = std::memchr(first, '\0', static_cast<std::size_t>(last - first)))
    fail_input(file, what + " is not valid JSON (NUL byte at byte " +
                         std::to_string(static_cast<const char*>(nul) - first) + ")");
  try {
    out.value = json::parse(first, last, cb);
  } catch (const json::parse_error& e) {
    fail_input(file, what + " is not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  } catch (const json::exception& e) {
    fail_input(file, what + " is not valid JSON (" + e.what() + ")");
  }
  return out;
}

enum class IntKind { kOk, kNegative, kNotInteger };

// JSON integers: nlohmann stores non-negative ones as unsigned, negative ones as signed, and anything
// out of 64-bit range (or with a fraction/exponent) as a float.
IntKind get_u64(const json& j, std::uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<std::uint64_t>();
    return IntKind::kOk;
  }
  if (j.is_number_integer()) return IntKind::kNegative;
  return IntKind::kNotInteger;
}

SafetensorsEntry parse_entry(const std::string& name, const json& v, std::uint64_t data_len,
                             const std::string& file) {
  const std::string who = "tensor " + in_quotes(name) + ": ";
  if (!v.is_object()) fail_input(file, who + "entry is not an object");

  SafetensorsEntry e;
  e.info.name = name;

  const auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) fail_input(file, who + "missing or non-string \"dtype\"");
  const std::string& dname = dt->get_ref<const std::string&>();
  const auto parsed = parse_dtype(dname);
  if (!parsed) fail_input(file, who + "unsupported dtype " + in_quotes(dname));
  e.info.dtype = *parsed;

  const auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) fail_input(file, who + "missing or non-array \"shape\"");
  std::int64_t numel = 1;
  e.info.shape.reserve(sh->size());
  for (const json& d : *sh) {
    std::uint64_t u = 0;
    const IntKind k = get_u64(d, u);
    if (k == IntKind::kNegative) fail_input(file, who + "negative dimension " + d.dump() + " in \"shape\"");
    if (k != IntKind::kOk || u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail_input(file, who + "\"shape\" holds " + d.dump() + ", not a dimension");
    const auto dim = static_cast<std::int64_t>(u);
    if (__builtin_mul_overflow(numel, dim, &numel))
      fail_input(file, who + "shape " + sh->dump() + " has more elements than fit in 64 bits");
    e.info.shape.push_back(dim);
  }
  std::uint64_t need = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel), dtype_size(e.info.dtype), &need))
    fail_input(file, who + "shape " + shape_string(e.info.shape) + " of " + dname + " needs more than 2^64 bytes");

  const auto off = v.find("data_offsets");
  std::uint64_t b = 0, en = 0;
  if (off == v.end() || !off->is_array() || off->size() != 2 || get_u64((*off)[0], b) != IntKind::kOk ||
      get_u64((*off)[1], en) != IntKind::kOk)
    fail_input(file, who + "\"data_offsets\" must be [begin, end] with non-negative integers");
  if (b > en) fail_input(file, who + "data_offsets " + range_text(b, en) + " end before they begin");
  if (en > data_len)
    fail_input(file, who + "data_offsets " + range_text(b, en) + " run past the end of the data (" +
                         std::to_string(data_len) + " bytes)");
  if (en - b != need)
    fail_input(file, who + "data_offsets " + range_text(b, en) + " hold " + std::to_string(en - b) +
                         " bytes but shape " + shape_string(e.info.shape) + " of " + dname + " needs " +
                         std::to_string(need));
  e.begin = b;  // relative for now; made absolute by the caller
  e.end = en;
  return e;
}

SafetensorsHeader parse_header_json(const std::uint8_t* prefix, std::uint64_t n, std::uint64_t file_size,
                                    const std::string& file) {
  const char* text = reinterpret_cast<const char*>(prefix + 8);
  StrictJson sj = parse_strict_json(text, text + n, file, "header");
  if (sj.has_duplicate) {
    if (sj.duplicate_depth == 1) fail_input(file, "duplicate tensor name " + in_quotes(sj.duplicate_key) + " in header");
    fail_input(file, "header entry " + in_quotes(sj.duplicate_parent) + " repeats the key " + in_quotes(sj.duplicate_key));
  }
  const json& root = sj.value;
  if (!root.is_object()) fail_input(file, "header is a JSON " + std::string(root.type_name()) + ", not an object");

  SafetensorsHeader h;
  h.header_len = n;
  const std::uint64_t data_start = 8 + n;
  const std::uint64_t data_len = file_size - data_start;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail_input(file, "\"__metadata__\" is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail_input(file, "\"__metadata__\" value for " + in_quotes(m.key()) + " is not a string");
        h.metadata.emplace(m.key(), m->get<std::string>());
      }
      continue;
    }
    h.entries.push_back(parse_entry(it.key(), *it, data_len, file));
  }
  // nlohmann objects iterate in key order, so entries are already sorted by name.

  // Sorted by offset the data must tile [0, data_len) exactly; zero-size tensors sort before a
  // tensor starting at the same offset.
  std::vector<const SafetensorsEntry*> by_off;
  by_off.reserve(h.entries.size());
  for (const auto& e : h.entries) by_off.push_back(&e);
  std::sort(by_off.begin(), by_off.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return std::tie(a->begin, a->end, a->info.name) < std::tie(b->begin, b->end, b->info.name);
  });
  std::uint64_t expect = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry* e : by_off) {
    if (e->begin < expect)
      fail_input(file, "tensor " + in_quotes(e->info.name) + ": data_offsets " + range_text(e->begin, e->end) +
                           " overlap tensor " + in_quotes(prev->info.name) + " " + range_text(prev->begin, prev->end));
    if (e->begin > expect)
      fail_input(file, "tensor " + in_quotes(e->info.name) + ": data_offsets " + range_text(e->begin, e->end) +
                           " leave a gap of " + std::to_string(e->begin - expect) + " bytes after offset " +
                           std::to_string(expect));
    expect = e->end;
    prev = e;
  }
  if (expect != data_len)
    fail_input(file, "tensor data ends at offset " + std::to_string(expect) + " but the file holds " +
                         std::to_string(data_len) + " bytes after the header (" + std::to_string(data_len - expect) +
                         " unaccounted for)");

  for (auto& e : h.entries) {
    e.begin += data_start;
    e.end += data_start;
  }
  return h;
}

std::vector<TensorInfo> infos_of(const SafetensorsHeader& h) {
  std::vector<TensorInfo> v;
  v.reserve(h.entries.size());
  for (const auto& e : h.entries) v.push_back(e.info);
  return v;
}

// Rejects shard names that could reach outside the index's folder.
bool shard_name_ok(const std::string& f) {
  if (f.empty() || f.front() == '/' || f.find('\0') != std::string::npos) return false;
  std::size_t start = 0;
  while (start <= f.size()) {
    const std::size_t slash = std::min(f.find('/', start), f.size());
    if (f.compare(start, slash - start, "..") == 0 && slash - start == 2) return false;
    start = slash + 1;
  }
  return true;
}

void write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category());
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const std::uint8_t* prefix, std::size_t prefix_len,
                                           std::uint64_t file_size, const std::string& file) {
  if (file_size == 0) fail_input(file, "empty file (0 bytes), not a safetensors file");
  if (file_size < 8)
    fail_input(file, "file of " + std::to_string(file_size) +
                         " bytes is too small for a safetensors header (needs at least 8)");
  const std::uint64_t avail = std::min<std::uint64_t>(prefix_len, file_size);
  if (avail < 8) fail_input(file, "only " + std::to_string(avail) + " bytes of the header length available");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];  // little-endian, whatever the host
  if (n > kMaxSafetensorsHeader)
    fail_input(file, "header length " + std::to_string(n) + " exceeds the limit of " +
                         std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (8 + n > file_size)
    fail_input(file, "header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(file_size) + " bytes)");
  if (8 + n > avail)
    fail_input(file, "only " + std::to_string(avail) + " of the header's " + std::to_string(8 + n) +
                         " bytes available");
  try {
    return parse_header_json(prefix, n, file_size, file);
  } catch (const json::exception& e) {
    // Safety net: a type check missed above must still surface as bad input, not a crash.
    fail_input(file, std::string("malformed header (") + e.what() + ")");
  }
}

// ---------------------------------------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail_input(path_, "cannot open: " + errno_text());
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail_input(path_, "cannot stat: " + errno_text());
    if (!S_ISREG(st.st_mode)) fail_input(path_, "not a regular file");
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (size_ < 8) parse_safetensors_header(nullptr, 0, size_, path_);  // throws, naming the size
    void* m = ::mmap(nullptr, static_cast<std::size_t>(size_), PROT_READ, MAP_PRIVATE, fd_, 0);
    if (m == MAP_FAILED) fail_input(path_, "cannot map: " + errno_text());
    map_ = static_cast<const std::uint8_t*>(m);
    // The mapping keeps the file alive; closing now keeps sharded checkpoints from holding hundreds of fds.
    ::close(fd_);
    fd_ = -1;
    header_ = parse_safetensors_header(map_, static_cast<std::size_t>(size_), size_, path_);
    infos_ = infos_of(header_);
  } catch (...) {
    if (map_) ::munmap(const_cast<std::uint8_t*>(map_), static_cast<std::size_t>(size_));
    if (fd_ >= 0) ::close(fd_);
    map_ = nullptr;
    fd_ = -1;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<std::uint8_t*>(map_), static_cast<std::size_t>(size_));
  if (fd_ >= 0) ::close(fd_);
}

ByteView SafetensorsFile::raw(const std::string& name) const {
  const TensorInfo& t = at(name);
  const SafetensorsEntry& e = header_.entries[static_cast<std::size_t>(&t - infos_.data())];
  return {map_ + e.begin, static_cast<std::size_t>(e.end - e.begin)};
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorInfo& t = at(name);
  const SafetensorsEntry& e = header_.entries[static_cast<std::size_t>(&t - infos_.data())];
  // Only whole pages inside the tensor: neighbours sharing a boundary page may still be in use.
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t first = (e.begin + page - 1) / page * page;
  const std::uint64_t last = e.end / page * page;
  if (last > first)
    ::madvise(const_cast<std::uint8_t*>(map_ + first), static_cast<std::size_t>(last - first), MADV_DONTNEED);
  // A failed madvise only means the pages stay resident; nothing to report.
}

std::vector<std::pair<std::string, std::string>> SafetensorsFile::metadata() const {
  return {header_.metadata.begin(), header_.metadata.end()};
}

// ---------------------------------------------------------------------------------------------------------

ShardedSafetensors::ShardedSafetensors(std::string index_path) : path_(std::move(index_path)) {
  std::ifstream in(path_, std::ios::binary);
  if (!in) fail_input(path_, "cannot open: " + errno_text());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail_input(path_, "cannot read: " + errno_text());
  StrictJson sj = parse_strict_json(text.data(), text.data() + text.size(), path_, "index");
  if (sj.has_duplicate) {
    if (sj.duplicate_depth == 2 && sj.duplicate_parent == "weight_map")
      fail_input(path_, "weight_map lists tensor " + in_quotes(sj.duplicate_key) + " twice");
    fail_input(path_, "duplicate key " + in_quotes(sj.duplicate_key) + " in index");
  }
  const json& root = sj.value;
  if (!root.is_object()) fail_input(path_, "index is not a JSON object");
  const auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object()) fail_input(path_, "missing or non-object \"weight_map\"");
  const auto md = root.find("metadata");
  if (md != root.end() && !md->is_null()) {
    if (!md->is_object()) fail_input(path_, "\"metadata\" is not an object");
    // HF writes {"total_size": <number>}: non-string values are kept as their JSON text.
    for (auto it = md->begin(); it != md->end(); ++it)
      index_metadata_.emplace(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
  }

  std::map<std::string, std::size_t> shard_index;  // file name as written in the index -> shards_ slot
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string()) fail_input(path_, "weight_map entry for tensor " + in_quotes(it.key()) + " is not a string");
    const std::string& f = it->get_ref<const std::string&>();
    if (!shard_name_ok(f))
      fail_input(path_, "tensor " + in_quotes(it.key()) + ": shard path " + in_quotes(f) +
                            " is not a relative path inside the index's folder");
    shard_index.emplace(f, 0);
  }
  const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
  for (auto& [f, slot] : shard_index) {
    slot = shards_.size();
    shard_paths_.push_back(dir.empty() ? f : (dir / f).string());
    try {
      shards_.push_back(std::make_unique<SafetensorsFile>(shard_paths_.back()));
    } catch (const InputError& e) {
      fail_input(path_, std::string("shard ") + e.what());
    }
  }

  struct Row {
    const TensorInfo* info;
    std::size_t shard;
  };
  std::vector<Row> rows;
  for (std::size_t s = 0; s < shards_.size(); ++s)
    for (const auto& t : shards_[s]->tensors()) rows.push_back({&t, s});
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.info->name < b.info->name; });
  for (std::size_t i = 1; i < rows.size(); ++i)
    if (rows[i].info->name == rows[i - 1].info->name)
      fail_input(path_, "tensor " + in_quotes(rows[i].info->name) + " is in two shards: " +
                            shard_paths_[rows[i - 1].shard] + " and " + shard_paths_[rows[i].shard]);
  infos_.reserve(rows.size());
  shard_of_.reserve(rows.size());
  for (const Row& r : rows) {
    infos_.push_back(*r.info);
    shard_of_.push_back(r.shard);
  }
  // Every listed tensor must be where the index says; tensors a shard holds beyond the map are kept.
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::size_t want = shard_index.at(it->get_ref<const std::string&>());
    const TensorInfo* t = find(it.key());
    if (!t)
      fail_input(path_, "tensor " + in_quotes(it.key()) + " is listed in weight_map but missing from its shard " +
                            shard_paths_[want]);
    const std::size_t have = shard_of_[static_cast<std::size_t>(t - infos_.data())];
    if (have != want)
      fail_input(path_, "tensor " + in_quotes(it.key()) + " is listed in weight_map under shard " + shard_paths_[want] +
                            " but is in " + shard_paths_[have]);
  }
}

ByteView ShardedSafetensors::raw(const std::string& name) const {
  const TensorInfo& t = at(name);
  return shards_[shard_of_[static_cast<std::size_t>(&t - infos_.data())]]->raw(name);
}

const std::string& ShardedSafetensors::file_of(const std::string& name) const {
  const TensorInfo* t = find(name);
  return t ? shard_paths_[shard_of_[static_cast<std::size_t>(t - infos_.data())]] : path_;
}

void ShardedSafetensors::release(const std::string& name) const {
  const TensorInfo& t = at(name);
  shards_[shard_of_[static_cast<std::size_t>(&t - infos_.data())]]->release(name);
}

std::vector<std::pair<std::string, std::string>> ShardedSafetensors::metadata() const {
  return {index_metadata_.begin(), index_metadata_.end()};
}

// ---------------------------------------------------------------------------------------------------------

namespace {

// The writer behind both public forms: data(i, scratch) returns tensor i's bytes, either its own pointer or
// scratch (resized to the tensor's size and filled), so a streamed writer holds one tensor at a time.
using DataFn = std::function<const std::uint8_t*(std::size_t, std::vector<std::uint8_t>&)>;

void write_impl(const std::string& path, const std::vector<TensorInfo>& infos, const DataFn& data,
                const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the header in the caller's order, matching the data.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = h["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::set<std::string> seen;
  std::vector<std::uint64_t> sizes;
  sizes.reserve(infos.size());
  std::uint64_t offset = 0;
  for (const auto& info : infos) {
    const std::string who = "tensor " + in_quotes(info.name) + ": ";
    if (info.name == "__metadata__") fail_input(path, "the tensor name '__metadata__' is reserved");
    if (!seen.insert(info.name).second) fail_input(path, "duplicate tensor name " + in_quotes(info.name));
    const std::size_t es = dtype_size(info.dtype);
    if (es == 0) fail_input(path, who + "invalid dtype");
    std::int64_t numel = 1;
    for (std::int64_t d : info.shape)
      if (d < 0 || __builtin_mul_overflow(numel, d, &numel))
        fail_input(path, who + "invalid shape " + shape_string(info.shape));
    std::uint64_t nbytes = 0, end = 0;
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel), es, &nbytes) ||
        __builtin_add_overflow(offset, nbytes, &end))
      fail_input(path, who + "shape " + shape_string(info.shape) + " is too large");
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = std::string(dtype_name(info.dtype));
    e["shape"] = info.shape;
    e["data_offsets"] = {offset, end};
    h[info.name] = std::move(e);
    sizes.push_back(nbytes);
    offset = end;
  }
  std::string text;
  try {
    text = h.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    fail_input(path, std::string("cannot encode the header (names and metadata must be UTF-8): ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  if (text.size() > kMaxSafetensorsHeader)
    fail_input(path, "header of " + std::to_string(text.size()) + " bytes exceeds the safetensors limit");
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_input(path, "cannot create " + tmp + ": " + errno_text());
  const char* step = "write";
  try {
    write_all(fd, len, 8);
    write_all(fd, reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    std::vector<std::uint8_t> scratch;
    for (std::size_t i = 0; i < infos.size(); ++i) {
      if (!sizes[i]) continue;
      const std::uint8_t* bytes = data(i, scratch);
      write_all(fd, bytes, static_cast<std::size_t>(sizes[i]));
    }
    step = "sync";
    if (::fsync(fd) != 0) throw std::system_error(errno, std::generic_category());
  } catch (const std::system_error& e) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail_input(path, std::string("cannot ") + step + " " + tmp + ": " + e.code().message());
  } catch (...) {  // a failing data source: leave nothing behind
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    fail_input(path, "cannot write " + tmp + ": " + why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    fail_input(path, "cannot rename " + tmp + " to it: " + why);
  }
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (t.info.nbytes() > 0 && !t.data) fail_input(path, "tensor " + in_quotes(t.info.name) + ": no data");
    infos.push_back(t.info);
  }
  write_impl(
      path, infos, [&](std::size_t i, std::vector<std::uint8_t>&) { return static_cast<const std::uint8_t*>(tensors[i].data); },
      metadata);
}

void write_safetensors_streamed(const std::string& path, const std::vector<TensorInfo>& infos,
                                const std::function<void(std::size_t, std::uint8_t*)>& fill,
                                const std::map<std::string, std::string>& metadata) {
  write_impl(
      path, infos,
      [&](std::size_t i, std::vector<std::uint8_t>& scratch) {
        scratch.resize(static_cast<std::size_t>(infos[i].nbytes()));
        fill(i, scratch.data());
        return static_cast<const std::uint8_t*>(scratch.data());
      },
      metadata);
}

}  // namespace moescope
