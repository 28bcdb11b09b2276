// libFuzzer target for the text corpora: the input (cut in three at positions its first two bytes choose) as
// WikiText/PTB word-level train/valid/test, the whole input as byte- and character-level text, and as a saved
// vocabulary file (Vocabulary::load). Every id must lie inside the vocabulary; a loaded vocabulary must survive
// save and load unchanged. Only InputError may refuse an input. Built with -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_support.hpp"
#include "moescope/data/text.hpp"
#include "moescope/util/error.hpp"

namespace {

void check_ids(const moescope::TextCorpus& c) {
  for (const auto* split : {&c.train, &c.valid, &c.test})
    for (std::int32_t id : *split)
      if (id < 0 || id >= c.vocab.size()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  if (size < 2) return 0;
  const std::string_view all(reinterpret_cast<const char*>(data) + 2, size - 2);
  const std::size_t a = all.size() * data[0] / 256, b = a + (all.size() - a) * data[1] / 256;
  try {
    const TextCorpus w = word_corpus(all.substr(0, a), all.substr(a, b - a), all.substr(b));
    check_ids(w);
    if (w.vocab.find(kUnkToken) != 0 || w.vocab.find(kEosToken) != 1) __builtin_trap();
    check_ids(byte_corpus(all));
    const TextCorpus c = char_corpus(all);
    check_ids(c);
    const std::string back = c.vocab.decode(c.train, "");  // every id decodes
    (void)back;
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  const std::string path = fuzz::write_scratch("vocab.txt", data, size);
  try {
    const Vocabulary v = Vocabulary::load(path);
    const std::string again = fuzz::scratch_dir() + "/vocab-again.txt";
    v.save(again);
    if (Vocabulary::load(again) != v) __builtin_trap();
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  return 0;
}
