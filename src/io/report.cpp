#include "moescope/io/report.hpp"

#include <H5Cpp.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

#include "moescope/util/strings.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/memory.hpp"
#include "moescope/version.hpp"

namespace moescope {

namespace detail {
namespace {

// Above this many elements a dataset is chunked and gzip-compressed; smaller ones stay contiguous, which is
// cheaper to write and read.
constexpr std::size_t kCompressAbove = 65536;
constexpr std::size_t kChunkElements = 65536;
constexpr unsigned kGzipLevel = 4;

void quiet_hdf5() {
  // HDF5 prints its error stack to stderr by default; the library must not print, and the errors become
  // exceptions anyway.
  H5::Exception::dontPrint();
}

// The innermost message on HDF5's error stack says what went wrong ("truncated file: eof = ..."); the C++
// exception only names the failing call. The stack may already be cleared, hence the fallback.
herr_t innermost_error(unsigned n, const H5E_error2_t* err, void* client) {
  if (n == 0 && err && err->desc && *err->desc) *static_cast<std::string*>(client) = err->desc;
  return 0;
}

std::string reason(const H5::Exception& e) {
  std::string desc;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, &innermost_error, &desc);
  H5Eclear2(H5E_DEFAULT);
  return desc.empty() ? e.getDetailMsg() : desc;
}

// "geometry//layer_00/" -> {"geometry", "layer_00"}; every path is taken from the root.
std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  for (const auto& p : parts) {
    if (p == "." || p == "..") {
      throw std::invalid_argument("report path " + moescope::quoted(path) + ": '.' and '..' are not allowed");
    }
  }
  return parts;
}

std::string join_path(const std::vector<std::string>& parts, std::size_t count) {
  if (count == 0) return "/";
  std::string out;
  for (std::size_t i = 0; i < count; ++i) out += "/" + parts[i];
  return out;
}

enum class Kind { kMissing, kGroup, kDataset, kOther };

// A group or a dataset, the two kinds of object that carry attributes (H5Object cannot be owned polymorphically:
// its destructor is protected).
using Object = std::variant<H5::Group, H5::DataSet>;

H5::H5Object& as_object(Object& o) {
  return std::visit([](auto& x) -> H5::H5Object& { return x; }, o);
}

// What a single link names, without letting HDF5 fail: H5Lexists on "/a/b" is an error when "/a" is missing
// or not a group, so callers walk the components one by one.
Kind link_kind(hid_t file, const std::string& path) {
  if (path == "/") return Kind::kGroup;
  if (H5Lexists(file, path.c_str(), H5P_DEFAULT) <= 0) return Kind::kMissing;
  const hid_t obj = H5Oopen(file, path.c_str(), H5P_DEFAULT);
  if (obj < 0) {
    H5Eclear2(H5E_DEFAULT);
    return Kind::kOther;  // e.g. a dangling soft link
  }
  const H5I_type_t type = H5Iget_type(obj);
  H5Oclose(obj);
  if (type == H5I_GROUP) return Kind::kGroup;
  if (type == H5I_DATASET) return Kind::kDataset;
  return Kind::kOther;
}

Kind object_kind(hid_t file, const std::vector<std::string>& parts) {
  for (std::size_t i = 1; i <= parts.size(); ++i) {
    const Kind k = link_kind(file, join_path(parts, i));
    if (i == parts.size()) return k;
    if (k != Kind::kGroup) return Kind::kMissing;
  }
  return Kind::kGroup;  // the root
}

std::size_t element_count(const std::vector<std::size_t>& dims) {
  std::size_t n = 1;
  for (std::size_t d : dims) n *= d;
  return n;
}

std::string dims_text(const std::vector<std::size_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

H5::DataSpace make_space(const std::vector<std::size_t>& dims) {
  if (dims.empty()) return H5::DataSpace(H5S_SCALAR);
  std::vector<hsize_t> h(dims.begin(), dims.end());
  return H5::DataSpace(static_cast<int>(h.size()), h.data());
}

bool deflate_available() {
  if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0) return false;
  unsigned int config = 0;
  if (H5Zget_filter_info(H5Z_FILTER_DEFLATE, &config) < 0) return false;
  return (config & H5Z_FILTER_CONFIG_ENCODE_ENABLED) != 0;
}

H5::DSetCreatPropList make_dcpl(const std::vector<std::size_t>& dims) {
  H5::DSetCreatPropList dcpl;
  if (dims.empty() || element_count(dims) <= kCompressAbove) return dcpl;
  // Halve the largest dimension until a chunk holds at most kChunkElements (512 KiB of float64): small enough
  // for HDF5's default 1 MiB chunk cache, large enough for gzip to work well.
  std::vector<hsize_t> chunk(dims.begin(), dims.end());
  auto count = [&] {
    hsize_t n = 1;
    for (hsize_t c : chunk) n *= c;
    return n;
  };
  while (count() > kChunkElements) {
    auto largest = std::max_element(chunk.begin(), chunk.end());
    *largest = (*largest + 1) / 2;
  }
  dcpl.setChunk(static_cast<int>(chunk.size()), chunk.data());
  if (deflate_available()) dcpl.setDeflate(kGzipLevel);
  return dcpl;
}

H5::StrType utf8_vlen_type() {
  H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
  t.setCset(H5T_CSET_UTF8);
  return t;
}

void check_no_nul(const std::string& v, const std::string& what) {
  // Variable-length HDF5 strings end at the first NUL; refuse rather than silently truncate.
  if (v.find('\0') != std::string::npos) throw std::invalid_argument(what + ": string contains a NUL byte");
}

// Pointers into `values`, which must outlive the result.
std::vector<const char*> c_strings(const std::vector<std::string>& values, const std::string& what) {
  std::vector<const char*> out;
  out.reserve(values.size());
  for (const auto& v : values) {
    check_no_nul(v, what);
    out.push_back(v.c_str());
  }
  return out;
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Element count of a dataspace (a scalar has one element, a null dataspace none), and its dims.
std::size_t space_elements(const H5::DataSpace& space, std::vector<std::size_t>* dims) {
  if (dims) dims->clear();
  const H5S_class_t cls = space.getSimpleExtentType();
  if (cls == H5S_NULL) {
    if (dims) dims->push_back(0);
    return 0;
  }
  if (cls == H5S_SCALAR) return 1;
  const int rank = space.getSimpleExtentNdims();
  std::vector<hsize_t> h(static_cast<std::size_t>(rank));
  space.getSimpleExtentDims(h.data());
  std::size_t n = 1;
  for (hsize_t d : h) {
    // a damaged file's dims may multiply past 64 bits: saturate (no request can be that large anyway)
    if (__builtin_mul_overflow(n, static_cast<std::size_t>(d), &n)) n = static_cast<std::size_t>(-1);
    if (dims) dims->push_back(static_cast<std::size_t>(d));
  }
  return n;
}

// Strings from a string-typed dataset or attribute, fixed- or variable-length (h5py writes both).
// read_into(buffer, memory type) performs the read.
template <class ReadInto>
std::vector<std::string> read_string_values(const H5::StrType& file_type, const H5::DataSpace& space, std::size_t n,
                                            ReadInto read_into) {
  std::vector<std::string> out;
  if (n == 0) return out;
  out.reserve(n);
  if (file_type.isVariableStr()) {
    H5::StrType mem(H5::PredType::C_S1, H5T_VARIABLE);
    mem.setCset(file_type.getCset());
    std::vector<char*> ptrs(n, nullptr);
    read_into(ptrs.data(), mem);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    H5::DataSet::vlenReclaim(ptrs.data(), mem, space);
    return out;
  }
  const std::size_t size = file_type.getSize();
  H5::StrType mem(H5::PredType::C_S1, size);
  mem.setCset(file_type.getCset());
  mem.setStrpad(file_type.getStrpad());
  std::vector<char> buf(n * size);
  read_into(buf.data(), mem);
  const bool space_pad = file_type.getStrpad() == H5T_STR_SPACEPAD;
  for (std::size_t i = 0; i < n; ++i) {
    std::string s(buf.data() + i * size, size);
    if (space_pad) {
      s.erase(s.find_last_not_of(' ') + 1);
    } else {
      const std::size_t nul = s.find('\0');
      if (nul != std::string::npos) s.resize(nul);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace
}  // namespace detail

// ---------------------------------------------------------------------------------------------------------------
// ReportWriter

namespace detail {

// The group or dataset at `object` of `file` ("/" is the root); InputError naming `report` when absent.
Object open_object(const H5::H5File& file, const std::string& report, const std::string& object) {
  const auto parts = split_path(object);
  const std::string full = join_path(parts, parts.size());
  switch (object_kind(file.getId(), parts)) {
    case Kind::kGroup:
      return file.openGroup(full);
    case Kind::kDataset:
      return file.openDataSet(full);
    case Kind::kMissing:
      fail_input(report, "no object " + moescope::quoted(full));
    case Kind::kOther:
      break;
  }
  fail_input(report, moescope::quoted(full) + " is neither a group nor a dataset");
}

}  // namespace detail

struct ReportWriter::Impl {
  std::string path;
  std::string tmp;
  int lock_fd = -1;        // holds a POSIX write lock on tmp while this writer owns it
  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);
  }
  std::unique_ptr<H5::H5File> file;  // a pointer: after a failed close it is released, not closed twice
  bool open = false;       // the HDF5 file is open
  bool finished = false;   // commit() was called: nothing more is accepted
  bool committed = false;  // the rename succeeded
  bool write_failed = false;  // an HDF5 write failed (disk full, file size limit, ...): HDF5 cannot close it

  void check_writable() const {
    if (finished) throw std::logic_error(path + ": report already committed");
  }

  // An HDF5 call that failed while writing, with `err` the errno it left. A failed write system call (disk full,
  // file size limit, quota, I/O error) is the machine's state, for the user to fix, not a bug: said as such
  // (exit 2) as "<failed> (<why>)". HDF5 quotes the errno in most of its messages, not in all ("H5Dclose failed"
  // when the flush at close fails): then errno says it. Anything else is "<path>: <internal> (<why>)", a bug.
  [[noreturn]] void fail_write(const std::string& failed, const std::string& internal, const H5::Exception& e,
                               int err) {
    const std::string why = detail::reason(e);
    const bool quoted_errno = why.find("errno = ") != std::string::npos;
    if (quoted_errno || err == EFBIG || err == ENOSPC || err == EDQUOT || err == EIO) {
      write_failed = true;  // see ~ReportWriter
      fail_input(path, failed + " (" + why + (quoted_errno ? std::string() : std::string(": ") + std::strerror(err)) + ")");
    }
    throw std::runtime_error(path + ": " + internal + " (" + why + ")");
  }

  [[noreturn]] void fail_h5(const std::string& what, const std::string& object, const H5::Exception& e) {
    const int err = errno;
    const std::string doing = "cannot " + what + " " + moescope::quoted(object);
    fail_write(doing + " in " + tmp, doing, e, err);
  }

  // Creates the groups above the object at `parts` (all but the last component).
  void ensure_groups(const std::vector<std::string>& parts, std::size_t count) {
    for (std::size_t i = 1; i <= count; ++i) {
      const std::string prefix = detail::join_path(parts, i);
      const detail::Kind k = detail::link_kind(file->getId(), prefix);
      if (k == detail::Kind::kGroup) continue;
      if (k != detail::Kind::kMissing) fail_input(path, moescope::quoted(prefix) + " exists and is not a group");
      try {
        file->createGroup(prefix);
      } catch (const H5::Exception& e) {
        fail_h5("create group", prefix, e);
      }
    }
  }

  void write_dataset(const std::string& object, const H5::DataType& file_type, const H5::DataType& mem_type,
                     const void* data, const std::vector<std::size_t>& dims) {
    check_writable();
    const auto parts = detail::split_path(object);
    if (parts.empty()) throw std::invalid_argument(path + ": a dataset needs a name, not " + moescope::quoted(object));
    const std::string full = detail::join_path(parts, parts.size());
    ensure_groups(parts, parts.size() - 1);
    if (detail::link_kind(file->getId(), full) != detail::Kind::kMissing) {
      fail_input(path, moescope::quoted(full) + " already exists");
    }
    try {
      H5::DataSet ds = file->createDataSet(full, file_type, detail::make_space(dims), detail::make_dcpl(dims));
      // HDF5 refuses a null buffer even for zero elements, and there is nothing to write anyway.
      if (detail::element_count(dims) > 0) ds.write(data, mem_type);
      ds.close();  // here, not in the destructor: closing flushes, and a failed flush (disk full) must be said
    } catch (const H5::Exception& e) {
      fail_h5("write dataset", full, e);
    }
  }

  // The group or dataset at `object` ("/" is the root).
  detail::Object open_object(const std::string& object) const { return detail::open_object(*file, path, object); }
};

ReportWriter::ReportWriter(std::string path) : path_(std::move(path)), impl_(std::make_unique<Impl>()) {
  detail::quiet_hdf5();
  impl_->path = path_;
  impl_->tmp = path_ + ".tmp";
  // Open (without truncating) and lock the temporary file before HDF5 sees it: HDF5 truncates a file before it
  // takes its own lock, so a second writer of the same report would otherwise wipe the first one's data. The
  // POSIX record lock is the process's, separate from the flock() HDF5 takes on its own descriptor. Opening it
  // ourselves also gives an exact errno where HDF5's message for a missing folder is a wall of text.
  impl_->lock_fd = ::open(impl_->tmp.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (impl_->lock_fd < 0) fail_input(path_, std::string("cannot create report (") + std::strerror(errno) + ")");
  // flock(), not a POSIX record lock: those are dropped when the process closes any descriptor of the file,
  // which HDF5 does while it creates it. HDF5's own flock() on its descriptor would conflict with this one, so
  // the writer turns HDF5's locking off (below); readers keep theirs, and so see this lock ("unable to lock file").
  if (::flock(impl_->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(impl_->lock_fd);
    impl_->lock_fd = -1;
    if (err == EWOULDBLOCK)
      fail_input(path_, "another process is writing this report (" + impl_->tmp +
                            "); wait for it or choose another -o");
    fail_input(path_, std::string("cannot lock ") + impl_->tmp + " (" + std::strerror(err) + ")");
  }
  try {
    H5::FileAccPropList fapl;
    // The 1.8 file format stores large attribute arrays densely; the 1.6 default caps an object header at 64 KiB.
    fapl.setLibverBounds(H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    H5Pset_file_locking(fapl.getId(), false, true);  // this writer's flock() above is the lock
    impl_->file = std::make_unique<H5::H5File>(impl_->tmp, H5F_ACC_TRUNC, H5::FileCreatPropList::DEFAULT, fapl);
    impl_->open = true;
  } catch (const H5::Exception& e) {
    std::error_code ec;
    std::filesystem::remove(impl_->tmp, ec);
    fail_input(path_, "cannot create report (" + detail::reason(e) + ")");
  }
}

ReportWriter::~ReportWriter() {
  if (!impl_ || impl_->committed) return;
  if (impl_->write_failed) {
    // libhdf5 1.10.8 crashes (SIGSEGV in H5F__close) closing a file whose writes failed for want of space (disk
    // full, `ulimit -f`), here or in its clean-up at exit. The file is abandoned: its handle is not closed, the
    // temporary file is removed, and the process leaves without HDF5's exit clean-up (exit code 2, as for the
    // InputError the failure was reported as). Only this error path does so.
    (void)impl_->file.release();  // NOLINT(bugprone-unused-return-value): deliberately not closed
    impl_->open = false;
    static const bool hooked = std::atexit([] {
      std::fflush(nullptr);
      ::_exit(2);
    }) == 0;
    (void)hooked;
  }
  try {
    if (impl_->open) impl_->file->close();
  } catch (...) {
    // Nothing useful to do in a destructor; the tmp file goes either way.
  }
  std::error_code ec;
  std::filesystem::remove(impl_->tmp, ec);
}

void ReportWriter::write_provenance(const Provenance& p) {
  impl_->check_writable();
  set_attr("/", "moescope_version", std::string(kVersion));
  set_attr("/", "command_line", p.command_line);
  set_attr("/", "created_utc", detail::utc_now_iso8601());
  set_attr("/", "checkpoint", p.checkpoint);
  set_attr("/", "checkpoint_sha256", p.checkpoint_sha256);
  set_attr("/", "checkpoint_hash_scope", p.hash_scope);
  set_attr("/", "seed", p.seed);
  set_attr("/", "device", p.device);
  set_attr("/", "threads", p.threads);
}

void ReportWriter::write(const std::string& path, const std::vector<double>& data,
                         const std::vector<std::size_t>& dims) {
  if (data.size() != detail::element_count(dims)) {
    throw std::invalid_argument(path_ + ": dataset " + moescope::quoted(path) + " has " + std::to_string(data.size()) +
                                " values for dims " + detail::dims_text(dims));
  }
  impl_->write_dataset(path, H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE, data.data(), dims);
}

void ReportWriter::write_scalar(const std::string& path, double value) {
  impl_->write_dataset(path, H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE, &value, {});
}

void ReportWriter::write_matrix(const std::string& path, const Eigen::MatrixXd& m) {
  std::vector<double> v(static_cast<std::size_t>(m.size()));
  Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), m.rows(), m.cols()) = m;
  write(path, v, {static_cast<std::size_t>(m.rows()), static_cast<std::size_t>(m.cols())});
}

void ReportWriter::write_vector(const std::string& path, const Eigen::VectorXd& v) {
  write(path, std::vector<double>(v.data(), v.data() + v.size()), {static_cast<std::size_t>(v.size())});
}

void ReportWriter::write_int(const std::string& path, const std::vector<std::int64_t>& data,
                             const std::vector<std::size_t>& dims) {
  if (data.size() != detail::element_count(dims)) {
    throw std::invalid_argument(path_ + ": dataset " + moescope::quoted(path) + " has " + std::to_string(data.size()) +
                                " values for dims " + detail::dims_text(dims));
  }
  impl_->write_dataset(path, H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64, data.data(), dims);
}

void ReportWriter::write_strings(const std::string& path, const std::vector<std::string>& values) {
  const auto ptrs = detail::c_strings(values, path_ + ": dataset " + moescope::quoted(path));
  const H5::StrType type = detail::utf8_vlen_type();
  impl_->write_dataset(path, type, type, ptrs.data(), {values.size()});
}

void ReportWriter::create_group(const std::string& path) {
  impl_->check_writable();
  const auto parts = detail::split_path(path);
  impl_->ensure_groups(parts, parts.size());
}

void ReportWriter::set_attr(const std::string& object_path, const std::string& name, const AttrValue& value) {
  impl_->check_writable();
  if (name.empty()) throw std::invalid_argument(path_ + ": empty attribute name on " + moescope::quoted(object_path));
  const std::string where = object_path + "@" + name;
  try {
    detail::Object held = impl_->open_object(object_path);
    H5::H5Object* obj = &detail::as_object(held);
    // Setting an attribute again replaces it, whatever its old type.
    if (obj->attrExists(name)) obj->removeAttr(name);
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::int64_t>) {
            obj->createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR))
                .write(H5::PredType::NATIVE_INT64, &v);
          } else if constexpr (std::is_same_v<T, double>) {
            obj->createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(H5S_SCALAR))
                .write(H5::PredType::NATIVE_DOUBLE, &v);
          } else if constexpr (std::is_same_v<T, std::string>) {
            detail::check_no_nul(v, path_ + ": attribute " + moescope::quoted(where));
            const char* ptr = v.c_str();
            const H5::StrType type = detail::utf8_vlen_type();
            obj->createAttribute(name, type, H5::DataSpace(H5S_SCALAR)).write(type, &ptr);
          } else {
            constexpr bool is_double = std::is_same_v<typename T::value_type, double>;
            const H5::PredType& file_type = is_double ? H5::PredType::IEEE_F64LE : H5::PredType::STD_I64LE;
            const H5::PredType& mem_type = is_double ? H5::PredType::NATIVE_DOUBLE : H5::PredType::NATIVE_INT64;
            H5::Attribute a = obj->createAttribute(name, file_type, detail::make_space({v.size()}));
            // HDF5 rejects a null buffer even when there are no elements.
            const typename T::value_type dummy{};
            a.write(mem_type, v.empty() ? &dummy : v.data());
          }
        },
        value);
  } catch (const H5::Exception& e) {
    impl_->fail_h5("write attribute", where, e);
  }
}

