// The training loop: deterministic batches and per-step seeds, regularisers per MoE layer, AdamW/SGD with
// schedules and clipping, OMoE, atomic resumable checkpoints and an HDF5 log.
#include "moescope/train/trainer.hpp"

#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>

#include "moescope/data/split.hpp"
#include "moescope/io/run.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/io/weights_torch.hpp"
#include "moescope/model/moe.hpp"
#include "moescope/train/denormals.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"
#include "moescope/util/random.hpp"
#include "moescope/version.hpp"
#include "moescope/util/files.hpp"

namespace fs = std::filesystem;

namespace moescope {

// ---------------------------------------------------------------------------------------------- JSON

void to_json(nlohmann::json& j, const TrainConfig& c) {
  const auto& r = c.regularisers;
  j = nlohmann::json{{"steps", c.steps},
                     {"epochs", c.epochs},
                     {"batch_size", c.batch_size},
                     {"eval_every", c.eval_every},
                     {"checkpoint_every", c.checkpoint_every},
                     {"log_every", c.log_every},
                     {"eval_batch_size", c.eval_batch_size},
                     {"eval_train_samples", c.eval_train_samples},
                     {"regularisers",
                      {{"load_balance", r.load_balance},
                       {"z_loss", r.z_loss},
                       {"weight_orth", r.weight_orth},
                       {"guo_orth", r.guo_orth},
                       {"guo_var", r.guo_var},
                       {"cv_importance", r.cv_importance},
                       {"weight_orth_param", c.weight_orth_param}}},
                     {"optim", c.optim},
                     {"flush_denormals", c.flush_denormals}};
}

void from_json(const nlohmann::json& j, TrainConfig& c) {
  const char* what = "train config";
  json_fields::check(j, what, "train",
                       {"steps", "epochs", "batch_size", "eval_every", "checkpoint_every", "log_every",
                        "eval_batch_size", "eval_train_samples", "regularisers", "optim", "flush_denormals"});
  json_fields::read(j, what, "steps", c.steps);
  json_fields::read(j, what, "epochs", c.epochs);
  json_fields::read(j, what, "batch_size", c.batch_size);
  json_fields::read(j, what, "eval_every", c.eval_every);
  json_fields::read(j, what, "checkpoint_every", c.checkpoint_every);
  json_fields::read(j, what, "log_every", c.log_every);
  json_fields::read(j, what, "eval_batch_size", c.eval_batch_size);
  json_fields::read(j, what, "eval_train_samples", c.eval_train_samples);
  json_fields::read(j, what, "flush_denormals", c.flush_denormals);
  if (const auto it = j.find("regularisers"); it != j.end()) {
    const char* rw = "train config: regularisers";
    json_fields::check(*it, rw, "regularisers",
                         {"load_balance", "z_loss", "weight_orth", "guo_orth", "guo_var", "cv_importance",
                          "weight_orth_param"});
    auto& r = c.regularisers;
    json_fields::read(*it, rw, "load_balance", r.load_balance);
    json_fields::read(*it, rw, "z_loss", r.z_loss);
    json_fields::read(*it, rw, "weight_orth", r.weight_orth);
    json_fields::read(*it, rw, "guo_orth", r.guo_orth);
    json_fields::read(*it, rw, "guo_var", r.guo_var);
    json_fields::read(*it, rw, "cv_importance", r.cv_importance);
    json_fields::read(*it, rw, "weight_orth_param", c.weight_orth_param);
  }
  if (const auto it = j.find("optim"); it != j.end()) from_json(*it, c.optim);
  if (c.steps < 0 || c.epochs < 0 || (c.steps == 0 && c.epochs == 0)) {
    throw InputError("train config: give steps > 0 or epochs > 0");
  }
  if (c.batch_size < 1 || c.eval_batch_size < 1) throw InputError("train config: batch sizes must be >= 1");
  if (c.eval_train_samples < 0) throw InputError("train config: field 'eval_train_samples' must be >= 0");
  if (c.eval_every < 0 || c.checkpoint_every < 0 || c.log_every < 1) {
    throw InputError("train config: eval_every and checkpoint_every must be >= 0, log_every >= 1");
  }
}

void to_json(nlohmann::json& j, const RunConfig& c) {
  j = nlohmann::json{{"name", c.name},   {"seed", c.seed}, {"out_dir", c.out_dir},
                     {"model", c.model}, {"data", c.data}, {"train", c.train}};
}

void from_json(const nlohmann::json& j, RunConfig& c) {
  const char* what = "run config";
  json_fields::check(j, what, "run", {"name", "seed", "out_dir", "model", "data", "train"});
  json_fields::read(j, what, "name", c.name);
  json_fields::read(j, what, "seed", c.seed);
  json_fields::read(j, what, "out_dir", c.out_dir);
  if (const auto it = j.find("model"); it != j.end()) {
    c.model = *it;
    check_model_config(c.model);  // unknown fields, wrong types and impossible values, named, before any training
  }
  if (const auto it = j.find("data"); it != j.end()) from_json(*it, c.data);
  if (const auto it = j.find("train"); it != j.end()) from_json(*it, c.train);
  static const std::regex kName("[A-Za-z0-9._+-]+");
  if (!std::regex_match(c.name, kName) || c.name == "." || c.name == "..") {
    throw InputError("run config: name '" + c.name + "' must be letters, digits, '.', '_', '+' or '-'");
  }
}

nlohmann::json merge_run_config(nlohmann::json base, const nlohmann::json& file) {
  for (const auto& item : file.items()) {
    if (item.key() == "train" && item.value().is_object() && base.contains("train")) {
      base["train"].merge_patch(item.value());
    } else {
      base[item.key()] = item.value();
    }
  }
  return base;
}

RunConfig default_run_config() {
  RunConfig c;
  c.name = "fmnist-sparse";
  c.model = {{"type", "classifier"}, {"backbone", "cnn"}, {"backbone_widths", {32, 64, 128}},
             {"head", "sparse"},     {"head_hidden", 64}, {"experts", 8},
             {"top_k", 2}};
  c.data.name = "fashion-mnist";
  c.data.max_eval = 2000;
  c.train.epochs = 1;
  c.train.batch_size = 128;
  c.train.eval_every = 100;
  c.train.regularisers.load_balance = 0.01;
  c.train.optim.name = "adamw";
  c.train.optim.lr = 2e-3;
  c.train.optim.weight_decay = 1e-4;
  c.train.optim.schedule = "cosine";
  c.train.optim.warmup_steps = 20;
  c.train.optim.clip_norm = 1.0;
  return c;
}

nlohmann::json fit_model_to_data(const nlohmann::json& model, const Dataset& data) {
  nlohmann::json m = model;
  if (!m.is_object()) throw InputError("model config: expected a JSON object");
  auto set = [&](const char* key, std::int64_t value) {
    const auto it = m.find(key);
    if (it != m.end() && it->is_number_integer() && it->get<std::int64_t>() != value) {
      throw InputError(std::string("model config: ") + key + " is " + it->dump() + " but the data (" +
                       data.spec.name + ") needs " + std::to_string(value));
    }
    m[key] = value;
  };
  const std::string type = json_fields::string_or_empty(m, "type");
  if (type == "lm") {
    if (!data.is_text) throw InputError("model config: an lm needs a text data set, not " + data.spec.name);
    set("vocab_size", data.num_classes);
    const auto context = m.find("context");
    if (context != m.end() && !context->is_number_integer())
      throw InputError("model config: context must be an integer, got " + context->dump());
    if (context == m.end() || context->get<std::int64_t>() < data.spec.context) m["context"] = data.spec.context;
  } else if (type == "classifier") {
    if (data.is_text) throw InputError("model config: a classifier needs an image or clustered data set");
    if (data.input_shape.size() == 3) {
      if (data.input_shape[1] != data.input_shape[2]) throw InputError("model config: images must be square");
      set("in_channels", data.input_shape[0]);
      set("image_size", data.input_shape[1]);
      // The standardisation the model applies, fitted to this run's train split and kept in its config.
      if (!m.contains("input_mean") && data.train.size() > 0) {
        const ChannelStatistics s = channel_statistics(data.train.inputs);
        m["input_mean"] = s.mean;
        m["input_std"] = s.stddev;
      }
    } else {
      if (!(m.contains("backbone") && m["backbone"] == "mlp")) {
        throw InputError("model config: vector data (" + data.spec.name + ") needs the mlp backbone");
      }
      set("in_channels", data.input_shape.at(0));
      set("image_size", 1);
    }
    set("num_classes", data.num_classes);
  } else {
    throw InputError("model config: \"type\" must be \"classifier\" or \"lm\"");
  }
  return m;
}

// ---------------------------------------------------------------------------------------------- log

namespace {

const char* const kTerms[] = {"load_balance", "z_loss", "weight_orth", "guo_orth", "guo_var", "cv_importance"};
constexpr std::size_t kNumTerms = 6;

/// The training log in memory; written whole to log.h5 at each checkpoint.
struct Log {
  std::int64_t layers = 0, experts = 0;
  std::vector<std::int64_t> step;
  std::vector<double> loss, total_loss, lr, grad_norm, batch_acc;
  std::vector<double> terms;        // [n, layers, kNumTerms]
  std::vector<double> expert_load;  // [n, layers, experts]
  std::vector<std::int64_t> val_step;
  std::vector<double> val_loss, val_acc, val_ppl;

