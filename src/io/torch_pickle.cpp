// torch.save zip files without LibTorch: the archive (io/zip), a safe pickle VM, and a TensorSource over the
// mapped file. Facts about the format from PyTorch's serialization (torch/serialization.py, torch/_utils.py,
// torch/_tensor.py, the TorchScript pickler) and Python's pickletools; the code is ours.
#include "moescope/io/torch_pickle.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moescope/io/zip.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/strings.hpp"

namespace moescope {
namespace {


// ---------------------------------------------------------------------------------------------------------
// Python objects as the VM builds them. Containers are mutable until placed inside another container; from
// then on they are frozen, so a container's depth, computed when a child is added, stays exact, and cycles
// (which torch.save never writes) cannot form. Destruction then recurses at most kMaxTorchPickleDepth deep.

enum class Kind : std::uint8_t { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Set, Dict, Global, Storage, Tensor, Opaque };

struct Obj {
  explicit Obj(Kind k) : kind(k) {}
  virtual ~Obj() = default;
  Kind kind;
  bool frozen = false;
  std::uint32_t depth = 0;  // 0 for leaves, 1 + the deepest child for containers
};
using Ref = std::shared_ptr<Obj>;

struct IntObj : Obj {  // Int and Bool
  IntObj(Kind k, std::int64_t x) : Obj(k), v(x) {}
  std::int64_t v;
};
struct FloatObj : Obj {
  explicit FloatObj(double x) : Obj(Kind::Float), v(x) {}
  double v;
};
struct StrObj : Obj {  // Str (valid UTF-8) and Bytes
  StrObj(Kind k, std::string s) : Obj(k), v(std::move(s)) {}
  std::string v;
};
struct SeqObj : Obj {  // Tuple, List, Set
  explicit SeqObj(Kind k) : Obj(k) {}
  std::vector<Ref> items;
};
struct DictObj : Obj {
  DictObj() : Obj(Kind::Dict) {}
  std::vector<std::pair<Ref, Ref>> items;                  // insertion order, as Python's dict
  // string keys -> position in items; allocated with the first string key (most dicts are small or empty)
  std::unique_ptr<std::unordered_map<std::string, std::size_t>> str_index;
};
struct GlobalObj : Obj {
  GlobalObj(std::string m, std::string n) : Obj(Kind::Global), module(std::move(m)), name(std::move(n)) {}
  std::string module, name;
  std::string full() const { return printable(module + "." + name); }  // for messages
};
struct IndexObj : Obj {  // Storage and Tensor: an index into the builder's tables
  IndexObj(Kind k, std::size_t i) : Obj(k), index(i) {}
  std::size_t index;
};
struct OpaqueObj : Obj {  // what calling a global outside the allow-list would have made; never executed
  OpaqueObj(std::string by, bool t) : Obj(Kind::Opaque), made_by(std::move(by)), torch_object(t) {}
  std::string made_by;  // "module.name" of the callable, or "" when the callable was not a global
  bool torch_object;    // made by a torch.* callable: where a tensor is expected, an error
};

template <typename T>
T& as(const Ref& r) {
  return static_cast<T&>(*r);
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: case Kind::BigInt: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Set: return "set";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
    case Kind::Opaque: return "object";
  }
  return "?";
}

bool is_torch_module(const std::string& m) { return m == "torch" || m.rfind("torch.", 0) == 0; }

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), as names must be for JSON reports.
bool valid_utf8(const std::uint8_t* s, std::size_t n) {
  std::size_t i = 0;
  while (i < n) {
    const std::uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07, min = 0x10000;
    else return false;
    if (n - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Storages and tensor views found while unpickling. Problems with a tensor are recorded, not thrown: they are
// reported with the tensor's key when the state dict is flattened (the key is unknown while unpickling).

struct StorageRec {
  std::string key;
  std::string type;             // "torch.FloatStorage", ...
  std::optional<DType> dtype;   // element type of a typed storage; nullopt: untyped (bytes) or unsupported
  bool untyped = false;
  std::uint64_t numel = 0;      // as the persistent id declares it
  std::uint64_t nbytes = 0;
  const ZipEntry* entry = nullptr;
  std::string problem;
};

struct ViewRec {
  std::size_t storage = 0;
  DType dtype = DType::U8;
  std::int64_t offset = 0;  // elements
  std::vector<std::int64_t> shape, stride;
  std::uint64_t nbytes = 0;
  bool contiguous = true;
  std::string problem;
};

struct StorageTypeInfo {
  const char* name;
  std::optional<DType> dtype;
  std::size_t elem_size;     // bytes per element of the storage (also for unsupported types, to check sizes)
  const char* unsupported;   // why it cannot be read, or nullptr
};

// Storage classes torch.save names in persistent ids (torch.<Name>, or torch.cuda.<Name> from older versions).
const StorageTypeInfo* storage_type(const std::string& name) {
  static const StorageTypeInfo kTypes[] = {
      {"DoubleStorage", DType::F64, 8, nullptr},
      {"FloatStorage", DType::F32, 4, nullptr},
      {"HalfStorage", DType::F16, 2, nullptr},
      {"BFloat16Storage", DType::BF16, 2, nullptr},
      {"LongStorage", DType::I64, 8, nullptr},
      {"IntStorage", DType::I32, 4, nullptr},
      {"ShortStorage", DType::I16, 2, nullptr},
      {"CharStorage", DType::I8, 1, nullptr},
      {"ByteStorage", DType::U8, 1, nullptr},
      {"BoolStorage", DType::BOOL, 1, nullptr},
      {"UntypedStorage", std::nullopt, 1, nullptr},
      {"ComplexFloatStorage", std::nullopt, 8, "complex64 tensors are not supported"},
      {"ComplexDoubleStorage", std::nullopt, 16, "complex128 tensors are not supported"},
      {"ComplexHalfStorage", std::nullopt, 4, "complex32 tensors are not supported"},
      {"QInt8Storage", std::nullopt, 1, "quantized tensors are not supported"},
      {"QUInt8Storage", std::nullopt, 1, "quantized tensors are not supported"},
      {"QInt32Storage", std::nullopt, 4, "quantized tensors are not supported"},
      {"QUInt4x2Storage", std::nullopt, 1, "quantized tensors are not supported"},
      {"QUInt2x4Storage", std::nullopt, 1, "quantized tensors are not supported"},
  };
  for (const auto& t : kTypes)
    if (name == t.name) return &t;
  return nullptr;
}

// torch.<dtype> globals (as _rebuild_tensor_v3 receives its dtype).
std::optional<DType> dtype_global(const std::string& name) {
  static const std::pair<const char*, DType> kNames[] = {
      {"float64", DType::F64}, {"double", DType::F64},   {"float32", DType::F32},     {"float", DType::F32},
      {"float16", DType::F16}, {"half", DType::F16},     {"bfloat16", DType::BF16},   {"int64", DType::I64},
      {"long", DType::I64},    {"int32", DType::I32},    {"int", DType::I32},         {"int16", DType::I16},
      {"short", DType::I16},   {"int8", DType::I8},      {"uint8", DType::U8},        {"bool", DType::BOOL},
      {"float8_e4m3fn", DType::F8_E4M3}, {"float8_e5m2", DType::F8_E5M2}};
  for (const auto& [n, t] : kNames)
    if (name == n) return t;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------------------
// The pickle VM.

class Unpickler {
 public:
  Unpickler(const std::uint8_t* data, std::size_t size, const std::string& file, const std::string& member,
            const ZipArchive& zip, const std::string& prefix)
      : p_(data), n_(size), file_(file), member_(member), zip_(zip), prefix_(prefix) {
    none_ = std::make_shared<Obj>(Kind::None);
    true_ = std::make_shared<IntObj>(Kind::Bool, 1);
    false_ = std::make_shared<IntObj>(Kind::Bool, 0);
  }

  Ref run();

  std::vector<StorageRec> storages;
  std::vector<ViewRec> views;

 private:
  [[noreturn]] void bad(const std::string& what) const {
    fail_input(file_, member_ + ": byte " + std::to_string(op_) + ": " + what);
  }

  // --- input
  void need(std::size_t k) const {
    if (n_ - pos_ < k) bad("pickle truncated (needs " + std::to_string(k) + " more bytes, " + std::to_string(n_ - pos_) + " left)");
  }
  std::uint64_t read_le(std::size_t k) {
    need(k);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < k; ++i) v |= static_cast<std::uint64_t>(p_[pos_ + i]) << (8 * i);
    pos_ += k;
    return v;
  }
  std::string read_bytes(std::uint64_t k) {
    if (k > n_ - pos_) bad("a length of " + std::to_string(k) + " bytes runs past the end of the pickle");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<std::size_t>(k));
    pos_ += static_cast<std::size_t>(k);
    return s;
  }
  std::string read_line() {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (!nl) bad("pickle truncated (a text argument has no newline)");
    const std::size_t len = static_cast<const std::uint8_t*>(nl) - (p_ + pos_);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len + 1;
    return s;
  }
  Ref make_str(std::string s) {
    if (!valid_utf8(reinterpret_cast<const std::uint8_t*>(s.data()), s.size())) bad("string is not valid UTF-8");
    return std::make_shared<StrObj>(Kind::Str, std::move(s));
  }

  // --- stack
  std::size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  Ref pop() {
    if (stack_.size() <= base()) bad("stack underflow");
    Ref r = std::move(stack_.back());
    stack_.pop_back();
    return r;
  }
  const Ref& top() const {
    if (stack_.size() <= base()) bad("stack underflow");
    return stack_.back();
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) bad("no MARK to pop to");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(m)),
                           std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  void push(Ref r) { stack_.push_back(std::move(r)); }

  // --- containers
  void adopt(Obj& parent, const Ref& child) {
    if (child.get() == &parent) bad("a container that holds itself (recursive structures are not supported)");
    child->frozen = true;
    parent.depth = std::max(parent.depth, child->depth + 1);
    if (parent.depth > kMaxTorchPickleDepth)
      bad("containers nested deeper than " + std::to_string(kMaxTorchPickleDepth) + " levels");
  }
  void check_mutable(const Obj& o) {
    if (o.frozen)
      bad("a " + std::string(kind_name(o.kind)) +
          " changed after being placed in another container (recursive structures are not supported)");
  }
  Ref make_seq(Kind k, std::vector<Ref> items) {
    auto s = std::make_shared<SeqObj>(k);
    for (const Ref& r : items) adopt(*s, r);
    s->items = std::move(items);
    return s;
  }
  void dict_set(DictObj& d, Ref key, Ref value) {
    adopt(d, key);
    adopt(d, value);
    if (key->kind == Kind::Str) {
      if (!d.str_index) d.str_index = std::make_unique<std::unordered_map<std::string, std::size_t>>();
      const auto [it, fresh] = d.str_index->emplace(as<StrObj>(key).v, d.items.size());
      if (!fresh) {  // Python keeps the first position and the last value
        d.items[it->second].second = std::move(value);
        return;
      }
    }
    d.items.emplace_back(std::move(key), std::move(value));
  }
  void set_items(const Ref& target, std::vector<Ref>& items) {
    if (items.size() % 2) bad("SETITEMS with an odd number of items");
    if (target->kind == Kind::Opaque) return;  // inert: items dropped
    if (target->kind != Kind::Dict) bad("SETITEM on a " + std::string(kind_name(target->kind)));
    check_mutable(*target);
    for (std::size_t i = 0; i < items.size(); i += 2) dict_set(as<DictObj>(target), items[i], items[i + 1]);
  }
  void append_items(const Ref& target, std::vector<Ref>& items, Kind want, const char* op) {
    if (target->kind == Kind::Opaque) return;
    if (target->kind != want) bad(std::string(op) + " on a " + kind_name(target->kind));
    check_mutable(*target);
    auto& s = as<SeqObj>(target);
    for (Ref& r : items) {
      adopt(s, r);
      s.items.push_back(std::move(r));
    }
  }

  // --- memo
  void memo_put(std::uint64_t i) { memo_[i] = top(); }
  void memo_get(std::uint64_t i) {
    const auto it = memo_.find(i);
    if (it == memo_.end()) bad("memo key " + std::to_string(i) + " is not defined");
    push(it->second);
  }

  // --- ints
  Ref make_int(std::int64_t v) { return std::make_shared<IntObj>(Kind::Int, v); }
  Ref long_from_bytes(const std::string& b) {  // little-endian two's complement (LONG1, LONG4)
    if (b.empty()) return make_int(0);
    const std::size_t k = std::min<std::size_t>(b.size(), 8);
    std::uint64_t u = 0;
    for (std::size_t i = 0; i < k; ++i) u |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(b[i])) << (8 * i);
    if (k < 8 && (static_cast<std::uint8_t>(b[k - 1]) & 0x80)) u |= ~std::uint64_t{0} << (8 * k);  // sign-extend
    const auto v = static_cast<std::int64_t>(u);
    const char fill = v < 0 ? '\xff' : '\0';
    for (std::size_t i = 8; i < b.size(); ++i)
      if (b[i] != fill) return std::make_shared<Obj>(Kind::BigInt);
    return make_int(v);
  }
  Ref int_from_text(const std::string& line) {  // INT, LONG (decimal, optional trailing L)
    std::string s = line;
    if (!s.empty() && s.back() == 'L') s.pop_back();
    std::size_t start = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    if (s.size() == start || !std::all_of(s.begin() + static_cast<std::ptrdiff_t>(start), s.end(),
                                          [](char c) { return c >= '0' && c <= '9'; }))
      bad("invalid integer literal " + moescope::quoted(line.substr(0, 40)));
    std::int64_t v = 0;
    const char* first = s.data() + (s[0] == '+' ? 1 : 0);
    const auto r = std::from_chars(first, s.data() + s.size(), v);
    if (r.ec == std::errc::result_out_of_range) return std::make_shared<Obj>(Kind::BigInt);
    return make_int(v);
  }

  // --- calls and persistent ids
  Ref call(const Ref& fn, const std::vector<Ref>& args);
  Ref rebuild_tensor(const std::string& which, const std::vector<Ref>& args);
  Ref persistent_load(const Ref& pid);

  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
  std::size_t op_ = 0;  // offset of the opcode being run, for messages
  const std::string& file_;
  const std::string& member_;
  const ZipArchive& zip_;
  const std::string& prefix_;
  std::vector<Ref> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, Ref> memo_;
  std::map<std::string, std::size_t> storage_by_key_;
  Ref none_, true_, false_;
};

