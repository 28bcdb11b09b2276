// Data + model of a run: JSON spec -> tensors and modules; loss, metrics, weights, and opening a trained run.
#include "moescope/train/task.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "../model/json_fields.hpp"
#include "moescope/data/image.hpp"
#include "moescope/data/split.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/model/classifier.hpp"
#include "moescope/model/lm.hpp"
#include "moescope/util/error.hpp"
#include "moescope/version.hpp"

namespace fs = std::filesystem;

namespace moescope {

// ---------------------------------------------------------------------------------------------- DataSpec JSON

void to_json(nlohmann::json& j, const DataSpec& s) {
  const auto& c = s.clustered;
  j = nlohmann::json{{"name", s.name},
                     {"path", s.path},
                     {"valid_fraction", s.valid_fraction},
                     {"max_train", s.max_train},
                     {"max_eval", s.max_eval},
                     {"context", s.context},
                     {"clustered",
                      {{"samples", c.samples},
                       {"dim", c.dim},
                       {"clusters", c.clusters},
                       {"classes", c.classes},
                       {"centre_scale", c.centre_scale},
                       {"noise", c.noise}}},
                     {"seed", s.seed}};
}

void from_json(const nlohmann::json& j, DataSpec& s) {
  const char* what = "data config";
  detail::check_fields(j, what, "data",
                       {"name", "path", "valid_fraction", "max_train", "max_eval", "context", "clustered", "seed"});
  detail::read_field(j, what, "name", s.name);
  detail::read_field(j, what, "path", s.path);
  detail::read_field(j, what, "valid_fraction", s.valid_fraction);
  detail::read_field(j, what, "max_train", s.max_train);
  detail::read_field(j, what, "max_eval", s.max_eval);
  detail::read_field(j, what, "context", s.context);
  detail::read_field(j, what, "seed", s.seed);
  if (const auto it = j.find("clustered"); it != j.end()) {
    const char* cw = "data config: clustered";
    detail::check_fields(*it, cw, "clustered", {"samples", "dim", "clusters", "classes", "centre_scale", "noise"});
    auto& c = s.clustered;
    detail::read_field(*it, cw, "samples", c.samples);
    detail::read_field(*it, cw, "dim", c.dim);
    detail::read_field(*it, cw, "clusters", c.clusters);
    detail::read_field(*it, cw, "classes", c.classes);
    detail::read_field(*it, cw, "centre_scale", c.centre_scale);
    detail::read_field(*it, cw, "noise", c.noise);
  }
  static const char* const kNames[] = {"fashion-mnist", "cifar10", "clustered", "text-word", "text-byte",
                                       "text-char"};
  if (std::find(std::begin(kNames), std::end(kNames), s.name) == std::end(kNames)) {
    throw InputError("data config: unknown data set '" + s.name +
                     "' (fashion-mnist, cifar10, clustered, text-word, text-byte, text-char)");
  }
  if (!(s.valid_fraction >= 0.0 && s.valid_fraction < 1.0)) {
    throw InputError("data config: valid_fraction must be in [0, 1)");
  }
  if (s.context < 1) throw InputError("data config: context must be >= 1");
}

DataSpec parse_data_arg(const std::string& arg, const DataSpec& base) {
  if (arg.empty()) return base;
  if (arg.size() > 5 && arg.compare(arg.size() - 5, 5, ".json") == 0) {
    const nlohmann::json j = read_json_file(arg, "the data spec");
    DataSpec s;
    try {
      from_json(j, s);
    } catch (const InputError& e) {
      fail_input(arg, e.what());
    }
    return s;
  }
  DataSpec s = base;
  const auto colon = arg.find(':');
  const std::string name = arg.substr(0, colon);
  if (name != s.name) s.path.clear();
  s.name = name;
  if (colon != std::string::npos) s.path = arg.substr(colon + 1);
  nlohmann::json j = s;
  from_json(j, s);  // validates the name
  return s;
}

// ---------------------------------------------------------------------------------------------- data

TensorSplit TensorSplit::slice(std::int64_t begin, std::int64_t end) const {
  TensorSplit out;
  out.inputs = inputs.slice(0, begin, end);
  out.targets = targets.slice(0, begin, end);
  if (groups.defined()) out.groups = groups.slice(0, begin, end);
  return out;
}

const TensorSplit& TaskData::split(const std::string& name) const {
  if (name == "train") return train;
  if (name == "valid") return valid;
  if (name == "test") return test;
  throw InputError("unknown split '" + name + "' (train, valid, test)");
}

namespace {

torch::Tensor int64_tensor(const std::vector<std::int64_t>& v) {
  return torch::tensor(torch::ArrayRef<std::int64_t>(v), torch::kInt64);
}

/// Pixels / 255 as float32 [N, C, H, W].
torch::Tensor image_tensor(const ImageSet& set) {
  auto bytes = torch::from_blob(const_cast<std::uint8_t*>(set.pixels.data()),
                                {set.n, set.channels, set.height, set.width}, torch::kUInt8);
  return bytes.to(torch::kFloat32).div_(255.0f);
}

TensorSplit image_split(const ImageSet& set) {
  TensorSplit s;
  s.inputs = image_tensor(set);
  s.targets = int64_tensor(set.labels);
  return s;
}

TaskData load_images(const DataSpec& spec) {
  const bool fashion = spec.name == "fashion-mnist";
  const std::string dir = spec.path.empty() ? (fashion ? std::string(kFashionMnistDir) : std::string()) : spec.path;
  if (dir.empty()) throw InputError("data config: cifar10 needs a path (the cifar-10-batches-bin folder)");
  ImageSet train_all = fashion ? read_fashion_mnist(dir, Split::train) : read_cifar10(dir, Split::train);
  ImageSet test = fashion ? read_fashion_mnist(dir, Split::test) : read_cifar10(dir, Split::test);
  const IndexSplit parts = split_indices(train_all.n, spec.valid_fraction, spec.seed);

  TaskData d;
  d.spec = spec;
  d.num_classes = train_all.classes;
  d.input_shape = {train_all.channels, train_all.height, train_all.width};
  d.train = image_split(subset(train_all, parts.train)).head(spec.max_train);
  d.valid = image_split(subset(train_all, parts.valid)).head(spec.max_eval);
  d.test = image_split(test).head(spec.max_eval);
  // Per-channel standardisation with the (possibly truncated) train split's statistics, in float64.
  const auto x = d.train.inputs.to(torch::kFloat64).transpose(0, 1).reshape({train_all.channels, -1});
  const auto mean = x.mean(1);
  const auto sd = x.std(1, /*unbiased=*/false).clamp_min(1e-12);
  for (std::int64_t c = 0; c < train_all.channels; ++c) {
    d.mean.push_back(mean[c].item<double>());
    d.stddev.push_back(sd[c].item<double>());
  }
  const auto m = mean.to(torch::kFloat32).view({1, -1, 1, 1});
  const auto s = sd.to(torch::kFloat32).view({1, -1, 1, 1});
  for (TensorSplit* part : {&d.train, &d.valid, &d.test}) {
    if (part->size() > 0) part->inputs = (part->inputs - m) / s;
  }
  return d;
}

TaskData load_clustered(const DataSpec& spec) {
  ClusteredTaskOptions o = spec.clustered;
  o.seed = spec.seed;
  const std::int64_t n_train = o.samples;
  const std::int64_t n_test = std::max<std::int64_t>(1, n_train / 5);
  o.samples = n_train + n_test;  // the same seed extends the same sequence: test samples come after train
  const ClusteredTask task = make_clustered_task(o);
  auto x = torch::from_blob(const_cast<float*>(task.features.data()), {task.n, task.dim}, torch::kFloat32).clone();
  auto y = int64_tensor(task.labels);
  auto g = int64_tensor(task.cluster);
  TensorSplit all{x, y, g};
  const IndexSplit parts = split_indices(n_train, spec.valid_fraction, spec.seed);
  auto pick = [&](const std::vector<std::int64_t>& idx) {
    const auto i = int64_tensor(idx);
    return TensorSplit{x.index_select(0, i), y.index_select(0, i), g.index_select(0, i)};
  };
  TaskData d;
  d.spec = spec;
  d.num_classes = task.classes;
  d.input_shape = {task.dim};
  d.train = pick(parts.train).head(spec.max_train);
  d.valid = pick(parts.valid).head(spec.max_eval);
  d.test = all.slice(n_train, n_train + n_test).head(spec.max_eval);
  return d;
}

/// Non-overlapping windows of `context` tokens; targets are the next tokens.
TensorSplit windows(const std::vector<std::int32_t>& ids, std::int64_t context, std::int64_t max_n) {
  const std::int64_t total = static_cast<std::int64_t>(ids.size());
  std::int64_t n = total > 0 ? (total - 1) / context : 0;
  if (max_n > 0) n = std::min(n, max_n);
  TensorSplit s;
  auto all = torch::from_blob(const_cast<std::int32_t*>(ids.data()), {total}, torch::kInt32).to(torch::kInt64);
  s.inputs = n > 0 ? all.slice(0, 0, n * context).view({n, context}).clone() : torch::empty({0, context}, torch::kInt64);
  s.targets = n > 0 ? all.slice(0, 1, n * context + 1).view({n, context}).clone()
                    : torch::empty({0, context}, torch::kInt64);
  return s;
}

TaskData load_text(const DataSpec& spec) {
  if (spec.path.empty()) throw InputError("data config: " + spec.name + " needs a path");
  TextCorpus corpus;
  if (spec.name == "text-word") {
    corpus = read_word_corpus(spec.path);
  } else {
    const std::string text = read_text(spec.path);
    corpus = spec.name == "text-byte" ? byte_corpus(text) : char_corpus(text);
  }
  TaskData d;
  d.spec = spec;
  d.is_text = true;
  d.num_classes = corpus.vocab.size();
  d.input_shape = {spec.context};
  d.train = windows(corpus.train, spec.context, spec.max_train);
  d.valid = windows(corpus.valid, spec.context, spec.max_eval);
  d.test = windows(corpus.test, spec.context, spec.max_eval);
  if (d.train.size() == 0) fail_input(spec.path, "too little text for one training sequence of " +
                                                     std::to_string(spec.context) + " tokens");
  d.vocab = std::make_shared<Vocabulary>(std::move(corpus.vocab));
  return d;
}

}  // namespace

TaskData load_task_data(const DataSpec& spec) {
  if (spec.name == "fashion-mnist" || spec.name == "cifar10") return load_images(spec);
  if (spec.name == "clustered") return load_clustered(spec);
  if (spec.name == "text-word" || spec.name == "text-byte" || spec.name == "text-char") return load_text(spec);
  throw InputError("data config: unknown data set '" + spec.name + "'");
}

// ---------------------------------------------------------------------------------------------- model

TaskModel TaskModel::create(const nlohmann::json& config) {
  if (!config.is_object()) throw InputError("model config: expected a JSON object");
  const std::string type = config.value("type", std::string());
  TaskModel m;
  if (type == "classifier") {
    ClassifierOptions o;
    from_json(config, o);
    m.module_ = Classifier(o).ptr();
  } else if (type == "lm") {
    LMOptions o;
    from_json(config, o);
    m.is_lm_ = true;
    m.module_ = TransformerLM(o).ptr();
  } else {
    throw InputError("model config: \"type\" must be \"classifier\" or \"lm\", got " + config.value("type", "nothing"));
  }
  return m;
}

namespace {
ClassifierImpl& as_classifier(const std::shared_ptr<torch::nn::Module>& m) {
  return dynamic_cast<ClassifierImpl&>(*m);
}
TransformerLMImpl& as_lm(const std::shared_ptr<torch::nn::Module>& m) { return dynamic_cast<TransformerLMImpl&>(*m); }
}  // namespace

nlohmann::json TaskModel::config() const {
  nlohmann::json j;
  if (is_lm_) {
    to_json(j, as_lm(module_).options);
  } else {
    to_json(j, as_classifier(module_).options);
  }
  return j;
}

TaskForward TaskModel::forward(const torch::Tensor& inputs) const {
  TaskForward f;
  if (is_lm_) {
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
  TaskForward f = forward(inputs);
  const auto logits = f.logits.reshape({-1, f.logits.size(-1)});
  const auto y = targets.reshape({-1});
  BatchResult r;
  r.loss = torch::nn::functional::cross_entropy(logits, y);
  {
    torch::NoGradGuard ng;
    r.correct = logits.argmax(1).eq(y).sum().item<std::int64_t>();
  }
  r.count = y.size(0);
  r.routing = std::move(f.routing);
  return r;
}

std::vector<MoELayerRef> TaskModel::moe_layers() const {
  std::vector<MoELayerRef> out;
  if (is_lm_) {
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
  if (batch_size < 1) throw InputError("batch size must be >= 1");
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

// ---------------------------------------------------------------------------------------------- weights

namespace {
/// The state_dict: parameters then buffers, each by its dotted name.
std::vector<std::pair<std::string, torch::Tensor>> state_entries(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters(true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}
}  // namespace

void write_tensor_map(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      bool float64, const std::vector<std::pair<std::string, std::string>>& metadata) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> host;  // keeps the bytes alive until written
  std::vector<TensorToWrite> out;
  host.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    const bool integral = !at::isFloatingType(t.scalar_type());
    const auto dtype = integral ? torch::kInt64 : float64 ? torch::kFloat64 : torch::kFloat32;
    host.push_back(t.detach().to(torch::kCPU, dtype).contiguous());
    TensorToWrite w;
    w.info.name = name;
    w.info.dtype = integral ? DType::I64 : float64 ? DType::F64 : DType::F32;
    w.info.shape = host.back().sizes().vec();
    w.data = host.back().data_ptr();
    out.push_back(w);
  }
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : metadata) meta[k] = v;
  write_safetensors(path, out, meta);
}

void save_weights(const TaskModel& model, const std::string& path,
                  const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::vector<std::pair<std::string, std::string>> meta{{"format", "pt"}, {"moescope_version", kVersion}};
  meta.insert(meta.end(), metadata.begin(), metadata.end());
  write_tensor_map(path, state_entries(model.module()), /*float64=*/false, meta);
}

void load_weights(const TaskModel& model, const std::string& path) {
  const SafetensorsFile file(path);
  std::map<std::string, const TensorInfo*> infos;
  for (const auto& info : file.tensors()) infos[info.name] = &info;
  torch::NoGradGuard ng;
  std::size_t used = 0;
  for (auto& [name, t] : state_entries(model.module())) {
    const auto it = infos.find(name);
    if (it == infos.end()) fail_input(path, "tensor '" + name + "' is missing (does config.json match the weights?)");
    const TensorInfo& info = *it->second;
    if (info.shape != t.sizes().vec()) {
      fail_input(path, "tensor '" + name + "' has shape " + shape_string(info.shape) + ", the model expects " +
                           shape_string(t.sizes().vec()));
    }
    const bool integral = !at::isFloatingType(t.scalar_type());
    if (integral) {
      if (info.dtype != DType::I64) fail_input(path, "tensor '" + name + "' should be I64");
      const ByteView raw = file.raw(name);
      auto host = torch::empty(t.sizes(), torch::kInt64);
      std::memcpy(host.data_ptr(), raw.data, raw.size);
      t.copy_(host);
    } else {
      auto host = torch::empty(t.sizes(), torch::kFloat32);
      file.read_f32(name, 0, info.numel(), host.data_ptr<float>());
      t.copy_(host);
    }
    ++used;
  }
  if (used != infos.size()) {
    for (const auto& [name, _] : infos) {
      bool known = false;
      for (const auto& e : state_entries(model.module())) known = known || e.first == name;
      if (!known) fail_input(path, "tensor '" + name + "' is not part of the model");
    }
  }
}

// ---------------------------------------------------------------------------------------------- runs

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) fail_input(path, "cannot open " + what);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail_input(path, std::string("not valid JSON: ") + e.what());
  }
}

