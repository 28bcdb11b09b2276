#include "moescope/study/collect.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>

#include "moescope/io/report.hpp"
#include "moescope/stats/moments.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/files.hpp"
#include "moescope/util/json.hpp"
#include "moescope/util/numbers.hpp"
#include "moescope/util/strings.hpp"

namespace moescope {

namespace fs = std::filesystem;

namespace {


// The mean over layers (or experts) of a metric, NaN values left out.
double mean_of(const std::vector<double>& v) { return finite_moments(v).mean; }

double cv_of(const std::vector<double>& v) {
  if (v.size() < 2) return kNaN;
  const double m = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return m != 0 ? std::sqrt(ss / static_cast<double>(v.size())) / m : kNaN;
}

double last_of(const ReportReader& r, const std::string& path) {
  if (!r.exists(path)) return kNaN;
  const auto v = r.read(path);
  return v.empty() ? kNaN : v.back();
}

// Whether the run's log says its model is a classifier (the trainer stores the run's config on /train).
bool is_classifier_run(const ReportReader& log) {
  if (!log.has_attr("/train", "config")) return false;
  const AttrValue a = log.attr("/train", "config");
  if (!std::holds_alternative<std::string>(a)) return false;
  const auto c = nlohmann::json::parse(std::get<std::string>(a), nullptr, false);
  return c.is_object() && c.contains("model") && json_fields::string_or_empty(c["model"], "type") == "classifier";
}

std::string fmt_radius(double r) {
  std::ostringstream s;
  s << r;
  return s.str();
}

// The scalars of a 1-D or 2-D surface, per split S (every /landscape/S_loss): the loss at the origin of the grid
// (the trained model), the largest and the mean increase over it, and the second difference at the origin,
// (L(+h) + L(-h) - 2 L(0)) / h^2 along each direction (averaged over x and y for a plane). Only when the origin is
// a grid point; the curvature only when its neighbours are at the same distance on both sides.
void surface_metrics(const ReportReader& r, const std::string& file, std::map<std::string, double>& m) {
  const std::vector<double> x = r.read("/landscape/xcoordinates");
  const std::vector<double> y = r.exists("/landscape/ycoordinates") ? r.read("/landscape/ycoordinates")
                                                                    : std::vector<double>{0.0};
  const auto origin = [](const std::vector<double>& c) {
    const auto it = std::find(c.begin(), c.end(), 0.0);
    return it == c.end() ? c.size() : static_cast<std::size_t>(it - c.begin());
  };
  const std::size_t i0 = origin(x), j0 = origin(y), nx = x.size(), ny = y.size();
  if (i0 == nx || j0 == ny) return;
  // Second difference along one axis through the origin: NaN without symmetric neighbours.
  const auto second_difference = [](const std::vector<double>& c, std::size_t k, auto&& at) {
    if (k == 0 || k + 1 >= c.size()) return kNaN;
    const double h = c[k + 1] - c[k];
    if (h <= 0 || std::abs((c[k] - c[k - 1]) - h) > 1e-9 * h) return kNaN;
    return (at(k + 1) + at(k - 1) - 2.0 * at(k)) / (h * h);
  };
  const std::string suffix = "_loss";
  for (const auto& name : r.list("/landscape")) {
    if (name == suffix || !ends_with(name, suffix)) continue;
    const std::vector<double> v = r.read("/landscape/" + name);
    if (v.size() != nx * ny)
      fail_input(file, "/landscape/" + name + " holds " + std::to_string(v.size()) + " values, not " +
                           std::to_string(nx) + " x " + std::to_string(ny) + " (its coordinates)");
    const std::string s = "surface_" + name.substr(0, name.size() - suffix.size());
    const double l0 = v[i0 * ny + j0];
    std::vector<double> rise;
    for (double l : v) rise.push_back(l - l0);
    const FiniteMoments mo = finite_moments(rise);
    double top = kNaN;
    for (double d : rise)
      if (std::isfinite(d) && (std::isnan(top) || d > top)) top = d;
    m[s + "_centre_loss"] = l0;
    m[s + "_max_increase"] = top;
    m[s + "_mean_increase"] = mo.mean;
    const double cx = second_difference(x, i0, [&](std::size_t i) { return v[i * ny + j0]; });
    const double cy = ny > 1 ? second_difference(y, j0, [&](std::size_t j) { return v[i0 * ny + j]; }) : kNaN;
    m[s + "_curvature"] = ny > 1 ? 0.5 * (cx + cy) : cx;
  }
}

// Adds every scalar one report holds, by kind.
void read_report(const std::string& file, const std::string& command, std::map<std::string, double>& m) {
  const ReportReader r(file);
  if (command == "geometry" || (command == "activations" && r.exists("/geometry"))) {
    std::vector<double> mso, pv, pvn;
    for (const auto& key : r.list("/geometry")) {
      const std::string b = "/geometry/" + key;
      if (!r.exists(b + "/mso")) continue;
      mso.push_back(r.read_scalar(b + "/mso"));
      m["mso_" + key] = mso.back();
      pv.push_back(r.read_scalar(b + "/param_variance"));
      pvn.push_back(r.read_scalar(b + "/param_variance_normalized"));
    }
    m["mso_mean"] = mean_of(mso);
    m["param_variance"] = mean_of(pv);
    m["param_variance_normalized"] = mean_of(pvn);
  }
  if (command == "activations") {
    std::vector<double> ov, mso, routed, ent, rvar, load_cv, imp_cv, dropped;
    for (const auto& key : r.list("/activations")) {
      const std::string b = "/activations/" + key;
      if (!r.exists(b + "/mean_overlap")) continue;
      ov.push_back(r.read_scalar(b + "/mean_overlap"));
      mso.push_back(r.read_scalar(b + "/mso"));
      routed.push_back(r.read_scalar(b + "/routed_mean_overlap"));
      ent.push_back(r.read_scalar(b + "/router_entropy"));
      if (r.exists(b + "/routing_variance")) rvar.push_back(r.read_scalar(b + "/routing_variance"));
      load_cv.push_back(cv_of(r.read(b + "/load")));
      imp_cv.push_back(cv_of(r.read(b + "/importance")));
      dropped.push_back(r.read_scalar(b + "/dropped_fraction"));
    }
    m["activation_overlap"] = mean_of(ov);
    m["activation_mso"] = mean_of(mso);
    m["routed_overlap"] = mean_of(routed);
    m["routing_entropy"] = mean_of(ent);
    m["routing_variance"] = mean_of(rvar);
    m["load_cv"] = mean_of(load_cv);
    m["importance_cv"] = mean_of(imp_cv);
    m["dropped_fraction"] = mean_of(dropped);
    if (r.exists("/compare_spaces/pearson_r")) m["compare_pearson_r"] = r.read_scalar("/compare_spaces/pearson_r");
  }
  if (command == "hessian") {
    for (const auto& split : r.list("/hessian")) {
      const std::string b = "/hessian/" + split;
      if (r.exists(b + "/loss")) m["loss_" + split] = r.read_scalar(b + "/loss");
      if (r.exists(b + "/eigenvalues")) {
        const auto ev = r.read(b + "/eigenvalues");
        for (std::size_t i = 0; i < ev.size(); ++i) m["lambda_" + std::to_string(i + 1) + "_" + split] = ev[i];
        const auto res = r.read(b + "/residuals");
        if (!res.empty()) m["lambda_1_" + split + "_residual"] = res[0];
      }
      if (r.exists(b + "/trace")) {
        m["trace_" + split] = r.read_scalar(b + "/trace");
        m["trace_" + split + "_stderr"] = r.read_scalar(b + "/trace_stderr");
      }
      std::vector<double> experts;
      for (const auto& g : r.list(b))
        if (g.rfind("expert_", 0) == 0 && r.exists(b + "/" + g + "/eigenvalues")) {
          const auto ev = r.read(b + "/" + g + "/eigenvalues");
          if (!ev.empty()) experts.push_back(ev[0]);
        }
      if (!experts.empty()) {
        m["lambda_1_" + split + "_expert_mean"] = mean_of(experts);
        m["lambda_1_" + split + "_expert_max"] = *std::max_element(experts.begin(), experts.end());
      }
    }
  }
  if (command == "landscape") {
    if (r.exists("/landscape/sharpness/radius")) {
      const auto radius = r.read("/landscape/sharpness/radius");
      const auto inc = r.read("/landscape/sharpness/mean_increase");
      const auto se = r.read("/landscape/sharpness/stderr_increase");
      for (std::size_t i = 0; i < radius.size(); ++i) {
        m["sharpness_" + fmt_radius(radius[i])] = inc[i];
        m["sharpness_" + fmt_radius(radius[i]) + "_stderr"] = se[i];
      }
    }
    if (r.exists("/landscape/sharpness/base_loss")) m["landscape_center_loss"] = r.read_scalar("/landscape/sharpness/base_loss");
    if (r.exists("/landscape/xcoordinates")) surface_metrics(r, file, m);
  }
}

}  // namespace

bool is_timing_column(const std::string& name) { return ends_with(name, "_ms_per_sample") || ends_with(name, "_ms"); }

std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  return nlohmann::json(v).dump();
}

