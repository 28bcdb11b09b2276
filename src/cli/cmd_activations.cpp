// moescope activations CKPT [--data D] [--split test] [--max-tokens N] [--activations FILE | --probe random]
//                          [--batch-size B] [--top-k K] [--layers L] [--geometry] -o R.h5
//   activation overlap of the experts (every token to every expert) and routing statistics per MoE layer; with
//   --geometry also the weight geometry and the weight-vs-activation comparison in the same report.
// moescope compare-spaces R.h5 [--geometry G.h5] -o C.h5
//   weight overlap vs activation overlap per layer and expert pair, with Pearson / Spearman correlations.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "common.hpp"
#include "moescope/io/checkpoint.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/metrics/activations.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/metrics/geometry.hpp"
#include "moescope/train/task.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDefinition =
    "y_e(t) = expert e on token t's layer input (every expert sees every token); c_ij(t) = cosine(y_i(t), y_j(t)); "
    "overlap = mean over tokens of c_ij; mean_overlap / mso = mean of c_ij / c_ij^2 over (token, pair i!=j) "
    "(arXiv:2601.00457); routed_* = over tokens routed to both i and j (kept top-k choices; argmax for dense "
    "mixtures), pooled over (token, pair); source_overlap row i = tokens routed to i; load = fraction of router "
    "assignments before capacity drops; importance = mean router probability; router_entropy = mean per-token "
    "entropy in nats; dropped_fraction = dropped / all assignments";

struct ActivationsArgs {
  std::string checkpoint, output, data, split = "test", activations, probe, layers, expert_pattern;
  std::int64_t max_tokens = 0, batch_size = 256, top_k = 0;
  std::uint64_t seed = 0;
  bool geometry = false;
  std::vector<std::string> matrices;
};

Eigen::MatrixXd read_square(const ReportReader& r, const std::string& path, const std::string& file) {
  std::vector<std::size_t> dims;
  const auto v = r.read(path, &dims);
  if (dims.size() != 2 || dims[0] != dims[1]) fail_input(file, "'" + path + "' is not a square matrix");
  const auto n = static_cast<Eigen::Index>(dims[0]);
  return Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), n, n);
}

void write_layer(ReportWriter& w, const LayerActivations& l, std::int64_t top_k, const std::string& kind) {
  const std::string base = "/activations/" + l.key;
  const auto E = static_cast<std::size_t>(l.experts);
  const ActivationOverlap& o = l.overlap;
  const RoutingStats& r = l.routing;
  w.write(base + "/overlap", row_major(o.overlap), {E, E});
  w.write(base + "/overlap_sq", row_major(o.overlap_sq), {E, E});
  w.write(base + "/pair_tokens", row_major(o.pair_tokens), {E, E});
  w.write_scalar(base + "/mean_overlap", o.mean_overlap);
  w.write_scalar(base + "/mso", o.mso);
  w.write(base + "/routed_overlap", row_major(o.routed_overlap), {E, E});
  w.write(base + "/routed_tokens", row_major(o.routed_tokens), {E, E});
  w.write_scalar(base + "/routed_mean_overlap", o.routed_mean_overlap);
  w.write_scalar(base + "/routed_mso", o.routed_mso);
  w.write(base + "/source_overlap", row_major(o.source_overlap), {E, E});
  w.write_scalar(base + "/source_mean_overlap", o.source_mean_overlap);
  w.write(base + "/mean_norm", o.mean_norm, {E});
  w.write(base + "/load", r.load, {E});
  w.write(base + "/importance", r.importance, {E});
  w.write_scalar(base + "/router_entropy", r.router_entropy);
  w.write_scalar(base + "/dropped_fraction", r.dropped_fraction);
  w.write_int(base + "/tokens", {o.tokens}, {});
  w.set_attr(base, "layer", std::int64_t{l.layer});
  w.set_attr(base, "prefix", l.prefix);
  w.set_attr(base, "experts", l.experts);
  w.set_attr(base, "dim", l.dim);
  w.set_attr(base, "out_dim", l.out_dim);
  w.set_attr(base, "routing_source", l.routing_source);
  w.set_attr(base, "capacity", l.capacity);
  w.set_attr(base, "top_k", top_k);
  w.set_attr(base, "expert_function", kind);
}

