#include "moescope/landscape/surface.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "moescope/io/report.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/files.hpp"

namespace moescope {
namespace {

constexpr const char* kJournalMagic = "moescope-landscape-journal 1";

std::string g17(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}


std::string hex16(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool parse_double(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();  // inf/nan are legitimate losses far from w0
}

bool parse_index(const std::string& s, std::size_t limit, std::size_t* out) {
  if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  *out = static_cast<std::size_t>(std::stoull(s));
  return *out < limit;
}

// Appends whole lines to the journal with one write() each (no stdio buffer to lose on a kill).
class JournalWriter {
 public:
  JournalWriter(std::string path, bool truncate) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
    if (fd_ < 0) fail_input(path_, std::string("cannot write the landscape journal (") + std::strerror(errno) + ")");
  }
  ~JournalWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  void append(const std::string& text) {
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail_input(path_, std::string("cannot append to the landscape journal (") + std::strerror(errno) + ")");
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// Restores the parameters when compute_surface / sharpness leave, normally or by an exception.
template <class F>
struct OnExit {
  F f;
  ~OnExit() { f(); }
};
template <class F>
OnExit<F> on_exit(F f) {
  return OnExit<F>{std::move(f)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Axis

std::vector<double> Axis::values() const {
  std::vector<double> v(static_cast<std::size_t>(count));
  if (count == 1) {
    v[0] = min;
    return v;
  }
  const double step = (max - min) / static_cast<double>(count - 1);
  for (std::int64_t i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = min + static_cast<double>(i) * step;
  v.back() = max;
  return v;
}

std::string Axis::text() const { return g17(min) + ":" + g17(max) + ":" + std::to_string(count); }

Axis parse_axis(const std::string& spec, const std::string& flag) {
  const auto bad = [&](const std::string& why) -> InputError {
    return InputError(flag + " '" + spec + "': " + why);
  };
  std::vector<std::string> parts;
  std::stringstream ss(spec);
  for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  if (parts.size() != 3 || spec.back() == ':') throw bad("expected MIN:MAX:COUNT, e.g. -1:1:51");
  Axis a;
  if (!parse_double(parts[0], &a.min) || !std::isfinite(a.min)) throw bad("MIN is not a finite number");
  if (!parse_double(parts[1], &a.max) || !std::isfinite(a.max)) throw bad("MAX is not a finite number");
  const std::string& c = parts[2];
  if (c.empty() || c.size() > 9 || c.find_first_not_of("0123456789") != std::string::npos)
    throw bad("COUNT must be an integer between 1 and 999999999");
  a.count = std::stoll(c);
  if (a.count < 1) throw bad("COUNT must be at least 1");
  if (a.count == 1 ? a.max < a.min : !(a.min < a.max)) throw bad("MIN must be below MAX");
  return a;
}

// ---------------------------------------------------------------------------------------------------------------
// Perturbation

Perturbation::Perturbation(std::vector<NamedParameter> params, std::vector<Direction> dirs)
    : params_(std::move(params)), dirs_(std::move(dirs)) {
  if (dirs_.empty() || dirs_.size() > 2)
    throw std::invalid_argument("Perturbation: needs one or two directions, got " + std::to_string(dirs_.size()));
  if (params_.empty()) throw std::invalid_argument("Perturbation: no parameters");
  torch::NoGradGuard no_grad;
  for (auto& d : dirs_) {
    if (d.parts.size() != params_.size())
      throw std::invalid_argument("Perturbation: direction '" + d.kind + "' has " + std::to_string(d.parts.size()) +
                                  " tensors for " + std::to_string(params_.size()) + " parameters");
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& w = params_[i].second;
      auto& t = d.parts[i].second;
      if (d.parts[i].first != params_[i].first || t.sizes() != w.sizes())
        throw std::invalid_argument("Perturbation: direction tensor '" + d.parts[i].first +
                                    "' does not match parameter '" + params_[i].first + "'");
      if (t.scalar_type() != w.scalar_type() || t.device() != w.device()) t = t.to(w.device(), w.scalar_type());
    }
  }
  w0_.reserve(params_.size());
  for (const auto& p : params_) w0_.push_back(p.second.detach().clone());
}

Perturbation::~Perturbation() {
  try {
    restore();
  } catch (...) {
    // A destructor must not throw; restore() only copies tensors of matching shapes.
  }
}

void Perturbation::set(double a, double b) {
  if (dirs_.size() == 1 && b != 0.0) throw std::invalid_argument("Perturbation::set: b != 0 with one direction");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto w = params_[i].second.detach();  // shares the storage: writing w writes the parameter
    at::add_out(w, w0_[i], dirs_[0].parts[i].second, a);
    if (dirs_.size() == 2 && b != 0.0) w.add_(dirs_[1].parts[i].second, b);
  }
}

void Perturbation::restore() {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) params_[i].second.detach().copy_(w0_[i]);
}

// ---------------------------------------------------------------------------------------------------------------
// Surfaces

bool Surface::complete() const {
  for (auto c : computed)
    if (!c) return false;
  return !computed.empty();
}

const std::vector<double>& Surface::metric(const std::string& name) const {
  for (std::size_t m = 0; m < metrics.size(); ++m)
    if (metrics[m] == name) return values[m];
  throw std::out_of_range("surface has no metric '" + name + "'");
}

std::string journal_settings(const SurfaceOptions& opts) {
  std::string m;
  for (const auto& n : opts.metrics) m += (m.empty() ? "" : ",") + n;
  return one_line("x=" + opts.x.text() + " y=" + (opts.y ? opts.y->text() : std::string("none")) + " metrics=" + m +
                  " " + opts.settings);
}

Surface compute_surface(Perturbation& perturbation, const PointEvaluator& evaluate, const SurfaceOptions& opts) {
  if (opts.metrics.empty()) throw std::invalid_argument("compute_surface: no metrics");
  for (const auto& n : opts.metrics)
    if (n.empty() || n.find_first_of(" ,/\n") != std::string::npos)
      throw std::invalid_argument("compute_surface: bad metric name '" + n + "'");
  if (perturbation.dimensions() != (opts.y ? 2u : 1u))
    throw std::invalid_argument("compute_surface: " + std::to_string(perturbation.dimensions()) +
                                " direction(s) for a " + (opts.y ? "2-D" : "1-D") + " grid");
  if (opts.max_points < 0) throw std::invalid_argument("compute_surface: max_points < 0");

  Surface s;
  s.x = opts.x.values();
  if (opts.y) s.y = opts.y->values();
  s.metrics = opts.metrics;
  const std::size_t nx = s.nx(), ny = s.ny(), total = nx * ny, nm = opts.metrics.size();
  s.values.assign(nm, std::vector<double>(total, std::numeric_limits<double>::quiet_NaN()));
  s.computed.assign(total, 0);

  const std::string settings = journal_settings(opts);
  std::unique_ptr<JournalWriter> journal;
  if (!opts.journal.empty()) {
    std::ifstream in(opts.journal, std::ios::binary);
    if (opts.resume && in) {
      std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      in.close();
      std::istringstream lines(content);
      std::string line;
      if (!std::getline(lines, line) || line != kJournalMagic)
        fail_input(opts.journal, "not a moescope landscape journal; remove it or run without --resume");
      if (!std::getline(lines, line) || line != "settings " + settings)
        fail_input(opts.journal, "was written by a run with other settings (grid, metrics, directions or data); "
                                 "remove it or run without --resume");
      while (std::getline(lines, line)) {
        // "p I J v1 .. vK #HASH": a line that is torn (the run was killed while writing it) or damaged fails
        // the check and its point is computed again.
        const auto hash_at = line.rfind(" #");
        if (hash_at == std::string::npos || line.substr(hash_at + 2) != hex16(fnv1a64(line.substr(0, hash_at))))
          continue;
        std::istringstream f(line.substr(0, hash_at));
        std::vector<std::string> tok;
        for (std::string t; f >> t;) tok.push_back(t);
        std::size_t i = 0, j = 0;
        if (tok.size() != 3 + nm || tok[0] != "p" || !parse_index(tok[1], nx, &i) || !parse_index(tok[2], ny, &j))
          continue;
        std::vector<double> v(nm);
        bool ok = true;
        for (std::size_t m = 0; m < nm && ok; ++m) ok = parse_double(tok[3 + m], &v[m]);
        if (!ok) continue;
        const std::size_t idx = i * ny + j;
        if (!s.computed[idx]) ++s.resumed;
        for (std::size_t m = 0; m < nm; ++m) s.values[m][idx] = v[m];
        s.computed[idx] = 1;
      }
      journal = std::make_unique<JournalWriter>(opts.journal, /*truncate=*/false);
      // A torn last line has no newline: end it, so the next point starts a line of its own.
      if (!content.empty() && content.back() != '\n') journal->append("\n");
    } else {
      in.close();
      journal = std::make_unique<JournalWriter>(opts.journal, /*truncate=*/true);
      journal->append(std::string(kJournalMagic) + "\nsettings " + settings + "\n");
    }
  }

  auto restore = on_exit([&perturbation] { perturbation.restore(); });
  std::int64_t done = s.resumed;
  for (std::size_t i = 0; i < nx; ++i) {
    for (std::size_t j = 0; j < ny; ++j) {
      const std::size_t idx = i * ny + j;
      if (s.computed[idx]) continue;
      if (opts.max_points > 0 && s.evaluated >= opts.max_points) return s;
      perturbation.set(s.x[i], s.y.empty() ? 0.0 : s.y[j]);
      const std::vector<double> v = evaluate();
      if (v.size() != nm)
        throw std::invalid_argument("compute_surface: the evaluator returned " + std::to_string(v.size()) +
                                    " values for " + std::to_string(nm) + " metrics");
      if (journal) {
        std::string line = "p " + std::to_string(i) + " " + std::to_string(j);
        for (double x : v) line += " " + g17(x);
        journal->append(line + " #" + hex16(fnv1a64(line)) + "\n");
      }
      for (std::size_t m = 0; m < nm; ++m) s.values[m][idx] = v[m];
      s.computed[idx] = 1;
      ++s.evaluated;
      ++done;
      report(opts.progress, make_progress("landscape", done, static_cast<std::int64_t>(total), "points", v.empty() ? std::nan("") : v[0],
                                     nm > 0 ? opts.metrics[0] : "", "", done == static_cast<std::int64_t>(total)));
    }
  }
  return s;
}

void write_surface(ReportWriter& report, const Surface& s, const std::string& group) {
  if (!s.complete()) throw std::invalid_argument("write_surface: the surface is incomplete");
  const bool two_d = !s.y.empty();
  report.create_group(group);
  report.write(group + "/xcoordinates", s.x, {s.x.size()});
  if (two_d) report.write(group + "/ycoordinates", s.y, {s.y.size()});
  const std::vector<std::size_t> dims = two_d ? std::vector<std::size_t>{s.nx(), s.ny()} : std::vector<std::size_t>{s.nx()};
  const std::string order = two_d ? "values[i, j] at (xcoordinates[i], ycoordinates[j])"
                                  : "values[i] at xcoordinates[i]";
  for (std::size_t m = 0; m < s.metrics.size(); ++m) {
    report.write(group + "/" + s.metrics[m], s.values[m], dims);
    report.set_attr(group + "/" + s.metrics[m], "index_order", order);
  }
  report.set_attr(group, "index_order", order);
  report.set_attr(group, "dimensions", static_cast<std::int64_t>(two_d ? 2 : 1));
}

void write_loss_landscape_surface(const std::string& path, const Surface& s, const Provenance& provenance) {
  if (!s.complete()) throw std::invalid_argument("write_loss_landscape_surface: the surface is incomplete");
  const bool two_d = !s.y.empty();
  ReportWriter w(path);
  w.write_provenance(provenance);
  w.write("/xcoordinates", s.x, {s.x.size()});
  if (two_d) w.write("/ycoordinates", s.y, {s.y.size()});
  const std::size_t nx = s.nx(), ny = s.ny();
  for (std::size_t m = 0; m < s.metrics.size(); ++m) {
    const std::string& name = s.metrics[m];
    const bool acc = name.size() > 4 && name.compare(name.size() - 4, 4, "_acc") == 0;
    const double scale = acc ? 100.0 : 1.0;  // loss-landscape's evaluation returns 100 * correct / total
    std::vector<double> z(nx * ny);
    for (std::size_t i = 0; i < nx; ++i)
      for (std::size_t j = 0; j < ny; ++j) z[two_d ? j * nx + i : i] = scale * s.values[m][i * ny + j];
    if (two_d)
      w.write("/" + name, z, {ny, nx});
    else
      w.write("/" + name, z, {nx});
  }
  w.set_attr("/", "index_order",
             std::string(two_d ? "Z[i, j] at (xcoordinates[j], ycoordinates[i]) as loss-landscape's plot_2D reads it; "
                                 "accuracies in percent"
                               : "Z[i] at xcoordinates[i]; accuracies in percent"));
  w.commit();
}

// ---------------------------------------------------------------------------------------------------------------
// Sharpness

SharpnessResult sharpness(const std::vector<NamedParameter>& params, const std::function<double()>& loss,
                          const SharpnessOptions& opts) {
  if (opts.radii.empty()) throw std::invalid_argument("sharpness: no radii");
  for (double r : opts.radii)
    if (!std::isfinite(r)) throw std::invalid_argument("sharpness: radius " + g17(r) + " is not finite");
  if (opts.directions < 1) throw std::invalid_argument("sharpness: directions < 1");
  if (params.empty()) throw std::invalid_argument("sharpness: no parameters");

  std::vector<torch::Tensor> w0;
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : params) w0.push_back(p.second.detach().clone());
  }
  auto restore = on_exit([&] {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) params[i].second.detach().copy_(w0[i]);
  });

