// libFuzzer target for the FP8 block-scale path of TensorSource::read_f64 / read_f32: a weight of F8_E4M3 or
// F8_E5M2 and a "<name>_scale_inv" sibling of any dtype and (possibly wrong) shape, both built from the input,
// read over input-chosen ranges. Every value read is compared with an oracle written here from the format
// definitions (OCP FP8: E4M3 bias 7, no infinities, S.1111.111 NaN; E5M2 bias 15, IEEE-like) times the block
// scale of its 128 x 128 block. Only InputError may refuse an input. Built with -DMOESCOPE_FUZZ=ON.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_support.hpp"
#include "moescope/io/tensor.hpp"
#include "moescope/util/error.hpp"

namespace {

double fp8_value(std::uint8_t b, bool e4m3) {
  const int sign = (b & 0x80) ? -1 : 1;
  const int mbits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
  const int exp = (b & 0x7f) >> mbits, man = b & ((1 << mbits) - 1);
  const int max_exp = e4m3 ? 15 : 31;
  if (e4m3 && exp == max_exp && man == (1 << mbits) - 1) return std::nan("");
  if (!e4m3 && exp == max_exp) return man ? std::nan("") : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(man, 1 - bias - mbits);
  return sign * std::ldexp((1 << mbits) + man, exp - bias - mbits);
}

bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  if (size < 12) return 0;
  const bool e4m3 = (data[0] & 1) == 0;
  const std::int64_t rows = 1 + (data[1] | (data[2] << 8)) % 300, cols = 1 + (data[3] | (data[4] << 8)) % 300;
  static const DType kScaleTypes[] = {DType::F32, DType::BF16, DType::F16, DType::F64, DType::F8_E4M3, DType::I8};
  const DType st = kScaleTypes[data[5] % 6];
  const std::int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  // Mostly the right scale shape; sometimes off by one or of another rank, which must be refused.
  std::vector<std::int64_t> sshape{br + (data[6] % 8 == 0 ? 1 : 0), bc - (data[6] % 8 == 1 ? 1 : 0)};
  if (data[6] % 8 == 2) sshape = {br * bc};
  const std::int64_t off = (data[7] | (data[8] << 8)) % (rows * cols + 1);
  const std::int64_t count = (data[9] | (data[10] << 8)) % (rows * cols + 2);  // may run one past the end
  const bool as_f32 = data[11] & 1;
  data += 12;
  size -= 12;
  auto fill = [&](std::size_t n, std::size_t start) {
    std::vector<std::uint8_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = size ? data[(start + i) % size] : static_cast<std::uint8_t>(i);
    return v;
  };
  MemoryTensorSource src("fuzz-fp8");
  const TensorInfo w{"w", e4m3 ? DType::F8_E4M3 : DType::F8_E5M2, {rows, cols}};
  TensorInfo s{"w_scale_inv", st, sshape};
  const std::vector<std::uint8_t> wb = fill(static_cast<std::size_t>(w.nbytes()), 0);
  const std::vector<std::uint8_t> sb = fill(static_cast<std::size_t>(s.nbytes()), static_cast<std::size_t>(w.nbytes()));
  src.add(w, wb);
  src.add(s, sb);
  std::vector<double> out(static_cast<std::size_t>(count) + 1);
  std::vector<float> outf(static_cast<std::size_t>(count) + 1);
  try {
    if (as_f32)
      src.read_f32("w", off, count, outf.data());
    else
      src.read_f64("w", off, count, out.data());
  } catch (const InputError& e) {
    fuzz::refused(e);
    const bool range_ok = off + count <= rows * cols;
    const bool shape_ok = sshape.size() == 2 && sshape[0] == br && sshape[1] == bc;
    if (range_ok && shape_ok) __builtin_trap();  // a valid request was refused
    return 0;
  }
  if (off + count > rows * cols || sshape.size() != 2 || sshape[0] != br || sshape[1] != bc)
    __builtin_trap();  // an invalid request was accepted
  std::vector<double> scales(static_cast<std::size_t>(br * bc));
  convert_to_f64(st, sb.data(), scales.size(), scales.data());
  for (std::int64_t k = 0; k < count; ++k) {
    const std::int64_t flat = off + k, r = flat / cols, c = flat % cols;
    const double expect = fp8_value(wb[static_cast<std::size_t>(flat)], e4m3) *
                          scales[static_cast<std::size_t>((r / 128) * bc + c / 128)];
    if (as_f32 ? !same(outf[static_cast<std::size_t>(k)], static_cast<float>(expect))
               : !same(out[static_cast<std::size_t>(k)], expect))
      __builtin_trap();
  }
  return 0;
}
