// moescope synth FAMILY -o PATH: writes a synthetic checkpoint with a family's real tensor names and a known
// expert geometry (expert cosine -> rho, MSO -> rho^2), for demos, tests and benchmarks.
#include <spdlog/spdlog.h>

#include "common.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {

void add_synth(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<SyntheticCheckpointOptions>();
  auto out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("F32");
  auto* sub = app.add_subcommand("synth", "Write a synthetic MoE checkpoint with a known expert geometry");
  sub->add_option("family", o->family, "mixtral, qwen2-moe, olmoe, deepseek, switch, fused-v5, gpt-oss, moescope")
      ->required()
      ->check(CLI::IsMember(synthetic_families()));
  sub->add_option("-o,--output", *out, "File (.safetensors), or folder when --shards > 1")->required();
  sub->add_option("--layers", o->layers, "MoE layers")->capture_default_str();
  sub->add_option("--experts", o->experts, "Experts per layer")->capture_default_str();
  sub->add_option("--hidden", o->hidden, "Hidden size H")->capture_default_str();
  sub->add_option("--intermediate", o->intermediate, "Expert intermediate size I")->capture_default_str();
  sub->add_option("--dtype", *dtype, "F32, F64, F16 or BF16")->capture_default_str()
      ->check(CLI::IsMember({"F32", "F64", "F16", "BF16"}));
  sub->add_option("--rho", o->rho, "Shared fraction of each expert matrix's variance: expert cosine -> rho")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", o->seed, "Seed")->capture_default_str();
  sub->add_option("--shards", o->shards, "Number of shard files (> 1 writes a folder with an index)")
      ->capture_default_str();
  sub->callback([o, out, dtype, &ctx] {
    o->dtype = *parse_dtype(*dtype);
    write_synthetic_checkpoint(*out, *o);
    spdlog::info("wrote {} ({} layers x {} experts, {})", *out, o->layers, o->experts, *dtype);
  });
}

}  // namespace moescope::cli
