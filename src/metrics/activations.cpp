#include "moescope/metrics/activations.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "moescope/io/report.hpp"
#include "moescope/stats/correlation.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/numbers.hpp"

namespace moescope {
namespace {


Eigen::MatrixXd zeros(int E) { return Eigen::MatrixXd::Zero(E, E); }

double ratio(double num, double den) { return den > 0 ? num / den : kNaN; }

// Sum over the strict upper triangle.
double upper_sum(const Eigen::MatrixXd& m) {
  double s = 0;
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = i + 1; j < m.cols(); ++j) s += m(i, j);
  return s;
}

// sum / count entrywise from upper-triangle sums, mirrored; diagonal `diag` where diag_count > 0, else NaN.
Eigen::MatrixXd symmetric_mean(const Eigen::MatrixXd& sum, const Eigen::MatrixXd& count, double diag) {
  const auto E = sum.rows();
  Eigen::MatrixXd m(E, E);
  for (Eigen::Index i = 0; i < E; ++i) {
    m(i, i) = count(i, i) > 0 ? diag : kNaN;
    for (Eigen::Index j = i + 1; j < E; ++j) m(i, j) = m(j, i) = ratio(sum(i, j), count(i, j));
  }
  return m;
}

}  // namespace

// ------------------------------------------------------------------------------------------ overlap

ActivationOverlapAccumulator::ActivationOverlapAccumulator(int experts) : E_(experts) {
  if (experts < 2) throw std::invalid_argument("activation overlap needs at least 2 experts, got " + std::to_string(experts));
  sum_ = sum_sq_ = count_ = routed_sum_ = routed_sq_ = routed_count_ = source_sum_ = source_count_ = zeros(E_);
  norm_sum_.assign(static_cast<std::size_t>(E_), 0.0);
  norm_buf_.assign(static_cast<std::size_t>(E_), 0.0);
  unit_buf_.assign(static_cast<std::size_t>(E_) * static_cast<std::size_t>(E_), 0.0);
  in_set_.assign(static_cast<std::size_t>(E_), 0);
}

void ActivationOverlapAccumulator::add(const float* outputs, std::int64_t tokens, std::int64_t out_dim,
                                       const std::int64_t* chosen, std::int64_t k) {
  add_impl(outputs, tokens, out_dim, chosen, k);
}

void ActivationOverlapAccumulator::add(const double* outputs, std::int64_t tokens, std::int64_t out_dim,
                                       const std::int64_t* chosen, std::int64_t k) {
  add_impl(outputs, tokens, out_dim, chosen, k);
}

template <typename T>
void ActivationOverlapAccumulator::add_impl(const T* outputs, std::int64_t tokens, std::int64_t out_dim,
                                            const std::int64_t* chosen, std::int64_t k) {
  if (tokens < 0 || out_dim < 1) throw std::invalid_argument("activation overlap: bad chunk shape");
  if (out_dim_ != 0 && out_dim != out_dim_)
    throw std::invalid_argument("activation overlap: output width changed from " + std::to_string(out_dim_) + " to " +
                                std::to_string(out_dim));
  if (chosen && k < 1) throw std::invalid_argument("activation overlap: choices need k >= 1");
  out_dim_ = out_dim;
  const int E = E_;
  const std::int64_t O = out_dim;
  double* norm = norm_buf_.data();
  double* cos = unit_buf_.data();  // E x E cosines of the current token (upper triangle)
  for (std::int64_t t = 0; t < tokens; ++t) {
    const T* y = outputs + t * E * O;
    for (int e = 0; e < E; ++e) {
      double s = 0;
      const T* ye = y + e * O;
      for (std::int64_t c = 0; c < O; ++c) s += static_cast<double>(ye[c]) * static_cast<double>(ye[c]);
      norm[e] = std::sqrt(s);
      norm_sum_[static_cast<std::size_t>(e)] += norm[e];
      if (norm[e] > 0) count_(e, e) += 1;
    }
    for (int i = 0; i < E; ++i) {
      if (!(norm[i] > 0)) continue;
      const T* yi = y + i * O;
      for (int j = i + 1; j < E; ++j) {
        if (!(norm[j] > 0)) {
          cos[i * E + j] = kNaN;
          continue;
        }
        const T* yj = y + j * O;
        double d = 0;
        for (std::int64_t c = 0; c < O; ++c) d += static_cast<double>(yi[c]) * static_cast<double>(yj[c]);
        const double cij = d / (norm[i] * norm[j]);
        cos[i * E + j] = cij;
        sum_(i, j) += cij;
        sum_sq_(i, j) += cij * cij;
        count_(i, j) += 1;
      }
    }
    if (!chosen) continue;
    routed_seen_ = true;
    std::fill(in_set_.begin(), in_set_.end(), 0);
    for (std::int64_t s = 0; s < k; ++s) {
      const std::int64_t e = chosen[t * k + s];
      if (e < -1 || e >= E)
        throw std::invalid_argument("activation overlap: expert index " + std::to_string(e) + " outside [-1, " +
                                    std::to_string(E) + ")");
      if (e >= 0) in_set_[static_cast<std::size_t>(e)] = 1;
    }
    for (int i = 0; i < E; ++i) {
      if (!in_set_[static_cast<std::size_t>(i)]) continue;
      routed_count_(i, i) += 1;
      source_count_(i, i) += 1;
      for (int j = 0; j < E; ++j) {
        if (j == i || !(norm[i] > 0) || !(norm[j] > 0)) continue;
        const double cij = i < j ? cos[i * E + j] : cos[j * E + i];
        source_sum_(i, j) += cij;
        source_count_(i, j) += 1;
        if (j > i && in_set_[static_cast<std::size_t>(j)]) {
          routed_sum_(i, j) += cij;
          routed_sq_(i, j) += cij * cij;
          routed_count_(i, j) += 1;
        }
      }
    }
  }
  tokens_ += tokens;
}

