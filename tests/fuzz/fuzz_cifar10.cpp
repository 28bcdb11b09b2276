// libFuzzer target for CIFAR-10 binary batches (1 label byte + 3072 pixel bytes per record): parse_cifar10 on the
// bytes, and read_cifar10 on a folder whose test_batch.bin is the input (raw or gzip) with, when the first byte
// is odd, a batches.meta.txt made of the input's tail. Only InputError may refuse an input. Built with
// -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "fuzz_support.hpp"
#include "moescope/data/image.hpp"
#include "moescope/util/error.hpp"

namespace {

void check(const moescope::ImageSet& s) {
  if (s.channels != 3 || s.height != 32 || s.width != 32 || s.n < 1 ||
      s.pixels.size() != static_cast<std::size_t>(s.n) * 3072 || static_cast<std::int64_t>(s.labels.size()) != s.n ||
      s.classes != 10 || s.class_names.size() != 10)
    __builtin_trap();
  for (std::int64_t l : s.labels)
    if (l < 0 || l >= 10) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  try {
    check(parse_cifar10(data, size, "fuzz.bin"));
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  const std::string meta = fuzz::scratch_dir() + "/batches.meta.txt";
  std::error_code ec;
  std::filesystem::remove(meta, ec);
  if (size > 0 && (data[0] & 1)) {
    const std::size_t tail = size < 200 ? size : 200;
    fuzz::write_scratch("batches.meta.txt", data + size - tail, tail);
  }
  fuzz::write_scratch("test_batch.bin", data, size);
  try {
    check(read_cifar10(fuzz::scratch_dir(), Split::test));
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  return 0;
}
