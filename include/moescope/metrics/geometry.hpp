#pragma once
// Weight-space geometry of the experts of one MoE layer.
//
// Definitions (also in the README, "Definitions"):
//  - expert vector v_e: the expert's chosen matrices flattened row-major and concatenated in role order;
//    u_e = v_e / ||v_e||;
//  - overlap[i, j] = <u_i, u_j> (cosine similarity); MSO = mean over pairs i != j of overlap[i, j]^2
//    (Kim 2026, "Geometric Regularization in MoE", arXiv:2601.00457; independent random vectors in D
//    dimensions give E[MSO] = 1/D);
//  - parameter variance = mean over coordinates c of the unbiased variance across experts of v_e[c]
//    (OMoE, Liu et al. 2023, arXiv:2310.09762, whose exact statistic is not given), also on u_e.
// An expert whose chosen matrices are all zero has no direction: u_e and its cosines are undefined. Its row and
// column of `overlap` are NaN, it is listed in zero_experts with a note, and it is left out of the MSO and of the
// parameter variance on u_e (both then run over the other experts; NaN when fewer than two remain). The parameter
// variance on v_e keeps every expert (a zero vector is a point like any other). Weights that are NaN or infinite
// are refused (InputError naming the tensor and element): no statistic here means anything with them.
// Gram sums are accumulated in float64 (metrics/gram_kernel.hpp) straight from the checkpoint's bytes; no
// concatenated copy is made.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "moescope/io/layout.hpp"
#include "moescope/io/tensor.hpp"
#include "moescope/util/progress.hpp"

namespace moescope {

struct GeometryOptions {
  /// Roles to concatenate ("gate", "up", "down"; aliases w1/w3/w2 and fc1/fc2 and wi/wo are accepted).
  /// Empty: every weight matrix of the expert (biases excluded).
  std::vector<std::string> roles;
  /// Worker threads (>= 1). The result has the same bits for every thread count.
  int threads = 1;
  /// Coordinates decoded at a time per expert (GramKernel's block); 0 lets the kernel choose.
  /// Changes speed only, not the result.
  std::int64_t chunk = 0;
};

struct LayerGeometry {
  std::string key;
  int layer = 0;
  int experts = 0;
  std::int64_t dim = 0;                 // D, the length of each expert vector
  std::vector<std::string> roles;       // matrices used, in concatenation order
  Eigen::MatrixXd gram;                 // <v_i, v_j>
  Eigen::MatrixXd overlap;              // <u_i, u_j>
  std::vector<double> norms;            // ||v_e||
  double mso = 0;
  double param_variance = 0;
  double param_variance_normalized = 0;
  double mean_norm = 0;
  std::vector<int> zero_experts;        // experts whose vector is all zeros (left out of mso, NaN in overlap)
  std::vector<std::string> notes;       // warnings for the user (zero experts), one line each
};

/// Measures one layer. Throws InputError when a requested role is missing from the layer's experts, or naming the
/// tensor and the element when a chosen matrix holds a NaN or an infinity.
LayerGeometry expert_geometry(const TensorSource& src, const MoELayerLayout& layer, const GeometryOptions& opts);

/// Every chosen MoE layer of a checkpoint (the `geometry` command).
struct CheckpointGeometry {
  std::string family;                 // the layout's family
  std::vector<LayerGeometry> layers;  // in model order
  std::vector<std::string> prefixes;  // each layer's tensor prefix
  std::vector<std::string> notes;     // every layer's notes, in order
};
/// Measures `layers` (from select_layers) one after another, so memory holds one layer; reports each layer done.
CheckpointGeometry checkpoint_geometry(const TensorSource& src, const std::string& family,
                                       const std::vector<const MoELayerLayout*>& layers, const GeometryOptions& opts,
                                       const ProgressFn& progress = {});

class ReportWriter;
/// /geometry with its attributes (family, definition).
void write_geometry_group(ReportWriter& w, const std::string& family);
/// /geometry/<key>/{mso, overlap[E,E], gram[E,E], norms[E], param_variance, param_variance_normalized, mean_norm}
/// with attributes matrices, layer, experts, dim, prefix, zero_experts (a list, empty when none).
void write_layer_geometry(ReportWriter& w, const LayerGeometry& g, const std::string& prefix);
/// The group and every layer.
void write_geometry(ReportWriter& w, const CheckpointGeometry& g);

/// Mean over pairs i != j of overlap(i, j)^2. Requires at least 2 experts.
double mean_squared_overlap(const Eigen::MatrixXd& overlap);
/// The same over the pairs of experts not in `left_out` (sorted or not); NaN when fewer than 2 experts remain.
double mean_squared_overlap(const Eigen::MatrixXd& overlap, const std::vector<int>& left_out);
/// Cosine matrix from a Gram matrix (NaN rows/cols for zero vectors).
Eigen::MatrixXd overlap_from_gram(const Eigen::MatrixXd& gram);

}  // namespace moescope
