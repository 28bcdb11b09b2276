// libFuzzer target for a sharded checkpoint's model.safetensors.index.json: the input is the index, written beside
// two valid shards (a.safetensors holding "x" and "y", b.safetensors holding "z"), opened with
// ShardedSafetensors, every tensor read, and hashed as `--hash header` and `--hash full` do. Only InputError may
// refuse an input. Built with -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.hpp"
#include "moescope/io/checkpoint.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"

namespace {

void write_shards() {
  using namespace moescope;
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const float b[2] = {7, 8};
  write_safetensors(fuzz::scratch_dir() + "/a.safetensors",
                    {{{"x", DType::F32, {2, 2}}, a}, {{"y", DType::F32, {2}}, a + 4}}, {{"format", "pt"}});
  write_safetensors(fuzz::scratch_dir() + "/b.safetensors", {{{"z", DType::F32, {1, 2}}, b}});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  static const bool shards_written = (write_shards(), true);
  (void)shards_written;
  const std::string path = fuzz::write_scratch("model.safetensors.index.json", data, size);
  try {
    const ShardedSafetensors s(path);
    for (const TensorInfo& t : s.tensors()) {
      const std::vector<double> v = s.read_all_f64(t.name);
      if (static_cast<std::int64_t>(v.size()) != t.numel()) __builtin_trap();
      (void)s.file_of(t.name);
    }
    (void)s.metadata();
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  for (const char* mode : {"header", "full"}) {
    try {
      (void)hash_checkpoint(path, mode);
    } catch (const InputError& e) {
      fuzz::refused(e);
    }
  }
  return 0;
}
