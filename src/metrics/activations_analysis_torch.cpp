// The `activations` analysis: an own model over a data split (each MoE layer's input tokens go to every expert),
// or any checkpoint's experts on recorded inputs or the random probe; with the weight geometry beside it.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "moescope/io/checkpoint.hpp"
#include "moescope/io/hf_folder.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/metrics/hf_activations_torch.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/memory.hpp"
#include "moescope/util/json.hpp"

namespace moescope {

std::vector<ExpertBank> model_expert_banks(const TaskModel& model) {
  std::vector<ExpertBank> banks;
  for (const MoELayerRef& ref : model.moe_layers()) banks.push_back(layer_expert_bank(ref));
  return banks;
}

ActivationsResult model_activations(const TaskModel& model, const TensorSplit& split, const ActivationsOptions& opts,
                                    const std::vector<std::pair<std::string, int>>& keys) {
  std::vector<MoELayerRef> refs = model.moe_layers();
  if (refs.empty()) throw InputError("the model has no MoE layers");
  std::vector<ExpertBank> banks;
  for (const auto& r : refs) banks.push_back(layer_expert_bank(r));
  if (!keys.empty()) {
    if (keys.size() != banks.size())
      throw std::invalid_argument("model_activations: " + std::to_string(keys.size()) + " keys for " +
                                  std::to_string(banks.size()) + " MoE layers");
    for (std::size_t i = 0; i < banks.size(); ++i) banks[i].key = keys[i].first, banks[i].layer = keys[i].second;
  }
  if (split.size() == 0) throw InputError("the data split is empty");
  const std::int64_t bs = std::max<std::int64_t>(1, opts.batch_size);

  std::vector<LayerActivationAccumulator> states;
  states.reserve(banks.size());
  for (const auto& b : banks) states.emplace_back(b, "model");

  // The probes and the training flag are put back whatever happens.
  struct Restore {
    std::vector<MoELayerRef>& refs;
    torch::nn::Module& module;
    bool was_training;
    ~Restore() {
      for (auto& r : refs) r.layer->set_probe(nullptr);
      module.train(was_training);
    }
  } restore{refs, model.module(), model.module().is_training()};
  std::vector<std::shared_ptr<Probe>> probes;
  for (auto& r : refs) {
    auto p = std::make_shared<Probe>();
    p->record_inputs = true;
    r.layer->set_probe(p);
    probes.push_back(p);
  }
  model.module().eval();
  torch::NoGradGuard no_grad;
  const torch::Device device = model.device();

  ActivationsResult res;
  res.inputs = "data";
  std::vector<std::int64_t> seen(banks.size(), 0);
  for (std::int64_t begin = 0; begin < split.size(); begin += bs) {
    const TensorSplit b = split.slice(begin, std::min(split.size(), begin + bs));
    const TaskForward f = model.forward(b.inputs.to(device));
    res.samples += b.size();
    bool all_full = opts.max_tokens > 0;
    for (std::size_t l = 0; l < states.size(); ++l) {
      Probe& p = *probes[l];
      if (p.inputs.size() != 1 || f.routing.size() != states.size())
        throw std::logic_error(banks[l].key + ": expected one recorded forward call and routing per layer and batch");
      const torch::Tensor x = p.inputs.front();
      std::int64_t rows = x.size(0);
      if (opts.max_tokens > 0) rows = std::min(rows, opts.max_tokens - seen[l]);
      if (rows > 0) {
        states[l].add(x, token_routing(f.routing[l]), rows);
        seen[l] += rows;
      }
      if (opts.max_tokens > 0 && seen[l] < opts.max_tokens) all_full = false;
      p.clear();
    }
    report(opts.progress, make_progress("activations", res.samples, split.size(), "samples", std::nan(""), "", "",
                                   res.samples == split.size()));
    if (all_full) break;
  }
  for (const auto& s : states) res.layers.push_back(s.finish());
  res.description = "model forward (eval mode) over " + std::to_string(res.samples) +
                    " samples of the data; each MoE layer's input tokens given to every expert";
  return res;
}

namespace {

namespace fs = std::filesystem;

bool wanted(const std::vector<int>& layers, int layer) {
  return layers.empty() || std::find(layers.begin(), layers.end(), layer) != layers.end();
}

// Experts per token of a foreign checkpoint: the request's top_k, else config.json's num_experts_per_tok beside it,
// else the family's usual value (Switch 1, others 2).
std::int64_t foreign_top_k(const ActivationsRequest& r, const Layout& layout, std::vector<std::string>& notes) {
  if (r.top_k > 0) return r.top_k;
  const fs::path p(r.checkpoint);
  const fs::path cfg = fs::is_directory(p) ? p / "config.json" : p.parent_path() / "config.json";
  std::error_code ec;
  if (fs::is_regular_file(cfg, ec)) {
    std::ifstream f(cfg);
    const auto j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) notes.push_back(cfg.string() + ": not valid JSON, not read for the experts per token");
    if (j.is_object())
      for (const char* k : {"num_experts_per_tok", "moe_top_k", "num_experts_per_token"})
        if (j.contains(k) && j[k].is_number_integer() && j[k].get<std::int64_t>() > 0) return j[k].get<std::int64_t>();
  }
  return layout.family == "switch" ? 1 : 2;
}

// The largest allocations of one layer's pass: its experts' matrices in float32 when read from a checkpoint (with
// the float64 staging of the largest one), and per batch every expert's output for every token ([T, E, O] float32,
// and its copy) with one expert's intermediate activations.
std::vector<MemoryItem> activations_memory(const MoELayerLayout& l, std::int64_t tokens_per_batch, bool own) {
  std::vector<MemoryItem> items;
  const auto E = static_cast<double>(l.experts.size());
  double width = 1, weights = 0, largest = 0;
  for (const auto& e : l.experts)
    for (const auto& m : e.matrices) {
      width = std::max<double>(width, static_cast<double>(std::max(m.rows, m.cols)));
      weights += static_cast<double>(m.numel()) * 4.0;
      largest = std::max(largest, static_cast<double>(m.numel()) * 8.0);
    }
  if (!own) items.push_back({l.key + "'s expert matrices in float32", weights + largest});
  const double T = static_cast<double>(tokens_per_batch);
  items.push_back({"expert outputs of a batch (" + std::to_string(tokens_per_batch) + " tokens x " +
                       std::to_string(l.experts.size()) + " experts x width " + std::to_string(static_cast<long long>(width)) +
                       ", float32, twice)",
                   T * E * width * 8.0});
  items.push_back({"one expert's activations on a batch", T * width * 16.0});
  return items;
}

}  // namespace