Ref Unpickler::persistent_load(const Ref& pid) {
  if (pid->kind != Kind::Tuple) bad("persistent id is a " + std::string(kind_name(pid->kind)) + ", not a tuple");
  const auto& t = as<SeqObj>(pid).items;
  if (t.size() != 5 || t[0]->kind != Kind::Str || as<StrObj>(t[0]).v != "storage")
    bad("persistent id is not ('storage', type, key, location, size)");
  StorageRec s;
  if (t[2]->kind == Kind::Str) s.key = as<StrObj>(t[2]).v;
  else s.problem = "storage key is a " + std::string(kind_name(t[2]->kind)) + ", not a string";
  std::size_t elem_size = 1;
  if (t[1]->kind != Kind::Global) {
    if (s.problem.empty()) s.problem = "storage type is a " + std::string(kind_name(t[1]->kind)) + ", not a class";
  } else {
    const auto& g = as<GlobalObj>(t[1]);
    s.type = g.full();
    const StorageTypeInfo* info = (g.module == "torch" || g.module == "torch.cuda") ? storage_type(g.name) : nullptr;
    if (!info) {
      if (s.problem.empty()) s.problem = "unknown storage type " + s.type;
    } else {
      elem_size = info->elem_size;
      s.dtype = info->dtype;
      s.untyped = std::string(info->name) == "UntypedStorage";
      if (info->unsupported && s.problem.empty()) s.problem = std::string(info->unsupported) + " (" + s.type + ")";
    }
  }
  if (t[4]->kind != Kind::Int || as<IntObj>(t[4]).v < 0) {
    if (s.problem.empty()) s.problem = "storage size is not a non-negative integer";
  } else {
    s.numel = static_cast<std::uint64_t>(as<IntObj>(t[4]).v);
    if (__builtin_mul_overflow(s.numel, elem_size, &s.nbytes) && s.problem.empty())
      s.problem = "storage of " + std::to_string(s.numel) + " elements is too large";
  }
  if (s.problem.empty()) {
    s.entry = zip_.find(prefix_ + "data/" + s.key);
    if (!s.entry)
      s.problem = "storage " + moescope::quoted(s.key) + " has no member " + moescope::quoted(prefix_ + "data/" + s.key) + " in the archive";
    else if (s.entry->size != s.nbytes)
      s.problem = "storage " + moescope::quoted(s.key) + " declares " + std::to_string(s.numel) + " elements of " +
                  std::to_string(elem_size) + " bytes but " + moescope::quoted(s.entry->name) + " holds " +
                  std::to_string(s.entry->size) + " bytes";
  }
  if (s.problem.empty()) {  // a key seen before: the same storage (torch caches storages by key)
    const auto it = storage_by_key_.find(s.key);
    if (it != storage_by_key_.end()) {
      const StorageRec& old = storages[it->second];
      if (old.type == s.type && old.numel == s.numel) return std::make_shared<IndexObj>(Kind::Storage, it->second);
      s.problem = "storage " + moescope::quoted(s.key) + " declared twice with different types or sizes";
    } else {
      storage_by_key_.emplace(s.key, storages.size());
    }
  }
  storages.push_back(std::move(s));
  return std::make_shared<IndexObj>(Kind::Storage, storages.size() - 1);
}

