// moescope, the torch-free front end: the torch-free subcommands run here; train, activations, hessian and
// landscape are handed to moescope-torch (beside this executable, or $MOESCOPE_TORCH_BIN) by execv with the same
// arguments and the environment set_torch_environment gives it (OMP_WAIT_POLICY=PASSIVE, and OPENBLAS_CORETYPE
// where OpenBLAS does not know the CPU; util/runtime.hpp says why), so LibTorch is loaded only by the commands that
// use it and each process starts once.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "common.hpp"
#include "moescope/util/runtime.hpp"

namespace moescope::cli {
namespace {

[[noreturn]] void hand_over(const Context& ctx) {
  namespace fs = std::filesystem;
  std::string bin;
  if (const char* env = std::getenv("MOESCOPE_TORCH_BIN")) {
    bin = env;
  } else {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    bin = ((ec ? fs::path(ctx.argv[0]).parent_path() : exe.parent_path()) / "moescope-torch").string();
  }
  set_torch_environment(/*load_blas=*/true);
  ::execv(bin.c_str(), ctx.argv);
  throw std::runtime_error("cannot run " + bin + " (" + std::strerror(errno) +
                           "): moescope-torch belongs beside moescope, or set MOESCOPE_TORCH_BIN");
}

}  // namespace

void add_commands(CLI::App& app, Context& ctx) {
  ctx.front_end = true;
  add_inspect(app, ctx);
  add_geometry(app, ctx);
  add_synth(app, ctx);
  add_correlate(app, ctx);
  for (const TorchCommand& c : kTorchCommands) {
    auto* sub = app.add_subcommand(c.name, c.description);
    // Everything after the name, --help included, is moescope-torch's to parse.
    sub->prefix_command()->allow_extras()->fallthrough(false)->set_help_flag();
    sub->callback([&ctx] { hand_over(ctx); });
  }
  add_compare_spaces(app, ctx);
  add_plot(app, ctx);
  add_sweep(app, ctx);
}

}  // namespace moescope::cli
