// The task model facade, evaluation, and opening a trained run.
#include "moescope/model/task.hpp"

#include <cmath>
#include <filesystem>
#include <set>

#include "moescope/data/token_dataset_torch.hpp"
#include "moescope/io/hf_folder.hpp"
#include "moescope/io/tensor.hpp"
#include "moescope/io/weights_torch.hpp"
#include "moescope/model/classifier.hpp"
#include "moescope/model/lm.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"
#include "moescope/util/numbers.hpp"

namespace moescope {

namespace {
/// Builds a module from validated options; a check inside a module's reset() (TORCH_CHECK: c10::Error) that the
/// options' validation missed is still the config's fault, not an internal error.
template <class F>
std::shared_ptr<torch::nn::Module> build(F&& f) {
  try {
    return f();
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw InputError("model config: " + first_line(e));
  }
}
}  // namespace

void require_finite_weights(const torch::nn::Module& module, const std::string& file) {
  torch::NoGradGuard ng;
  for (const auto& [name, t] : state_entries(module)) {
    if (!t.defined() || !t.is_floating_point()) continue;
    const torch::Tensor bad = torch::logical_not(torch::isfinite(t.detach())).reshape({-1});
    const std::int64_t count = bad.sum().item<std::int64_t>();
    if (count == 0) continue;
    const std::int64_t flat = bad.nonzero()[0][0].item<std::int64_t>();
    std::vector<std::int64_t> index(static_cast<std::size_t>(t.dim()));
    for (std::int64_t d = t.dim() - 1, rest = flat; d >= 0; --d) {
      index[static_cast<std::size_t>(d)] = rest % t.size(d);
      rest /= t.size(d);
    }
    const double v = t.detach().reshape({-1})[flat].item<double>();
    fail_input(file, "tensor '" + name + "' holds " + nonfinite_name(v) + " at " +
                         shape_string(index) + " (" + std::to_string(count) + " of " + std::to_string(t.numel()) +
                         " values are not finite); analyses need finite weights");
  }
}

void check_model_config(const nlohmann::json& config) {
  if (!config.is_object()) throw InputError("model config: expected a JSON object");
  const std::string type = json_fields::string_or_empty(config, "type");
  if (type == "classifier") {
    ClassifierOptions o;
    from_json(config, o);
  } else if (type == "lm") {
    LMOptions o;
    from_json(config, o);
  } else {
    throw InputError("model config: field 'type' must be \"classifier\" or \"lm\", got " +
                     (config.contains("type") ? config["type"].dump() : std::string("nothing")));
  }
}

TaskModel TaskModel::create(const nlohmann::json& config) {
  check_model_config(config);  // "type" is "classifier" or "lm" from here on
  const std::string type = config["type"].get<std::string>();
  TaskModel m;
  if (type == "classifier") {
    ClassifierOptions o;
    from_json(config, o);
    m.module_ = build([&] { return Classifier(o).ptr(); });
  } else if (type == "lm") {
    LMOptions o;
    from_json(config, o);
    m.kind_ = Kind::LM;
    m.module_ = build([&] { return TransformerLM(o).ptr(); });
  }
  return m;
}

TaskModel TaskModel::from_hf(HFCausalLM model) {
  if (!model) throw std::invalid_argument("TaskModel::from_hf: no model");
  TaskModel m;
  m.kind_ = Kind::HF;
  m.module_ = model.ptr();
  return m;
}

HFCausalLMImpl& TaskModel::hf() const {
  if (kind_ != Kind::HF) throw std::logic_error("TaskModel::hf: not a Hugging Face model");
  return dynamic_cast<HFCausalLMImpl&>(*module_);
}

namespace {
ClassifierImpl& as_classifier(const std::shared_ptr<torch::nn::Module>& m) {
  return dynamic_cast<ClassifierImpl&>(*m);
}
TransformerLMImpl& as_lm(const std::shared_ptr<torch::nn::Module>& m) { return dynamic_cast<TransformerLMImpl&>(*m); }
}  // namespace

nlohmann::json TaskModel::config() const {
  nlohmann::json j;
  if (kind_ == Kind::HF) {
    const HFConfig& c = hf().config();
    nlohmann::json tensors = nlohmann::json::object();
    for (const auto& t : hf_tensor_specs(c)) tensors[t.name] = t.shape;
    return {{"type", "hf"}, {"architecture", c.architecture}, {"model_type", c.model_type},
            {"vocab_size", c.vocab_size}, {"tensors", tensors}};
  }
  if (kind_ == Kind::LM) {
    to_json(j, as_lm(module_).options);
  } else {
    to_json(j, as_classifier(module_).options);
  }
  return j;
}

TaskForward TaskModel::forward(const torch::Tensor& inputs) const {
  TaskForward f;
  if (kind_ == Kind::HF) {
    HFForwardOptions o;
    o.moe_trace = true;
    HFOutput out = hf().forward_with(inputs, o);
    f.logits = out.logits;
    for (HFMoETrace& t : out.moe) {
      RoutingInfo r;
      r.logits = std::move(t.router_logits);
      r.probs = std::move(t.router_probs);
      r.topk_indices = std::move(t.topk_experts);
      r.topk_weights = std::move(t.topk_weights);
      f.routing.push_back(std::move(r));
    }
  } else if (kind_ == Kind::LM) {
    LMOutput out = as_lm(module_).forward_with_routing(inputs);
    f.logits = out.logits;
    f.routing = std::move(out.routing);
  } else {
    ClassifierOutput out = as_classifier(module_).forward_with_routing(inputs);
    f.logits = out.logits;
    if (out.has_routing) f.routing.push_back(std::move(out.routing));
  }
  return f;
}

BatchResult TaskModel::batch_loss(const torch::Tensor& inputs, const torch::Tensor& targets) const {
  TaskForward f;
  if (kind_ == Kind::HF) {
    if (!targets.defined() || targets.sizes() != inputs.sizes())
      throw std::invalid_argument("TaskModel::batch_loss: targets must have the inputs' shape [B, S]");
    f.logits = hf().forward(inputs);
    // transformers' loss widens bfloat16 / float16 logits to float32 first
    if (f.logits.scalar_type() != torch::kDouble && f.logits.scalar_type() != torch::kFloat)
      f.logits = f.logits.to(torch::kFloat);
  } else {
    f = forward(inputs);
  }
  const auto logits = f.logits.reshape({-1, f.logits.size(-1)});
  const auto y = targets.reshape({-1});
  BatchResult r;
  r.loss = torch::nn::functional::cross_entropy(logits, y);
  {
    torch::NoGradGuard ng;
    r.correct = logits.argmax(1).eq(y.to(logits.device())).sum().item<std::int64_t>();
  }
  r.count = y.size(0);
  r.routing = std::move(f.routing);
  return r;
}

std::vector<MoELayerRef> TaskModel::moe_layers() const {
  std::vector<MoELayerRef> out;
  if (kind_ == Kind::HF) return out;
  if (kind_ == Kind::LM) {
    auto& lm = as_lm(module_);
    for (const std::int64_t b : lm.moe_blocks()) {
      SparseMoE layer = lm.moe_layer(b);
      out.push_back({static_cast<int>(b), "blocks." + std::to_string(b) + ".moe", layer.get(), layer->experts});
    }
  } else {
    auto& c = as_classifier(module_);
    if (c.moe_head() != nullptr) {
      torch::nn::ModuleList experts{nullptr};
      if (c.gated_head) experts = c.gated_head->experts;
      if (c.soft_head) experts = c.soft_head->experts;
      if (c.sparse_head) experts = c.sparse_head->experts;
      out.push_back({0, "head", c.moe_head(), experts});
    }
  }
  return out;
}

void TaskModel::to(const torch::Device& device) const { module_->to(device); }

torch::Device TaskModel::device() const {
  const auto params = module_->parameters();
  return params.empty() ? torch::Device(torch::kCPU) : params.front().device();
}

EvalResult evaluate(const TaskModel& model, const TensorSplit& split, std::int64_t batch_size) {
  if (batch_size < 1) invalid_argument("evaluate", "batch size must be >= 1, got " + std::to_string(batch_size));
  torch::NoGradGuard ng;
  const bool was_training = model.module().is_training();
  model.module().eval();
  const auto device = model.device();
  double loss_sum = 0.0;
  std::int64_t correct = 0, count = 0;
  for (std::int64_t b = 0; b < split.size(); b += batch_size) {
    const auto part = split.slice(b, std::min(split.size(), b + batch_size));
    const BatchResult r = model.batch_loss(part.inputs.to(device), part.targets.to(device));
    loss_sum += r.loss.item<double>() * static_cast<double>(r.count);
    correct += r.correct;
    count += r.count;
  }
  model.module().train(was_training);
  EvalResult e;
  e.count = count;
  if (count > 0) {
    e.loss = loss_sum / static_cast<double>(count);
    e.accuracy = static_cast<double>(correct) / static_cast<double>(count);
    e.perplexity = std::exp(e.loss);
  }
  return e;
}

DataSpec hf_default_data() {
  DataSpec d;
  d.name = "text";
  d.context = 128;
  return d;
}

std::int64_t hf_default_batch_size(const std::string& data_arg, std::int64_t context) {
  const std::int64_t c = context > 0 ? context : parse_data_arg(data_arg, hf_default_data(), "--data").context;
  return std::max<std::int64_t>(1, 1024 / std::max<std::int64_t>(1, c));
}

bool is_loadable_run(const std::string& path) { return Run::is_run(path) || is_hf_model_folder(path); }

namespace {

LoadedRun load_hf_run(const std::string& path, const RunLoadOptions& options) {
  HFLoadOptions o;
  o.dtype = options.dtype;
  o.trainable = options.trainable;
  const std::string folder = hf_model_folder(path);
  HFCausalLM m = load_hf_model(folder, o);
  m->eval();
  LoadedRun r;
  r.model = TaskModel::from_hf(m);
  r.data = hf_default_data();
  r.hf_folder = folder;
  r.options = options;
  return r;
}

}  // namespace

LoadedRun load_run(const std::string& path, const RunLoadOptions& options) {
  if (!Run::is_run(path) && is_hf_model_folder(path)) return load_hf_run(path, options);
  Run run = Run::open(path);
  const std::string& cfg = run.config_file();
  nlohmann::json model_config = run.model_config();
  DataSpec data;
  try {
    if (run.config().contains("data")) from_json(run.config()["data"], data);
  } catch (const InputError& e) {
    fail_input(cfg, e.what());
  }
  std::vector<std::string> notes;
  // Runs written before moescope stored the input statistics with the model were trained on images standardised
  // with their own train split's statistics: re-derive them from the run's data (not from any --data given now).
  if (model_config.is_object() && model_config.contains("type") && model_config["type"] == "classifier" && data.is_image() &&
      !model_config.contains("input_mean")) {
    const Dataset d = load_dataset(data);
    const ChannelStatistics s = channel_statistics(d.train.inputs);
    model_config["input_mean"] = s.mean;
    model_config["input_std"] = s.stddev;
    notes.push_back(cfg + ": the run stores no input statistics (written by an older moescope); re-derived them "
                          "from its training split as it was trained");
  }
  TaskModel model;
  try {
    model = TaskModel::create(model_config);
  } catch (const InputError& e) {
    fail_input(cfg, e.what());
  }
  // A legacy run's weights have no standardisation buffers: those come from the statistics re-derived above.
  const std::set<std::string> optional =
      notes.empty() ? std::set<std::string>{} : std::set<std::string>{"input_mean", "input_std"};
  load_module_weights(model.module(), run.weights_file(), optional);
  require_finite_weights(model.module(), run.weights_file());
  model.module().eval();
  LoadedRun loaded{std::move(run), std::move(model), std::move(data), std::move(notes), "", options};
  return loaded;
}

namespace {

// Throws InputError naming `source` when the loaded data cannot feed the run's model (kind, vocabulary, context,
// input shape, classes).
void check_data_fits_run(const EvalData& e, const LoadedRun& run, const std::string& source) {
  const nlohmann::json m = run.model.config();
  if (run.model.is_lm()) {
    if (!e.data.is_text) fail_input(source, "the run's model is an LM; its data must be text, not " + e.spec.name);
    if (e.data.num_classes > m.value("vocab_size", std::int64_t{0}))
      fail_input(source, "the data's vocabulary (" + std::to_string(e.data.num_classes) +
                             " tokens) is larger than the model's (" + std::to_string(m.value("vocab_size", std::int64_t{0})) + ")");
    if (e.spec.context > m.value("context", std::int64_t{0}))
      fail_input(source, "sequences of " + std::to_string(e.spec.context) + " tokens are longer than the model's context (" +
                             std::to_string(m.value("context", std::int64_t{0})) + ")");
  } else {
    if (e.data.is_text) fail_input(source, "the run's model is a classifier; its data cannot be text");
    const bool image = e.data.input_shape.size() == 3;
    const std::int64_t channels = m.value("in_channels", std::int64_t{0}), size = m.value("image_size", std::int64_t{0});
    const bool fits = image ? e.data.input_shape[0] == channels && e.data.input_shape[1] == size
                            : e.data.input_shape.at(0) == channels && size == 1;
    if (!fits || e.data.num_classes != m.value("num_classes", std::int64_t{0}))
      fail_input(source, "the data (" + e.spec.name + ", " + std::to_string(e.data.num_classes) +
                             " classes) does not fit the run's model (in_channels " + std::to_string(channels) +
                             ", image_size " + std::to_string(size) + ", num_classes " +
                             std::to_string(m.value("num_classes", std::int64_t{0})) + ")");
  }
}

}  // namespace

EvalData load_eval_data(const LoadedRun& run, const EvalSpec& spec) {
  if (spec.max_samples < 0) invalid_argument("load_eval_data", "max_samples must be >= 0 (0: all), got " + std::to_string(spec.max_samples));
  if (spec.batch_size < 1) invalid_argument("load_eval_data", "batch_size must be >= 1, got " + std::to_string(spec.batch_size));
  if (spec.splits.empty()) invalid_argument("load_eval_data", "no split named");
  if (spec.context < 0) invalid_argument("load_eval_data", "context must be >= 0 (0: the data's), got " + std::to_string(spec.context));
  EvalData e;
  e.spec = parse_data_arg(spec.data, run.data, "data");
  if (spec.context > 0) {
    if (!e.spec.is_text() && !e.spec.is_tokens())
      throw InputError("context: " + e.spec.name + " is not text: sequences have no length to set");
    e.spec.context = spec.context;
  }
  if (run.is_hf()) {
    const HFConfig& c = run.model.hf().config();
    if (!e.spec.is_tokens())
      throw InputError("data " + (spec.data.empty() ? e.spec.name : spec.data) + ": " + run.hf_folder +
                       " is a Hugging Face model: give text:PATH (encoded by its tokenizer.json) or token ids "
                       "(tokens:FILE, --tokens FILE)");
    if (e.spec.path.empty())
      fail_input(run.hf_folder, "a Hugging Face model folder holds no data: give --data text:PATH (a text file or "
                                "folder, encoded by its tokenizer.json) or --tokens FILE");
    std::error_code ec;
    const std::string tok = run.hf_folder + "/tokenizer.json";
    TokenDataContext ctx;
    ctx.tokenizer = std::filesystem::is_regular_file(tok, ec) ? tok : "";
    ctx.vocab_size = c.vocab_size;
    ctx.vocab_source = c.file;
    e.data = load_token_dataset(e.spec, ctx);
  } else {
    e.data = load_dataset(e.spec);
    check_data_fits_run(e, run, spec.data.empty() ? run.run.config_file() : spec.data);
  }
  const std::string source = run.is_hf() ? e.spec.path : spec.data.empty() ? run.run.config_file() : spec.data;
  for (const std::string& name : spec.splits) {
    const TensorSplit s = e.data.split(name, "split").head(spec.max_samples);
    if (s.size() == 0 && run.is_hf())
      fail_input(source, "the " + name + " split holds no sequence of " + std::to_string(e.spec.context) +
                             " tokens (train: the first 90% of the ids, valid: the next 5%, test: the last "
                             "5%; lower --context or give more text)");
    if (s.size() == 0) fail_input(source, "the " + name + " split of " + e.spec.name + " is empty");
    e.names.push_back(name);
    e.splits.push_back(s);
  }
  return e;
}

}  // namespace moescope