  SharpnessResult r;
  r.radii = opts.radii;
  r.base_loss = loss();
  const std::size_t M = static_cast<std::size_t>(opts.directions), R = opts.radii.size();
  r.increases.assign(R, std::vector<double>(M));
  for (std::size_t m = 0; m < M; ++m) {
    RandomDirectionOptions ro;
    ro.normalization = opts.normalization;
    ro.small = opts.small;
    ro.seed = opts.seed + m + 1;
    restore.f();  // normalise to w0, not to the previous direction's last point
    const Direction d = random_direction(params, ro);
    for (std::size_t k = 0; k < R; ++k) {
      {
        torch::NoGradGuard no_grad;
        for (std::size_t i = 0; i < params.size(); ++i) {
          auto w = params[i].second.detach();
          at::add_out(w, w0[i], d.parts[i].second, opts.radii[k]);
        }
      }
      r.increases[k][m] = loss() - r.base_loss;
    }
  }
  for (std::size_t k = 0; k < R; ++k) {
    const auto& v = r.increases[k];
    double mean = 0, mx = -std::numeric_limits<double>::infinity();
    for (double x : v) mean += x, mx = std::max(mx, x);
    mean /= static_cast<double>(M);
    double ss = 0;
    for (double x : v) ss += (x - mean) * (x - mean);
    r.mean_increase.push_back(mean);
    r.stderr_increase.push_back(M > 1 ? std::sqrt(ss / static_cast<double>(M - 1) / static_cast<double>(M)) : 0.0);
    r.max_increase.push_back(mx);
  }
  return r;
}

}  // namespace moescope