std::map<std::string, double> point_metrics(const PlannedPoint& p, const SweepSpec& spec,
                                            std::map<std::string, std::string>* sources) {
  std::map<std::string, double> out;
  const std::string log = p.dir + "/run/log.h5";
  if (fs::exists(log)) {
    const ReportReader r(log);
    out["train_loss"] = last_of(r, "/train/loss");
    out["valid_loss"] = last_of(r, "/train/val_loss");
    out["valid_acc"] = last_of(r, "/train/val_acc");
    out["valid_ppl"] = last_of(r, "/train/val_perplexity");
    out["test_loss"] = last_of(r, "/train/test_loss");
    out["test_acc"] = last_of(r, "/train/test_acc");
    out["test_ppl"] = last_of(r, "/train/test_perplexity");
    out["test_ms_per_sample"] = last_of(r, "/train/test_ms_per_sample");
    out["train_acc"] = last_of(r, "/train/train_eval_acc");
    out["train_eval_loss"] = last_of(r, "/train/train_eval_loss");
    out["train_ppl"] = last_of(r, "/train/train_eval_perplexity");
    out["steps"] = last_of(r, "/train/step") + 1;
    if (is_classifier_run(r))  // exp(cross-entropy) of a classifier is no quantity anyone reports
      for (const char* k : {"valid_ppl", "test_ppl", "train_ppl"}) out.erase(k);
    if (sources)
      for (const auto& [k, v] : out) (*sources)[k] = "run/log.h5";
  }
  for (const AnalysisSpec& a : spec.analyses) {
    const std::string file = p.dir + "/" + a.name + ".h5";
    if (!fs::exists(file)) continue;
    std::map<std::string, double> m;
    read_report(file, a.command, m);
    const std::string prefix = a.name == a.command ? "" : a.name + ".";
    for (const auto& [k, v] : m) {
      out[prefix + k] = v;
      if (sources) (*sources)[prefix + k] = a.name + ".h5";
    }
  }
  return out;
}