ActivationOverlap ActivationOverlapAccumulator::result() const {
  ActivationOverlap r;
  r.experts = E_;
  r.tokens = tokens_;
  r.out_dim = out_dim_;
  r.overlap = symmetric_mean(sum_, count_, 1.0);
  r.overlap_sq = symmetric_mean(sum_sq_, count_, 1.0);
  r.pair_tokens = count_.selfadjointView<Eigen::Upper>();  // counts live in the upper triangle
  r.mean_overlap = ratio(upper_sum(sum_), upper_sum(count_));
  r.mso = ratio(upper_sum(sum_sq_), upper_sum(count_));
  r.routed_overlap = symmetric_mean(routed_sum_, routed_count_, 1.0);
  r.routed_tokens = routed_count_.selfadjointView<Eigen::Upper>();
  r.routed_mean_overlap = ratio(upper_sum(routed_sum_), upper_sum(routed_count_));
  r.routed_mso = ratio(upper_sum(routed_sq_), upper_sum(routed_count_));
  r.source_overlap = Eigen::MatrixXd(E_, E_);
  double ssum = 0, scount = 0;
  for (int i = 0; i < E_; ++i)
    for (int j = 0; j < E_; ++j) {
      if (i == j) {
        r.source_overlap(i, i) = source_count_(i, i) > 0 ? 1.0 : kNaN;
        continue;
      }
      r.source_overlap(i, j) = ratio(source_sum_(i, j), source_count_(i, j));
      ssum += source_sum_(i, j);
      scount += source_count_(i, j);
    }
  r.source_mean_overlap = ratio(ssum, scount);
  if (!routed_seen_) {
    r.routed_overlap.setConstant(kNaN);
    r.source_overlap.setConstant(kNaN);
  }
  r.mean_norm.resize(static_cast<std::size_t>(E_));
  for (int e = 0; e < E_; ++e)
    r.mean_norm[static_cast<std::size_t>(e)] = ratio(norm_sum_[static_cast<std::size_t>(e)], static_cast<double>(tokens_));
  return r;
}

// ------------------------------------------------------------------------------------------ routing

RoutingAccumulator::RoutingAccumulator(int experts) : E_(experts) {
  if (experts < 1) throw std::invalid_argument("routing statistics need at least 1 expert");
  prob_sum_.assign(static_cast<std::size_t>(E_), 0.0);
  counts_.assign(static_cast<std::size_t>(E_), 0);
}

void RoutingAccumulator::add(const float* probs, const std::int64_t* chosen, const std::uint8_t* dropped,
                             std::int64_t tokens, std::int64_t k) {
  add_impl(probs, chosen, dropped, tokens, k);
}

void RoutingAccumulator::add(const double* probs, const std::int64_t* chosen, const std::uint8_t* dropped,
                             std::int64_t tokens, std::int64_t k) {
  add_impl(probs, chosen, dropped, tokens, k);
}

template <typename T>
void RoutingAccumulator::add_impl(const T* probs, const std::int64_t* chosen, const std::uint8_t* dropped,
                                  std::int64_t tokens, std::int64_t k) {
  if (tokens < 0) throw std::invalid_argument("routing statistics: negative token count");
  if ((chosen || dropped) && k < 1) throw std::invalid_argument("routing statistics: choices need k >= 1");
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (probs) {
      double h = 0;
      for (int e = 0; e < E_; ++e) {
        const double p = static_cast<double>(probs[t * E_ + e]);
        prob_sum_[static_cast<std::size_t>(e)] += p;
        if (p > 0) h -= p * std::log(p);
      }
      entropy_sum_ += h;
    }
    if (chosen) {
      for (std::int64_t s = 0; s < k; ++s) {
        const std::int64_t e = chosen[t * k + s];
        if (e < 0 || e >= E_)
          throw std::invalid_argument("routing statistics: expert index " + std::to_string(e) + " outside [0, " +
                                      std::to_string(E_) + ")");
        ++counts_[static_cast<std::size_t>(e)];
        ++assignments_;
        if (dropped && dropped[t * k + s]) ++dropped_;
      }
    }
  }
  tokens_ += tokens;
  if (probs) prob_tokens_ += tokens;
}

