// Benchmark (not a test): Tokenizer::encode throughput on a text file, one thread, and optionally a comparison
// with ids the tokenizers library wrote for the same file (tests/data/tokenizer/make_reference.js --encode:
// one line of ids per line of text, each line encoded with add_special).
//
// Usage: bench_tokenizer TOKENIZER_JSON TEXT_FILE [REFERENCE_IDS] [--repeat N]
// Prints the load time, MB/s for the first pass over the text as one string (cold word cache), the best of N
// further passes (warm cache), and one pass over the text cut into documents of about 4 KB; ids per byte;
// whether decode gives the text back; and with REFERENCE_IDS the number of lines whose ids differ.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "moescope/data/text.hpp"
#include "moescope/data/tokenizer.hpp"

using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (;;) {
    const auto nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeat" && i + 1 < argc) repeat = std::atoi(argv[++i]);
    else args.push_back(a);
  }
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER_JSON TEXT_FILE [REFERENCE_IDS] [--repeat N]\n");
    return 2;
  }
  try {
    auto t0 = Clock::now();
    const moescope::Tokenizer tok = moescope::Tokenizer::from_file(args[0]);
    std::printf("load: %.2f s, vocab_size %lld\n", seconds_since(t0), static_cast<long long>(tok.vocab_size()));
    const std::string text = moescope::read_text(args[1]);
    const double mb = static_cast<double>(text.size()) / 1e6;

    t0 = Clock::now();
    const auto ids = tok.encode(text, false);
    const double cold = seconds_since(t0);
    double warm = 1e30;
    for (int r = 0; r < repeat; ++r) {
      t0 = Clock::now();
      const auto again = tok.encode(text, false);
      warm = std::min(warm, seconds_since(t0));
      if (again != ids) {
        std::fprintf(stderr, "second encode differs from the first\n");
        return 1;
      }
    }
    std::printf("text: %.2f MB, %zu ids (%.3f ids/byte)\n", mb, ids.size(), static_cast<double>(ids.size()) / static_cast<double>(text.size()));
    std::printf("encode, cold word cache: %.2f MB/s\n", mb / cold);
    std::printf("encode, warm word cache: %.2f MB/s (best of %d)\n", mb / warm, repeat);
    // documents of a few KB rather than one long string: what sentencepiece-style models (no pre-tokeniser,
    // so each text is one word) see in practice
    {
      std::vector<std::string> docs;
      std::size_t start = 0;
      while (start < text.size()) {
        std::size_t end = std::min(text.size(), start + 4096);
        while (end < text.size() && text[end] != '\n') ++end;
        docs.push_back(text.substr(start, end - start));
        start = end;
      }
      t0 = Clock::now();
      std::size_t n = 0;
      for (const auto& d : docs) n += tok.encode(d, false).size();
      std::printf("encode, %zu documents of about 4 KB: %.2f MB/s (%zu ids)\n", docs.size(), mb / seconds_since(t0), n);
    }
    const std::string round = tok.decode(ids);
    std::printf("decode(encode(text)) == text: %s\n", round == text ? "yes" : "no");

    if (args.size() >= 3) {
      std::ifstream in(args[2]);
      if (!in) {
        std::fprintf(stderr, "cannot open %s\n", args[2].c_str());
        return 2;
      }
      // the reference was made from the file as node reads it: the whole file, split at '\n'
      std::ifstream raw(args[1], std::ios::binary);
      std::ostringstream s;
      s << raw.rdbuf();
      const auto lines = split_lines(s.str());
      std::string line;
      std::size_t n = 0, bad = 0;
      while (std::getline(in, line) && n < lines.size()) {
        std::istringstream is(line);
        std::vector<std::int32_t> want;
        for (long long v; is >> v;) want.push_back(static_cast<std::int32_t>(v));
        const auto got = tok.encode(lines[n], true);
        if (got != want) {
          if (bad < 5) std::printf("line %zu differs: %s\n", n + 1, lines[n].c_str());
          ++bad;
        }
        ++n;
      }
      std::printf("reference: %zu of %zu lines differ\n", bad, n);
      if (bad) return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 2;
  }
  return 0;
}
