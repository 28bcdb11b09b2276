// moescope synth FAMILY -o PATH: writes a synthetic checkpoint with a family's real tensor names and a known
// expert geometry (expert cosine -> rho, MSO -> rho^2), for demos, tests and benchmarks; with --model, a complete tiny
// Hugging Face model folder (config.json, weights, tokenizer.json) that the HF model loader runs.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {

void add_synth(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<SyntheticCheckpointOptions>();
  auto out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("F32");
  auto model = std::make_shared<bool>(false);
  auto* sub = app.add_subcommand("synth", "Write a synthetic MoE checkpoint with a known expert geometry");
  std::vector<std::string> families = synthetic_families();
  for (const auto& f : synthetic_model_families())
    if (std::find(families.begin(), families.end(), f) == families.end()) families.push_back(f);
  sub->add_option("family", o->family,
                  "mixtral, qwen2-moe, olmoe, deepseek, switch, fused-v5, gpt-oss, moescope; with --model: mixtral, "
                  "qwen2-moe, qwen3-moe, olmoe, deepseek-moe, deepseek-v2, deepseek-v3")
      ->required()
      ->check(CLI::IsMember(families));
  sub->add_option("-o,--output", *out, "File (.safetensors), or folder when --shards > 1 or --model")->required();
  sub->add_flag("--model", *model,
                "Write a complete tiny Hugging Face model folder (config.json, weights, tokenizer.json) instead; "
                "--layers/--experts/--hidden/--intermediate override its config when given, --rho does not apply");
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
  sub->callback([o, out, dtype, model, sub, &ctx] {
    o->dtype = *parse_dtype(*dtype);
    if (*model) {
      const auto known = synthetic_model_families();
      if (std::find(known.begin(), known.end(), o->family) == known.end()) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        throw InputError("synth --model: family '" + o->family + "' has no model (known: " + list + ")");
      }
      SyntheticModelOptions m;
      m.family = o->family;
      m.dtype = o->dtype;
      m.seed = o->seed;
      m.shards = o->shards;
      if (sub->count("--layers")) m.layers = o->layers;
      if (sub->count("--experts")) m.experts = o->experts;
      if (sub->count("--hidden")) m.hidden = o->hidden;
      if (sub->count("--intermediate")) m.intermediate = o->intermediate;
      write_synthetic_model(*out, m);
      spdlog::info("wrote the {} model folder {} ({})", m.family, *out, *dtype);
      return;
    }
    write_synthetic_checkpoint(*out, *o);
    spdlog::info("wrote {} ({} layers x {} experts, {})", *out, o->layers, o->experts, *dtype);
  });
}

}  // namespace moescope::cli