RoutingStats RoutingAccumulator::result() const {
  RoutingStats r;
  r.experts = E_;
  r.tokens = tokens_;
  r.assignments = assignments_;
  r.dropped = dropped_;
  r.dropped_fraction = ratio(static_cast<double>(dropped_), static_cast<double>(assignments_));
  r.load.resize(static_cast<std::size_t>(E_));
  r.importance.resize(static_cast<std::size_t>(E_));
  for (int e = 0; e < E_; ++e) {
    const auto u = static_cast<std::size_t>(e);
    r.load[u] = ratio(static_cast<double>(counts_[u]), static_cast<double>(assignments_));
    r.importance[u] = ratio(prob_sum_[u], static_cast<double>(prob_tokens_));
  }
  r.router_entropy = ratio(entropy_sum_, static_cast<double>(prob_tokens_));
  return r;
}

// ------------------------------------------------------------------------------------------ weight vs activation

namespace {

struct Both {
  double pr = kNaN, pp = kNaN, sr = kNaN, sp = kNaN;
};

// Pearson and Spearman where defined (n >= 3, neither side constant); NaN otherwise.
Both correlate(const std::vector<double>& x, const std::vector<double>& y) {
  Both b;
  try {
    const Correlation p = pearson(x, y);
    b.pr = p.r;
    b.pp = p.p;
    const Correlation s = spearman(x, y);
    b.sr = s.r;
    b.sp = s.p;
  } catch (const std::invalid_argument&) {
  }
  return b;
}

}  // namespace

SpaceComparison compare_spaces(const std::vector<LayerOverlaps>& layers) {
  SpaceComparison out;
  std::vector<double> all_w, all_a, layer_w, layer_a;
  for (const LayerOverlaps& l : layers) {
    if (l.weight_overlap.rows() != l.activation_overlap.rows() || l.weight_overlap.cols() != l.activation_overlap.cols() ||
        l.weight_overlap.rows() != l.weight_overlap.cols())
      throw InputError(l.key + ": weight overlap is " + std::to_string(l.weight_overlap.rows()) + "x" +
                       std::to_string(l.weight_overlap.cols()) + " but activation overlap is " +
                       std::to_string(l.activation_overlap.rows()) + "x" + std::to_string(l.activation_overlap.cols()));
    LayerSpaceComparison c;
    c.key = l.key;
    const auto E = l.weight_overlap.rows();
    for (Eigen::Index i = 0; i < E; ++i)
      for (Eigen::Index j = i + 1; j < E; ++j) {
        const double w = l.weight_overlap(i, j), a = l.activation_overlap(i, j);
        if (std::isnan(w) || std::isnan(a)) continue;
        c.weight.push_back(w);
        c.activation.push_back(a);
        c.pair_i.push_back(static_cast<int>(i));
        c.pair_j.push_back(static_cast<int>(j));
      }
    const Both b = correlate(c.weight, c.activation);
    c.pearson_r = b.pr;
    c.pearson_p = b.pp;
    c.spearman_rho = b.sr;
    c.spearman_p = b.sp;
    all_w.insert(all_w.end(), c.weight.begin(), c.weight.end());
    all_a.insert(all_a.end(), c.activation.begin(), c.activation.end());
    if (!std::isnan(l.weight_mso) && !std::isnan(l.activation_mso)) {
      layer_w.push_back(l.weight_mso);
      layer_a.push_back(l.activation_mso);
    }
    out.layers.push_back(std::move(c));
  }
  out.pairs = static_cast<std::int64_t>(all_w.size());
  const Both all = correlate(all_w, all_a);
  out.pearson_r = all.pr;
  out.pearson_p = all.pp;
  out.spearman_rho = all.sr;
  out.spearman_p = all.sp;
  const Both per_layer = correlate(layer_w, layer_a);
  out.layer_mso_pearson_r = per_layer.pr;
  out.layer_mso_pearson_p = per_layer.pp;
  out.layer_mso_spearman_rho = per_layer.sr;
  out.layer_mso_spearman_p = per_layer.sp;
  return out;
}

// ---------------------------------------------------------------------------------------------- reports