  double test_loss = std::numeric_limits<double>::quiet_NaN(), test_acc = test_loss, test_ppl = test_loss;
  /// The final evaluation on the train split's first eval_train_samples samples (NaN when skipped).
  double train_eval_loss = std::numeric_limits<double>::quiet_NaN(), train_eval_acc = train_eval_loss,
         train_eval_ppl = train_eval_loss;
  /// Wall-clock milliseconds per test sample of the final test evaluation (a measurement, not deterministic).
  double test_ms_per_sample = std::numeric_limits<double>::quiet_NaN();

  /// Keeps what a run resumed at `steps_done` has: rows of steps < steps_done, evaluations at <= steps_done.
  void truncate(std::int64_t steps_done) {
    std::size_t n = 0;
    while (n < step.size() && step[n] < steps_done) ++n;
    step.resize(n), loss.resize(n), total_loss.resize(n), lr.resize(n), grad_norm.resize(n), batch_acc.resize(n);
    terms.resize(n * layers * kNumTerms), expert_load.resize(n * layers * experts);
    std::size_t v = 0;
    while (v < val_step.size() && val_step[v] <= steps_done) ++v;
    val_step.resize(v), val_loss.resize(v), val_acc.resize(v), val_ppl.resize(v);
  }

  void write(const std::string& path, const Provenance& prov, const RunConfig& cfg, std::int64_t total_steps) const {
    ReportWriter w(path);
    w.write_provenance(prov);
    const auto n = step.size();
    const auto L = static_cast<std::size_t>(layers), E = static_cast<std::size_t>(experts);
    w.write_int("/train/step", step, {n});
    w.write("/train/loss", loss, {n});
    w.write("/train/total_loss", total_loss, {n});
    w.write("/train/lr", lr, {n});
    w.write("/train/grad_norm", grad_norm, {n});
    w.write("/train/batch_acc", batch_acc, {n});
    if (L > 0) {
      for (std::size_t t = 0; t < kNumTerms; ++t) {
        std::vector<double> col(n * L);
        for (std::size_t i = 0; i < n * L; ++i) col[i] = terms[i * kNumTerms + t];
        w.write(std::string("/train/regularisers/") + kTerms[t], col, {n, L});
      }
      w.write("/train/expert_load", expert_load, {n, L, E});
      w.set_attr("/train/expert_load", "meaning",
                 "fraction of (token, choice) assignments per expert for top-k layers; mean router probability "
                 "for dense-gated and soft layers; [step, layer, expert]");
      w.set_attr("/train/regularisers", "meaning",
                 "unweighted value of each term per logged step and MoE layer; NaN where the term's weight is 0");
    }
    w.write_int("/train/val_step", val_step, {val_step.size()});
    w.write("/train/val_loss", val_loss, {val_loss.size()});
    w.write("/train/val_acc", val_acc, {val_acc.size()});
    w.write("/train/val_perplexity", val_ppl, {val_ppl.size()});
    w.write_scalar("/train/test_loss", test_loss);
    w.write_scalar("/train/test_acc", test_acc);
    w.write_scalar("/train/test_perplexity", test_ppl);
    w.write_scalar("/train/train_eval_loss", train_eval_loss);
    w.write_scalar("/train/train_eval_acc", train_eval_acc);
    w.write_scalar("/train/train_eval_perplexity", train_eval_ppl);
    w.write_scalar("/train/test_ms_per_sample", test_ms_per_sample);
    w.set_attr("/train/test_ms_per_sample", "meaning",
               "wall-clock milliseconds per test sample (sequence for LMs) of the final test evaluation: eval mode, "
               "no gradients, eval_batch_size samples per forward pass, the run's threads; a measurement, so it "
               "differs between runs of the same config");
    w.set_attr("/train", "config", nlohmann::json(cfg).dump());
    w.set_attr("/train", "total_steps", total_steps);
    w.commit();
  }

