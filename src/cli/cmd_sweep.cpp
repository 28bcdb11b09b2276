// moescope sweep SPEC.json -o DIR [--jobs N] [--dry-run] [--emit-jobs FILE] [--collect]
// A whole study: train every point of a grid over run-config keys, run the analyses on each, collect one table
// (DIR/sweep.h5, DIR/sweep.csv), summarise it (DIR/summary.md, DIR/summary.h5) and draw its figures (DIR/figures).
// Resumable (finished steps are skipped), parallel (--jobs points at a time, the threads divided between them),
// and ready for a cluster (--emit-jobs writes one shell command per point; --collect gathers what has finished).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "common.hpp"
#include "moescope/io/report.hpp"
#include "moescope/study/collect.hpp"
#include "moescope/study/summary.hpp"
#include "moescope/util/json.hpp"

namespace moescope::cli {
namespace {

namespace fs = std::filesystem;

struct SweepArgs {
  std::string spec, output, emit_jobs;
  int jobs = 1;
  bool dry_run = false, collect_only = false;
};

std::string self_executable(const Context& ctx) {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::absolute(ctx.argv[0]).string() : exe.string();
}

// The last line a command printed, without its own "moescope: error: " prefix (the sweep's message adds one).
std::string reason(const CommandResult& r) {
  const std::string prefix = "moescope: error: ";
  return r.last_error_line.rfind(prefix, 0) == 0 ? r.last_error_line.substr(prefix.size()) : r.last_error_line;
}

// Everything that can be checked before any training: the base config resolves, every axis key exists with the
// right type, every point's config is accepted, every analysis's flags parse.
void validate(const SweepPlan& plan, const std::string& bin) {
  const SweepSpec& spec = plan.spec;
  fs::create_directories(plan.dir);
  const std::string base = plan.dir + "/base.json";
  write_json_file(base, spec.base);
  const CommandResult r = run_command({bin, "--log-level", "error", "train", "--config", base, "--print-config"});
  if (r.exit_code != 0) fail_input(spec.file, "base: " + reason(r));
  const auto resolved = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (!resolved.is_object()) throw std::runtime_error("train --print-config printed no JSON object");
  check_axes_against(spec, resolved);
  for (const AnalysisSpec& a : spec.analyses) {
    std::vector<std::string> argv{bin, "--check-args", a.command, plan.dir, "-o", plan.dir + "/check.h5"};
    for (const auto& f : a.arguments()) argv.push_back(f);
    const CommandResult c = run_command(argv);
    if (c.exit_code != 0) fail_input(spec.file, "analyses." + a.name + ": " + reason(c));
  }
  write_point_configs(plan);
  for (const PlannedPoint& p : plan.points) {
    if (point_status(p).complete) continue;
    const CommandResult c =
        run_command({bin, "--log-level", "error", "train", "--config", p.dir + "/run.json", "--print-config"});
    if (c.exit_code != 0) fail_input(spec.file, "point " + p.point.name + ": " + reason(c));
  }
}

void collect(const SweepPlan& plan, const Context& ctx, const std::string& bin) {
  const SweepTable table = collect_sweep(plan);
  const std::string h5 = plan.dir + "/sweep.h5";
  {
    ReportWriter w(h5);
    Provenance p = make_provenance(ctx, "");
    p.checkpoint = plan.spec.file;
    w.write_provenance(p);
    write_sweep_table(w, table);
    w.commit();
  }
  write_sweep_csv(plan.dir + "/sweep.csv", table);
  SweepSummary s = summarise_sweep(table, plan.spec.pairs);
  s.name = plan.spec.name;
  s.description = plan.spec.description;
  s.columns = plan.spec.columns;
  {
    ReportWriter w(plan.dir + "/summary.h5");
    Provenance p = make_provenance(ctx, "");
    p.checkpoint = plan.spec.file;
    w.write_provenance(p);
    write_summary(w, s);
    w.commit();
  }
  // Drawn into a fresh folder that then replaces figures/: a figure of a column the table no longer has (an earlier
  // collection's) must not stay beside the new ones, or summary.md would link it.
  const std::string figures = plan.dir + "/figures", drawing = figures + ".partial";
  std::error_code ec;
  std::filesystem::remove_all(drawing, ec);
  const CommandResult f = run_command({bin, "plot", h5, "-o", drawing});
  std::filesystem::remove_all(figures, ec);
  if (f.exit_code != 0) {
    spdlog::warn("sweep: no figures ({})", f.last_error_line);
    std::filesystem::remove_all(drawing, ec);
  } else {
    std::filesystem::rename(drawing, figures, ec);
    if (ec) spdlog::warn("sweep: figures left in {} ({})", drawing, ec.message());
  }
  std::vector<std::string> commands{ctx.command_line, "# collect again (e.g. after jobs ran elsewhere):",
                                    shell_command({bin, "sweep", plan.spec.file, "-o", plan.dir, "--collect"}),
                                    "# the commands of the first point:"};
  if (!plan.points.empty())
    for (const auto& st : plan.points.front().steps) commands.push_back(shell_command(st.argv));
  write_summary_markdown(plan.dir + "/summary.md", s, table, commands, plan.spec.reference, figures);
  std::cout << fmt::format("points: {} complete, {} failed, {} not finished\n", s.complete, s.failed, s.partial);
  std::cout << fmt::format("table: {} and {}\nsummary: {}/summary.md\n", h5, plan.dir + "/sweep.csv", plan.dir);
}

void run(const SweepArgs& a, const Context& ctx) {
  const SweepSpec spec = read_sweep_spec(a.spec);
  if (a.jobs < 1) throw InputError("--jobs: must be at least 1, got " + std::to_string(a.jobs));
  const std::string bin = self_executable(ctx);
  SweepOptions o;
  o.moescope = bin;
  o.jobs = a.jobs;
  o.threads = ctx.threads;
  const SweepPlan plan = plan_sweep(spec, a.output, o);
  if (a.collect_only) {
    collect(plan, ctx, bin);
    return;
  }
  validate(plan, bin);
  spdlog::info("sweep {}: {} points, {} analyses each, {} at a time with {} threads each", spec.name,
               plan.points.size(), spec.analyses.size(), plan.jobs, plan.threads_per_job);
  if (a.dry_run) {
    for (const PlannedPoint& p : plan.points) {
      const PointStatus st = point_status(p);
      std::cout << p.point.name << (st.complete ? "  (complete)" : "") << "\n";
      for (const auto& s : p.steps) std::cout << "  " << shell_command(s.argv) << "\n";
    }
    return;
  }
  if (!a.emit_jobs.empty()) {
    emit_jobs(plan, a.emit_jobs);
    std::cout << fmt::format("wrote {} commands to {}; run them, then: moescope sweep {} -o {} --collect\n",
                             plan.points.size(), a.emit_jobs, a.spec, a.output);
    return;
  }
  const SweepRunResult r = run_sweep(plan, progress_renderer(ctx));
  if (r.failed > 0) spdlog::warn("sweep: {} point(s) failed: see their status.json and logs/", r.failed);
  collect(plan, ctx, bin);
}

}  // namespace

void add_sweep(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<SweepArgs>();
  auto* sub = app.add_subcommand("sweep", "A study: train and analyse every point of a grid, collect, summarise, plot");
  sub->add_option("spec", a->spec, "Sweep spec (JSON: base, axes, analyses, summary; see the README)")->required();
  sub->add_option("-o,--output", a->output, "The sweep's folder (points/, sweep.h5, sweep.csv, summary.md, figures/)")
      ->required();
  sub->add_option("--jobs", a->jobs, "Points at a time (worker processes; --threads is divided between them)");
  sub->add_flag("--dry-run", a->dry_run, "Check the spec and print every point's commands; run nothing");
  sub->add_option("--emit-jobs", a->emit_jobs, "Write one shell command per point to this file (for GNU parallel or a "
                                                "Slurm array) instead of running them");
  sub->add_flag("--collect", a->collect_only, "Only gather what has finished into the table, summary and figures");
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