// /compare_spaces: per layer the pairs side by side and their correlations; pooled over layers; layer MSOs.
void write_comparison(ReportWriter& w, const std::vector<LayerOverlaps>& in, const std::string& weight_from,
                      const std::string& activation_from) {
  const SpaceComparison c = compare_spaces(in);
  w.create_group("/compare_spaces");
  w.set_attr("/compare_spaces", "weight_source", weight_from);
  w.set_attr("/compare_spaces", "activation_source", activation_from);
  w.set_attr("/compare_spaces", "definition",
             std::string("per layer, expert pairs i<j: weight overlap (cosine of the flattened expert matrices) vs "
                         "activation overlap (mean per-token output cosine); Pearson and Spearman with two-sided "
                         "Student-t p-values; pooled over all layers' pairs; and across layers weight MSO vs "
                         "activation MSO (NaN where n < 3)"));
  std::vector<std::string> keys;
  std::vector<double> wm, am;
  for (std::size_t i = 0; i < c.layers.size(); ++i) {
    const LayerSpaceComparison& l = c.layers[i];
    const std::string base = "/compare_spaces/" + l.key;
    const auto n = l.weight.size();
    w.write(base + "/weight_overlap", l.weight, {n});
    w.write(base + "/activation_overlap", l.activation, {n});
    w.write_int(base + "/pair_i", std::vector<std::int64_t>(l.pair_i.begin(), l.pair_i.end()), {n});
    w.write_int(base + "/pair_j", std::vector<std::int64_t>(l.pair_j.begin(), l.pair_j.end()), {n});
    w.write_scalar(base + "/pearson_r", l.pearson_r);
    w.write_scalar(base + "/pearson_p", l.pearson_p);
    w.write_scalar(base + "/spearman_rho", l.spearman_rho);
    w.write_scalar(base + "/spearman_p", l.spearman_p);
    w.write_scalar(base + "/weight_mso", in[i].weight_mso);
    w.write_scalar(base + "/activation_mso", in[i].activation_mso);
    keys.push_back(l.key);
    wm.push_back(in[i].weight_mso);
    am.push_back(in[i].activation_mso);
    std::cout << fmt::format("{:<18} pairs {:>4}  weight mso {:>10.4g}  activation mso {:>8.4f}  pearson r {:+.3f} "
                             "(p {:.3g})  spearman rho {:+.3f}\n",
                             l.key, n, in[i].weight_mso, in[i].activation_mso, l.pearson_r, l.pearson_p,
                             l.spearman_rho);
  }
  w.write_strings("/compare_spaces/layers", keys);
  w.write("/compare_spaces/weight_mso", wm, {wm.size()});
  w.write("/compare_spaces/activation_mso", am, {am.size()});
  w.write_int("/compare_spaces/pairs", {c.pairs}, {});
  w.write_scalar("/compare_spaces/pearson_r", c.pearson_r);
  w.write_scalar("/compare_spaces/pearson_p", c.pearson_p);
  w.write_scalar("/compare_spaces/spearman_rho", c.spearman_rho);
  w.write_scalar("/compare_spaces/spearman_p", c.spearman_p);
  w.write_scalar("/compare_spaces/layer_mso_pearson_r", c.layer_mso_pearson_r);
  w.write_scalar("/compare_spaces/layer_mso_pearson_p", c.layer_mso_pearson_p);
  w.write_scalar("/compare_spaces/layer_mso_spearman_rho", c.layer_mso_spearman_rho);
  w.write_scalar("/compare_spaces/layer_mso_spearman_p", c.layer_mso_spearman_p);
  // Across layers needs at least three layers for a correlation with a p-value; with fewer it is NaN in the
  // report, and the console says why rather than printing nan.
  const std::string across = std::isfinite(c.layer_mso_pearson_r)
                                 ? fmt::format("pearson r {:+.4f}", c.layer_mso_pearson_r)
                                 : fmt::format("undefined ({} layer{})", keys.size(), keys.size() == 1 ? "" : "s");
  std::cout << fmt::format("all pairs ({}): pearson r {:+.4f} (p {:.4g}), spearman rho {:+.4f} (p {:.4g}); across "
                           "layers (mso): {}\n",
                           c.pairs, c.pearson_r, c.pearson_p, c.spearman_rho, c.spearman_p, across);
}