ActivationsAnalysis analyse_activations(const ActivationsRequest& r) {
  if (r.random_probe && !r.activations_file.empty())
    throw InputError(r.activations_file + ": give recorded activations or the random probe, not both");
  ActivationsAnalysis a;
  const bool own = Run::is_run(r.checkpoint);
  // A Hugging Face model folder runs on data unless recorded inputs or the random probe are asked for.
  const bool hf = !own && is_hf_model_folder(r.checkpoint) && r.activations_file.empty() && !r.random_probe;
  std::optional<LoadedRun> run;
  a.weights_file = r.checkpoint;
  if (own) {
    run = load_run(r.checkpoint);
    a.weights_file = run->weights_file();
    a.notes = run->notes;
  } else if (hf) {
    RunLoadOptions lo;
    lo.dtype = r.dtype;
    lo.trainable = "";  // no gradients
    run = load_run(r.checkpoint, lo);
    a.weights_file = run->weights_file();
  }
  const auto src = open_checkpoint(a.weights_file);
  LayoutOptions lo;
  lo.expert_pattern = r.expert_pattern;
  lo.pattern_source = r.expert_pattern_source;
  const Layout layout = detect_layout(*src, lo);
  const std::vector<const MoELayerLayout*> layers = select_layers(layout, r.layers, r.checkpoint);
  std::unique_ptr<SafetensorsFile> recorded;
  if (!r.activations_file.empty()) recorded = std::make_unique<SafetensorsFile>(r.activations_file);
  {
    // Tokens per batch: samples for a classifier's head, samples x context for an LM's layers (data path).
    std::int64_t tokens = std::max<std::int64_t>(1, r.options.batch_size);
    if (own && !recorded && !r.random_probe && run->model.is_lm())
      tokens *= std::max<std::int64_t>(1, run->model.config().value("context", std::int64_t{1}));
    std::vector<MemoryItem> worst;
    double worst_bytes = -1;
    for (const MoELayerLayout* l : layers) {
      const auto items = activations_memory(*l, tokens, own);
      double b = 0;
      for (const auto& i : items) b += i.bytes;
      if (b > worst_bytes) worst_bytes = b, worst = items;
    }
    check_memory("activations", worst, "lower --batch-size (tokens per forward pass; results do not depend on it)");
  }
  a.meta.family = layout.family;
  a.meta.batch_size = r.options.batch_size;
  a.meta.max_tokens = r.options.max_tokens;
  a.meta.activations_file = r.activations_file;

  std::map<std::string, const MoELayerLayout*> layout_of;  // key -> the checkpoint's layer
  if (own) {
    // Name the model's layers as the checkpoint layout does, so that /activations and /geometry keys agree.
    std::vector<ExpertBank> banks = model_expert_banks(run->model);
    std::vector<std::pair<std::string, int>> keys;
    for (auto& b : banks) {
      for (const auto& l : layout.layers)
        if (l.prefix == b.prefix) b.key = l.key, b.layer = l.layer, layout_of[b.key] = &l;
      keys.emplace_back(b.key, b.layer);
      a.meta.top_k[b.key] = b.top_k;
      a.meta.expert_function[b.key] = b.kind;
    }
    if (recorded || r.random_probe) {
      std::vector<ExpertBank> kept;
      for (auto& b : banks)
        if (wanted(r.layers, b.layer)) kept.push_back(std::move(b));
      a.result = recorded ? recorded_activations(kept, *recorded, r.options) : random_activations(kept, r.options);
    } else {
      const DataSpec spec = parse_data_arg(r.data, run->data, "data");
      const Dataset data = load_dataset(spec);
      a.meta.split = r.split;
      a.meta.data = nlohmann::json(spec).dump();
      a.result = model_activations(run->model, data.split(r.split, "split"), r.options, keys);
      std::vector<LayerActivations> kept;  // the model runs whole; keep the layers asked for
      for (auto& l : a.result.layers)
        if (wanted(r.layers, l.layer)) kept.push_back(std::move(l));
      a.result.layers = std::move(kept);
    }
  } else if (hf) {
    EvalSpec es;
    es.data = r.data;
    es.splits = {r.split};
    es.max_samples = 0;  // hf_activations stops at max_tokens
    es.batch_size = std::max<std::int64_t>(1, r.options.batch_size);
    es.context = r.context;
    const EvalData data = load_eval_data(*run, es);
    a.meta.split = r.split;
    a.meta.data = nlohmann::json(data.spec).dump();
    std::vector<HFLayerKey> keys;
    for (const HFLayerKey& k : hf_layer_keys(run->model.hf(), layout)) {
      if (!wanted(r.layers, static_cast<int>(k.layer))) continue;
      keys.push_back(k);
      a.meta.expert_function[k.key] = "swiglu";
      for (const auto& l : layout.layers)
        if (l.key == k.key) layout_of[k.key] = &l;
    }
    HFActivations h = hf_activations(run->model, data.splits.front(), keys, r.options);
    a.result = std::move(h.result);
    a.shared = std::move(h.shared);
    for (const auto& [key, k] : h.top_k) a.meta.top_k[key] = k;
  } else {
    if (!r.data.empty())
      throw InputError(r.checkpoint + ": data needs one of moescope's runs or a Hugging Face model folder; for other "
                       "checkpoints give recorded activations or the random probe");
    if (!recorded && !r.random_probe)
      throw InputError(r.checkpoint + ": not one of moescope's runs: give recorded activations (layer inputs) or the "
                       "random probe");
    const std::int64_t k = foreign_top_k(r, layout, a.notes);
    std::vector<std::string> keys;
    for (const auto& l : layout.layers) keys.push_back(l.key);
    if (recorded) check_recorded_names(*recorded, keys);
    a.result.inputs = recorded ? "recorded" : "random";
    a.result.description = recorded ? recorded_description(r.activations_file) : random_description(r.options);
    for (const MoELayerLayout* l : layers) {  // one layer's experts in memory at a time
      if (recorded && !recorded->find(l->key + ".inputs")) {
        a.notes.push_back(l->key + " has no recorded inputs, skipped");
        continue;
      }
      const ExpertBank bank = checkpoint_expert_bank(*src, layout, *l, k);
      a.meta.top_k[l->key] = bank.top_k;
      a.meta.expert_function[l->key] = bank.kind;
      layout_of[l->key] = l;
      a.result.layers.push_back(recorded ? *recorded_layer(bank, *recorded, r.options) : random_layer(bank, r.options));
    }
    if (a.result.layers.empty()) fail_input(r.activations_file, "no tensor <key>.inputs for the chosen MoE layers");
  }

  if (r.geometry) {
    CheckpointGeometry g;
    g.family = layout.family;
    for (const auto& l : a.result.layers) {
      const auto it = layout_of.find(l.key);
      if (it == layout_of.end()) {
        a.notes.push_back("geometry: " + l.key + " has no experts in the checkpoint layout, left out");
        continue;
      }
      g.layers.push_back(expert_geometry(*src, *it->second, r.geometry_options));
      g.prefixes.push_back(it->second->prefix);
      a.notes.insert(a.notes.end(), g.layers.back().notes.begin(), g.layers.back().notes.end());
      a.overlaps.push_back({l.key, g.layers.back().overlap, l.overlap.overlap, g.layers.back().mso, l.overlap.mso});
    }
    if (!a.overlaps.empty()) a.comparison = compare_spaces(a.overlaps);
    a.geometry = std::move(g);
  }
  return a;
}

void write_activations_analysis(ReportWriter& w, const ActivationsAnalysis& a) {
  write_activations(w, a.result, a.meta);
  write_shared_experts(w, a.shared);
  if (a.geometry) write_geometry(w, *a.geometry);
  if (a.comparison) write_space_comparison(w, a.overlaps, *a.comparison, a.weights_file, "this report");
}

}  // namespace moescope
