#pragma once
// What the torch subcommands share (moescope-torch only).
#include "common.hpp"

namespace moescope::cli {

/// For subcommands whose work is LibTorch's: runs the program again with passive OpenMP threads unless the
/// environment already sets a policy (the front end `moescope` sets it before handing over, so this only happens
/// when moescope-torch is started by hand; util/runtime.hpp says why), then sets LibTorch's intra-op threads from
/// ctx.threads. Returns the thread count.
int start_torch_work(const Context& ctx);

void add_train(CLI::App& app, Context& ctx);
void add_landscape(CLI::App& app, Context& ctx);
void add_activations(CLI::App& app, Context& ctx);
void add_hessian(CLI::App& app, Context& ctx);

}  // namespace moescope::cli