// Experts per token of a foreign checkpoint: --top-k, else config.json's num_experts_per_tok beside it, else the
// family's usual value (Switch 1, others 2).
std::int64_t foreign_top_k(const ActivationsArgs& a, const Layout& layout) {
  if (a.top_k > 0) return a.top_k;
  const fs::path p(a.checkpoint);
  const fs::path cfg = fs::is_directory(p) ? p / "config.json" : p.parent_path() / "config.json";
  if (fs::is_regular_file(cfg)) {
    try {
      std::ifstream f(cfg);
      const auto j = nlohmann::json::parse(f);
      for (const char* k : {"num_experts_per_tok", "moe_top_k", "num_experts_per_token"})
        if (j.contains(k) && j[k].is_number_integer() && j[k].get<std::int64_t>() > 0) return j[k].get<std::int64_t>();
    } catch (const nlohmann::json::exception& e) {
      spdlog::warn("{}: not read ({}); give --top-k", cfg.string(), e.what());
    }
  }
  return layout.family == "switch" ? 1 : 2;
}

bool wanted(const std::set<int>& layers, int layer) { return layers.empty() || layers.count(layer) > 0; }

void run(const ActivationsArgs& a, const Context& ctx) {
  const int threads = start_torch_work(ctx);
  if (!a.probe.empty() && !a.activations.empty()) throw InputError("give --activations or --probe, not both");
  std::set<int> layers;
  if (!a.layers.empty())
    for (int l : parse_index_list(a.layers, "--layers")) layers.insert(l);

  ActivationsOptions opts;
  opts.batch_size = a.batch_size;
  opts.max_tokens = a.max_tokens;
  opts.seed = a.seed;
  opts.log = [](const std::string& s) { spdlog::info("{}", s); };

  const bool own = is_run_path(a.checkpoint);
  std::optional<LoadedRun> run;
  std::string weights = a.checkpoint;
  if (own) {
    run = load_run(a.checkpoint);
    weights = run->weights_file;
  }
  const auto src = open_checkpoint(weights);
  LayoutOptions lo;
  lo.expert_pattern = a.expert_pattern;
  const Layout layout = detect_layout(src->tensors(), lo);
  std::unique_ptr<SafetensorsFile> recorded;
  if (!a.activations.empty()) recorded = std::make_unique<SafetensorsFile>(a.activations);

  ActivationsResult res;
  std::map<std::string, std::pair<std::int64_t, std::string>> info;  // key -> top_k, expert function
  std::map<std::string, const MoELayerLayout*> layout_of;            // key -> the checkpoint's layer
  if (own) {
    // Name the model's layers as the checkpoint layout does, so that /activations and /geometry keys agree.
    std::vector<ExpertBank> banks = model_expert_banks(run->model);
    if (banks.empty()) fail_input(a.checkpoint, "the model has no MoE layers (a dense head or FFN)");
    std::vector<std::pair<std::string, int>> keys;
    for (auto& b : banks) {
      for (const auto& l : layout.layers)
        if (l.prefix == b.prefix) b.key = l.key, b.layer = l.layer, layout_of[b.key] = &l;
      keys.emplace_back(b.key, b.layer);
      info[b.key] = {b.top_k, b.kind};
    }
    if (!layers.empty()) {
      std::vector<ExpertBank> kept;
      for (auto& b : banks)
        if (wanted(layers, b.layer)) kept.push_back(std::move(b));
      for (int l : layers)
        if (std::none_of(kept.begin(), kept.end(), [&](const ExpertBank& b) { return b.layer == l; }))
          fail_input(a.checkpoint, fmt::format("--layers: layer {} has no experts", l));
      banks = std::move(kept);
    }
    if (recorded) {
      res = recorded_activations(banks, *recorded, opts);
    } else if (a.probe == "random") {
      res = random_activations(banks, opts);
    } else {
      const DataSpec spec = parse_data_arg(a.data, run->data);
      spdlog::info("activations: loading data '{}'", spec.name);
      const TaskData data = load_task_data(spec);
      res = model_activations(run->model, data.split(a.split), opts, keys);
      std::vector<LayerActivations> kept;  // the model runs whole; keep the layers asked for
      for (auto& l : res.layers)
        if (wanted(layers, l.layer)) kept.push_back(std::move(l));
      res.layers = std::move(kept);
    }
  } else {
    if (!a.data.empty()) throw InputError(a.checkpoint + ": --data needs one of moescope's runs; for other "
                                          "checkpoints give --activations FILE or --probe random");
    if (!recorded && a.probe != "random")
      throw InputError(a.checkpoint + ": not one of moescope's runs: give --activations FILE (recorded layer inputs) "
                       "or --probe random");
    if (layout.layers.empty())
      fail_input(a.checkpoint, "no MoE layers found (family '" + layout.family + "'); see `moescope inspect`");
    const std::int64_t k = foreign_top_k(a, layout);
    std::vector<std::string> keys;
    for (const auto& l : layout.layers) keys.push_back(l.key);
    if (recorded) check_recorded_names(*recorded, keys);
    for (int l : layers)
      if (std::none_of(layout.layers.begin(), layout.layers.end(), [&](const MoELayerLayout& m) { return m.layer == l; }))
        fail_input(a.checkpoint, fmt::format("--layers: layer {} has no experts", l));
    res.inputs = recorded ? "recorded" : "random";
    res.description = recorded ? recorded_description(a.activations) : random_description(opts);
    for (const auto& l : layout.layers) {  // one layer's experts in memory at a time
      if (!wanted(layers, l.layer)) continue;
      if (recorded && !recorded->find(l.key + ".inputs")) {
        spdlog::info("activations: {} has no recorded inputs, skipped", l.key);
        continue;
      }
      const ExpertBank bank = checkpoint_expert_bank(*src, layout, l, k);
      info[l.key] = {bank.top_k, bank.kind};
      layout_of[l.key] = &l;
      if (recorded) res.layers.push_back(*recorded_layer(bank, *recorded, opts));
      else res.layers.push_back(random_layer(bank, opts));
    }
    if (res.layers.empty()) fail_input(a.activations, "no tensor <key>.inputs for the chosen MoE layers");
  }

  ReportWriter w(a.output);
  w.write_provenance(make_provenance(ctx, weights, static_cast<std::int64_t>(a.seed)));
  w.create_group("/activations");
  w.set_attr("/activations", "inputs", res.inputs);
  w.set_attr("/activations", "description", res.description);
  w.set_attr("/activations", "definition", std::string(kDefinition));
  w.set_attr("/activations", "family", layout.family);
  w.set_attr("/activations", "batch_size", a.batch_size);
  w.set_attr("/activations", "max_tokens", a.max_tokens);
  if (res.inputs == "data") {
    w.set_attr("/activations", "split", a.split);
    w.set_attr("/activations", "data", run->data.name);
    w.set_attr("/activations", "samples", res.samples);
  }
  if (res.inputs == "recorded") w.set_attr("/activations", "activations_file", a.activations);
  std::cout << res.description << "\n";
  std::cout << fmt::format("{:<18} {:>7} {:>9} {:>12} {:>10} {:>12} {:>10} {:>9}\n", "layer", "experts", "tokens",
                           "mean_overlap", "mso", "routed_mean", "entropy", "dropped");
  for (const auto& l : res.layers) {
    write_layer(w, l, info[l.key].first, info[l.key].second);
    std::cout << fmt::format("{:<18} {:>7} {:>9} {:>12.5f} {:>10.5f} {:>12.5f} {:>10.4f} {:>9.4f}\n", l.key, l.experts,
                             l.overlap.tokens, l.overlap.mean_overlap, l.overlap.mso, l.overlap.routed_mean_overlap,
                             l.routing.router_entropy, l.routing.dropped_fraction);
  }

  if (a.geometry) {
    GeometryOptions go;
    go.roles = a.matrices;
    go.threads = threads;
    write_geometry_group(w, layout.family);
    std::vector<LayerOverlaps> cmp;
    for (const auto& l : res.layers) {
      const auto it = layout_of.find(l.key);
      if (it == layout_of.end()) {
        spdlog::warn("geometry: {} has no experts in the checkpoint layout, left out", l.key);
        continue;
      }
      const LayerGeometry g = expert_geometry(*src, *it->second, go);
      write_layer_geometry(w, g, it->second->prefix);
      cmp.push_back({l.key, g.overlap, l.overlap.overlap, g.mso, l.overlap.mso});
    }
    if (!cmp.empty()) write_comparison(w, cmp, weights, "this report");
  }
  w.commit();
  spdlog::info("wrote {}", a.output);
}