namespace {
// The entry of a column by exact name, or by the unique key whose last dotted component is `name`.
template <class Map>
const typename Map::value_type* find_entry(const Map& m, const std::string& name) {
  const auto it = m.find(name);
  if (it != m.end()) return &*it;
  const typename Map::value_type* found = nullptr;
  for (const auto& entry : m) {
    const auto dot = entry.first.find_last_of('.');
    if (dot != std::string::npos && entry.first.substr(dot + 1) == name) {
      if (found) return nullptr;  // ambiguous
      found = &entry;
    }
  }
  return found;
}

template <class Map>
const typename Map::mapped_type* find_column(const Map& m, const std::string& name) {
  const auto* e = find_entry(m, name);
  return e ? &e->second : nullptr;
}
}  // namespace

const std::vector<double>* SweepTable::numeric(const std::string& name) const {
  if (const auto* m = find_column(metrics, name)) return m;
  return find_column(numeric_coords, name);
}

const std::string* SweepTable::metric_name(const std::string& name) const {
  const auto* e = find_entry(metrics, name);
  return e ? &e->first : nullptr;
}

const std::vector<std::string>* SweepTable::text(const std::string& name) const {
  return find_column(text_coords, name);
}

SweepTable collect_sweep(const SweepPlan& plan) {
  SweepTable t;
  t.spec_json = plan.spec.json.dump();
  t.strength = plan.spec.strength;
  for (const auto& a : plan.spec.axes) {
    t.axes.push_back(a.key);
    if (a.key == "seed") t.seed = a.key;
  }
  std::vector<std::map<std::string, double>> rows;
  for (const PlannedPoint& p : plan.points) {
    t.points.push_back(p.point.name);
    const PointStatus st = point_status(p);
    t.status.push_back(st.complete ? "complete" : st.failed ? "failed" : "partial");
    for (std::size_t a = 0; a < plan.spec.axes.size(); ++a) {
      const nlohmann::json& v = p.point.coords[a];
      if (plan.spec.axes[a].numeric()) t.numeric_coords[plan.spec.axes[a].key].push_back(v.get<double>());
      else t.text_coords[plan.spec.axes[a].key].push_back(v.is_string() ? v.get<std::string>() : v.dump());
    }
    rows.push_back(point_metrics(p, plan.spec, &t.metric_source));
    for (const auto& [k, v] : rows.back())
      if (std::find(t.metric_names.begin(), t.metric_names.end(), k) == t.metric_names.end()) t.metric_names.push_back(k);
  }
  for (const auto& name : t.metric_names) {
    auto& col = t.metrics[name];
    for (const auto& row : rows) {
      const auto it = row.find(name);
      col.push_back(it == row.end() ? kNaN : it->second);
    }
  }
  return t;
}