// _rebuild_tensor(storage, offset, size, stride)
// _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
// _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
Ref Unpickler::rebuild_tensor(const std::string& which, const std::vector<Ref>& args) {
  ViewRec v;
  auto finish = [&](std::string problem) {
    v.problem = std::move(problem);
    views.push_back(std::move(v));
    return std::make_shared<IndexObj>(Kind::Tensor, views.size() - 1);
  };
  const std::size_t lo = which == "_rebuild_tensor" ? 4 : which == "_rebuild_tensor_v2" ? 6 : 7;
  const std::size_t hi = which == "_rebuild_tensor" ? 4 : lo + 1;
  if (args.size() < lo || args.size() > hi)
    return finish("torch._utils." + which + " called with " + std::to_string(args.size()) + " arguments");
  if (args[0]->kind != Kind::Storage) return finish("torch._utils." + which + " without a storage");
  v.storage = as<IndexObj>(args[0]).index;
  const StorageRec& s = storages[v.storage];
  if (!s.problem.empty()) return finish(s.problem);
  if (which == "_rebuild_tensor_v3") {
    if (args[6]->kind != Kind::Global || as<GlobalObj>(args[6]).module != "torch")
      return finish("dtype argument is not a torch dtype");
    const auto dt = dtype_global(as<GlobalObj>(args[6]).name);
    if (!dt) return finish("unsupported dtype " + as<GlobalObj>(args[6]).full());
    v.dtype = *dt;
  } else {
    v.dtype = s.untyped ? DType::U8 : *s.dtype;
  }
  if (args[1]->kind != Kind::Int || as<IntObj>(args[1]).v < 0) return finish("storage offset is not a non-negative integer");
  v.offset = as<IntObj>(args[1]).v;
  auto ints = [&](const Ref& r, std::vector<std::int64_t>& out) {
    if (r->kind != Kind::Tuple && r->kind != Kind::List) return false;
    for (const Ref& x : as<SeqObj>(r).items) {
      if (x->kind != Kind::Int || as<IntObj>(x).v < 0) return false;
      out.push_back(as<IntObj>(x).v);
    }
    return true;
  };
  if (!ints(args[2], v.shape)) return finish("size is not a tuple of non-negative integers");
  if (!ints(args[3], v.stride)) return finish("stride is not a tuple of non-negative integers");
  if (v.shape.size() != v.stride.size())
    return finish("size " + shape_string(v.shape) + " and stride " + shape_string(v.stride) + " differ in length");
  const std::uint64_t es = dtype_size(v.dtype);
  std::int64_t numel = 1, last = v.offset;  // last: index of the last element the view reaches
  for (std::size_t i = 0; i < v.shape.size(); ++i) {
    std::int64_t step = 0;
    if (__builtin_mul_overflow(numel, v.shape[i], &numel) ||
        (v.shape[i] > 0 && (__builtin_mul_overflow(v.shape[i] - 1, v.stride[i], &step) ||
                            __builtin_add_overflow(last, step, &last))))
      return finish("size " + shape_string(v.shape) + " with stride " + shape_string(v.stride) + " overflows 64 bits");
  }
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel), es, &v.nbytes) ||
      v.nbytes > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    return finish("size " + shape_string(v.shape) + " is too large");
  if (numel > 0) {
    std::uint64_t end = 0;  // one past the last byte reached
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(last) + 1, es, &end) || end > s.nbytes)
      return finish("offset " + std::to_string(v.offset) + ", size " + shape_string(v.shape) + " and stride " +
                    shape_string(v.stride) + " reach element " + std::to_string(last) + " of a storage of " +
                    std::to_string(s.nbytes / es) + " " + std::string(dtype_name(v.dtype)) + " elements (" +
                    std::to_string(s.nbytes) + " bytes)");
    std::int64_t expect = 1;
    for (std::size_t i = v.shape.size(); i-- > 0;) {
      if (v.shape[i] != 1 && v.stride[i] != expect) v.contiguous = false;
      expect *= v.shape[i];
    }
  }
  return finish("");
}