  void read(const std::string& path) {
    const ReportReader r(path);
    const auto as_int = [](const std::vector<double>& v) { return std::vector<std::int64_t>(v.begin(), v.end()); };
    step = as_int(r.read("/train/step"));
    loss = r.read("/train/loss");
    total_loss = r.read("/train/total_loss");
    lr = r.read("/train/lr");
    grad_norm = r.read("/train/grad_norm");
    batch_acc = r.read("/train/batch_acc");
    const std::size_t n = step.size();
    if (layers > 0) {
      terms.assign(n * layers * kNumTerms, 0.0);
      for (std::size_t t = 0; t < kNumTerms; ++t) {
        const auto col = r.read(std::string("/train/regularisers/") + kTerms[t]);
        if (col.size() != n * layers) fail_input(path, "log does not fit this run's MoE layers");
        for (std::size_t i = 0; i < col.size(); ++i) terms[i * kNumTerms + t] = col[i];
      }
      expert_load = r.read("/train/expert_load");
      if (expert_load.size() != n * layers * experts) fail_input(path, "log does not fit this run's experts");
    }
    val_step = as_int(r.read("/train/val_step"));
    val_loss = r.read("/train/val_loss");
    val_acc = r.read("/train/val_acc");
    val_ppl = r.read("/train/val_perplexity");
  }
};

std::map<std::string, torch::Tensor> load_tensor_map(const fs::path& path) {
  const SafetensorsFile file(path.string());
  std::map<std::string, torch::Tensor> out;
  for (const auto& info : file.tensors()) {
    const ByteView raw = file.raw(info.name);
    const auto dtype = info.dtype == DType::I64 ? torch::kInt64 : torch::kFloat64;
    if (info.dtype != DType::I64 && info.dtype != DType::F64) fail_input(path.string(), "unexpected dtype");
    auto t = torch::empty(info.shape, dtype);
    std::memcpy(t.data_ptr(), raw.data, raw.size);
    out[info.name] = t;
  }
  return out;
}

/// Asks every MoE layer to return its experts' outputs (Guo et al.'s orthogonality loss needs them).
void keep_expert_outputs(const std::vector<MoELayerRef>& layers) {
  for (const auto& ref : layers) {
    if (auto* s = dynamic_cast<SparseMoEImpl*>(ref.layer)) s->options.keep_expert_outputs(true);
    if (auto* g = dynamic_cast<GatedMixtureImpl*>(ref.layer)) g->options.keep_expert_outputs(true);
    if (auto* so = dynamic_cast<SoftMoEImpl*>(ref.layer)) so->options.keep_expert_outputs(true);
  }
}

/// A number with `digits` decimals, for progress details.
std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

// ---------------------------------------------------------------------------------------------- train

TrainResult train_run(const RunConfig& config_in, const TrainOptions& options) {
  const auto t_start = Clock::now();
  StepTimes times;

  // Data and model.
  Dataset loaded;
  if (options.data == nullptr) loaded = load_dataset(config_in.data);
  const Dataset& data = options.data != nullptr ? *options.data : loaded;
  times.data += seconds_since(t_start);
  RunConfig config = config_in;
  config.model = fit_model_to_data(config.model, data);
  validate(config.train.optim);
  const TrainConfig& tc = config.train;
  const std::int64_t n_train = data.train.size();
  if (n_train == 0) throw InputError("data " + data.spec.name + ": the train split is empty");
  const std::int64_t batch = std::min(tc.batch_size, n_train);
  const std::int64_t per_epoch = std::max<std::int64_t>(1, n_train / batch);
  const std::int64_t total_steps = tc.steps > 0 ? tc.steps : tc.epochs * per_epoch;

  torch::manual_seed(config.seed);
  const TaskModel model = TaskModel::create(config.model);
  const auto layers = model.moe_layers();
  if (tc.regularisers.guo_orth != 0.0) keep_expert_outputs(layers);
  std::vector<torch::Tensor> params;
  for (const auto& p : model.module().parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  auto optimizer = make_optimizer(tc.optim, params);
  std::unique_ptr<OMoE> omoe;
  std::vector<std::shared_ptr<Probe>> probes;
  if (tc.optim.omoe.enabled) {
    if (layers.empty()) throw InputError("train config: OMoE needs a model with MoE layers");
    std::vector<std::vector<std::vector<torch::Tensor>>> weights;
    for (const auto& ref : layers) {
      weights.push_back(OMoE::expert_input_weights(ref.experts));
      auto probe = std::make_shared<Probe>();
      probe->record_inputs = true;
      ref.layer->set_probe(probe);
      probes.push_back(probe);
    }
    omoe = std::make_unique<OMoE>(std::move(weights), tc.optim.omoe);
  }
  std::vector<std::vector<torch::Tensor>> orth_weights(layers.size());
  if (tc.regularisers.weight_orth != 0.0) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      orth_weights[l] = expert_parameters(layers[l].experts, tc.weight_orth_param);
    }
  }