struct CompareArgs {
  std::string report, geometry, output;
};

void run_compare(const CompareArgs& a, const Context& ctx) {
  ReportReader act(a.report);
  const std::string gpath = a.geometry.empty() ? a.report : a.geometry;
  ReportReader geo(gpath);
  if (!act.exists("/activations")) fail_input(a.report, "no /activations group (run `moescope activations`)");
  if (!geo.exists("/geometry"))
    fail_input(gpath, "no /geometry group (run `moescope geometry`, or `activations --geometry`)");
  std::vector<LayerOverlaps> in;
  std::vector<std::string> unmatched;
  for (const auto& key : act.list("/activations")) {
    if (!geo.exists("/geometry/" + key + "/overlap")) {
      unmatched.push_back(key);
      continue;
    }
    LayerOverlaps l;
    l.key = key;
    l.activation_overlap = read_square(act, "/activations/" + key + "/overlap", a.report);
    l.weight_overlap = read_square(geo, "/geometry/" + key + "/overlap", gpath);
    if (l.activation_overlap.rows() != l.weight_overlap.rows())
      fail_input(gpath, fmt::format("{}: {} experts in the geometry but {} in {}", key, l.weight_overlap.rows(),
                                    l.activation_overlap.rows(), a.report));
    l.activation_mso = act.read_scalar("/activations/" + key + "/mso");
    l.weight_mso = geo.read_scalar("/geometry/" + key + "/mso");
    in.push_back(std::move(l));
  }
  if (in.empty()) fail_input(gpath, "no /geometry layer matches a layer of " + a.report);
  for (const auto& k : unmatched) spdlog::warn("compare-spaces: {} has no weight geometry, left out", k);
  ReportWriter w(a.output);
  Provenance p = make_provenance(ctx, "");
  p.checkpoint = a.report + (a.geometry.empty() ? "" : " " + a.geometry);
  w.write_provenance(p);
  write_comparison(w, in, gpath, a.report);
  w.commit();
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_activations(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ActivationsArgs>();
  auto* sub = app.add_subcommand("activations", "Activation overlap of the experts and routing statistics per MoE layer");
  sub->add_option("checkpoint", args->checkpoint,
                  "A moescope run (runs/NAME or a step folder), or any checkpoint the readers support")
      ->required();
  sub->add_option("-o,--output", args->output, "Report to write (HDF5)")->required();
  sub->add_option("--data", args->data, "Own runs: the data (NAME, NAME:PATH or a DataSpec .json; default: the run's)");
  sub->add_option("--split", args->split, "Own runs: train, valid or test")->check(CLI::IsMember({"train", "valid", "test"}));
  sub->add_option("--max-tokens", args->max_tokens, "Tokens per layer (0: the whole split / file; random probe: 4096)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--activations", args->activations,
                  "Recorded layer inputs: safetensors with <key>.inputs [T, d] (and optional <key>.router_probs [T, E])");
  sub->add_option("--probe", args->probe, "random: standard Gaussian inputs of each layer's width")
      ->check(CLI::IsMember({"random"}));
  sub->add_option("--batch-size", args->batch_size, "Samples (data) or tokens (recorded, random) per batch")
      ->check(CLI::PositiveNumber);
  sub->add_option("--top-k", args->top_k,
                  "Other checkpoints: experts per token (default: config.json's num_experts_per_tok; Switch 1, else 2)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", args->seed, "Seed of the random probe");
  sub->add_option("--layers", args->layers, "Model layer numbers, e.g. 0,3-5 (--activations / --probe)");
  sub->add_flag("--geometry", args->geometry, "Also write the weight geometry and /compare_spaces to the report");
  sub->add_option("--matrices", args->matrices, "With --geometry: expert matrices to concatenate (gate,up,down)")
      ->delimiter(',');
  sub->add_option("--expert-pattern", args->expert_pattern, "Regex for unknown layouts (as in geometry)");
  sub->add_option("--hash", ctx.hash, "Checkpoint digest for the report: auto, full, header, none")
      ->check(CLI::IsMember({"auto", "full", "header", "none"}));
  sub->callback([args, &ctx] { run(*args, ctx); });

  auto cargs = std::make_shared<CompareArgs>();
  auto* cmp = app.add_subcommand("compare-spaces",
                                 "Weight overlap vs activation overlap per layer and expert pair, with correlations");
  cmp->add_option("report", cargs->report, "Report with /activations (from `moescope activations`)")->required();
  cmp->add_option("--geometry", cargs->geometry, "Report with /geometry (default: the same report)");
  cmp->add_option("-o,--output", cargs->output, "Report to write (HDF5)")->required();
  cmp->callback([cargs, &ctx] { run_compare(*cargs, ctx); });
}

}  // namespace moescope::cli
