#pragma once
// Activation-space overlap of the experts of one MoE layer and its routing statistics, accumulated in float64
// over chunks of tokens so that memory stays one chunk whatever the number of tokens. No torch here: chunks are
// plain row-major arrays (the torch-side runners in activations_torch.hpp feed them).
//
// Definitions (also in the README, "Definitions"). For a token t, y_e(t) is expert e's output on the layer's
// input x(t) (every expert sees every token), c_ij(t) = <y_i(t), y_j(t)> / (|y_i(t)| |y_j(t)|), and S(t) is the
// set of experts the token was routed to (the router's top-k whose assignment was kept by the capacity limit;
// for layers where every expert contributes, GatedMixture / SoftMoE, the argmax of the router probabilities).
//  - overlap[i, j]  = mean over tokens of c_ij(t);  overlap_sq[i, j] = mean over tokens of c_ij(t)^2.
//  - mean_overlap   = mean of c_ij(t) over all (token, pair i != j);  mso = the same for c_ij(t)^2
//    (Kim 2026, arXiv:2601.00457: the per-token MSO of the expert outputs, averaged over tokens).
//  - routed_overlap[i, j] (i != j) = mean of c_ij(t) over the tokens routed to both i and j ("co-routed":
//    i, j in S(t)); routed_mean_overlap / routed_mso = mean of c_ij(t) / c_ij(t)^2 over all co-routed
//    (token, pair) occurrences, i.e. weighted by how often each pair is co-routed. Undefined (NaN) when no token
//    has two kept experts (top-1 routing).
//  - source_overlap[i, j] = mean of c_ij(t) over the tokens routed to i (row i; not symmetric); defined for
//    top-1 routing too; source_mean_overlap = mean of c_ij(t) over all (token, i in S(t), j != i).
// A pair whose output has zero norm for a token (cosine undefined) skips that token; pair_tokens counts what was
// used, so with no zero outputs every count is the number of tokens and the pooled means equal the plain means of
// the off-diagonal entries.
// Routing: load[e] = fraction of the router's (token, slot) assignments that chose e (before capacity drops;
// sums to 1); importance[e] = mean over tokens of p_e(t) (Shazeer et al.'s importance is the sum: T times this);
// router_entropy = mean over tokens of -sum_e p_e(t) ln p_e(t) (nats; ln E is uniform routing);
// routing_variance = mean over tokens of the unbiased variance over the E experts of p_e(t), i.e.
// sum_e (p_e(t) - 1/E)^2 / (E - 1) (Guo et al. 2025's v, arXiv:2505.22323; 0 for uniform routing, 1/E for one-hot);
// dropped_fraction = assignments dropped by the capacity limit / all assignments (0 without a limit).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace moescope {

struct ActivationOverlap {
  int experts = 0;
  std::int64_t tokens = 0;   ///< tokens seen
  std::int64_t out_dim = 0;  ///< O
  Eigen::MatrixXd overlap;      ///< [E, E] mean cosine (diagonal 1), NaN where pair_tokens is 0
  Eigen::MatrixXd overlap_sq;   ///< [E, E] mean squared cosine
  Eigen::MatrixXd pair_tokens;  ///< [E, E] tokens used per pair
  double mean_overlap = 0;
  double mso = 0;
  Eigen::MatrixXd routed_overlap;  ///< [E, E] co-routed tokens only (NaN where none)
  Eigen::MatrixXd routed_tokens;   ///< [E, E] co-routed token counts (diagonal: tokens routed to e)
  double routed_mean_overlap = 0;  ///< NaN when no token is co-routed
  double routed_mso = 0;
  Eigen::MatrixXd source_overlap;  ///< [E, E] row i: tokens routed to i
  double source_mean_overlap = 0;
  std::vector<double> mean_norm;   ///< mean over tokens of |y_e(t)|
};