  Log log;
  log.layers = static_cast<std::int64_t>(layers.size());
  log.experts = layers.empty() ? 0 : layers.front().layer->num_experts();
  for (const auto& ref : layers) {
    if (ref.layer->num_experts() != log.experts) throw InputError("model config: MoE layers differ in expert count");
  }

  // Run directory, resume.
  const fs::path run_dir = fs::path(config.out_dir) / config.name;
  fs::create_directories(run_dir);
  nlohmann::json config_json = config;
  nlohmann::json comparable = config_json;
  comparable.erase("out_dir");
  std::int64_t start = 0;
  TrainResult result;
  result.run_dir = run_dir.string();
  result.total_steps = total_steps;
  Provenance prov = options.provenance;
  prov.seed = static_cast<std::int64_t>(config.seed);
  prov.checkpoint = data.spec.name + (data.spec.path.empty() ? "" : ":" + data.spec.path);
  if (prov.hash_scope.empty()) prov.hash_scope = "none";
  const fs::path log_path = run_dir / "log.h5";

  if (options.resume) {
    // The highest step directory holding a complete checkpoint (state.json is written last).
    const fs::path last = latest_step_dir(run_dir.string(), "state.json");
    if (!last.empty()) {
      // Read as a config, so that a run written before a field existed compares with that field's default.
      const std::string saved_path = (run_dir / "config.json").string();
      nlohmann::json saved = read_json_file(saved_path, "the run config");
      try {
        saved = saved.get<RunConfig>();
      } catch (const InputError& e) {
        fail_input(saved_path, e.what());
      }
      saved.erase("out_dir");
      if (saved != comparable) {
        fail_input(saved_path, "the run was started with another config; resume with the same config or a new name");
      }
      const nlohmann::json state = read_json_file((last / "state.json").string(), "the checkpoint state");
      check_run_format(state, (last / "state.json").string());
      const auto step_it = state.find("step");
      if (step_it == state.end() || !step_it->is_number_integer() || step_it->get<std::int64_t>() < 0 ||
          step_it->get<std::int64_t>() > total_steps)
        fail_input((last / "state.json").string(), "\"step\" must be an integer from 0 to " +
                                                       std::to_string(total_steps));
      start = step_it->get<std::int64_t>();
      load_module_weights(model.module(), (last / "model.safetensors").string());
      load_optimizer(*optimizer, (last / "optimizer.pt").string());
      if (omoe) omoe->load_state(load_tensor_map(last / "omoe.safetensors"));
      if (fs::exists(log_path)) {
        log.read(log_path.string());
        log.truncate(start);
        // A finished run resumed: its final evaluation is made again below (the same numbers), not appended twice.
        while (start == total_steps && !log.val_step.empty() && log.val_step.back() == start) {
          log.val_step.pop_back(), log.val_loss.pop_back(), log.val_acc.pop_back(), log.val_ppl.pop_back();
        }
      }
      result.last_checkpoint = last.string();
      report(options.progress, make_progress("train", start, total_steps, "steps", std::nan(""), "", "", false,
                                        "resuming at step " + std::to_string(start) + " from " + last.string()));
    }
  } else if (fs::exists(run_dir / "config.json") && !latest_step_dir(run_dir.string(), "state.json").empty()) {
    fail_input(run_dir.string(), "already holds a run; use --resume to continue it or choose another name");
  }
  write_file_atomic((run_dir / "config.json").string(), config_json.dump(2) + "\n");
  result.first_step = start;

