// libFuzzer target for safetensors files: the header parser on the bytes as they are, then the same bytes as a
// file on disk (SafetensorsFile: mapping, every tensor read as float64, which takes F8 tensors with a
// "<name>_scale_inv" sibling through the block-scale path), the layout detection over the tensor names and the
// weight geometry of every detected MoE layer. Only InputError may refuse an input; any other exception, a crash
// or a sanitizer report is a finding. Built with -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/metrics/geometry.hpp"
#include "moescope/util/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  try {
    const SafetensorsHeader h = parse_safetensors_header(data, size, size, "fuzz.safetensors");
    for (const auto& e : h.entries)  // every tensor must lie inside the data, after the header
      if (e.begin < 8 + h.header_len || e.end > size || e.begin > e.end || e.end - e.begin != e.info.nbytes())
        __builtin_trap();
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  const std::string path = fuzz::write_scratch("fuzz.safetensors", data, size);
  try {
    const SafetensorsFile f(path);
    for (const TensorInfo& t : f.tensors()) {
      const ByteView v = f.raw(t.name);
      if (v.size != t.nbytes()) __builtin_trap();
      try {
        const std::vector<double> x = f.read_all_f64(t.name);
        if (static_cast<std::int64_t>(x.size()) != t.numel()) __builtin_trap();
      } catch (const InputError& e) {  // e.g. a block scale of the wrong shape: the next tensor may still be read
        fuzz::refused(e);
      }
      f.release(t.name);
    }
    const Layout layout = detect_layout(f.tensors());
    for (const MoELayerLayout& layer : layout.layers) {
      try {
        GeometryOptions o;
        o.threads = 1;
        (void)expert_geometry(f, layer, o);
      } catch (const InputError& e) {
        fuzz::refused(e);
      }
    }
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  return 0;
}