void ReportWriter::commit() {
  impl_->check_writable();
  impl_->finished = true;
  try {
    impl_->file->close();
    impl_->open = false;
  } catch (const H5::Exception& e) {  // the final flush failed
    const int err = errno;
    impl_->fail_write("cannot write report " + moescope::quoted(impl_->tmp),
                      "cannot close report " + moescope::quoted(impl_->tmp), e, err);
  }
  std::error_code ec;
  std::filesystem::rename(impl_->tmp, path_, ec);
  if (ec) fail_input(path_, "cannot rename " + moescope::quoted(impl_->tmp) + " into place (" + ec.message() + ")");
  impl_->committed = true;
  ::close(impl_->lock_fd);  // released after the rename: the report is readable now, and the .tmp name is free
  impl_->lock_fd = -1;
}

// ---------------------------------------------------------------------------------------------------------------
// ReportReader

struct ReportReader::Impl {
  std::string path;
  std::optional<H5::H5File> file;

  [[noreturn]] void fail_h5(const std::string& object, const H5::Exception& e) const {
    fail_input(path, "cannot read " + moescope::quoted(object) + " (" + detail::reason(e) + ")");
  }

  H5::DataSet open_dataset(const std::string& object) const {
    const auto parts = detail::split_path(object);
    const std::string full = detail::join_path(parts, parts.size());
    switch (detail::object_kind(file->getId(), parts)) {
      case detail::Kind::kDataset:
        try {
          return file->openDataSet(full);
        } catch (const H5::Exception& e) {
          fail_h5(full, e);
        }
      case detail::Kind::kMissing:
        fail_input(path, "no dataset " + moescope::quoted(full));
      default:
        fail_input(path, moescope::quoted(full) + " is not a dataset");
    }
  }

