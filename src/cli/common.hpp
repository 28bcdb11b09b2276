#pragma once
// Shared pieces of the subcommands: the run context, provenance, threads, the shared option groups and the
// progress renderer. Commands are thin: parse flags into a library request, call it, write its report.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "moescope/io/report.hpp"
#include "moescope/metrics/activations.hpp"
#include "moescope/data/spec.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/progress.hpp"

namespace moescope::cli {

/// What every subcommand gets: the command line as typed and the global options.
struct Context {
  std::string command_line;  // shell-quoted argv
  int threads = 0;           // 0 = all cores
  std::string log_level = "info";
  std::string hash = "auto";  // checkpoint hashing: auto, full, header, none
  std::string runtime;        // what main set up (allocator, OpenMP wait policy), logged at debug level
  char** argv = nullptr;      // main's: the front end hands it to moescope-torch unchanged
  bool front_end = false;     // the torch-free moescope (torch commands are hand-overs)
};

/// The worker count ctx.threads asks for (0: all cores). Logs it and ctx.runtime at debug level.
int thread_count(const Context& ctx);

/// Provenance for a report on `checkpoint` (hashes it as ctx.hash says).
Provenance make_provenance(const Context& ctx, const std::string& checkpoint, std::int64_t seed = 0);

/// Parses "0,3-5,7" into sorted unique indices; throws InputError naming the flag.
std::vector<int> parse_index_list(const std::string& spec, const std::string& flag);

/// The evaluation options of every analysis of a run, declared once: --data, --split, --max-samples, --batch-size
/// (EvalSpec's defaults: the run's data, train, 1000, 256). `one_split`: --split takes one name, not a list;
/// `no_max_samples`: the command counts tokens instead (activations' --max-tokens).
struct EvalFlags {
  bool one_split = false;
  bool no_max_samples = false;
};
void add_eval_options(CLI::App* sub, EvalSpec& eval, EvalFlags flags = {});
/// --params (select_parameters spec) and --seed, with one help text each.
void add_params_option(CLI::App* sub, std::string& params, const std::string& extra = "");
void add_seed_option(CLI::App* sub, std::uint64_t& seed, const std::string& what);
/// --hash, for commands that record a checkpoint digest.
void add_hash_option(CLI::App* sub, Context& ctx);
/// Checks what add_eval_options parsed, naming the flag.
void validate_eval(const EvalSpec& eval);

/// Prints the library's progress on stderr: on a terminal one live line per stage (done/total, rate, ETA, the
/// stage's measure), otherwise a line when a stage starts, about every 10% (or 30 s) and when it ends; notes on
/// lines of their own. Quiet with --log-level warn or above.
ProgressFn progress_renderer(const Context& ctx);

/// Runs f() with the library's precondition errors (std::invalid_argument) turned into bad input naming `flags`.
template <class F>
auto with_flags(const std::string& flags, F&& f) {
  return with_input_errors(flags, std::forward<F>(f));
}

/// The per-layer and pooled weight-vs-activation correlations on stdout (activations --geometry, compare-spaces).
void print_space_comparison(const std::vector<LayerOverlaps>& in, const SpaceComparison& c);

/// Prints notes the library returned (warnings for the user) through the log.
void print_notes(const std::vector<std::string>& notes);

/// The subcommands whose work is LibTorch's, with their one-line descriptions. The torch-free front end `moescope`
/// lists them and hands them to `moescope-torch`; `moescope-torch` runs them itself.
struct TorchCommand {
  const char* name;
  const char* description;
};
extern const TorchCommand kTorchCommands[4];
/// The description of a torch command by name.
const char* torch_command_description(const std::string& name);

/// Registers every subcommand: the torch-free ones here, and the torch ones as the executable has them
/// (commands_front.cpp: hand-offs to moescope-torch; commands_torch.cpp: the commands themselves).
void add_commands(CLI::App& app, Context& ctx);
/// The torch-free subcommands.
void add_inspect(CLI::App& app, Context& ctx);
void add_geometry(CLI::App& app, Context& ctx);
void add_synth(CLI::App& app, Context& ctx);
void add_correlate(CLI::App& app, Context& ctx);
void add_compare_spaces(CLI::App& app, Context& ctx);
void add_plot(CLI::App& app, Context& ctx);
void add_sweep(CLI::App& app, Context& ctx);

}  // namespace moescope::cli
