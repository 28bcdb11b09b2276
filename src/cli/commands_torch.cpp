// moescope-torch: every subcommand, the torch ones run here.
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include "moescope/util/runtime.hpp"
#include "torch_common.hpp"

namespace moescope::cli {

int start_torch_work(const Context& ctx) {
  reexec_with_torch_environment(ctx.argv);
  const int n = thread_count(ctx);
  at::set_num_threads(n);  // LibTorch starts with one intra-op thread on some builds
  // OpenBLAS keeps a pool of its own, one thread per core: --threads bounds it too (sweep --jobs gives each job its
  // share of the cores), while without the flag it keeps its default (or the user's OPENBLAS_NUM_THREADS).
  if (ctx.threads > 0) set_openblas_threads(n);
  spdlog::debug("BLAS: {}, {} threads", openblas_description(), openblas_threads());
  return n;
}

void add_commands(CLI::App& app, Context& ctx) {
  add_inspect(app, ctx);
  add_geometry(app, ctx);
  add_synth(app, ctx);
  add_correlate(app, ctx);
  add_train(app, ctx);
  add_landscape(app, ctx);
  add_activations(app, ctx);
  add_compare_spaces(app, ctx);
  add_hessian(app, ctx);
  add_plot(app, ctx);
  add_sweep(app, ctx);
}

}  // namespace moescope::cli