Ref Unpickler::call(const Ref& fn, const std::vector<Ref>& args) {
  if (fn->kind != Kind::Global) return std::make_shared<OpaqueObj>("", false);
  const auto& g = as<GlobalObj>(fn);
  const std::string& m = g.module;
  const std::string& n = g.name;
  auto arg_is = [&](std::size_t i, Kind k) { return args.size() > i && args[i]->kind == k; };
  if ((m == "collections" && (n == "OrderedDict" || n == "defaultdict")) ||
      ((m == "builtins" || m == "__builtin__") && n == "dict")) {
    auto d = std::make_shared<DictObj>();
    // OrderedDict(pairs): torch.save passes () and adds items with SETITEMS, but accept an iterable of pairs.
    if (n != "defaultdict" && (arg_is(0, Kind::List) || arg_is(0, Kind::Tuple)))
      for (const Ref& pair : as<SeqObj>(args[0]).items) {
        if ((pair->kind != Kind::Tuple && pair->kind != Kind::List) || as<SeqObj>(pair).items.size() != 2)
          bad(g.full() + " given an item that is not a pair");
        dict_set(*d, as<SeqObj>(pair).items[0], as<SeqObj>(pair).items[1]);
      }
    return d;
  }
  if (m == "torch._utils" && (n == "_rebuild_tensor" || n == "_rebuild_tensor_v2" || n == "_rebuild_tensor_v3"))
    return rebuild_tensor(n, args);
  if ((m == "torch._utils" && (n == "_rebuild_parameter" || n == "_rebuild_parameter_with_state")) ||
      (m == "torch.nn.parameter" && n == "Parameter")) {
    if (arg_is(0, Kind::Tensor)) return args[0];
    return std::make_shared<OpaqueObj>(g.full(), true);
  }
  if (m == "torch._tensor" && (n == "_rebuild_from_type_v2" || n == "_rebuild_from_type")) {
    // (func, type, args, state): a plain Tensor or Parameter with Python attributes; subclasses are refused.
    if (args.size() == 4 && args[0]->kind == Kind::Global && args[1]->kind == Kind::Global &&
        args[2]->kind == Kind::Tuple) {
      const std::string type = as<GlobalObj>(args[1]).full();
      const auto& f = as<GlobalObj>(args[0]);
      if ((type == "torch.Tensor" || type == "torch._tensor.Tensor" || type == "torch.nn.parameter.Parameter") &&
          f.module == "torch._utils" && f.name.rfind("_rebuild_tensor", 0) == 0) {
        const Ref t = call(args[0], as<SeqObj>(args[2]).items);
        if (t->kind == Kind::Tensor) return t;
      }
    }
    return std::make_shared<OpaqueObj>(g.full(), true);
  }
  if (m == "torch.jit._pickle" && (n == "restore_type_tag" || n == "build_intlist" || n == "build_doublelist" ||
                                   n == "build_boollist" || n == "build_tensorlist")) {
    if (!args.empty()) return args[0];  // TorchScript's pickler tags containers with their type: the value
    return std::make_shared<OpaqueObj>(g.full(), true);
  }
  if (m == "torch" && n == "Size" && (arg_is(0, Kind::Tuple) || arg_is(0, Kind::List)))
    return make_seq(Kind::Tuple, as<SeqObj>(args[0]).items);
  if (m == "_codecs" && n == "encode" && arg_is(0, Kind::Str))  // bytes under protocol 2
    return std::make_shared<StrObj>(Kind::Bytes, as<StrObj>(args[0]).v);
  // Anything else is never called. torch.device and layouts are harmless values; other torch.* objects
  // (quantized, sparse, nested tensors, subclasses) are errors where a tensor is expected.
  const bool harmless = (m == "torch" && n == "device") || (m == "torch.serialization" && n == "_get_layout");
  return std::make_shared<OpaqueObj>(g.full(), is_torch_module(m) && !harmless);
}