  detail::Object open_object(const std::string& object) const {
    try {
      return detail::open_object(*file, path, object);
    } catch (const H5::Exception& e) {
      fail_h5(object, e);
    }
  }
};

ReportReader::ReportReader(const std::string& path) : path_(path), impl_(std::make_unique<Impl>()) {
  detail::quiet_hdf5();
  impl_->path = path_;
  std::error_code ec;
  if (!std::filesystem::exists(path_, ec)) fail_input(path_, "cannot open report (no such file)");
  if (std::filesystem::is_directory(path_, ec)) fail_input(path_, "cannot open report (is a folder)");
  try {
    if (!H5::H5File::isHdf5(path_)) fail_input(path_, "not an HDF5 file");
    impl_->file.emplace(path_, H5F_ACC_RDONLY);
  } catch (const H5::Exception& e) {
    const std::string why = detail::reason(e);
    // HDF5 locks a file it writes; other programs (h5py, HDFView) may hold a report open for writing.
    if (why.find("unable to lock file") != std::string::npos)
      fail_input(path_, "cannot open report: another process has it open for writing (" + why +
                            "); wait until it closes the file");
    fail_input(path_, "cannot open report (" + why + ")");
  }
}

ReportReader::~ReportReader() = default;

bool ReportReader::exists(const std::string& path) const {
  try {
    return detail::object_kind(impl_->file->getId(), detail::split_path(path)) != detail::Kind::kMissing;
  } catch (...) {
    return false;
  }
}

