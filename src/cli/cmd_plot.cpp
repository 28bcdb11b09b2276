// moescope plot REPORT.h5 [REPORT2.h5 ...] [-o DIR] [--format png,pdf] [--only KIND,...]: figures for every report
// kind (geometry, activations, compare_spaces, train, hessian, landscape, correlation, sweep), drawn by
// tools/plot.py with Debian's python3 and matplotlib. The arguments go to the script unchanged.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common.hpp"
#include "moescope/paths.hpp"

namespace moescope::cli {
namespace {

namespace fs = std::filesystem;

// tools/plot.py: $MOESCOPE_TOOLS_DIR, else beside an installed executable (../share/moescope/tools), else the
// source tree this executable was built from.
std::string plot_script() {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("MOESCOPE_TOOLS_DIR")) candidates.emplace_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / "share" / "moescope" / "tools");
  candidates.emplace_back(kToolsDir);
  for (const auto& dir : candidates)
    if (fs::is_regular_file(dir / "plot.py", ec)) return (dir / "plot.py").string();
  throw InputError("plot: tools/plot.py not found (set MOESCOPE_TOOLS_DIR to the folder holding it)");
}

}  // namespace

void add_plot(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("plot", "Figures (PNG, PDF) for every kind of report: geometry, activations, "
                                         "compare_spaces, train, hessian, landscape, correlation, sweep");
  sub->footer("Options: -o DIR (default REPORT_figures), --format png,pdf,svg, --only KIND,..., --list-kinds, "
              "--levels N, --vmax V, --sweep-pair X,Y. Needs /usr/bin/python3 with python3-h5py, python3-matplotlib "
              "and python3-numpy ($MOESCOPE_PYTHON overrides the interpreter).");
  sub->prefix_command()->allow_extras()->fallthrough(false);  // everything after `plot` goes to the script as is
  sub->callback([sub] {
    const std::string script = plot_script();
    const char* env = std::getenv("MOESCOPE_PYTHON");
    const std::string python = env ? env : "/usr/bin/python3";
    std::vector<std::string> argv{python, script};
    for (const auto& a : sub->remaining()) argv.push_back(a);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(python.c_str(), cargv.data());
    throw InputError("plot: cannot run " + python + " (" + std::strerror(errno) +
                     "); install python3, python3-h5py, python3-matplotlib and python3-numpy, or set MOESCOPE_PYTHON");
  });
}

}  // namespace moescope::cli
