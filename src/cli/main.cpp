// moescope (the torch-free front end) and moescope-torch (every command): a thin shell over the library. Parse
// flags, call one library function, write one report. Exit codes: 0 ok, 1 internal error, 2 bad usage or bad input.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "common.hpp"
#include "moescope/study/runner.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/runtime.hpp"
#include "moescope/version.hpp"


int main(int argc, char** argv) {
  using namespace moescope;
  cli::Context ctx;
  ctx.argv = argv;
  ctx.runtime = keep_freed_memory();  // before torch allocates anything large
  ignore_file_size_signal();          // past `ulimit -f`, writes fail with EFBIG and say so
  ctx.runtime += std::string("; OMP_WAIT_POLICY ") +
                 (std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "unset (libgomp's default)");
  ctx.command_line = shell_command(std::vector<std::string>(argv, argv + argc));

  CLI::App app{"moescope: what the experts of a Mixture-of-Experts model have learned, and the loss landscape "
               "around it"};
  app.set_version_flag("--version", std::string("moescope ") + kVersion);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--threads", ctx.threads, "Worker threads (torch intra-op, the library's and OpenBLAS's); 0 = all cores")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-level", ctx.log_level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->each([](const std::string& v) { spdlog::set_level(spdlog::level::from_str(v)); });
  bool check_args = false;
  app.add_flag("--check-args", check_args, "Parse the command's arguments and exit (what `sweep` checks its analyses with)")
      ->group("");  // hidden
  cli::add_commands(app, ctx);
  // With --check-args a command stops once its arguments have been parsed and validated (the main app's
  // parse-complete callback runs after validation and before the subcommands' callbacks); the front end still
  // hands a torch command over, so that moescope-torch checks its arguments.
  app.parse_complete_callback([&] {
    if (!check_args) return;
    for (CLI::App* sub : app.get_subcommands())
      if (ctx.front_end && *cli::torch_command_description(sub->get_name()) != '\0') return;
    throw CLI::Success();
  });

  auto logger = spdlog::stderr_color_mt("moescope");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%^[%l]%$ %v");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, as every other error (CLI11's own printing adds a second line).
    std::cerr << "moescope: error: " << e.what() << " (see --help)\n";
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