  auto checkpoint = [&](std::int64_t steps_done) {
    const auto t0 = Clock::now();
    const fs::path final_dir = run_dir / ("step_" + std::to_string(steps_done));
    const fs::path tmp = final_dir.string() + ".tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    save_module_weights(model.module(), (tmp / "model.safetensors").string(),
                 {{"moescope_run", config.name}, {"step", std::to_string(steps_done)}});
    write_file_atomic((tmp / "config.json").string(), config_json.dump(2) + "\n");
    save_optimizer(*optimizer, (tmp / "optimizer.pt").string());
    if (omoe) {
      const auto state = omoe->state();
      write_tensor_map((tmp / "omoe.safetensors").string(), {state.begin(), state.end()}, /*float64=*/true);
    }
    write_file_atomic((tmp / "state.json").string(),
                      nlohmann::json{{"step", steps_done}, {"total_steps", total_steps}, {"seed", config.seed},
                                     {"moescope_version", kVersion}, {"run_format", kRunFormat}}
                          .dump(2));
    // The log first: a run killed between the two has a log ahead of its last checkpoint (a resume truncates it),
    // never a checkpoint ahead of its log (a finished run would then lack its final evaluation).
    log.write(log_path.string(), prov, config, total_steps);
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    result.last_checkpoint = final_dir.string();
    times.checkpoint += seconds_since(t0);
  };
  auto validate_now = [&](std::int64_t steps_done) {
    const auto t0 = Clock::now();
    const EvalResult v = evaluate(model, data.valid.size() > 0 ? data.valid : data.test, tc.eval_batch_size);
    log.val_step.push_back(steps_done);
    log.val_loss.push_back(v.loss);
    log.val_acc.push_back(v.accuracy);
    log.val_ppl.push_back(v.perplexity);
    times.eval += seconds_since(t0);
    return v;
  };

