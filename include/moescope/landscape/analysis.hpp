#pragma once
// The loss-surface analysis of a trained run (what `moescope landscape` and a sweep's landscape step run): choose
// directions (random, filter/layer-normalised, Hessian eigenvectors, towards a second run, or from a file), evaluate
// loss and accuracy on a resumable 1-D or 2-D grid, optionally the sharpness; and the report group it writes.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moescope/curvature/analysis.hpp"
#include "moescope/landscape/directions.hpp"
#include "moescope/landscape/surface.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/progress.hpp"

namespace moescope {

class ReportWriter;
struct Provenance;

struct LandscapeRequest {
  EvalSpec eval;                     ///< its splits are the surface's metrics; the first also sets eigen/sharpness
  std::string params = "all";        ///< select_parameters spec of the parameters that move
  /// "random", "filter", "layer", "eigen", a second run (interpolation) or a directions .h5 file.
  std::string dirs = "filter";
  SmallTensorRule small = SmallTensorRule::Zero;  ///< random directions on dim <= 1 tensors
  Axis x;
  std::optional<Axis> y;
  std::uint64_t seed = 0;            ///< random directions: x uses seed, y seed + 1
  EigenRequest eigen;                ///< --dirs eigen: the same solver and defaults as the Hessian analysis
  std::string journal;               ///< finished points, for resuming ("" keeps none)
  bool resume = false;
  std::int64_t max_points = 0;       ///< stop after this many points in this call (0: all)
  std::string save_dirs;             ///< write the directions to this .h5 ("" none)
  std::vector<double> sharpness;     ///< radii (empty: none)
  std::int64_t sharpness_dirs = 10;
  ProgressFn progress;
};

struct LandscapeAnalysis {
  Surface surface;
  std::vector<Direction> dirs;
  std::string dirs_kind;             ///< "random", "filter", "layer", "eigen", "interpolation", "file"
  std::int64_t parameters = 0;
  std::string fingerprint;           ///< SHA-256 of the directions' values
  DataSpec data;
  std::vector<double> eigenvalues, eigen_residuals;
  std::string eigen_status;          ///< the eigensolver's status (eigen directions only)
  std::optional<SharpnessResult> sharpness;
  bool complete() const { return surface.complete(); }
};

/// The largest allocations of a landscape request over `parameters` moving values and `splits` splits: the grid's
/// values (float64 per point and metric, and the report's copy), the directions and saved weights, and with eigen
/// directions the eigensolver's (hessian_memory).
std::vector<MemoryItem> landscape_memory(std::int64_t parameters, std::size_t splits, bool text,
                                         const LandscapeRequest& request);

/// Computes the surface around `run`'s weights (restored exactly afterwards). Refuses (InputError) a request whose
/// landscape_memory exceeds the budget of util/memory.hpp, before any point is evaluated. Throws InputError for bad data or
/// directions (unknown kind, another model, a file that does not fit, a journal of other settings), and
/// std::invalid_argument as the solvers do.
LandscapeAnalysis compute_landscape(LoadedRun& run, const LandscapeRequest& request, const Provenance& provenance);

/// /landscape/{xcoordinates, ycoordinates?, <split>_loss, <split>_acc, <split>_ppl?, eigenvalues?, eigen_residuals?,
/// sharpness/...} with attributes (index_order, dirs, params, parameter_count, ignore, splits, max_samples, data,
/// seed, directions_sha256, accuracy, x_/y_direction_{kind, normalization, norm, source}). Requires a complete
/// surface.
void write_landscape(ReportWriter& w, const LandscapeAnalysis& a, const LandscapeRequest& request);

/// "R.h5" -> "R.loss-landscape.h5", the file `--format loss-landscape` writes beside the report.
std::string loss_landscape_path(const std::string& report);

}  // namespace moescope
