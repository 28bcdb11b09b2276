// libFuzzer target for IDX files (MNIST / Fashion-MNIST), raw or gzip: the first byte picks what the rest is read
// as: an image file, a label file (both from bytes), gzip data, or a pair of files on disk read with read_idx
// (split at the second byte's fraction of the input, each maybe gzip). Only InputError may refuse an input; what is
// accepted must be self-consistent. Built with -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "moescope/data/bytes.hpp"
#include "moescope/data/image.hpp"
#include "moescope/util/error.hpp"

namespace {

void check(const moescope::ImageSet& s, bool labelled) {
  if (s.n < 0 || s.channels != 1 ||
      static_cast<std::uint64_t>(s.pixels.size()) != static_cast<std::uint64_t>(s.n) * s.image_bytes())
    __builtin_trap();
  if (labelled) {
    if (static_cast<std::int64_t>(s.labels.size()) != s.n) __builtin_trap();
    for (std::int64_t l : s.labels)
      if (l < 0 || l >= s.classes) __builtin_trap();
    if (static_cast<std::int64_t>(s.class_names.size()) != s.classes) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  if (size < 2) return 0;
  const int mode = data[0] % 4;
  const std::size_t cut = 2 + (size - 2) * data[1] / 256;
  const std::uint8_t* p = data + 2;
  const std::size_t n = size - 2;
  try {
    switch (mode) {
      case 0: check(parse_idx_images(p, n, "fuzz-images"), false); break;
      case 1: {
        const auto labels = parse_idx_labels(p, n, "fuzz-labels");
        if (n >= 8 && labels.size() > n - 8) __builtin_trap();
        break;
      }
      case 2: {
        const auto bytes = gunzip(p, n, std::uint64_t{1} << 24, "fuzz.gz");
        check(parse_idx_images(bytes.data(), bytes.size(), "fuzz.gz"), false);
        break;
      }
      default: {
        const std::string images = fuzz::write_scratch("images-idx3-ubyte", p, cut - 2);
        const std::string labels = fuzz::write_scratch("labels-idx1-ubyte", data + cut, size - cut);
        check(read_idx(images, labels, data[1] % 3 == 0 ? 10 : 0), true);
      }
    }
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  return 0;
}