/// Streams [T, E, O] chunks of expert outputs into the overlap statistics. The result does not depend on how the
/// tokens are split into chunks, except through float64 summation order (the sums are over tokens in order).
class ActivationOverlapAccumulator {
 public:
  /// Throws std::invalid_argument unless experts >= 2.
  explicit ActivationOverlapAccumulator(int experts);
  /// outputs: row-major [tokens, E, out_dim]. chosen: row-major [tokens, k] expert indices of S(t), -1 for an
  /// empty slot (a dropped assignment), or nullptr when routing is unknown (the routed statistics then stay
  /// NaN). Throws std::invalid_argument on a changed out_dim or an index outside [-1, E).
  void add(const float* outputs, std::int64_t tokens, std::int64_t out_dim, const std::int64_t* chosen = nullptr,
           std::int64_t k = 0);
  void add(const double* outputs, std::int64_t tokens, std::int64_t out_dim, const std::int64_t* chosen = nullptr,
           std::int64_t k = 0);
  ActivationOverlap result() const;
  int experts() const { return E_; }
  std::int64_t tokens() const { return tokens_; }

 private:
  template <typename T>
  void add_impl(const T* outputs, std::int64_t tokens, std::int64_t out_dim, const std::int64_t* chosen,
                std::int64_t k);
  int E_;
  std::int64_t tokens_ = 0, out_dim_ = 0;
  bool routed_seen_ = false;
  // Sums over tokens; only the upper triangle (i < j) of the symmetric ones is filled.
  Eigen::MatrixXd sum_, sum_sq_, count_, routed_sum_, routed_sq_, routed_count_, source_sum_, source_count_;
  std::vector<double> norm_sum_, norm_buf_, unit_buf_;
  std::vector<char> in_set_;
};

struct RoutingStats {
  int experts = 0;
  std::int64_t tokens = 0;
  std::int64_t assignments = 0;       ///< (token, slot) choices seen
  std::vector<double> load;           ///< [E] fraction of assignments (NaN without choices)
  std::vector<double> importance;     ///< [E] mean router probability (NaN without probabilities)
  double router_entropy = 0;          ///< nats (NaN without probabilities)
  double routing_variance = 0;        ///< mean per-token unbiased variance of p over experts (NaN without
                                      ///< probabilities or with one expert)
  std::int64_t dropped = 0;
  double dropped_fraction = 0;
};

/// Streams router probabilities and choices into RoutingStats.
class RoutingAccumulator {
 public:
  explicit RoutingAccumulator(int experts);
  /// probs: row-major [tokens, E] (nullptr: none). chosen: [tokens, k] the router's choices before capacity
  /// drops (nullptr: none). dropped: [tokens, k] nonzero where capacity dropped the assignment (nullptr: none).
  void add(const float* probs, const std::int64_t* chosen, const std::uint8_t* dropped, std::int64_t tokens,
           std::int64_t k);
  void add(const double* probs, const std::int64_t* chosen, const std::uint8_t* dropped, std::int64_t tokens,
           std::int64_t k);
  RoutingStats result() const;

 private:
  template <typename T>
  void add_impl(const T* probs, const std::int64_t* chosen, const std::uint8_t* dropped, std::int64_t tokens,
                std::int64_t k);
  int E_;
  std::int64_t tokens_ = 0, prob_tokens_ = 0, assignments_ = 0, dropped_ = 0;
  std::vector<double> prob_sum_;
  std::vector<std::int64_t> counts_;
  double entropy_sum_ = 0, variance_sum_ = 0;
};

/// Weight-space vs activation-space overlap of one layer, pair by pair (i < j).
struct LayerSpaceComparison {
  std::string key;
  std::vector<double> weight;      ///< weight overlap of each pair (cosine of the flattened expert matrices)
  std::vector<double> activation;  ///< activation overlap of the same pair (mean per-token cosine)
  std::vector<int> pair_i, pair_j;
  double pearson_r = 0, pearson_p = 0, spearman_rho = 0, spearman_p = 0;  ///< NaN when n < 3 or constant
};

