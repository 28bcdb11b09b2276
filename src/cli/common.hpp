#pragma once
// Shared pieces of the subcommands: the run context, provenance and thread set-up.
#include <CLI/CLI.hpp>

#include <string>

#include <Eigen/Dense>

#include "moescope/io/report.hpp"
#include "moescope/metrics/geometry.hpp"

namespace moescope::cli {

/// What every subcommand gets: the command line as typed and the global options.
struct Context {
  std::string command_line;  // shell-quoted argv
  int threads = 0;           // 0 = all cores
  std::string log_level = "info";
  std::string hash = "auto";  // checkpoint hashing: auto, full, header, none
  std::string runtime;        // what main set up (allocator, OpenMP wait policy), logged at debug level
  char** argv = nullptr;      // main's, for start_torch_work's re-execution
};

/// Sets torch's intra-op threads (and the library's worker count) from ctx.threads; returns the count used. Logs
/// the count and ctx.runtime at debug level.
int apply_threads(const Context& ctx);
/// For subcommands whose work is LibTorch's (training, model evaluation): first runs the program again with
/// passive OpenMP threads unless it already has them (reexec_with_passive_openmp; called before any OpenMP thread
/// exists), then apply_threads. Returns the thread count.
int start_torch_work(const Context& ctx);

/// Provenance for a report on `checkpoint` (hashes it as ctx.hash says).
Provenance make_provenance(const Context& ctx, const std::string& checkpoint, std::int64_t seed = 0);

/// A matrix's entries in row-major order (HDF5's order, h5py's m[i, j]).
std::vector<double> row_major(const Eigen::MatrixXd& m);

/// /geometry with its attributes (family, definition): the group `geometry` writes and `activations --geometry`
/// adds to its report.
void write_geometry_group(ReportWriter& w, const std::string& family);
/// /geometry/<key>: one layer's expert geometry as `geometry` writes it; `prefix` is the layer's tensor prefix.
void write_layer_geometry(ReportWriter& w, const LayerGeometry& g, const std::string& prefix);

/// Parses "0,3-5,7" into sorted unique indices; throws InputError naming the flag.
std::vector<int> parse_index_list(const std::string& spec, const std::string& flag);

void add_inspect(CLI::App& app, Context& ctx);
void add_geometry(CLI::App& app, Context& ctx);
void add_synth(CLI::App& app, Context& ctx);
void add_correlate(CLI::App& app, Context& ctx);
void add_train(CLI::App& app, Context& ctx);
void add_landscape(CLI::App& app, Context& ctx);
void add_activations(CLI::App& app, Context& ctx);
void add_hessian(CLI::App& app, Context& ctx);

}  // namespace moescope::cli