Ref Unpickler::run() {
  while (pos_ < n_) {
    op_ = pos_;
    const std::uint8_t op = p_[pos_++];
    switch (op) {
      case 0x80: {  // PROTO
        const auto v = read_le(1);
        if (v > 5) bad("pickle protocol " + std::to_string(v) + " (at most 5 is known)");
        break;
      }
      case 0x95: {  // FRAME: a length hint only
        const auto len = read_le(8);
        if (len > n_ - pos_) bad("frame of " + std::to_string(len) + " bytes runs past the end of the pickle");
        break;
      }
      case '.':  // STOP
        return pop();
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0':                                          // POP
        if (stack_.size() > base()) stack_.pop_back();
        else pop_mark();
        break;
      case '1': pop_mark(); break;  // POP_MARK
      case '2': push(top()); break; // DUP

      // --- scalars
      case 'N': push(none_); break;
      case 0x88: push(true_); break;   // NEWTRUE
      case 0x89: push(false_); break;  // NEWFALSE
      case 'J': push(make_int(static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4))))); break;  // BININT
      case 'K': push(make_int(static_cast<std::int64_t>(read_le(1)))); break;  // BININT1
      case 'M': push(make_int(static_cast<std::int64_t>(read_le(2)))); break;  // BININT2
      case 0x8a: push(long_from_bytes(read_bytes(read_le(1)))); break;        // LONG1
      case 0x8b: {                                                            // LONG4
        const auto len = static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4)));
        if (len < 0) bad("LONG4 with a negative length");
        push(long_from_bytes(read_bytes(static_cast<std::uint64_t>(len))));
        break;
      }
      case 'I': {  // INT (text); "00"/"01" are protocol 0's False/True
        const std::string s = read_line();
        if (s == "00") push(false_);
        else if (s == "01") push(true_);
        else push(int_from_text(s));
        break;
      }
      case 'L': push(int_from_text(read_line())); break;  // LONG (text)
      case 'G': {                                         // BINFLOAT: big-endian double
        need(8);
        std::uint64_t u = 0;
        for (int i = 0; i < 8; ++i) u = (u << 8) | p_[pos_ + static_cast<std::size_t>(i)];
        pos_ += 8;
        double d;
        std::memcpy(&d, &u, 8);
        push(std::make_shared<FloatObj>(d));
        break;
      }
      case 'F': {  // FLOAT (text)
        const std::string s = read_line();
        double d = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), d);
        if (r.ec != std::errc() || r.ptr != s.data() + s.size()) bad("invalid float literal " + moescope::quoted(s.substr(0, 40)));
        push(std::make_shared<FloatObj>(d));
        break;
      }

      // --- strings and bytes
      case 'X': push(make_str(read_bytes(read_le(4)))); break;     // BINUNICODE
      case 0x8c: push(make_str(read_bytes(read_le(1)))); break;    // SHORT_BINUNICODE
      case 0x8d: push(make_str(read_bytes(read_le(8)))); break;    // BINUNICODE8
      case 'U': push(make_str(read_bytes(read_le(1)))); break;     // SHORT_BINSTRING (decoded as UTF-8, as torch.load)
      case 'T': {                                                  // BINSTRING
        const auto len = static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4)));
        if (len < 0) bad("BINSTRING with a negative length");
        push(make_str(read_bytes(static_cast<std::uint64_t>(len))));
        break;
      }
      case 'B': push(std::make_shared<StrObj>(Kind::Bytes, read_bytes(read_le(4)))); break;   // BINBYTES
      case 'C': push(std::make_shared<StrObj>(Kind::Bytes, read_bytes(read_le(1)))); break;   // SHORT_BINBYTES
      case 0x8e: case 0x96:                                                                  // BINBYTES8, BYTEARRAY8
        push(std::make_shared<StrObj>(Kind::Bytes, read_bytes(read_le(8))));
        break;

      // --- containers
      case ')': push(make_seq(Kind::Tuple, {})); break;  // EMPTY_TUPLE
      case 0x85: case 0x86: case 0x87: {                  // TUPLE1..3
        const std::size_t k = op - 0x84u;
        std::vector<Ref> items(k);
        for (std::size_t i = k; i-- > 0;) items[i] = pop();
        push(make_seq(Kind::Tuple, std::move(items)));
        break;
      }
      case 't': push(make_seq(Kind::Tuple, pop_mark())); break;  // TUPLE
      case ']': push(make_seq(Kind::List, {})); break;            // EMPTY_LIST
      case 'l': push(make_seq(Kind::List, pop_mark())); break;    // LIST
      case '}': push(std::make_shared<DictObj>()); break;         // EMPTY_DICT
      case 'd': {                                                 // DICT
        std::vector<Ref> items = pop_mark();
        Ref d = std::make_shared<DictObj>();
        set_items(d, items);
        push(std::move(d));
        break;
      }
      case 0x8f: push(make_seq(Kind::Set, {})); break;            // EMPTY_SET
      case 0x91: push(make_seq(Kind::Set, pop_mark())); break;    // FROZENSET
      case 'a': {                                                 // APPEND
        std::vector<Ref> items{pop()};
        append_items(top(), items, Kind::List, "APPEND");
        break;
      }
      case 'e': {  // APPENDS
        std::vector<Ref> items = pop_mark();
        append_items(top(), items, Kind::List, "APPENDS");
        break;
      }
      case 0x90: {  // ADDITEMS
        std::vector<Ref> items = pop_mark();
        append_items(top(), items, Kind::Set, "ADDITEMS");
        break;
      }
      case 's': {  // SETITEM
        Ref value = pop();
        Ref key = pop();
        std::vector<Ref> items{std::move(key), std::move(value)};
        set_items(top(), items);
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<Ref> items = pop_mark();
        set_items(top(), items);
        break;
      }

      // --- memo
      case 'q': memo_put(read_le(1)); break;  // BINPUT
      case 'r': memo_put(read_le(4)); break;  // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
      case 'h': memo_get(read_le(1)); break;  // BINGET
      case 'j': memo_get(read_le(4)); break;  // LONG_BINGET
      case 'p': case 'g': {                   // PUT, GET (text)
        const std::string s = read_line();
        std::uint64_t i = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), i);
        if (r.ec != std::errc() || r.ptr != s.data() + s.size()) bad("invalid memo key " + moescope::quoted(s.substr(0, 40)));
        if (op == 'p') memo_put(i);
        else memo_get(i);
        break;
      }

      // --- globals, calls, objects
      case 'c': {  // GLOBAL
        std::string module = read_line();
        std::string name = read_line();
        push(std::make_shared<GlobalObj>(std::move(module), std::move(name)));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Ref name = pop();
        Ref module = pop();
        if (module->kind != Kind::Str || name->kind != Kind::Str) bad("STACK_GLOBAL needs two strings");
        push(std::make_shared<GlobalObj>(as<StrObj>(module).v, as<StrObj>(name).v));
        break;
      }
      case 'R': {  // REDUCE
        Ref args = pop();
        Ref fn = pop();
        if (args->kind != Kind::Tuple) bad("REDUCE arguments are a " + std::string(kind_name(args->kind)) + ", not a tuple");
        push(call(fn, as<SeqObj>(args).items));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        Ref args = pop();
        Ref cls = pop();
        if (args->kind != Kind::Tuple) bad("NEWOBJ arguments are a " + std::string(kind_name(args->kind)) + ", not a tuple");
        push(call(cls, as<SeqObj>(args).items));
        break;
      }
      case 0x92: {  // NEWOBJ_EX: keyword arguments ignored
        pop();
        Ref args = pop();
        Ref cls = pop();
        if (args->kind != Kind::Tuple) bad("NEWOBJ_EX arguments are a " + std::string(kind_name(args->kind)) + ", not a tuple");
        push(call(cls, as<SeqObj>(args).items));
        break;
      }
      case 'i': {  // INST (protocol 0): module, name, arguments since the mark
        std::string module = read_line();
        std::string name = read_line();
        const std::vector<Ref> args = pop_mark();
        push(call(std::make_shared<GlobalObj>(std::move(module), std::move(name)), args));
        break;
      }
      case 'o': {  // OBJ (protocol 1): class and arguments since the mark
        std::vector<Ref> items = pop_mark();
        if (items.empty()) bad("OBJ without a class");
        const Ref cls = items.front();
        items.erase(items.begin());
        push(call(cls, items));
        break;
      }
      case 'b':  // BUILD: sets an object's state (e.g. an OrderedDict's _metadata): not data, dropped
        pop();
        top();
        break;
      case 'Q': push(persistent_load(pop())); break;  // BINPERSID

      default: {
        const char* what = nullptr;
        switch (op) {
          case 'P': what = "PERSID (text persistent id)"; break;
          case 'S': what = "STRING (protocol 0 string)"; break;
          case 'V': what = "UNICODE (protocol 0 string)"; break;
          case 0x82: case 0x83: case 0x84: what = "EXT (extension registry)"; break;
          case 0x97: case 0x98: what = "out-of-band buffer"; break;
          default: break;
        }
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        bad(what ? std::string("opcode ") + hex + " " + what + " is not supported (torch.save writes protocol 2)"
                 : std::string("unknown opcode ") + hex);
      }
    }
  }
  op_ = pos_;
  bad("pickle ends without STOP");
}

