// libFuzzer target (-DMOESCOPE_FUZZ=ON, tools/fuzz.sh): the input is parsed as a tokenizer.json; a tokenizer that loads
// encodes and decodes a few fixed texts. Only InputError may escape the library; anything else (another
// exception, a crash, a sanitizer report) is a finding. Build and run: see tests/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "moescope/data/tokenizer.hpp"
#include "fuzz_support.hpp"
#include "moescope/util/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const char* const kTexts[] = {
      "Hello world, it's 2024! <s> <|endoftext|> <mask>   spaces\n\n",
      "\xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD e\xCC\x81 \xE2\x96\x81x",
      "bad \xC3 utf8 \xFF\xFE \xED\xA0\x80 end",
      "",
  };
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const moescope::Tokenizer tok = moescope::Tokenizer::from_json(j, "fuzz.json");
    for (const char* text : kTexts) {
      const auto ids = tok.encode(text, true);
      (void)tok.encode(text, false);
      (void)tok.decode(ids, false);
      (void)tok.decode(ids, true);
      (void)tok.pre_tokenize(text);
      for (std::int32_t id : ids) {
        if (id < 0 || id >= tok.vocab_size()) __builtin_trap();  // encode must stay inside the vocabulary
      }
    }
    (void)tok.decode({-1, 0, 1, 2, 3, 1 << 30}, false);
  } catch (const moescope::InputError& e) {
    moescope::fuzz::refused(e);
  }
  return 0;
}
