#include <algorithm>
#include <type_traits>

#include "moescope/io/tensor.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace {

constexpr std::int64_t kFp8Block = 128;  // DeepSeek-V3 block size of weight_scale_inv

template <typename Out>
void read_elements(const TensorSource& src, const std::string& name, std::int64_t offset, std::int64_t count,
                   Out* out) {
  const TensorInfo& info = src.at(name);
  if (offset < 0 || count < 0 || offset > info.numel() || count > info.numel() - offset)
    fail_input(src.file_of(name), "tensor '" + name + "': read of elements [" + std::to_string(offset) + ", " +
                                      std::to_string(offset + count) + ") outside " + shape_string(info.shape));
  const ByteView bytes = src.raw(name);
  const std::size_t es = dtype_size(info.dtype);
  const std::uint8_t* p = bytes.data + static_cast<std::size_t>(offset) * es;
  if constexpr (std::is_same_v<Out, double>)
    convert_to_f64(info.dtype, p, static_cast<std::size_t>(count), out);
  else
    convert_to_f32(info.dtype, p, static_cast<std::size_t>(count), out);

  if (info.dtype != DType::F8_E4M3 && info.dtype != DType::F8_E5M2) return;
  const TensorInfo* scale = src.find(name + "_scale_inv");
  if (!scale) return;
  if (info.shape.size() != 2 || scale->shape.size() != 2)
    fail_input(src.file_of(name), "tensor '" + name + "': block scales need a 2-D weight and scale, got " +
                                      shape_string(info.shape) + " and " + shape_string(scale->shape));
  const std::int64_t rows = info.shape[0], cols = info.shape[1];
  const std::int64_t br = (rows + kFp8Block - 1) / kFp8Block, bc = (cols + kFp8Block - 1) / kFp8Block;
  if (scale->shape[0] != br || scale->shape[1] != bc)
    fail_input(src.file_of(name), "tensor '" + name + "_scale_inv': shape " + shape_string(scale->shape) +
                                      " does not match 128x128 blocks of " + shape_string(info.shape));
  std::vector<double> s(static_cast<std::size_t>(br * bc));
  const ByteView sb = src.raw(name + "_scale_inv");
  convert_to_f64(scale->dtype, sb.data, s.size(), s.data());
  for (std::int64_t k = 0; k < count; ++k) {
    const std::int64_t flat = offset + k, r = flat / cols, c = flat % cols;
    out[k] = static_cast<Out>(out[k] * s[static_cast<std::size_t>((r / kFp8Block) * bc + c / kFp8Block)]);
  }
}

}  // namespace

const TensorInfo* TensorSource::find(std::string_view name) const {
  const auto& ts = tensors();
  auto it = std::lower_bound(ts.begin(), ts.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  return (it != ts.end() && it->name == name) ? &*it : nullptr;
}

const TensorInfo& TensorSource::at(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) fail_input(path(), "no tensor named '" + std::string(name) + "'");
  return *t;
}

void TensorSource::read_f64(const std::string& name, std::int64_t offset, std::int64_t count, double* out) const {
  read_elements(*this, name, offset, count, out);
}

void TensorSource::read_f32(const std::string& name, std::int64_t offset, std::int64_t count, float* out) const {
  read_elements(*this, name, offset, count, out);
}

std::vector<double> TensorSource::read_all_f64(const std::string& name) const {
  std::vector<double> v(static_cast<std::size_t>(at(name).numel()));
  read_f64(name, 0, static_cast<std::int64_t>(v.size()), v.data());
  return v;
}

void MemoryTensorSource::add(TensorInfo info, std::vector<std::uint8_t> bytes) {
  if (bytes.size() != info.nbytes())
    fail_input(path_, "tensor '" + info.name + "': " + std::to_string(bytes.size()) + " bytes for shape " +
                          shape_string(info.shape) + " of " + std::string(dtype_name(info.dtype)));
  auto it = std::lower_bound(infos_.begin(), infos_.end(), info.name,
                             [](const TensorInfo& t, const std::string& n) { return t.name < n; });
  if (it != infos_.end() && it->name == info.name) fail_input(path_, "duplicate tensor '" + info.name + "'");
  const auto pos = it - infos_.begin();
  infos_.insert(it, std::move(info));
  bytes_.insert(bytes_.begin() + pos, std::move(bytes));
}

ByteView MemoryTensorSource::raw(const std::string& name) const {
  const TensorInfo& t = at(name);
  const auto& b = bytes_[static_cast<std::size_t>(&t - infos_.data())];
  return {b.data(), b.size()};
}

}  // namespace moescope
