#pragma once
// Loss surfaces on 1-D and 2-D grids around a point w0: w = w0 + a dx + b dy, evaluated by a callback.
// Weights are perturbed in place (no allocation per point) and restored bit for bit. Finished points go to a
// journal as they come, so a killed run loses at most the point in flight and a restart skips what is done.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moescope/landscape/directions.hpp"
#include "moescope/util/progress.hpp"

namespace moescope {

class ReportWriter;

/// A grid axis "min:max:count": count values evenly spaced from min to max inclusive (numpy.linspace, as
/// loss-landscape makes them), or just min when count == 1.
struct Axis {
  double min = -1.0;
  double max = 1.0;
  std::int64_t count = 51;
  /// The coordinates: min + i (max - min) / (count - 1), the last one exactly max.
  std::vector<double> values() const;
  /// "min:max:count" with round-trip precision.
  std::string text() const;
};
/// Parses "min:max:count" (finite numbers, min < max unless count == 1 where min == max is fine, integer count
/// >= 1). Throws InputError naming `flag`.
Axis parse_axis(const std::string& spec, const std::string& flag);

/// Moves parameters along one or two directions in place. Holds a copy of w0; restores it on restore() and on
/// destruction.
class Perturbation {
 public:
  /// `params` are the live parameters (their storage is written); `dirs` one or two directions over the same
  /// names and shapes. Throws std::invalid_argument otherwise.
  Perturbation(std::vector<NamedParameter> params, std::vector<Direction> dirs);
  ~Perturbation();
  Perturbation(const Perturbation&) = delete;
  Perturbation& operator=(const Perturbation&) = delete;

  /// w = w0 + a dx (+ b dy), computed into the parameters' storage without gradient tracking. `b` must be 0
  /// with one direction.
  void set(double a, double b = 0.0);
  /// w = w0 exactly (a copy of the saved bits).
  void restore();
  std::size_t dimensions() const { return dirs_.size(); }
  const std::vector<NamedParameter>& params() const { return params_; }
  const std::vector<Direction>& directions() const { return dirs_; }

 private:
  std::vector<NamedParameter> params_;
  std::vector<torch::Tensor> w0_;
  std::vector<Direction> dirs_;
};

/// Values at the current weights, one per metric, in SurfaceOptions::metrics order.
using PointEvaluator = std::function<std::vector<double>()>;

struct SurfaceOptions {
  Axis x;
  std::optional<Axis> y;              ///< absent: a 1-D surface
  std::vector<std::string> metrics;   ///< names of the values the evaluator returns ("train_loss", ...)
  /// Journal of finished points (a text file, one line per point, appended as they come); "" keeps none.
  std::string journal;
  /// Continue the journal: points in it are not evaluated again. Its settings line must equal this run's.
  /// Without resume an existing journal is replaced.
  bool resume = false;
  /// Free text that must match on resume besides the grid and the metrics (directions' fingerprint, data, ...).
  std::string settings;
  /// Evaluate at most this many points in this call (0: all), then return an incomplete surface. Lets a run be
  /// time-boxed; tests use it to stop a run part way.
  std::int64_t max_points = 0;
  /// After each point evaluated in this call (done counts resumed points too; value: the first metric).
  ProgressFn progress;
};

/// A computed (possibly partial) surface. values[m][i * ny + j] is metric m at (x[i], y[j]) (ny = 1 for 1-D);
/// NaN where not computed.
struct Surface {
  std::vector<double> x, y;           ///< y empty for 1-D
  std::vector<std::string> metrics;
  std::vector<std::vector<double>> values;
  std::vector<std::uint8_t> computed;  ///< per point, 1 when finished
  std::int64_t evaluated = 0;          ///< points evaluated in this call
  std::int64_t resumed = 0;            ///< points taken from the journal
  std::size_t nx() const { return x.size(); }
  std::size_t ny() const { return y.empty() ? 1 : y.size(); }
  bool complete() const;
  /// Values of metric `name`; throws std::out_of_range when absent.
  const std::vector<double>& metric(const std::string& name) const;
};

/// Evaluates the grid, row by row (x outer, y inner), skipping points already in the journal on resume. The
/// parameters are restored to w0 before returning, also when the evaluator throws (the journal then holds every
/// point finished before). Throws InputError naming the journal when it cannot be written, or on resume when
/// its settings differ from this run's; std::invalid_argument when the directions do not fit the axes or an
/// evaluation returns the wrong number of values.
Surface compute_surface(Perturbation& perturbation, const PointEvaluator& evaluate, const SurfaceOptions& opts);

/// The journal's settings line for these options (what a resume must match).
std::string journal_settings(const SurfaceOptions& opts);

/// Writes a complete surface as group `group` of a report: xcoordinates [nx], ycoordinates [ny] (2-D only) and a
/// dataset per metric, [nx, ny] (2-D) or [nx] (1-D), with attribute `index_order`
/// "values[i, j] at (xcoordinates[i], ycoordinates[j])". Throws std::invalid_argument when incomplete.
void write_surface(ReportWriter& report, const Surface& s, const std::string& group = "/landscape");

/// Writes a surface file for loss-landscape's own plot_1D.py / plot_2D.py: the root holds xcoordinates,
/// ycoordinates (2-D) and each metric, 2-D arrays as [ny, nx] with Z[i, j] at (x[j], y[i]) (the order of their
/// np.meshgrid(x, y) contour calls, i.e. the transpose of write_surface's), and accuracies ("*_acc") in percent
/// as their evaluation writes them. Atomic (tmp + rename).
void write_loss_landscape_surface(const std::string& path, const Surface& s, const Provenance& provenance);

/// Sharpness: mean loss increase at radius r over random normalised directions,
/// L(w0 + r d_m) - L(w0), m = 1..M, d_m = random_direction(seed + m) (Li et al.'s filter normalisation by
/// default, so radii are comparable between models of different scale, dense or MoE).
struct SharpnessOptions {
  std::vector<double> radii{0.1};
  std::int64_t directions = 10;  ///< M
  std::uint64_t seed = 0;
  Normalization normalization = Normalization::Filter;
  SmallTensorRule small = SmallTensorRule::Zero;
};
struct SharpnessResult {
  double base_loss = 0.0;                    ///< L(w0)
  std::vector<double> radii;
  /// increases[r][m] = L(w0 + radii[r] d_m) - L(w0)
  std::vector<std::vector<double>> increases;
  std::vector<double> mean_increase;         ///< per radius, over m
  std::vector<double> stderr_increase;       ///< sample standard deviation / sqrt(M) (0 when M = 1)
  std::vector<double> max_increase;          ///< per radius
};
/// `loss` evaluates the loss at the current weights of `params`, which are restored to w0 before returning
/// (also on an exception). Throws std::invalid_argument for no radii, a non-finite radius or directions < 1.
SharpnessResult sharpness(const std::vector<NamedParameter>& params, const std::function<double()>& loss,
                          const SharpnessOptions& opts);

}  // namespace moescope
