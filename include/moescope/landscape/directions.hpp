#pragma once
// Directions in parameter space for loss surfaces (Li et al. 2018, "Visualizing the Loss Landscape of Neural
// Nets"): Gaussian random, filter- or layer-normalised, Hessian eigenvectors, and the difference to a second
// checkpoint. A direction is one tensor per selected parameter (the same names, shapes, dtypes and devices), so
// any subset (one expert, the router) works as in curvature/.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moescope/model/params.hpp"
#include "moescope/io/report.hpp"

namespace moescope {

/// How a random direction is scaled to the weights (loss-landscape's `--xnorm`).
enum class Normalization {
  None,    // raw standard normals
  Filter,  // each row (index of dim 0) of d scaled to the norm of the same row of w: d_i *= |w_i| / (|d_i| + 1e-10)
  Layer,   // the whole tensor: d *= |w| / |d|
};
/// "none", "filter", "layer".
const char* normalization_name(Normalization n);
/// Parses a name as above; throws InputError naming `flag`.
Normalization parse_normalization(const std::string& name, const std::string& flag);

/// What happens to parameters with dim <= 1 (biases, norm scales) in random directions.
enum class SmallTensorRule {
  Zero,         // d = 0: the parameter is not perturbed (loss-landscape's `--xignore biasbn`; Li et al.'s figures)
  CopyWeights,  // d = w (loss-landscape's behaviour without `biasbn`)
  Normalize,    // normalised like any other tensor (filter: per element of a 1-D tensor)
};
/// "biasbn" (Zero), "weights" (CopyWeights), "none" (Normalize).
const char* small_tensor_rule_name(SmallTensorRule r);
/// Parses a name as above; throws InputError naming `flag`.
SmallTensorRule parse_small_tensor_rule(const std::string& name, const std::string& flag);

/// One direction: a tensor per parameter, in the parameters' order, with what made it.
struct Direction {
  std::vector<NamedParameter> parts;   ///< same names, shapes, dtypes and devices as the parameters
  std::string kind;                    ///< "random", "eigen", "difference", or what the file said
  Normalization normalization = Normalization::None;
  SmallTensorRule small = SmallTensorRule::Normalize;  ///< meaningful for random directions
  std::uint64_t seed = 0;              ///< random directions: the Rng seed
  std::string source;                  ///< free text: eigenvalue, second checkpoint, file

  /// Number of scalars.
  std::int64_t numel() const;
  /// Euclidean norm over all parts (accumulated in float64).
  double norm() const;
};

/// Options of random_direction.
struct RandomDirectionOptions {
  Normalization normalization = Normalization::Filter;
  SmallTensorRule small = SmallTensorRule::Zero;
  std::uint64_t seed = 0;
};

/// Standard normals from Rng(seed), drawn parameter after parameter in order (so the same for any thread count),
/// then normalised to the weights `params`. Throws std::invalid_argument when params is empty.
Direction random_direction(const std::vector<NamedParameter>& params, const RandomDirectionOptions& opts);

/// Normalises `d` in place to the weights: dim >= 2 tensors by `n`, dim <= 1 tensors by `small`.
/// Throws std::invalid_argument when names or shapes differ.
void normalize_direction(Direction& d, const std::vector<NamedParameter>& params, Normalization n,
                         SmallTensorRule small);

/// A direction from a flat vector (e.g. a Hessian eigenvector over the same parameters, in their order: the
/// layout of flatten_tensors). `flat` is any floating dtype on any device, with as many elements as the
/// parameters hold. Throws std::invalid_argument on a size mismatch.
Direction direction_from_flat(const std::vector<NamedParameter>& params, const torch::Tensor& flat,
                              const std::string& kind = "eigen");

/// `to - from`, parameter by parameter (the interpolation direction between two checkpoints: w0 = from, a = 1 is
/// `to` up to rounding). Throws InputError when names or shapes differ (naming `what_to`, e.g. the file).
Direction difference_direction(const std::vector<NamedParameter>& from, const std::vector<NamedParameter>& to,
                               const std::string& what_to = "second checkpoint");

/// Writes directions to an HDF5 file (atomically): /directions/<label>/{names, tensors/<param name>} with
/// attributes kind, normalization, ignore, seed, source; `labels` name the directions ("x", "y").
void save_directions(const std::string& path, const std::vector<Direction>& dirs,
                     const std::vector<std::string>& labels, const Provenance& provenance);

/// Reads the directions saved by save_directions, in label order, checked against the parameters: the same set
/// of names and each tensor's shape; values converted to each parameter's dtype and device. Throws InputError
/// naming the file and the tensor.
std::vector<Direction> load_directions(const std::string& path, const std::vector<NamedParameter>& params,
                                       std::vector<std::string>* labels = nullptr);

}  // namespace moescope
