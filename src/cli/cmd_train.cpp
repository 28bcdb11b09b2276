// moescope train [--config run.json] [flags] [--set KEY=JSON ...] [--resume]: trains a dense / soft / sparse MoE
// classifier or MoE LM and writes runs/NAME/{config.json, step_N/, log.h5}. Flags override the config file, which
// overrides the defaults (default_run_config: Fashion-MNIST, small CNN, top-2 of 8 experts).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iostream>
#include <optional>

#include "torch_common.hpp"
#include "moescope/train/trainer.hpp"
#include "moescope/util/json.hpp"

namespace moescope::cli {
namespace {

/// A flag that overrides one key of the run config (a JSON pointer such as /train/optim/lr).
template <typename T>
struct Override {
  explicit Override(const char* p) : pointer(p) {}
  const char* pointer;
  std::optional<T> value;
};

struct TrainArgs {
  std::string config;
  std::string data;
  bool resume = false;
  bool print_config = false;
  std::vector<std::string> sets;
  Override<std::string> name{"/name"}, out_dir{"/out_dir"}, optimizer{"/train/optim/name"},
      schedule{"/train/optim/schedule"}, head{"/model/head"}, backbone{"/model/backbone"};
  Override<std::int64_t> seed{"/seed"}, steps{"/train/steps"}, epochs{"/train/epochs"},
      batch_size{"/train/batch_size"}, eval_every{"/train/eval_every"}, checkpoint_every{"/train/checkpoint_every"},
      log_every{"/train/log_every"}, warmup{"/train/optim/warmup_steps"}, experts{"/model/experts"},
      top_k{"/model/top_k"}, head_hidden{"/model/head_hidden"}, max_train{"/data/max_train"},
      max_eval{"/data/max_eval"}, omoe_skip{"/train/optim/omoe/skip"};
  Override<double> lr{"/train/optim/lr"}, weight_decay{"/train/optim/weight_decay"},
      momentum{"/train/optim/momentum"}, clip_norm{"/train/optim/clip_norm"},
      load_balance{"/train/regularisers/load_balance"}, z_loss{"/train/regularisers/z_loss"},
      weight_orth{"/train/regularisers/weight_orth"}, guo_orth{"/train/regularisers/guo_orth"},
      guo_var{"/train/regularisers/guo_var"}, cv_importance{"/train/regularisers/cv_importance"},
      omoe_alpha{"/train/optim/omoe/alpha"};
  bool omoe = false;
};

template <typename T>
void apply(nlohmann::json& j, const Override<T>& o) {
  if (o.value) j[nlohmann::json::json_pointer(o.pointer)] = *o.value;
}

RunConfig resolve(const TrainArgs& a) {
  nlohmann::json j = default_run_config();
  if (!a.config.empty()) {
    const nlohmann::json file = read_json_file(a.config, "the run config");
    if (!file.is_object()) fail_input(a.config, "expected a JSON object");
    j = merge_run_config(std::move(j), file);
  }
  if (!a.data.empty()) {
    DataSpec base;
    try {
      base = j.at("data").get<DataSpec>();
    } catch (const InputError& e) {
      fail_input(a.config, e.what());
    }
    j["data"] = parse_data_arg(a.data, base, "--data");
  }
  for (const auto* o : {&a.name, &a.out_dir, &a.optimizer, &a.schedule, &a.head, &a.backbone}) apply(j, *o);
  for (const auto* o : {&a.seed, &a.steps, &a.epochs, &a.batch_size, &a.eval_every, &a.checkpoint_every, &a.log_every,
                        &a.warmup, &a.experts, &a.top_k, &a.head_hidden, &a.max_train, &a.max_eval, &a.omoe_skip}) {
    apply(j, *o);
  }
  for (const auto* o : {&a.lr, &a.weight_decay, &a.momentum, &a.clip_norm, &a.load_balance, &a.z_loss, &a.weight_orth,
                        &a.guo_orth, &a.guo_var, &a.cv_importance, &a.omoe_alpha}) {
    apply(j, *o);
  }
  if (a.steps.value && !a.epochs.value) j["train"]["epochs"] = 0;
  if (a.epochs.value && !a.steps.value) j["train"]["steps"] = 0;
  if (a.omoe) j["train"]["optim"]["omoe"]["enabled"] = true;
  for (const auto& s : a.sets) assign_json_path(j, s, "--set");
  RunConfig c;
  try {
    c = j.get<RunConfig>();
  } catch (const InputError& e) {
    if (!a.config.empty()) fail_input(a.config, e.what());
    throw;
  }
  return c;
}

void run(const TrainArgs& a, const Context& ctx) {
  const int threads = start_torch_work(ctx);
  const RunConfig config = resolve(a);
  if (a.print_config) {
    std::cout << nlohmann::json(config).dump(2) << "\n";
    return;
  }
  TrainOptions opts;
  opts.resume = a.resume;
  opts.provenance = make_provenance(ctx, "");
  opts.provenance.threads = threads;
  opts.progress = progress_renderer(ctx);
  const TrainResult r = train_run(config, opts);
  const double seconds = r.times.total();
  std::cout << fmt::format("run        {}\n", r.run_dir);
  std::cout << fmt::format("checkpoint {}\n", r.last_checkpoint);
  std::cout << fmt::format("steps      {} of {} ({} this call, {:.0f} samples/s)\n", r.steps, r.total_steps,
                           r.steps - r.first_step, seconds > 0 ? static_cast<double>(r.samples) / seconds : 0.0);
  if (r.finished) {
    std::cout << fmt::format("valid      loss {:.4f}  accuracy {:.4f}  perplexity {:.3f}\n", r.valid.loss,
                             r.valid.accuracy, r.valid.perplexity);
    std::cout << fmt::format("test       loss {:.4f}  accuracy {:.4f}  perplexity {:.3f}\n", r.test.loss,
                             r.test.accuracy, r.test.perplexity);
  }
}

}  // namespace

void add_train(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", torch_command_description("train"));
  cmd->add_option("--config", args->config, "Run config JSON (name, seed, out_dir, model, data, train)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--data", args->data, "NAME[:PATH] or a data-spec JSON (fashion-mnist, cifar10, clustered, "
                                        "text-word, text-byte, text-char)");
  cmd->add_option("--name", args->name.value, "Run name (directory under --out-dir)");
  cmd->add_option("--out-dir", args->out_dir.value, "Where runs go (default runs)");
  cmd->add_option("--seed", args->seed.value, "Seed of initialisation, data order and noise");
  cmd->add_option("--steps", args->steps.value, "Optimiser steps (instead of --epochs)");
  cmd->add_option("--epochs", args->epochs.value, "Epochs");
  cmd->add_option("--batch-size", args->batch_size.value, "Batch size");
  cmd->add_option("--max-train", args->max_train.value, "Use only the first N training samples");
  cmd->add_option("--max-eval", args->max_eval.value, "Use only the first N validation / test samples");
  cmd->add_option("--head", args->head.value, "Classifier head: dense, gated, soft, sparse");
  cmd->add_option("--backbone", args->backbone.value, "Classifier backbone: mlp, cnn, resnet18");
  cmd->add_option("--experts", args->experts.value, "Experts per MoE layer");
  cmd->add_option("--top-k", args->top_k.value, "Experts per token (sparse)");
  cmd->add_option("--head-hidden", args->head_hidden.value, "Dense head / expert hidden width");
  cmd->add_option("--optimizer", args->optimizer.value, "adamw or sgd");
  cmd->add_option("--lr", args->lr.value, "Peak learning rate");
  cmd->add_option("--schedule", args->schedule.value, "constant, cosine, step");
  cmd->add_option("--warmup", args->warmup.value, "Linear warm-up steps");
  cmd->add_option("--weight-decay", args->weight_decay.value, "Weight decay");
  cmd->add_option("--momentum", args->momentum.value, "SGD momentum");
  cmd->add_option("--clip-norm", args->clip_norm.value, "Clip the global gradient norm (0: off)");
  cmd->add_option("--load-balance", args->load_balance.value, "Switch load-balancing loss weight");
  cmd->add_option("--z-loss", args->z_loss.value, "Router z-loss weight");
  cmd->add_option("--weight-orth", args->weight_orth.value, "Expert weight orthogonality loss weight");
  cmd->add_option("--guo-orth", args->guo_orth.value, "Guo et al. expert-output orthogonality loss weight");
  cmd->add_option("--guo-var", args->guo_var.value, "Guo et al. routing-variance reward weight");
  cmd->add_option("--cv-importance", args->cv_importance.value, "CV^2(importance) loss weight");
  cmd->add_flag("--omoe", args->omoe, "OMoE orthogonal optimiser for the experts' input weights");
  cmd->add_option("--omoe-skip", args->omoe_skip.value, "OMoE: every s-th step is orthogonal");
  cmd->add_option("--omoe-alpha", args->omoe_alpha.value, "OMoE: projector regulariser alpha");
  cmd->add_option("--eval-every", args->eval_every.value, "Validate every N steps (0: at the end)");
  cmd->add_option("--checkpoint-every", args->checkpoint_every.value, "Checkpoint every N steps (0: at the end)");
  cmd->add_option("--log-every", args->log_every.value, "Log a row every N steps");
  cmd->add_option("--set", args->sets, "KEY=JSON override of any config key, e.g. train.optim.beta2=0.98")
      ->allow_extra_args(false);
  cmd->add_flag("--resume", args->resume, "Continue the run from its latest checkpoint");
  cmd->add_flag("--print-config", args->print_config, "Print the resolved run config and exit");
  cmd->callback([args, &ctx] { run(*args, ctx); });
}

}  // namespace moescope::cli