void write_sweep_table(ReportWriter& w, const SweepTable& t) {
  w.create_group("/sweep");
  w.set_attr("/sweep", "spec", t.spec_json);
  nlohmann::json axes = t.axes;
  w.set_attr("/sweep", "axes", axes.dump());
  w.set_attr("/sweep", "strength_axis", t.strength);
  w.set_attr("/sweep", "seed_axis", t.seed);
  w.set_attr("/sweep", "definition",
             std::string("one row per grid point: coords/<axis key> are its coordinates, metrics/<name> the scalars of "
                         "its reports (NaN where missing); see the README's Studies section for every metric"));
  w.write_strings("/sweep/point", t.points);
  w.write_strings("/sweep/status", t.status);
  w.create_group("/sweep/coords");
  for (const auto& key : t.axes) {
    const std::string path = "/sweep/coords/" + key;
    if (t.numeric_coords.count(key)) {
      w.write(path, t.numeric_coords.at(key), {t.rows()});
      w.set_attr(path, "kind", std::string("numeric"));
    } else {
      w.write_strings(path, t.text_coords.at(key));
      w.set_attr(path, "kind", std::string("text"));
    }
  }
  w.create_group("/sweep/metrics");
  for (const auto& name : t.metric_names) {
    const std::string path = "/sweep/metrics/" + name;
    w.write(path, t.metrics.at(name), {t.rows()});
    w.set_attr(path, "label", name);
    const auto s = t.metric_source.find(name);
    w.set_attr(path, "source", s == t.metric_source.end() ? std::string() : s->second);
  }
}

namespace {
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
std::string csv_number(double v) { return std::isnan(v) ? std::string() : number_text(v); }
}  // namespace

void write_sweep_csv(const std::string& path, const SweepTable& t) {
  std::ostringstream s;
  s << "point,status";
  for (const auto& k : t.axes) s << "," << csv_field(k);
  for (const auto& m : t.metric_names) s << "," << csv_field(m);
  s << "\n";
  for (std::size_t i = 0; i < t.rows(); ++i) {
    s << csv_field(t.points[i]) << "," << t.status[i];
    for (const auto& k : t.axes)
      s << "," << (t.numeric_coords.count(k) ? csv_number(t.numeric_coords.at(k)[i]) : csv_field(t.text_coords.at(k)[i]));
    for (const auto& m : t.metric_names) s << "," << csv_number(t.metrics.at(m)[i]);
    s << "\n";
  }
  write_file_atomic(path, s.str());
}

SweepTable read_sweep_table(const ReportReader& r, const std::string& file) {
  if (!r.exists("/sweep/point")) fail_input(file, "no /sweep group (write one with `moescope sweep ... --collect`)");
  SweepTable t;
  t.points = r.read_strings("/sweep/point");
  t.status = r.read_strings("/sweep/status");
  auto text_attr = [&](const std::string& obj, const std::string& name) {
    if (!r.has_attr(obj, name)) return std::string();
    const AttrValue v = r.attr(obj, name);
    return std::holds_alternative<std::string>(v) ? std::get<std::string>(v) : std::string();
  };
  t.spec_json = text_attr("/sweep", "spec");
  t.strength = text_attr("/sweep", "strength_axis");
  t.seed = text_attr("/sweep", "seed_axis");
  const auto axes = nlohmann::json::parse(text_attr("/sweep", "axes"), nullptr, false);
  if (axes.is_array())
    for (const auto& a : axes)
      if (a.is_string()) t.axes.push_back(a.get<std::string>());
  const std::size_t n = t.points.size();
  for (const auto& key : t.axes) {
    const std::string path = "/sweep/coords/" + key;
    if (text_attr(path, "kind") == "text") t.text_coords[key] = r.read_strings(path);
    else t.numeric_coords[key] = r.read(path);
  }
  if (r.exists("/sweep/metrics"))
    for (const auto& name : r.list("/sweep/metrics")) {
      t.metric_names.push_back(name);
      t.metrics[name] = r.read("/sweep/metrics/" + name);
      t.metric_source[name] = text_attr("/sweep/metrics/" + name, "source");
    }
  for (const auto& [k, v] : t.metrics)
    if (v.size() != n) fail_input(file, "/sweep/metrics/" + k + " holds " + std::to_string(v.size()) + " rows, not " + std::to_string(n));
  return t;
}

}  // namespace moescope