namespace {
constexpr const char* kActivationsDefinition =
    "y_e(t) = expert e on token t's layer input (every expert sees every token); c_ij(t) = cosine(y_i(t), y_j(t)); "
    "overlap = mean over tokens of c_ij; mean_overlap / mso = mean of c_ij / c_ij^2 over (token, pair i!=j) "
    "(arXiv:2601.00457); routed_* = over tokens routed to both i and j (kept top-k choices; argmax for dense "
    "mixtures), pooled over (token, pair); source_overlap row i = tokens routed to i; load = fraction of router "
    "assignments before capacity drops; importance = mean router probability; router_entropy = mean per-token "
    "entropy in nats; dropped_fraction = dropped / all assignments";

template <class Map, class V>
V value_or(const Map& m, const std::string& key, V fallback) {
  const auto it = m.find(key);
  return it == m.end() ? fallback : it->second;
}
}  // namespace

void write_activations(ReportWriter& w, const ActivationsResult& res, const ActivationsMeta& meta) {
  w.create_group("/activations");
  w.set_attr("/activations", "inputs", res.inputs);
  w.set_attr("/activations", "description", res.description);
  w.set_attr("/activations", "definition", std::string(kActivationsDefinition));
  w.set_attr("/activations", "family", meta.family);
  w.set_attr("/activations", "batch_size", meta.batch_size);
  w.set_attr("/activations", "max_tokens", meta.max_tokens);
  if (res.inputs == "data") {
    w.set_attr("/activations", "split", meta.split);
    w.set_attr("/activations", "data", meta.data);
    w.set_attr("/activations", "samples", res.samples);
  }
  if (res.inputs == "recorded") w.set_attr("/activations", "activations_file", meta.activations_file);
  for (const LayerActivations& l : res.layers) {
    const std::string base = "/activations/" + l.key;
    const auto E = static_cast<std::size_t>(l.experts);
    const ActivationOverlap& o = l.overlap;
    const RoutingStats& r = l.routing;
    w.write_matrix(base + "/overlap", o.overlap);
    w.write_matrix(base + "/overlap_sq", o.overlap_sq);
    w.write_matrix(base + "/pair_tokens", o.pair_tokens);
    w.write_scalar(base + "/mean_overlap", o.mean_overlap);
    w.write_scalar(base + "/mso", o.mso);
    w.write_matrix(base + "/routed_overlap", o.routed_overlap);
    w.write_matrix(base + "/routed_tokens", o.routed_tokens);
    w.write_scalar(base + "/routed_mean_overlap", o.routed_mean_overlap);
    w.write_scalar(base + "/routed_mso", o.routed_mso);
    w.write_matrix(base + "/source_overlap", o.source_overlap);
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
    w.set_attr(base, "top_k", value_or(meta.top_k, l.key, std::int64_t{0}));
    w.set_attr(base, "expert_function", value_or(meta.expert_function, l.key, std::string()));
  }
}

void write_space_comparison(ReportWriter& w, const std::vector<LayerOverlaps>& in, const SpaceComparison& c,
                            const std::string& weight_source, const std::string& activation_source) {
  w.create_group("/compare_spaces");
  w.set_attr("/compare_spaces", "weight_source", weight_source);
  w.set_attr("/compare_spaces", "activation_source", activation_source);
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
}

std::vector<LayerOverlaps> read_overlaps(const ReportReader& act, const ReportReader& geo,
                                         const std::string& act_file, const std::string& geo_file,
                                         std::vector<std::string>* unmatched) {
  if (!act.exists("/activations")) fail_input(act_file, "no /activations group (run `moescope activations`)");
  if (!geo.exists("/geometry"))
    fail_input(geo_file, "no /geometry group (run `moescope geometry`, or `activations --geometry`)");
  std::vector<LayerOverlaps> in;
  for (const auto& key : act.list("/activations")) {
    if (!geo.exists("/geometry/" + key + "/overlap")) {
      if (unmatched) unmatched->push_back(key);
      continue;
    }
    LayerOverlaps l;
    l.key = key;
    l.activation_overlap = act.read_matrix("/activations/" + key + "/overlap");
    l.weight_overlap = geo.read_matrix("/geometry/" + key + "/overlap");
    if (l.activation_overlap.rows() != l.activation_overlap.cols())
      fail_input(act_file, "/activations/" + key + "/overlap is not square");
    if (l.weight_overlap.rows() != l.weight_overlap.cols() || l.weight_overlap.rows() != l.activation_overlap.rows())
      fail_input(geo_file, key + ": " + std::to_string(l.weight_overlap.rows()) + " experts in the geometry but " +
                               std::to_string(l.activation_overlap.rows()) + " in " + act_file);
    l.activation_mso = act.read_scalar("/activations/" + key + "/mso");
    l.weight_mso = geo.read_scalar("/geometry/" + key + "/mso");
    in.push_back(std::move(l));
  }
  if (in.empty()) fail_input(geo_file, "no /geometry layer matches a layer of " + act_file);
  return in;
}

}  // namespace moescope
