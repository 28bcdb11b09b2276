#include "moescope/metrics/geometry.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <thread>

#include <Eigen/Dense>

#include "moescope/io/report.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/multiversion.hpp"

namespace moescope {
namespace {

// Per-thread partial sums over a slice of the coordinates.
struct Partial {
  Eigen::MatrixXd gram;
  double var_sum = 0;  // sum over coordinates of the unbiased variance across experts
};

// The hot loop: for a row-major block x[E_pad][n] (rows >= E zero), adds x x^T to gram (E_pad x E_pad, row-major,
// lower triangle) and returns the sum over columns of the squared deviations from the column mean over the
// first E rows. Written as fixed 4-wide lanes in a fixed order so that it vectorises without reassociation:
// both instruction-set clones do the same IEEE operations in the same order (no FMA contraction under
// -std=c++17), so they are meant to give the same bits; only the AVX2 path is exercised on this project's CI.
MOESCOPE_MULTIVERSION
double gram_kernel(const double* x, std::int64_t e_pad, std::int64_t E, std::int64_t n, double* gram, double* mean) {
  const std::int64_t n4 = n - n % 4;
  for (std::int64_t i0 = 0; i0 < e_pad; i0 += 4)
    for (std::int64_t j0 = 0; j0 <= i0; j0 += 4) {
      double acc[4][4][4] = {};
      for (std::int64_t c = 0; c < n4; c += 4)
        for (int p = 0; p < 4; ++p)
          for (int q = 0; q < 4; ++q)
            for (int l = 0; l < 4; ++l) acc[p][q][l] += x[(i0 + p) * n + c + l] * x[(j0 + q) * n + c + l];
      for (int p = 0; p < 4; ++p)
        for (int q = 0; q < 4; ++q) {
          double s = (acc[p][q][0] + acc[p][q][1]) + (acc[p][q][2] + acc[p][q][3]);
          for (std::int64_t c = n4; c < n; ++c) s += x[(i0 + p) * n + c] * x[(j0 + q) * n + c];
          gram[(i0 + p) * e_pad + (j0 + q)] += s;
        }
    }
  if (E < 2) return 0.0;
  for (std::int64_t c = 0; c < n; ++c) mean[c] = 0.0;
  for (std::int64_t e = 0; e < E; ++e)
    for (std::int64_t c = 0; c < n; ++c) mean[c] += x[e * n + c];
  for (std::int64_t c = 0; c < n; ++c) mean[c] /= static_cast<double>(E);
  double acc[4] = {0, 0, 0, 0};
  for (std::int64_t e = 0; e < E; ++e) {
    for (std::int64_t c = 0; c < n4; c += 4)
      for (int l = 0; l < 4; ++l) {
        const double d = x[e * n + c + l] - mean[c + l];
        acc[l] += d * d;
      }
    for (std::int64_t c = n4; c < n; ++c) {
      const double d = x[e * n + c] - mean[c];
      acc[0] += d * d;
    }
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// Accumulates coordinates [first, last) of one role into p, reading `chunk` elements per expert at a time.
// The block is row-major (one expert per row, padded with zero rows to a multiple of 4), so each expert's chunk
// is converted straight into place, and it is sized to stay in cache for the Gram and variance passes.
void accumulate(const TensorSource& src, const std::vector<const MatrixView*>& views, std::int64_t first,
                std::int64_t last, std::int64_t chunk, Partial& p) {
  const auto E = static_cast<std::int64_t>(views.size());
  const std::int64_t e_pad = (E + 3) / 4 * 4;
  std::vector<double> block(static_cast<std::size_t>(e_pad * chunk), 0.0), mean(static_cast<std::size_t>(chunk));
  std::vector<double> gram(static_cast<std::size_t>(e_pad * e_pad), 0.0);
  for (std::int64_t at = first; at < last; at += chunk) {
    const std::int64_t n = std::min(chunk, last - at);  // rows of the block are n apart for this chunk
    for (std::int64_t e = 0; e < E; ++e)
      read_view_f64(src, *views[static_cast<std::size_t>(e)], at, n, block.data() + e * n);
    if (n < chunk)  // the last, short chunk: the zero padding rows must sit at the new row spacing
      std::fill(block.begin() + E * n, block.begin() + e_pad * n, 0.0);
    const double v = gram_kernel(block.data(), e_pad, E, n, gram.data(), mean.data());
    if (E > 1) p.var_sum += v / static_cast<double>(E - 1);
  }
  for (std::int64_t i = 0; i < E; ++i)
    for (std::int64_t j = 0; j <= i; ++j) p.gram(i, j) += gram[static_cast<std::size_t>(i * e_pad + j)];
}

// The first NaN or infinity among an expert's chosen matrices, as an InputError naming the tensor and the element
// (called when the expert's squared norm came out non-finite). Reads the views again, chunk by chunk.
[[noreturn]] void fail_non_finite(const TensorSource& src, const std::string& key, int expert,
                                  const std::vector<const MatrixView*>& views) {
  std::vector<double> buf;
  for (const MatrixView* v : views) {
    const std::int64_t n = v->numel(), chunk = 1 << 16;
    for (std::int64_t at = 0; at < n; at += chunk) {
      const std::int64_t m = std::min(chunk, n - at);
      buf.resize(static_cast<std::size_t>(m));
      read_view_f64(src, *v, at, m, buf.data());
      for (std::int64_t i = 0; i < m; ++i) {
        const double x = buf[static_cast<std::size_t>(i)];
        if (std::isfinite(x)) continue;
        const std::int64_t flat = at + i;
        fail_input(src.file_of(v->tensor),
                   "tensor '" + v->tensor + "' (" + key + ", expert " + std::to_string(expert) + ", " + v->role +
                       "): element [" + std::to_string(flat / std::max<std::int64_t>(v->cols, 1)) + ", " +
                       std::to_string(flat % std::max<std::int64_t>(v->cols, 1)) + "] of the expert's matrix is " +
                       (std::isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf")) +
                       "; geometry needs finite weights (inspect the checkpoint, or leave the layer out with --layers)");
      }
    }
  }
  fail_input(src.path(), key + ", expert " + std::to_string(expert) +
                             ": the squared norm of the expert's weights overflows float64 (values above ~1e154)");
}

}  // namespace

double mean_squared_overlap(const Eigen::MatrixXd& overlap, const std::vector<int>& left_out) {
  std::vector<Eigen::Index> kept;
  for (Eigen::Index i = 0; i < overlap.rows(); ++i)
    if (std::find(left_out.begin(), left_out.end(), static_cast<int>(i)) == left_out.end()) kept.push_back(i);
  if (kept.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  Eigen::MatrixXd sub(kept.size(), kept.size());
  for (std::size_t a = 0; a < kept.size(); ++a)
    for (std::size_t b = 0; b < kept.size(); ++b) sub(a, b) = overlap(kept[a], kept[b]);
  return mean_squared_overlap(sub);
}

double mean_squared_overlap(const Eigen::MatrixXd& overlap) {
  const auto E = overlap.rows();
  if (E < 2 || overlap.cols() != E) throw std::invalid_argument("mean_squared_overlap: need a square matrix, E >= 2");
  double s = 0;
  for (Eigen::Index i = 0; i < E; ++i)
    for (Eigen::Index j = i + 1; j < E; ++j) s += overlap(i, j) * overlap(i, j);
  return 2.0 * s / static_cast<double>(E * (E - 1));
}

Eigen::MatrixXd overlap_from_gram(const Eigen::MatrixXd& gram) {
  const Eigen::VectorXd d = gram.diagonal().cwiseSqrt();
  Eigen::MatrixXd o(gram.rows(), gram.cols());
  for (Eigen::Index i = 0; i < gram.rows(); ++i)
    for (Eigen::Index j = 0; j < gram.cols(); ++j)
      o(i, j) = (d(i) > 0 && d(j) > 0) ? gram(i, j) / (d(i) * d(j)) : std::numeric_limits<double>::quiet_NaN();
  return o;
}

LayerGeometry expert_geometry(const TensorSource& src, const MoELayerLayout& layer, const GeometryOptions& opts) {
  if (layer.experts.size() < 2)
    fail_input(src.path(), layer.key + ": geometry needs at least 2 experts, found " +
                               std::to_string(layer.experts.size()));
  LayerGeometry g;
  g.key = layer.key;
  g.layer = layer.layer;
  g.experts = static_cast<int>(layer.experts.size());

  // roles: requested (canonicalised) or every weight matrix of the first expert
  const ExpertLayout& first = layer.experts.front();
  if (opts.roles.empty()) {
    for (const auto& m : first.matrices)
      if (m.role.size() < 5 || m.role.compare(m.role.size() - 5, 5, "_bias") != 0) g.roles.push_back(m.role);
  } else {
    for (const auto& r : opts.roles) {
      const std::string c = matrix_role(r);
      if (!first.find(c)) {
        std::string have;
        for (const auto& m : first.matrices) have += (have.empty() ? "" : ", ") + m.role;
        fail_input(src.path(), layer.key + ": experts have no '" + r + "' matrix (they have: " + have + ")");
      }
      if (std::find(g.roles.begin(), g.roles.end(), c) == g.roles.end()) g.roles.push_back(c);
    }
  }

  const auto E = static_cast<Eigen::Index>(g.experts);
  const int threads = std::max(1, opts.threads);
  const std::int64_t chunk =
      opts.chunk > 0 ? opts.chunk : std::max<std::int64_t>(256, (1 << 15) / E);  // ~256 KiB block: stays in L2
  std::vector<Partial> parts(static_cast<std::size_t>(threads));
  for (auto& p : parts) p.gram = Eigen::MatrixXd::Zero(E, E);

  for (const auto& role : g.roles) {
    std::vector<const MatrixView*> views;
    for (const auto& e : layer.experts) views.push_back(e.find(role));
    const std::int64_t n = views.front()->numel();
    g.dim += n;
    // static partition into `threads` contiguous ranges, reduced in thread order: deterministic per thread count
    std::vector<std::thread> pool;
    std::exception_ptr error;
    std::mutex error_mu;
    for (int t = 0; t < threads; ++t) {
      const std::int64_t a = n * t / threads, b = n * (t + 1) / threads;
      auto work = [&, a, b, t] {
        try {
          accumulate(src, views, a, b, chunk, parts[static_cast<std::size_t>(t)]);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (!error) error = std::current_exception();
        }
      };
      if (threads == 1) work(); else pool.emplace_back(work);
    }
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
    for (const auto* v : views) src.release(v->tensor);  // keep resident memory to about one layer
  }

  if (g.dim == 0) {
    std::string roles;
    for (const auto& r : g.roles) roles += (roles.empty() ? "" : ",") + r;
    fail_input(src.path(), layer.key + ": the experts' chosen matrices (" + roles +
                               ") hold no values (zero-size tensors): there is nothing to compare");
  }
  g.gram = Eigen::MatrixXd::Zero(E, E);
  double var_sum = 0;
  for (const auto& p : parts) {
    g.gram += p.gram;
    var_sum += p.var_sum;
  }
  g.gram = g.gram.selfadjointView<Eigen::Lower>();
  // A NaN or infinity anywhere in an expert's vector makes its squared norm non-finite: name the element.
  for (Eigen::Index e = 0; e < E; ++e) {
    if (std::isfinite(g.gram(e, e))) continue;
    std::vector<const MatrixView*> views;
    for (const auto& role : g.roles) views.push_back(layer.experts[static_cast<std::size_t>(e)].find(role));
    fail_non_finite(src, layer.key, layer.experts[static_cast<std::size_t>(e)].index, views);
  }
  g.overlap = overlap_from_gram(g.gram);
  for (Eigen::Index e = 0; e < E; ++e) {
    if (g.gram(e, e) > 0) continue;
    const ExpertLayout& ex = layer.experts[static_cast<std::size_t>(e)];
    g.zero_experts.push_back(static_cast<int>(e));
    std::string tensors;
    for (const auto& role : g.roles) tensors += (tensors.empty() ? "" : ", ") + ex.find(role)->tensor;
    g.notes.push_back(layer.key + ": expert " + std::to_string(ex.index) + " is all zeros (" + tensors +
                      "): its cosine with any expert is undefined, so it is NaN in overlap and left out of mso and "
                      "param_variance_normalized");
  }
  g.mso = mean_squared_overlap(g.overlap, g.zero_experts);
  for (Eigen::Index e = 0; e < E; ++e) g.norms.push_back(std::sqrt(g.gram(e, e)));
  g.mean_norm = 0;
  for (double x : g.norms) g.mean_norm += x / static_cast<double>(E);
  const double D = static_cast<double>(g.dim);
  g.param_variance = var_sum / D;
  // on unit vectors (the K experts that have one): sum_c var_c(u) = (K - sum_ij overlap_ij / K) / (K - 1)
  const double K = static_cast<double>(E) - static_cast<double>(g.zero_experts.size());
  double osum = 0;
  for (Eigen::Index i = 0; i < E; ++i)
    for (Eigen::Index j = 0; j < E; ++j)
      if (g.gram(i, i) > 0 && g.gram(j, j) > 0) osum += g.overlap(i, j);
  g.param_variance_normalized =
      K >= 2 ? (K - osum / K) / ((K - 1) * D) : std::numeric_limits<double>::quiet_NaN();
  return g;
}

CheckpointGeometry checkpoint_geometry(const TensorSource& src, const std::string& family,
                                       const std::vector<const MoELayerLayout*>& layers, const GeometryOptions& opts,
                                       const ProgressFn& progress) {
  CheckpointGeometry out;
  out.family = family;
  const auto total = static_cast<std::int64_t>(layers.size());
  for (const MoELayerLayout* l : layers) {
    out.layers.push_back(expert_geometry(src, *l, opts));
    out.prefixes.push_back(l->prefix);
    out.notes.insert(out.notes.end(), out.layers.back().notes.begin(), out.layers.back().notes.end());
    const auto done = static_cast<std::int64_t>(out.layers.size());
    report(progress, make_progress("geometry", done, total, "layers", out.layers.back().mso, "mso", l->key, done == total));
  }
  return out;
}

void write_geometry_group(ReportWriter& w, const std::string& family) {
  w.create_group("/geometry");
  w.set_attr("/geometry", "family", family);
  w.set_attr("/geometry", "definition",
             std::string("v_e = chosen matrices of expert e flattened row-major and concatenated; u_e = v_e/|v_e|; "
                         "overlap = <u_i,u_j>; mso = mean over i!=j of overlap^2 (arXiv:2601.00457); "
                         "param_variance = mean over coordinates of the unbiased variance across experts "
                         "(arXiv:2310.09762), also on u_e"));
}

void write_layer_geometry(ReportWriter& w, const LayerGeometry& g, const std::string& prefix) {
  const std::string base = "/geometry/" + g.key;
  const auto E = static_cast<std::size_t>(g.experts);
  w.write_scalar(base + "/mso", g.mso);
  w.write_matrix(base + "/overlap", g.overlap);
  w.write_matrix(base + "/gram", g.gram);
  w.write(base + "/norms", g.norms, {E});
  w.write_scalar(base + "/param_variance", g.param_variance);
  w.write_scalar(base + "/param_variance_normalized", g.param_variance_normalized);
  w.write_scalar(base + "/mean_norm", g.mean_norm);
  std::string roles;
  for (const auto& r : g.roles) roles += (roles.empty() ? "" : ",") + r;
  w.set_attr(base, "matrices", roles);
  w.set_attr(base, "layer", std::int64_t{g.layer});
  w.set_attr(base, "experts", std::int64_t{g.experts});
  w.set_attr(base, "dim", g.dim);
  w.set_attr(base, "prefix", prefix);
  w.set_attr(base, "zero_experts", std::vector<std::int64_t>(g.zero_experts.begin(), g.zero_experts.end()));
}

void write_geometry(ReportWriter& w, const CheckpointGeometry& g) {
  write_geometry_group(w, g.family);
  for (std::size_t i = 0; i < g.layers.size(); ++i) write_layer_geometry(w, g.layers[i], g.prefixes[i]);
}

}  // namespace moescope
