#include "moescope/study/summary.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>

#include "moescope/io/report.hpp"
#include "moescope/stats/moments.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/files.hpp"
#include "moescope/util/numbers.hpp"

namespace moescope {

namespace fs = std::filesystem;

namespace {


// Headline metrics, in the order the page shows them (those a sweep has).
const char* const kHeadline[] = {"test_acc", "valid_acc", "valid_loss", "test_loss", "valid_ppl", "test_ppl",
                                 "mso_mean", "activation_overlap", "activation_mso", "param_variance",
                                 "routing_entropy", "load_cv", "lambda_1_train", "lambda_1_test", "trace_train",
                                 "trace_test", "compare_pearson_r"};

std::string value_text(const SweepTable& t, const std::string& key, std::size_t row) {
  return t.numeric_coords.count(key) ? number_text(t.numeric_coords.at(key)[row]) : t.text_coords.at(key)[row];
}

std::string num(double v, int digits = 4) {
  if (!std::isfinite(v)) return std::isnan(v) ? "n/a" : (v > 0 ? "inf" : "-inf");
  std::ostringstream s;
  s << std::setprecision(digits) << v;
  return s.str();
}

}  // namespace

SweepSummary summarise_sweep(const SweepTable& t, const std::vector<std::pair<std::string, std::string>>& pairs_in,
                             const BootstrapOptions& bootstrap) {
  SweepSummary s;
  for (const auto& st : t.status) {
    if (st == "complete") ++s.complete;
    else if (st == "failed") ++s.failed;
    else ++s.partial;
  }
  for (const char* h : kHeadline)
    if (t.metrics.count(h)) s.metrics.push_back(h);
  for (const auto& m : t.metric_names)
    if (std::find(s.metrics.begin(), s.metrics.end(), m) == s.metrics.end()) s.metrics.push_back(m);

  // Settings: rows grouped by every coordinate but the seed, in first-seen (grid) order.
  std::vector<std::string> group_axes;
  for (const auto& a : t.axes)
    if (a != t.seed) group_axes.push_back(a);
  std::map<std::string, std::size_t> index;
  for (std::size_t row = 0; row < t.rows(); ++row) {
    std::vector<std::string> labels;
    std::string key, series;
    for (const auto& a : group_axes) {
      labels.push_back(a + "=" + value_text(t, a, row));
      key += labels.back() + ";";
      if (a != t.strength) series += (series.empty() ? "" : ", ") + labels.back();
    }
    auto it = index.find(key);
    if (it == index.end()) {
      SweepSetting set;
      set.labels = labels;
      set.series = series;
      set.strength = t.strength.empty() ? kNaN : t.numeric_coords.at(t.strength)[row];
      it = index.emplace(key, s.settings.size()).first;
      s.settings.push_back(std::move(set));
    }
    s.settings[it->second].rows.push_back(row);
  }
  for (SweepSetting& set : s.settings)
    for (const auto& m : s.metrics) {
      const FiniteMoments mo = finite_moments(set.values(t.metrics.at(m)));
      set.n[m] = mo.n;
      set.mean[m] = mo.mean;
      set.sd[m] = mo.sd;
    }

  // Change against strength 0 (or the smallest strength) within each series.
  std::map<std::string, std::vector<const SweepSetting*>> by_series;
  for (const auto& set : s.settings) by_series[set.series].push_back(&set);
  if (!t.strength.empty()) {
    for (auto& [series, sets] : by_series) {
      std::sort(sets.begin(), sets.end(), [](const SweepSetting* a, const SweepSetting* b) { return a->strength < b->strength; });
      for (const auto* set : sets) s.strengths[series].push_back(set->strength);
      for (const auto& m : s.metrics) {
        const double base = sets.front()->mean.at(m);
        auto& out = s.change_percent[series][m];
        for (const auto* set : sets)
          out.push_back(base != 0 && std::isfinite(base) ? 100.0 * (set->mean.at(m) - base) / std::abs(base) : kNaN);
      }
    }
  }

  // Correlations.
  std::vector<std::pair<std::string, std::string>> pairs = pairs_in;
  if (pairs.empty()) {
    pairs.push_back({"mso_mean", "activation_overlap"});
    for (const char* y : {"mso_mean", "activation_overlap", "valid_loss", "test_acc", "valid_ppl"})
      pairs.push_back({"strength", y});
  }
  auto column = [&](const std::string& name) -> const std::vector<double>* {
    if (name == "strength") return t.strength.empty() ? nullptr : &t.numeric_coords.at(t.strength);
    return t.numeric(name);
  };
  // Within each series along the strength axis; without one, across all settings (a series of one setting has
  // nothing to correlate).
  std::map<std::string, std::vector<const SweepSetting*>> all_settings;
  for (const auto& set : s.settings) all_settings[""].push_back(&set);
  const auto& groups = t.strength.empty() ? all_settings : by_series;
  for (const auto& [xn, yn] : pairs) {
    const std::vector<double>* xc = column(xn);
    const std::vector<double>* yc = column(yn);
    if (!xc || !yc) continue;  // a column this sweep does not have
    const std::string xname = xn == "strength" ? t.strength : xn;
    for (const auto& [series, sets] : groups) {
      for (const char* over : {"settings", "points"}) {
        SweepCorrelation c;
        c.x = xname;
        c.y = yn;
        c.over = over;
        c.series = series;
        std::vector<double> xs, ys;
        if (std::string(over) == "settings") {
          for (const auto* set : sets) {
            const double x = finite_moments(set->values(*xc)).mean, y = finite_moments(set->values(*yc)).mean;
            if (std::isfinite(x) && std::isfinite(y)) xs.push_back(x), ys.push_back(y);
          }
        } else {
          for (const auto* set : sets)
            for (std::size_t row : set->rows)
              if (std::isfinite((*xc)[row]) && std::isfinite((*yc)[row])) xs.push_back((*xc)[row]), ys.push_back((*yc)[row]);
        }
        c.n = static_cast<std::int64_t>(xs.size());
        try {
          c.pearson = pearson(xs, ys, bootstrap);
          c.spearman = spearman(xs, ys, bootstrap);
        } catch (const std::invalid_argument& e) {
          c.note = first_line(e);
          const auto colon = c.note.find(": ");
          if (colon != std::string::npos) c.note = c.note.substr(colon + 2);
          c.pearson = c.spearman = Correlation{c.n, kNaN, kNaN, kNaN, kNaN};
        }
        s.correlations.push_back(std::move(c));
      }
    }
  }
  return s;
}

void write_summary(ReportWriter& w, const SweepSummary& s) {
  w.create_group("/summary");
  w.set_attr("/summary", "name", s.name);
  w.set_attr("/summary", "points_complete", s.complete);
  w.set_attr("/summary", "points_failed", s.failed);
  w.set_attr("/summary", "points_partial", s.partial);
  w.set_attr("/summary", "definition",
             std::string("settings: rows that differ only by seed; mean and sample sd (n-1) over their finite values; "
                         "change: 100 (mean - mean at the smallest strength) / |mean at the smallest strength|; "
                         "correlations: Pearson and Spearman with two-sided Student-t p-values and percentile "
                         "bootstrap intervals, over the settings' means or over all points"));
  for (std::size_t i = 0; i < s.settings.size(); ++i) {
    const SweepSetting& set = s.settings[i];
    char id[32];
    std::snprintf(id, sizeof id, "%03zu", i);
    const std::string b = std::string("/summary/settings/") + id;
    w.create_group(b);
    std::string label;
    for (const auto& l : set.labels) label += (label.empty() ? "" : ", ") + l;
    w.set_attr(b, "setting", label);
    w.set_attr(b, "series", set.series);
    w.set_attr(b, "strength", set.strength);
    w.set_attr(b, "rows", static_cast<std::int64_t>(set.rows.size()));
    for (const auto& m : s.metrics) {
      w.write(b + "/mean/" + m, {set.mean.at(m)}, {});
      w.write(b + "/sd/" + m, {set.sd.at(m)}, {});
      w.write_int(b + "/n/" + m, {set.n.at(m)}, {});
    }
  }
  for (std::size_t i = 0; i < s.correlations.size(); ++i) {
    const SweepCorrelation& c = s.correlations[i];
    char id[32];
    std::snprintf(id, sizeof id, "%03zu", i);
    const std::string b = std::string("/summary/correlations/") + id;
    w.create_group(b);
    for (const auto& [k, v] : {std::pair<const char*, std::string>{"x", c.x}, {"y", c.y}, {"over", c.over},
                                {"series", c.series}, {"note", c.note}})
      w.set_attr(b, k, v);
    w.write_int(b + "/n", {c.n}, {});
    write_coefficients(w, b, c.pearson, c.spearman);
  }
}

void write_summary_markdown(const std::string& path, const SweepSummary& s, const SweepTable& t,
                            const std::vector<std::string>& commands, const nlohmann::ordered_json& reference,
                            const std::string& figures_dir) {
  std::ostringstream o;
  o << "# Sweep: " << s.name << "\n\n";
  if (!s.description.empty()) o << s.description << "\n\n";
  o << "Points: " << t.rows() << " (" << s.complete << " complete, " << s.failed << " failed, " << s.partial
    << " not finished). Data: `sweep.csv` and `sweep.h5` (one row per point), `summary.h5` (these tables).\n\n";
  o << "## Commands\n\n```\n";
  for (const auto& c : commands) o << c << "\n";
  o << "```\n\n";

  // Results per setting: the spec's columns, else the headline metrics, as mean ± sd (n).
  std::vector<std::string> shown, missing;
  for (const auto& c : s.columns) {
    const std::string* name = t.metric_name(c);
    if (name && std::count(s.metrics.begin(), s.metrics.end(), *name)) shown.push_back(*name);
    else missing.push_back(c);
  }
  if (s.columns.empty())
    for (const auto& m : s.metrics)
      if (shown.size() < 10 && std::any_of(s.settings.begin(), s.settings.end(), [&](const SweepSetting& x) {
            return std::isfinite(x.mean.at(m));
          }))
        shown.push_back(m);
  o << "## Results per setting (mean ± sd over seeds, n)\n\n| setting |";
  for (const auto& m : shown) o << " " << m << " |";
  o << "\n|---|";
  for (std::size_t i = 0; i < shown.size(); ++i) o << "---|";
  o << "\n";
  for (const auto& set : s.settings) {
    std::string label;
    for (const auto& l : set.labels) label += (label.empty() ? "" : ", ") + l;
    o << "| " << (label.empty() ? "(all)" : label) << " |";
    for (const auto& m : shown)
      o << " " << num(set.mean.at(m)) << (std::isfinite(set.sd.at(m)) ? " ± " + num(set.sd.at(m), 2) : "") << " ("
        << set.n.at(m) << ") |";
    o << "\n";
  }
  o << "\nEvery other column is in `sweep.csv`.";
  if (!missing.empty()) {
    o << " Not in this sweep (no finished report has them):";
    for (const auto& c : missing) o << " `" << c << "`";
    o << ".";
  }
  o << "\n\n";

  if (!s.change_percent.empty()) {
    o << "## Change against the smallest strength (`" << t.strength << "`), percent\n\n";
    for (const auto& [series, per_metric] : s.change_percent) {
      if (!series.empty()) o << "**" << series << "**\n\n";
      o << "| metric |";
      for (double st : s.strengths.at(series)) o << " " << num(st) << " |";
      o << " largest |\n|---|";
      for (std::size_t i = 0; i <= s.strengths.at(series).size(); ++i) o << "---|";
      o << "\n";
      for (const auto& m : shown) {
        const auto& v = per_metric.at(m);
        double largest = kNaN;
        for (double x : v)
          if (std::isfinite(x) && (std::isnan(largest) || std::abs(x) > std::abs(largest))) largest = x;
        o << "| " << m << " |";
        for (double x : v) o << " " << (std::isfinite(x) ? (x >= 0 ? "+" : "") + num(x, 3) + "%" : "n/a") << " |";
        o << " " << (std::isfinite(largest) ? (largest >= 0 ? "+" : "") + num(largest, 3) + "%" : "n/a") << " |\n";
      }
      o << "\n";
    }
  }

  if (!s.correlations.empty()) {
    o << "## Correlations\n\nOver the settings' means (one value per setting, as the papers report them) and over all "
         "points. Two-sided p from Student's t (as scipy.stats); 95% percentile bootstrap intervals.\n\n"
      << "| x | y | series | over | n | Pearson r (p) [CI] | Spearman rho (p) |\n|---|---|---|---|---|---|---|\n";
    for (const auto& c : s.correlations) {
      o << "| " << c.x << " | " << c.y << " | " << (c.series.empty() ? "all" : c.series) << " | " << c.over << " | "
        << c.n << " | ";
      if (!c.note.empty()) {
        o << "undefined: " << c.note << " | |\n";
        continue;
      }
      o << num(c.pearson.r, 3) << " (" << num(c.pearson.p, 3) << ") [" << num(c.pearson.ci_low, 3) << ", "
        << num(c.pearson.ci_high, 3) << "] | " << num(c.spearman.r, 3) << " (" << num(c.spearman.p, 3) << ") |\n";
    }
    o << "\n";
  }

  if (reference.is_object() && !reference.empty()) {
    o << "## What the paper reports\n\n";
    for (const auto& [k, v] : reference.items()) o << "- " << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
    o << "\nOur numbers for the same quantities are in the tables above.\n\n";
  }

  std::error_code ec;
  if (!figures_dir.empty() && fs::is_directory(figures_dir, ec)) {
    std::vector<std::string> pngs;
    for (const auto& e : fs::directory_iterator(figures_dir, ec))
      if (e.path().extension() == ".png") pngs.push_back(e.path().filename().string());
    std::sort(pngs.begin(), pngs.end());
    if (!pngs.empty()) {
      o << "## Figures\n\n";
      const std::string rel = fs::relative(figures_dir, fs::path(path).parent_path(), ec).string();
      for (const auto& p : pngs) o << "![" << p << "](" << rel << "/" << p << ")\n";
      o << "\n";
    }
  }
  write_file_atomic(path, o.str());
}

}  // namespace moescope
