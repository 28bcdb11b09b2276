// moescope: a thin shell over the library. Parse flags, call one library function, write one report.
// Exit codes: 0 ok, 1 internal error, 2 bad usage or bad input.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "common.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/runtime.hpp"
#include "moescope/version.hpp"

namespace {

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") ==
                        std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moescope;
  cli::Context ctx;
  ctx.argv = argv;
  ctx.runtime = keep_freed_memory();  // before torch allocates anything large
  ignore_file_size_signal();          // past `ulimit -f`, writes fail with EFBIG and say so
  ctx.runtime += std::string("; OMP_WAIT_POLICY ") +
                 (std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "unset (libgomp's default)");
  for (int i = 0; i < argc; ++i) ctx.command_line += (i ? " " : "") + shell_quote(argv[i]);

  CLI::App app{"moescope: what the experts of a Mixture-of-Experts model have learned, and the loss landscape "
               "around it"};
  app.set_version_flag("--version", std::string("moescope ") + kVersion);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--threads", ctx.threads, "Worker threads (torch intra-op and the library's); 0 = all cores")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-level", ctx.log_level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->each([](const std::string& v) { spdlog::set_level(spdlog::level::from_str(v)); });
  cli::add_inspect(app, ctx);
  cli::add_geometry(app, ctx);
  cli::add_synth(app, ctx);
  cli::add_correlate(app, ctx);
  cli::add_train(app, ctx);
  cli::add_landscape(app, ctx);
  cli::add_activations(app, ctx);
  cli::add_hessian(app, ctx);
  cli::add_plot(app, ctx);

  auto logger = spdlog::stderr_color_mt("moescope");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%^[%l]%$ %v");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  } catch (const InputError& e) {
    std::cerr << "moescope: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    // One line (LibTorch's errors carry a C++ backtrace after the first line: shown with --log-level debug).
    std::cerr << "moescope: internal error: " << first_line(e) << "\n";
    const std::string all = e.what();
    if (spdlog::should_log(spdlog::level::debug) && all.size() > first_line(e).size())
      std::cerr << all.substr(first_line(e).size() + 1) << "\n";
    return 1;
  }
  return 0;
}