// ---------------------------------------------------------------------------------------------------------
// Flattening {name: tensor | dict} into dotted names.

struct Named {
  std::string name;
  std::size_t view;
};

class Flattener {
 public:
  Flattener(const std::string& file, const std::vector<ViewRec>& views, std::uint64_t budget)
      : file_(file), views_(views), budget_(budget) {}

  void add(const Ref& v, const std::string& name) {
    if (v->kind == Kind::Tensor) {
      const std::size_t i = as<IndexObj>(v).index;
      if (!views_[i].problem.empty()) fail_input(file_, "tensor " + moescope::quoted(name) + ": " + views_[i].problem);
      out.push_back({name, i});
    } else if (v->kind == Kind::Dict) {
      for (const auto& [key, value] : as<DictObj>(v).items) {
        if (key->kind != Kind::Str) continue;  // e.g. optimizer state keyed by ints: not weights
        const std::string& k = as<StrObj>(key).v;
        const std::string child = name.empty() ? k : name + "." + k;
        // A dict reachable along many paths (shared sub-dicts) could otherwise produce exponentially many names.
        const std::uint64_t cost = child.size() + 1;
        if (cost > budget_)
          fail_input(file_, "flattened names exceed the limit (dicts shared along many paths?) at " +
                                moescope::quoted(child.substr(0, 80)));
        budget_ -= cost;
        add(value, child);
      }
    } else if (v->kind == Kind::Opaque && as<OpaqueObj>(v).torch_object) {
      fail_input(file_, "tensor " + moescope::quoted(name) + ": unsupported object " + as<OpaqueObj>(v).made_by +
                            " (quantized, sparse, nested and subclassed tensors are not supported)");
    }
    // other values (ints, strings, lists, configs) are not tensors of the model; skipped
  }

