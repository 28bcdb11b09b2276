#include "common.hpp"

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "moescope/io/checkpoint.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {

int apply_threads(const Context& ctx) {
  const int n = ctx.threads > 0 ? ctx.threads : std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(n);  // LibTorch starts with one intra-op thread on some builds
  spdlog::debug("threads {}; {}", n, ctx.runtime);
  return n;
}

Provenance make_provenance(const Context& ctx, const std::string& checkpoint, std::int64_t seed) {
  Provenance p;
  p.command_line = ctx.command_line;
  p.checkpoint = checkpoint;
  if (!checkpoint.empty()) {
    const CheckpointHash h = hash_checkpoint(checkpoint, ctx.hash);
    p.checkpoint_sha256 = h.sha256;
    p.hash_scope = h.scope;
  } else {
    p.hash_scope = "none";
  }
  p.seed = seed;
  p.threads = ctx.threads > 0 ? ctx.threads : static_cast<std::int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

std::vector<int> parse_index_list(const std::string& spec, const std::string& flag) {
  std::vector<int> out;
  std::size_t pos = 0;
  auto bad = [&](const std::string& why) -> void { throw InputError(flag + ": " + why + " in '" + spec + "'"); };
  auto number = [&](const std::string& s) {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 9) bad("'" + s + "' is not a number");
    return std::stoi(s);
  };
  while (pos <= spec.size()) {
    const std::size_t comma = std::min(spec.find(',', pos), spec.size());
    const std::string item = spec.substr(pos, comma - pos);
    if (const auto dash = item.find('-'); dash != std::string::npos) {
      const int a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
      if (b < a) bad("range " + item + " runs backwards");
      for (int i = a; i <= b; ++i) out.push_back(i);
    } else {
      out.push_back(number(item));
    }
    pos = comma + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace moescope::cli