std::int64_t step_number(const std::string& dir) {
  static const std::regex re("step_([0-9]+)");
  std::smatch m;
  const std::string name = fs::path(dir).filename().string();
  return std::regex_match(name, m, re) ? std::stoll(m[1].str()) : -1;
}

std::string latest_step_dir(const std::string& run_dir, const std::string& file) {
  std::error_code ec;
  std::string best;
  std::int64_t best_step = -1;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::int64_t s = step_number(entry.path().string());
    if (s > best_step && fs::exists(entry.path() / file, ec)) {
      best_step = s;
      best = entry.path().string();
    }
  }
  return best;
}

namespace {

/// The step directory `path` stands for, or empty.
fs::path step_dir_of(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (!fs::is_directory(path, ec)) return {};
  if (fs::exists(path / "model.safetensors", ec)) return path;
  return latest_step_dir(path.string(), "model.safetensors");
}

fs::path config_of(const fs::path& step_dir) {
  std::error_code ec;
  if (fs::exists(step_dir / "config.json", ec)) return step_dir / "config.json";
  if (fs::exists(step_dir.parent_path() / "config.json", ec)) return step_dir.parent_path() / "config.json";
  return {};
}

}  // namespace

bool is_run_path(const std::string& path) {
  const fs::path step = step_dir_of(path);
  if (step.empty()) return false;
  const fs::path cfg = config_of(step);
  if (cfg.empty()) return false;
  std::ifstream in(cfg);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("model");
}

LoadedRun load_run(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail_input(path, "no such file or directory");
  const fs::path step = step_dir_of(path);
  if (step.empty()) fail_input(path, "not a moescope run (no model.safetensors and no step_N directory holding one)");
  const fs::path cfg = config_of(step);
  if (cfg.empty()) fail_input(step.string(), "no config.json here or in the parent directory");
  LoadedRun run;
  run.config = read_json_file(cfg.string(), "the run config");
  if (!run.config.is_object() || !run.config.contains("model")) fail_input(cfg.string(), "has no \"model\" object");
  try {
    run.model = TaskModel::create(run.config["model"]);
    if (run.config.contains("data")) from_json(run.config["data"], run.data);
  } catch (const InputError& e) {
    fail_input(cfg.string(), e.what());
  }
  run.directory = step.string();
  run.weights_file = fs::is_regular_file(path, ec) ? path : (step / "model.safetensors").string();
  run.step = step_number(step.string());
  load_weights(run.model, run.weights_file);
  run.model.module().eval();
  return run;
}

}  // namespace moescope