  if (start == 0) checkpoint(0);  // the initialisation, for before/after comparisons

  // The loop, and the evaluations in and after it, with denormals flushed (train.flush_denormals).
  const ScopedFlushDenormalsInPool flush_denormals(tc.flush_denormals);
  model.module().train();
  std::vector<std::int64_t> order;
  std::int64_t order_epoch = -1;
  std::int64_t step = start;
  const std::int64_t stop = options.stop_after > 0 ? std::min(total_steps, start + options.stop_after) : total_steps;
  for (; step < stop; ++step) {
    auto t0 = Clock::now();
    const std::int64_t epoch = step / per_epoch;
    if (epoch != order_epoch) {
      order = permutation(n_train, splitmix64(config.seed + static_cast<std::uint64_t>(epoch)));
      order_epoch = epoch;
    }
    const std::int64_t pos = (step % per_epoch) * batch;
    const auto idx = torch::tensor(torch::ArrayRef<std::int64_t>(order.data() + pos, batch), torch::kInt64);
    const auto x = data.train.inputs.index_select(0, idx);
    const auto y = data.train.targets.index_select(0, idx);
    torch::manual_seed(splitmix64(config.seed ^ static_cast<std::uint64_t>(step + 1)));
    times.data += seconds_since(t0);

    t0 = Clock::now();
    BatchResult r = model.batch_loss(x, y);
    times.forward += seconds_since(t0);

    t0 = Clock::now();
    torch::Tensor total = r.loss;
    std::vector<RegulariserTerms> terms;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      terms.push_back(regulariser_terms(r.routing[l], layers[l].layer->num_experts(), tc.regularisers,
                                        orth_weights[l]));
      total = total + terms.back().total;
    }
    times.regularisers += seconds_since(t0);

    t0 = Clock::now();
    compute_gradients(total, params);
    times.backward += seconds_since(t0);