  std::vector<Named> out;

 private:
  const std::string& file_;
  const std::vector<ViewRec>& views_;
  std::uint64_t budget_;
};

// ---------------------------------------------------------------------------------------------------------
// The bytes behind a source: a read-only mapping of the file, or a copy.

class Backing {
 public:
  static std::unique_ptr<Backing> map_file(const std::string& path) {
    auto b = std::unique_ptr<Backing>(new Backing());
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail_input(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      fail_input(path, "cannot stat: " + why);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail_input(path, "not a regular file");
    }
    b->size_ = static_cast<std::size_t>(st.st_size);
    if (b->size_ > 0) {
      void* m = ::mmap(nullptr, b->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (m == MAP_FAILED) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        fail_input(path, "cannot map: " + why);
      }
      b->map_ = m;
      b->data_ = static_cast<const std::uint8_t*>(m);
    }
    ::close(fd);  // the mapping keeps the file
    return b;
  }
  static std::unique_ptr<Backing> copy(const std::uint8_t* data, std::size_t size) {
    auto b = std::unique_ptr<Backing>(new Backing());
    b->owned_.assign(data, data + size);
    b->data_ = b->owned_.data();
    b->size_ = size;
    return b;
  }
  ~Backing() {
    if (map_) ::munmap(map_, size_);
  }
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool mapped() const { return map_ != nullptr; }

 private:
  Backing() = default;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  void* map_ = nullptr;
  std::vector<std::uint8_t> owned_;
};

// ---------------------------------------------------------------------------------------------------------

class TorchPickleSource final : public TensorSource {
 public:
  TorchPickleSource(std::string path, std::unique_ptr<Backing> backing);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  ByteView raw(const std::string& name) const override;
  const std::string& path() const override { return path_; }
  void release(const std::string& name) const override;

 private:
  struct StorageSlot {
    const ZipEntry* entry = nullptr;
    std::once_flag ready;
    const std::uint8_t* data = nullptr;  // valid once `ready` has run
    std::vector<std::uint8_t> inflated;
  };
  struct ViewSlot {
    ViewRec rec;
    std::size_t storage = 0;  // index into storages_
    std::once_flag copied;
    std::vector<std::uint8_t> copy;  // row-major bytes of a non-contiguous view
  };

  const std::uint8_t* storage_data(StorageSlot& s) const;

  std::string path_;
  std::unique_ptr<Backing> backing_;
  std::unique_ptr<ZipArchive> zip_;
  std::vector<TensorInfo> infos_;           // sorted by name
  std::vector<std::size_t> view_of_;        // parallel to infos_
  mutable std::deque<StorageSlot> storages_;
  mutable std::deque<ViewSlot> views_;
};

TorchPickleSource::TorchPickleSource(std::string path, std::unique_ptr<Backing> backing)
    : path_(std::move(path)), backing_(std::move(backing)) {
  const std::uint8_t* d = backing_->data();
  const std::size_t n = backing_->size();
  if (n == 0) fail_input(path_, "empty file (0 bytes), not a torch.save file");
  if (n < 4 || std::memcmp(d, "PK\x03\x04", 4) != 0)
    fail_input(path_, "not a zip-format torch.save file (legacy or non-torch format); re-save with torch.save() "
                      "from PyTorch >= 1.6, or convert to safetensors");
  zip_ = std::make_unique<ZipArchive>(d, n, path_);
  const auto& entries = zip_->entries();
  if (entries.empty()) fail_input(path_, "zip archive holds no members");
  // As PyTorch's reader: the first member's folder is the archive's name; every record lives under it.
  const std::size_t slash = entries.front().name.find('/');
  if (slash == std::string::npos)
    fail_input(path_, "member " + moescope::quoted(entries.front().name) + " is not in a folder (not a torch.save archive)");
  const std::string prefix = entries.front().name.substr(0, slash + 1);

  std::vector<std::uint8_t> scratch;
  if (const ZipEntry* bo = zip_->find(prefix + "byteorder")) {
    if (bo->size > 16) fail_input(path_, moescope::quoted(bo->name) + " holds " + std::to_string(bo->size) + " bytes");
    const ByteView v = zip_->read(*bo, scratch);
    const std::string order(reinterpret_cast<const char*>(v.data), v.size);
    if (order == "big")
      fail_input(path_, "saved on a big-endian machine (byteorder 'big'); only little-endian files are supported");
    if (order != "little") fail_input(path_, "unknown byteorder " + moescope::quoted(order));
  }

  const std::string pkl_name = prefix + "data.pkl";
  const ZipEntry* pkl = zip_->find(pkl_name);
  if (!pkl) fail_input(path_, "no " + moescope::quoted(pkl_name) + " in the archive (not a torch.save file)");
  if (pkl->size > kMaxTorchPickleBytes)
    fail_input(path_, moescope::quoted(pkl_name) + " of " + std::to_string(pkl->size) + " bytes exceeds the limit of " +
                          std::to_string(kMaxTorchPickleBytes));
  const ByteView pickle = zip_->read(*pkl, scratch);

  Unpickler vm(pickle.data, pickle.size, path_, pkl_name, *zip_, prefix);
  Ref root = vm.run();

  Flattener flat(path_, vm.views, 16 * static_cast<std::uint64_t>(pickle.size) + (std::uint64_t{64} << 20));
  flat.add(root, "");
  if (flat.out.empty()) {
    if (root->kind == Kind::Opaque && !as<OpaqueObj>(root).made_by.empty())
      fail_input(path_, "holds a pickled " + as<OpaqueObj>(root).made_by +
                            " object, not a state dict ({name: tensor}); save model.state_dict() instead");
    fail_input(path_, "no tensors found (expected a state dict: {name: tensor})");
  }
  std::sort(flat.out.begin(), flat.out.end(), [](const Named& a, const Named& b) { return a.name < b.name; });
  for (std::size_t i = 1; i < flat.out.size(); ++i)
    if (flat.out[i].name == flat.out[i - 1].name)
      fail_input(path_, "two tensors flatten to the name " + moescope::quoted(flat.out[i].name));

  // Slots for the storages and views in use; identical non-contiguous views share one copy.
  std::map<std::size_t, std::size_t> storage_slot, view_slot;
  std::map<std::tuple<std::size_t, DType, std::int64_t, std::vector<std::int64_t>, std::vector<std::int64_t>>,
           std::size_t>
      copy_slot;
  std::uint64_t storage_bytes = 0, copy_bytes = 0;
  for (const Named& e : flat.out) {
    const std::size_t st = vm.views[e.view].storage;
    if (storage_slot.emplace(st, storages_.size()).second) {
      storages_.emplace_back();
      storages_.back().entry = vm.storages[st].entry;
      storage_bytes += vm.storages[st].nbytes;
    }
  }
  infos_.reserve(flat.out.size());
  view_of_.reserve(flat.out.size());
  for (const Named& e : flat.out) {
    const ViewRec& v = vm.views[e.view];
    auto [slot, fresh_view] = view_slot.emplace(e.view, views_.size());
    if (fresh_view && !v.contiguous) {
      const auto key = std::make_tuple(v.storage, v.dtype, v.offset, v.shape, v.stride);
      const auto [c, fresh_copy] = copy_slot.emplace(key, views_.size());
      if (!fresh_copy) {
        slot->second = c->second;
        fresh_view = false;
      } else {
        copy_bytes += v.nbytes;
        if (copy_bytes > storage_bytes + kMaxTorchCopyExtraBytes)
          fail_input(path_, "tensor " + moescope::quoted(e.name) + ": non-contiguous views need " + std::to_string(copy_bytes) +
                                " bytes of copies, more than their storages' " + std::to_string(storage_bytes) +
                                " bytes plus " + std::to_string(kMaxTorchCopyExtraBytes) +
                                " (overlapping or repeated strided views)");
      }
    }
    if (fresh_view) {
      views_.emplace_back();
      views_.back().rec = v;
      views_.back().storage = storage_slot.at(v.storage);
    }
    infos_.push_back(TensorInfo{e.name, v.dtype, v.shape});
    view_of_.push_back(slot->second);
  }
}

