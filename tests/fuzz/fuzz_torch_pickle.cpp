// libFuzzer target for the torch.save reader (io/torch_pickle over io/zip), built with -DMOESCOPE_FUZZ=ON
// (tools/fuzz.sh; replay with build-fuzz/fuzz_torch_pickle FILE).
// FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (the usual fuzz-build macro) makes io/zip compute but not enforce
// CRC-32s, so that mutations of data.pkl reach the pickle VM instead of stopping at the checksum.
// Opening the bytes runs the archive parser and the pickle VM; reading every tensor runs CRC checks, inflation
// and the strided copies. Only InputError is an acceptable way to refuse an input.
#include <cstddef>
#include <cstdint>

#include "moescope/io/torch_pickle.hpp"
#include "fuzz_support.hpp"
#include "moescope/util/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  try {
    const auto src = read_torch_pickle_bytes(data, size, "fuzz.pt");
    for (const TensorInfo& t : src->tensors()) {
      // Views are bounded by kMaxTorchCopyExtraBytes; reading gigabytes per input would only slow the fuzzer.
      if (t.nbytes() > (std::uint64_t{16} << 20)) continue;
      const ByteView v = src->raw(t.name);
      if (v.size != t.nbytes()) __builtin_trap();
      std::uint8_t acc = 0;
      for (std::size_t i = 0; i < v.size; ++i) acc ^= v.data[i];  // every byte must be readable
      volatile std::uint8_t sink = acc;
      (void)sink;
      if (t.numel() > 0) {
        double x[2];
        src->read_f64(t.name, 0, 1, x);
        src->read_f64(t.name, t.numel() - 1, 1, x + 1);
      }
      src->release(t.name);
    }
  } catch (const InputError& e) {
    moescope::fuzz::refused(e);
  }
  return 0;
}