    t0 = Clock::now();
    const double lr = learning_rate(tc.optim, step, total_steps);
    set_learning_rate(*optimizer, lr);
    // OMoE's orthogonal step reads the clipped gradients: there they are scaled in place.
    const bool orth = omoe && omoe->is_orthogonal_step(step);
    const double grad_norm = orth ? clip_gradients(params, tc.optim.clip_norm)
                                  : clip_gradients_into_step(*optimizer, params, tc.optim.clip_norm);
    if (std::isfinite(grad_norm)) {
      if (orth) omoe->orthogonal_step(lr);
      optimizer->step();
      if (omoe && !orth) {
        for (std::size_t l = 0; l < layers.size(); ++l) {
          omoe->accumulate(static_cast<int>(l), probes[l]->inputs.back(), r.routing[l]);
        }
      }
    } else {
      report(options.progress, make_progress("train", step, total_steps, "steps", std::nan(""), "", "", false,
                                        "step " + std::to_string(step) + " skipped: the gradient norm is " +
                                            to_text(grad_norm)));
    }
    for (auto& p : probes) p->clear();
    times.optimiser += seconds_since(t0);
    result.samples += batch;

    const std::int64_t done = step + 1;
    if (step % tc.log_every == 0 || done == total_steps) {
      log.step.push_back(step);
      log.loss.push_back(r.loss.item<double>());
      log.total_loss.push_back(total.item<double>());
      log.lr.push_back(lr);
      log.grad_norm.push_back(grad_norm);
      log.batch_acc.push_back(static_cast<double>(r.correct) / static_cast<double>(r.count));
      torch::NoGradGuard ng;
      for (std::size_t l = 0; l < layers.size(); ++l) {
        const RegulariserTerms& t = terms[l];
        for (double v : {t.load_balance, t.z_loss, t.weight_orth, t.guo_orth, t.guo_var, t.cv_importance}) {
          log.terms.push_back(v);
        }
        const RoutingInfo& ri = r.routing[l];
        torch::Tensor load;
        if (ri.topk_indices.defined()) {
          load = torch::bincount(ri.topk_indices.reshape({-1}), {}, log.experts).to(torch::kFloat64);
          load = load / load.sum();
        } else {
          load = ri.probs.detach().reshape({-1, log.experts}).to(torch::kFloat64).mean(0);
        }
        for (std::int64_t e = 0; e < log.experts; ++e) log.expert_load.push_back(load[e].item<double>());
      }
    }
    if (tc.eval_every > 0 && done % tc.eval_every == 0 && done != total_steps) {
      const EvalResult v = validate_now(done);
      report(options.progress, make_progress("train", done, total_steps, "steps", v.loss, "valid loss",
                                        "valid acc " + fixed(v.accuracy, 4), false, ""));
    }
    if (tc.checkpoint_every > 0 && done % tc.checkpoint_every == 0 && done != total_steps) checkpoint(done);
    if (options.progress && (step % tc.log_every == 0 || done == stop)) {
      report(options.progress, make_progress("train", done, total_steps, "steps", log.loss.empty() ? std::nan("") : log.loss.back(),
                                        "loss", "acc " + fixed(log.batch_acc.empty() ? 0.0 : log.batch_acc.back(), 3) +
                                            " lr " + to_text(lr),
                                        false, ""));
    }
  }

  result.steps = step;
  result.finished = step == total_steps;
  if (result.finished) {
    result.valid = validate_now(step);
    const auto t0 = Clock::now();
    result.test = evaluate(model, data.test, tc.eval_batch_size);
    const double test_seconds = seconds_since(t0);
    log.test_loss = result.test.loss;
    log.test_acc = result.test.accuracy;
    log.test_ppl = result.test.perplexity;
    if (data.test.size() > 0) log.test_ms_per_sample = 1000.0 * test_seconds / static_cast<double>(data.test.size());
    times.eval += test_seconds;
    if (tc.eval_train_samples > 0) {
      const auto t1 = Clock::now();
      const EvalResult tr = evaluate(model, data.train.head(tc.eval_train_samples), tc.eval_batch_size);
      log.train_eval_loss = tr.loss;
      log.train_eval_acc = tr.accuracy;
      log.train_eval_ppl = tr.perplexity;
      times.eval += seconds_since(t1);
    }
  }
  if (step > start || result.finished) checkpoint(step);
  report(options.progress, make_progress("train", step, total_steps, "steps", result.finished ? result.valid.loss : std::nan(""),
                                    result.finished ? "valid loss" : "", "", true, ""));
  result.times = times;
  return result;
}

}  // namespace moescope