std::vector<double> ReportReader::read(const std::string& path, std::vector<std::size_t>* dims) const {
  const H5::DataSet ds = impl_->open_dataset(path);
  try {
    const H5T_class_t cls = ds.getTypeClass();
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) fail_input(path_, moescope::quoted(path) + " is not a numeric dataset");
    const H5::DataSpace space = ds.getSpace();
    const std::size_t n = detail::space_elements(space, dims);
    // Sizes come from the file: a damaged or hostile one may claim more values than memory holds.
    check_memory(path_ + ": dataset " + moescope::quoted(path),
                 {{std::to_string(n) + " values as float64", static_cast<double>(n) * 8.0}},
                 "the report is damaged or not one of moescope's");
    std::vector<double> out(n);
    if (!out.empty()) ds.read(out.data(), H5::PredType::NATIVE_DOUBLE);
    return out;
  } catch (const H5::Exception& e) {
    impl_->fail_h5(path, e);
  }
}

double ReportReader::read_scalar(const std::string& path) const {
  const std::vector<double> v = read(path);
  if (v.size() != 1) {
    fail_input(path_, moescope::quoted(path) + " holds " + std::to_string(v.size()) + " values, not one");
  }
  return v[0];
}

Eigen::MatrixXd ReportReader::read_matrix(const std::string& path) const {
  std::vector<std::size_t> dims;
  const std::vector<double> v = read(path, &dims);
  if (dims.size() != 2) fail_input(path_, "'" + path + "' is not a matrix (" + std::to_string(dims.size()) + "-D)");
  return Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
      v.data(), static_cast<Eigen::Index>(dims[0]), static_cast<Eigen::Index>(dims[1]));
}