struct SpaceComparison {
  std::vector<LayerSpaceComparison> layers;
  /// All pairs of all layers together.
  double pearson_r = 0, pearson_p = 0, spearman_rho = 0, spearman_p = 0;
  std::int64_t pairs = 0;
  /// Across layers: weight MSO vs activation MSO, one point per layer (NaN with fewer than 3 layers).
  double layer_mso_pearson_r = 0, layer_mso_pearson_p = 0, layer_mso_spearman_rho = 0, layer_mso_spearman_p = 0;
};

/// One layer's inputs to compare_spaces.
struct LayerOverlaps {
  std::string key;
  Eigen::MatrixXd weight_overlap;      ///< [E, E]
  Eigen::MatrixXd activation_overlap;  ///< [E, E]
  double weight_mso = 0, activation_mso = 0;
};

/// Pairs i < j of every layer (pairs with a NaN on either side are left out). Throws InputError when the two
/// matrices of a layer differ in size.
SpaceComparison compare_spaces(const std::vector<LayerOverlaps>& layers);

/// One layer's statistics.
struct LayerActivations {
  std::string key;
  int layer = 0;
  std::string prefix;
  std::int64_t experts = 0, dim = 0, out_dim = 0;
  ActivationOverlap overlap;
  RoutingStats routing;
  std::int64_t capacity = 0;     ///< largest per-batch capacity seen (0: no limit)
  std::string routing_source;    ///< "model", "recorded", "router" (computed from the checkpoint), "none"
};

struct ActivationsResult {
  std::vector<LayerActivations> layers;
  std::string inputs;       ///< "data", "recorded", "random"
  std::string description;  ///< one line saying where the inputs came from
  std::int64_t samples = 0; ///< data path: samples run through the model
};

/// What the /activations group says of the whole run (root attributes of the group).
struct ActivationsMeta {
  std::string family;         ///< the checkpoint layout's family
  std::int64_t batch_size = 0, max_tokens = 0;
  std::string split, data;    ///< data path: the split and the data spec's JSON
  std::string activations_file;  ///< recorded path
  std::map<std::string, std::int64_t> top_k;          ///< per layer key
  std::map<std::string, std::string> expert_function;  ///< per layer key: "swiglu", "relu", "model"
};

class ReportWriter;
class ReportReader;
/// /activations with its attributes and one group per layer:
/// /activations/<key>/{overlap[E,E], overlap_sq[E,E], pair_tokens[E,E], mean_overlap, mso, routed_overlap[E,E],
///   routed_tokens[E,E], routed_mean_overlap, routed_mso, source_overlap[E,E], source_mean_overlap, mean_norm[E],
///   load[E], importance[E], router_entropy, routing_variance, dropped_fraction, tokens}
///   attrs: layer, prefix, experts, dim, out_dim, routing_source, capacity, top_k, expert_function.
void write_activations(ReportWriter& w, const ActivationsResult& r, const ActivationsMeta& meta);
/// /compare_spaces: per layer (weight_overlap, activation_overlap over pairs i<j, pair_i, pair_j, pearson_r/p,
/// spearman_rho/p, weight_mso, activation_mso), pooled over layers, and across layers (layers, weight_mso,
/// activation_mso, layer_mso_*); attributes weight_source, activation_source, definition.
void write_space_comparison(ReportWriter& w, const std::vector<LayerOverlaps>& in, const SpaceComparison& c,
                            const std::string& weight_source, const std::string& activation_source);
/// The weight and activation overlaps of the layers both reports hold (`activations` from /activations, `geometry`
/// from /geometry; they may be one report). Throws InputError naming the file that lacks its group or whose layer
/// shapes disagree; `unmatched` receives the activation layers without weight geometry.
std::vector<LayerOverlaps> read_overlaps(const ReportReader& activations, const ReportReader& geometry,
                                         const std::string& activations_file, const std::string& geometry_file,
                                         std::vector<std::string>* unmatched = nullptr);

}  // namespace moescope
