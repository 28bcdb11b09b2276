#include "common.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <thread>

#include "moescope/io/checkpoint.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {

const TorchCommand kTorchCommands[4] = {
    {"train", "Train a dense / soft-MoE / sparse-MoE model and write runs/NAME/"},
    {"activations", "Activation overlap of the experts and routing statistics per MoE layer"},
    {"hessian", "Loss-Hessian spectrum of a trained run: top eigenpairs, trace, density"},
    {"landscape", "Loss surface around a run's weights on a 1-D or 2-D grid (resumable)"},
};

const char* torch_command_description(const std::string& name) {
  for (const auto& c : kTorchCommands)
    if (name == c.name) return c.description;
  return "";
}

int thread_count(const Context& ctx) {
  const int n = ctx.threads > 0 ? ctx.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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

// ---------------------------------------------------------------------------------------------- option groups

void add_eval_options(CLI::App* sub, EvalSpec& eval, EvalFlags flags) {
  sub->add_option("--data", eval.data, "Data of a run: NAME, NAME:PATH or a DataSpec .json (default: the run's own)");
  if (flags.one_split) {
    eval.splits.resize(1);
    sub->add_option("--split", eval.splits.front(), "Split of a run's data: train (default), valid or test");
  } else {
    sub->add_option("--split", eval.splits, "Splits: train, valid, test, comma-separated (default train)")
        ->delimiter(',');
  }
  if (!flags.no_max_samples)
    sub->add_option("--max-samples", eval.max_samples, "The first N samples of each split (default 1000; 0 = all)");
  sub->add_option("--batch-size", eval.batch_size,
                  "Samples (tokens for recorded or random inputs) per forward pass (default 256; memory only: results "
                  "do not depend on it)");
}

void add_params_option(CLI::App* sub, std::string& params, const std::string& extra) {
  sub->add_option("--params", params,
                  "Parameter subset: all (default), router, expert:L.E, re:REGEX" + extra);
}

void add_seed_option(CLI::App* sub, std::uint64_t& seed, const std::string& what) {
  sub->add_option("--seed", seed, "Seed of " + what + " (default 0)");
}

void add_hash_option(CLI::App* sub, Context& ctx) {
  sub->add_option("--hash", ctx.hash, "Checkpoint digest for the report: auto (full up to 2 GiB), full, header, none")
      ->check(CLI::IsMember({"auto", "full", "header", "none"}));
}

void validate_eval(const EvalSpec& eval) {
  if (eval.splits.empty()) throw InputError("--split: give at least one of train, valid, test");
  for (const auto& s : eval.splits) check_split_name(s, "--split");
  if (eval.max_samples < 0)
    throw InputError("--max-samples: must be >= 0 (0 = the whole split), got " + std::to_string(eval.max_samples));
  if (eval.batch_size < 1) throw InputError("--batch-size: must be at least 1, got " + std::to_string(eval.batch_size));
}

void print_notes(const std::vector<std::string>& notes) {
  for (const auto& n : notes) spdlog::warn("{}", n);
}

// ---------------------------------------------------------------------------------------------- progress

namespace {

using Clock = std::chrono::steady_clock;

std::string duration_text(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<long long>(s + 0.5);
  if (t < 60) return std::to_string(t) + "s";
  if (t < 3600) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}h{:02d}m", t / 3600, t / 60 % 60);
}

class Renderer {
 public:
  explicit Renderer(bool tty) : tty_(tty) {}
  ~Renderer() { end_line(); }

  void operator()(const Progress& p) {
    if (!spdlog::should_log(spdlog::level::info)) return;
    const auto now = Clock::now();
    if (p.stage != stage_) start_stage(p, now);
    if (!p.note.empty()) {
      end_line();
      std::fprintf(stderr, "%s: %s\n", p.stage.c_str(), p.note.c_str());
      return;
    }
    const double elapsed = std::chrono::duration<double>(now - t0_).count();
    const double rate = elapsed > 0 ? static_cast<double>(p.done - done0_) / elapsed : 0.0;
    const std::string line = format(p, rate);
    if (tty_) {
      if (p.finished || std::chrono::duration<double>(now - last_).count() >= 0.1) {
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
        live_ = true;
        last_ = now;
      }
      if (p.finished) end_line();
    } else {
      const bool step = p.total > 0 ? p.done * 10 / std::max<std::int64_t>(p.total, 1) > decile_
                                    : std::chrono::duration<double>(now - last_).count() >= 30.0;
      if (p.finished || step || std::chrono::duration<double>(now - last_).count() >= 30.0) {
        std::fprintf(stderr, "%s\n", line.c_str());
        last_ = now;
        if (p.total > 0) decile_ = p.done * 10 / std::max<std::int64_t>(p.total, 1);
      }
    }
    std::fflush(stderr);
  }

 private:
  void start_stage(const Progress& p, Clock::time_point now) {
    end_line();
    stage_ = p.stage;
    t0_ = now;
    last_ = now;
    done0_ = p.done;
    decile_ = p.total > 0 ? p.done * 10 / std::max<std::int64_t>(p.total, 1) : 0;
  }
  void end_line() {
    if (live_) std::fprintf(stderr, "\n");
    live_ = false;
  }
  static std::string format(const Progress& p, double rate) {
    std::string s = p.stage + ": " + std::to_string(p.done);
    if (p.total > 0) s += "/" + std::to_string(p.total);
    s += " " + p.unit;
    if (rate > 0) {
      s += fmt::format(", {:.3g} {}/s", rate, p.unit);
      if (p.total > 0 && !p.finished) s += ", ETA " + duration_text(static_cast<double>(p.total - p.done) / rate);
    }
    if (!p.value_name.empty() && std::isfinite(p.value)) s += fmt::format(", {} {:.6g}", p.value_name, p.value);
    if (!p.detail.empty()) s += ", " + p.detail;
    if (p.finished) s += " (done)";
    return s;
  }

  bool tty_;
  bool live_ = false;
  std::string stage_;
  Clock::time_point t0_, last_;
  std::int64_t done0_ = 0, decile_ = 0;
};

}  // namespace

ProgressFn progress_renderer(const Context&) {
  auto r = std::make_shared<Renderer>(::isatty(2) != 0);
  return [r](const Progress& p) { (*r)(p); };
}

}  // namespace moescope::cli