std::vector<std::string> ReportReader::read_strings(const std::string& path) const {
  const H5::DataSet ds = impl_->open_dataset(path);
  try {
    if (ds.getTypeClass() != H5T_STRING) fail_input(path_, moescope::quoted(path) + " is not a string dataset");
    const H5::DataSpace space = ds.getSpace();
    const std::size_t n = detail::space_elements(space, nullptr);
    check_memory(path_ + ": dataset " + moescope::quoted(path),
                 {{std::to_string(n) + " strings", static_cast<double>(n) * 40.0}},
                 "the report is damaged or not one of moescope's");
    return detail::read_string_values(ds.getStrType(), space, n,
                                      [&](void* buf, const H5::DataType& mem) { ds.read(buf, mem); });
  } catch (const H5::Exception& e) {
    impl_->fail_h5(path, e);
  }
}

std::vector<std::string> ReportReader::list(const std::string& group_path) const {
  const auto parts = detail::split_path(group_path);
  const std::string full = detail::join_path(parts, parts.size());
  const detail::Kind k = detail::object_kind(impl_->file->getId(), parts);
  if (k == detail::Kind::kMissing) fail_input(path_, "no group " + moescope::quoted(full));
  if (k != detail::Kind::kGroup) fail_input(path_, moescope::quoted(full) + " is not a group");
  try {
    const H5::Group g = impl_->file->openGroup(full);
    std::vector<std::string> names;
    const hsize_t n = g.getNumObjs();
    for (hsize_t i = 0; i < n; ++i) names.push_back(g.getObjnameByIdx(i));
    std::sort(names.begin(), names.end());
    return names;
  } catch (const H5::Exception& e) {
    impl_->fail_h5(full, e);
  }
}

