// libFuzzer target (-DMOESCOPE_FUZZ=ON, tools/fuzz.sh): the input is read as a token-id file under each of the three
// names that pick a format (text, .npy, .safetensors) and once by content. Only InputError may escape; every
// id returned must lie in the vocabulary. Build and run: see tests/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "moescope/data/token_ids.hpp"
#include "fuzz_support.hpp"
#include "moescope/util/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const char* name : {"ids", "ids.txt", "ids.npy", "ids.safetensors"}) {
    for (std::int64_t vocab : {std::int64_t{0}, std::int64_t{50257}}) {
      try {
        const auto ids = moescope::parse_token_ids(bytes, name, vocab);
        for (std::int32_t id : ids) {
          if (id < 0 || (vocab > 0 && id >= vocab)) __builtin_trap();
        }
      } catch (const moescope::InputError& e) {
        moescope::fuzz::refused(e);
      }
    }
  }
  return 0;
}