const std::uint8_t* TorchPickleSource::storage_data(StorageSlot& s) const {
  std::call_once(s.ready, [&] {
    const ByteView b = zip_->read(*s.entry, s.inflated);  // checks the CRC; inflates a deflated member
    s.data = b.data;
  });
  return s.data;
}

ByteView TorchPickleSource::raw(const std::string& name) const {
  static const std::uint8_t kEmpty = 0;
  const TensorInfo& t = at(name);
  ViewSlot& v = views_[view_of_[static_cast<std::size_t>(&t - infos_.data())]];
  if (v.rec.nbytes == 0) return {&kEmpty, 0};
  const std::uint8_t* base = storage_data(storages_[v.storage]);
  const std::size_t es = dtype_size(v.rec.dtype);
  if (v.rec.contiguous) return {base + static_cast<std::size_t>(v.rec.offset) * es, static_cast<std::size_t>(v.rec.nbytes)};
  std::call_once(v.copied, [&] {
    // Row-major walk: an odometer over all but the last dimension, the last dimension as one run. Unsigned
    // arithmetic: a size-1 dimension may carry any stride, and stepping past it and back must not overflow.
    const auto& shape = v.rec.shape;
    const auto& stride = v.rec.stride;
    std::vector<std::uint8_t> out(static_cast<std::size_t>(v.rec.nbytes));
    std::uint8_t* dst = out.data();
    const std::size_t nd = shape.size();  // >= 1: a 0-d tensor is always contiguous
    const auto inner = static_cast<std::uint64_t>(shape[nd - 1]);
    const auto inner_stride = static_cast<std::uint64_t>(stride[nd - 1]);
    std::vector<std::int64_t> idx(nd - 1, 0);
    auto at_elem = static_cast<std::uint64_t>(v.rec.offset);
    for (bool done = false; !done;) {
      if (inner_stride == 1) {
        std::memcpy(dst, base + at_elem * es, inner * es);
        dst += inner * es;
      } else {
        for (std::uint64_t k = 0; k < inner; ++k) {
          std::memcpy(dst, base + (at_elem + k * inner_stride) * es, es);
          dst += es;
        }
      }
      done = true;
      for (std::size_t d = nd - 1; d-- > 0;) {
        at_elem += static_cast<std::uint64_t>(stride[d]);
        if (++idx[d] < shape[d]) {
          done = false;
          break;
        }
        at_elem -= static_cast<std::uint64_t>(stride[d]) * static_cast<std::uint64_t>(shape[d]);
        idx[d] = 0;
      }
    }
    v.copy = std::move(out);
  });
  return {v.copy.data(), v.copy.size()};
}

void TorchPickleSource::release(const std::string& name) const {
  if (!backing_->mapped()) return;
  const TensorInfo& t = at(name);
  const ViewSlot& v = views_[view_of_[static_cast<std::size_t>(&t - infos_.data())]];
  const StorageSlot& s = storages_[v.storage];
  if (!v.rec.contiguous || s.entry->method != 0) return;
  // Only whole pages inside the tensor: neighbours sharing a boundary page may still be in use.
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t begin = reinterpret_cast<std::uintptr_t>(backing_->data()) + s.entry->data_offset +
                              static_cast<std::uint64_t>(v.rec.offset) * dtype_size(v.rec.dtype);
  const std::uint64_t first = (begin + page - 1) / page * page, last = (begin + v.rec.nbytes) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), static_cast<std::size_t>(last - first), MADV_DONTNEED);
}

}  // namespace

std::unique_ptr<TensorSource> read_torch_pickle(const std::string& path) {
  return std::make_unique<TorchPickleSource>(path, Backing::map_file(path));
}

std::unique_ptr<TensorSource> read_torch_pickle_bytes(const std::uint8_t* data, std::size_t size,
                                                      const std::string& name) {
  return std::make_unique<TorchPickleSource>(name, Backing::copy(data, size));
}

}  // namespace moescope