AttrValue ReportReader::attr(const std::string& object_path, const std::string& name) const {
  detail::Object held = impl_->open_object(object_path);
  H5::H5Object* obj = &detail::as_object(held);
  const std::string where = moescope::quoted(object_path + "@" + name);
  try {
    if (!obj->attrExists(name)) fail_input(path_, "no attribute " + where);
    const H5::Attribute a = obj->openAttribute(name);
    const H5::DataSpace space = a.getSpace();
    std::vector<std::size_t> dims;
    const std::size_t n = detail::space_elements(space, &dims);
    check_memory(path_ + ": attribute " + where, {{std::to_string(n) + " values", static_cast<double>(n) * 8.0}},
                 "the report is damaged or not one of moescope's");
    if (dims.size() > 1) {
      fail_input(path_, "attribute " + where + " has " + std::to_string(dims.size()) + " dimensions");
    }
    const bool scalar = space.getSimpleExtentType() == H5S_SCALAR;
    switch (a.getTypeClass()) {
      case H5T_INTEGER: {
        std::vector<std::int64_t> v(std::max<std::size_t>(n, 1));
        if (n > 0) a.read(H5::PredType::NATIVE_INT64, v.data());
        if (scalar) return v[0];
        v.resize(n);
        return v;
      }
      case H5T_FLOAT: {
        std::vector<double> v(std::max<std::size_t>(n, 1));
        if (n > 0) a.read(H5::PredType::NATIVE_DOUBLE, v.data());
        if (scalar) return v[0];
        v.resize(n);
        return v;
      }
      case H5T_STRING: {
        // Other writers sometimes store one string as a 1-element array; anything longer has no AttrValue.
        if (n != 1) fail_input(path_, "attribute " + where + " holds " + std::to_string(n) + " strings, not one");
        auto v = detail::read_string_values(a.getStrType(), space, n,
                                            [&](void* buf, const H5::DataType& mem) { a.read(mem, buf); });
        return std::move(v[0]);
      }
      default:
        fail_input(path_, "attribute " + where + " is not an integer, float or string");
    }
  } catch (const H5::Exception& e) {
    impl_->fail_h5(object_path + "@" + name, e);
  }
}

bool ReportReader::has_attr(const std::string& object_path, const std::string& name) const {
  if (!exists(object_path)) return false;
  try {
    detail::Object held = impl_->open_object(object_path);
    return detail::as_object(held).attrExists(name);
  } catch (const H5::Exception&) {
    return false;
  } catch (const InputError&) {
    return false;  // a link that is neither group nor dataset carries no attributes we can read
  }
}

}  // namespace moescope
