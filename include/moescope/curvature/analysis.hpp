#pragma once
// The Hessian analysis of a trained run (what `moescope hessian` and a sweep's hessian step run): for each split of
// a fixed evaluation set and each parameter subset, the top eigenpairs with their true Ritz residuals, a trace
// estimate with its standard error and the SLQ spectral density of the loss Hessian; and the report group it writes.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "moescope/curvature/density.hpp"
#include "moescope/curvature/distributed.hpp"
#include "moescope/curvature/eigensolvers.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/curvature/trace.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/memory.hpp"
#include "moescope/util/progress.hpp"

namespace moescope {

class ReportWriter;

/// How to find the top eigenpairs of a Hessian operator (shared by `hessian` and `landscape --dirs eigen`).
struct EigenRequest {
  std::int64_t k = 1;
  EigenTarget target = EigenTarget::LargestAlge;
  /// "lanczos" (device-resident, the default), "spectra" (restarted, on the host), "power" (PyHessian's rule).
  std::string solver = "lanczos";
  /// Relative tolerance; 0: 1e-6 (power: 1e-3 on the relative eigenvalue change, as PyHessian).
  double tol = 0.0;
  /// Lanczos steps, or power iterations per pair.
  std::int64_t max_steps = 300;
  std::uint64_t seed = 0;
  ProgressFn progress;
  double effective_tol() const { return tol > 0 ? tol : (solver == "power" ? 1e-3 : 1e-6); }
};
/// The eigenpairs (eigenvectors as host columns). Throws std::invalid_argument for an unknown solver, k out of
/// range for the operator's size, and as the solvers do.
EigenResult top_eigenpairs(const HessianOperator& op, const EigenRequest& r);

struct HessianRequest {
  EvalSpec eval;
  /// A select_parameters spec ("all", "router", "expert:L.E", "re:REGEX"), or "each-expert": one group per expert.
  std::string params = "all";
  EigenRequest eigen;
  /// "" (none), "hutchinson", "hutch++", "xtrace"; `probes` is the matvec budget.
  std::string trace;
  std::int64_t probes = 30;
  bool density = false;
  SlqOptions slq;           ///< runs, steps (the seed is `seed`)
  std::int64_t density_bins = 10000;
  bool keep_graph = false;  ///< PyHessian's trick: keep each batch's first-order graph between products
  bool eigenvectors = false;
  std::string device = "cpu";
  std::uint64_t seed = 0;   ///< start vectors and probes
  DistributedOptions distributed;
  ProgressFn progress;
};

/// One parameter subset on one split.
struct HessianGroup {
  std::string subpath;                  ///< "" or "expert_L_E" (each-expert)
  std::string params;                   ///< the spec that selected it
  std::vector<std::string> param_names;
  std::int64_t n = 0;                   ///< parameters (the operator's size)
  EigenResult eigen;                    ///< eigenvectors kept only when asked for
  double tol = 0.0;
  std::int64_t eigen_matvecs = 0;
  std::optional<TraceResult> trace;
  std::optional<DensityResult> density;
  std::int64_t matvecs = 0;             ///< all products for this group
};
struct HessianSplit {
  std::string name;
  std::int64_t samples = 0;             ///< over all ranks
  double loss = 0.0;                    ///< the mean loss the Hessian is of
  std::vector<HessianGroup> groups;
};
struct HessianAnalysis {
  std::vector<HessianSplit> splits;
  int rank = 0, world_size = 1;
};

/// The largest allocations of the analysis of one subset of n parameters (solver basis, eigenvectors, trace probe
/// blocks, SLQ basis, gradients), for util/memory's check.
std::vector<MemoryItem> hessian_memory(std::int64_t n, const HessianRequest& request);

/// Runs the analysis on `run` (its model is moved to request.device and put in eval mode). Throws InputError for
/// bad data, an empty selection, a split smaller than the world size, CUDA asked for but absent, or a request whose
/// estimated memory (hessian_memory of the largest subset) exceeds the budget of util/memory.hpp (naming the
/// flags that lower it); std::invalid_argument as the solvers do (the caller names the options that set them).
HessianAnalysis analyse_hessian(LoadedRun& run, const HessianRequest& request);

/// /hessian (attrs definition, world_size) and /hessian/<split>[/<subpath>]/{eigenvalues, residuals,
/// residual_estimates, eigenvectors?, matvecs, param_names, trace?, trace_stderr?, density/{grid, values}?} with
/// attributes method, status, which, tol, params, parameters, iterations, eigen_matvecs, trace_method,
/// trace_status, probes, trace_matvecs; /hessian/<split>/loss with attrs samples, batch_size, keep_graph, params.
void write_hessian(ReportWriter& w, const HessianAnalysis& a, const HessianRequest& request);

}  // namespace moescope
