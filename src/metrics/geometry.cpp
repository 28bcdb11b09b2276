#include "moescope/metrics/geometry.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include <Eigen/Dense>

#include "moescope/io/report.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/metrics/gram_kernel.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/numbers.hpp"

namespace moescope {
namespace {

// Coordinates per task: the unit handed to a thread and the unit of the summation order. Each task's sums come
// from a fresh GramKernel (fixed lanes, see gram_kernel.hpp) and the tasks are added in coordinate order,
// whichever thread ran them, so the result has the same bits for every thread count and block size.
constexpr std::int64_t kTaskCoordinates = 1 << 16;

// One role (matrix) of every expert.
struct RolePlan {
  std::vector<const MatrixView*> views;
  std::int64_t n = 0;  // coordinates per expert
  // Direct: every view is a contiguous run of a dtype the kernel decodes (F8 without block scales), read in
  // place from the source's bytes; otherwise read_view_f64 stages float64 values (strided views, scaled F8,
  // integers), which also gives read_view_f64's messages for views outside their tensor.
  bool direct = false;
  DType dtype = DType::F32;
  std::vector<const std::uint8_t*> first;  // direct: each expert's first byte
};

RolePlan plan_role(const TensorSource& src, const MoELayerLayout& layer, const std::string& role) {
  RolePlan r;
  for (const auto& e : layer.experts) {
    r.views.push_back(e.find(role));
    if (!r.views.back())
      fail_input(src.path(), layer.key + ": expert " + std::to_string(e.index) + " has no '" + role + "' matrix");
  }
  r.n = r.views.front()->numel();
  for (const MatrixView* v : r.views)
    if (v->numel() != r.n)
      fail_input(src.path(), layer.key + ": experts' '" + role + "' matrices differ in size (" +
                                 std::to_string(r.n) + " and " + std::to_string(v->numel()) + " elements)");
  r.direct = true;
  for (const MatrixView* v : r.views) {
    const TensorInfo& info = src.at(v->tensor);
    const bool scaled_f8 = (info.dtype == DType::F8_E4M3 || info.dtype == DType::F8_E5M2) &&
                           src.find(v->tensor + "_scale_inv") != nullptr;
    const bool inside = v->rows >= 0 && v->cols >= 0 && v->offset >= 0 && v->offset <= info.numel() &&
                        v->numel() <= info.numel() - v->offset;
    if (!gram_kernel_reads(info.dtype) || scaled_f8 || !v->contiguous() || !inside ||
        (v != r.views.front() && info.dtype != r.dtype)) {
      r.direct = false;
      r.first.clear();
      break;
    }
    r.dtype = info.dtype;
    const ByteView bytes = src.raw(v->tensor);
    if (bytes.size != info.nbytes())
      fail_input(src.file_of(v->tensor), "tensor '" + v->tensor + "': " + std::to_string(bytes.size) +
                                             " bytes for shape " + shape_string(info.shape));
    r.first.push_back(bytes.data + static_cast<std::size_t>(v->offset) * dtype_size(info.dtype));
  }
  return r;
}

struct Task {
  std::size_t role = 0;
  std::int64_t first = 0, count = 0;
};

// Asks the kernel to read a memory-mapped checkpoint ahead of the workers: madvise(MADV_WILLNEED) on each
// expert's strip of the next tasks, in task order, up to `window` tasks past the oldest unfinished one. WILLNEED
// queues the reads and returns, so on a cold cache the disk works on the next strips while the workers sum the
// current ones, instead of every worker stopping at page faults; on a warm cache it costs a page-cache lookup
// per page. Pages are not mapped here, so resident memory does not grow.
class Readahead {
 public:
  Readahead(const std::vector<RolePlan>& roles, const std::vector<Task>& tasks, std::size_t window)
      : roles_(roles), tasks_(tasks), window_(window) {
    thread_ = std::thread([this] { run(); });
  }
  ~Readahead() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Readahead(const Readahead&) = delete;
  Readahead& operator=(const Readahead&) = delete;

  /// Tasks [0, folded) are finished.
  void advance(std::size_t folded) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      folded_ = folded;
    }
    cv_.notify_all();
  }

 private:
  void run() {
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    for (std::size_t k = 0; k < tasks_.size();) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || k < folded_ + window_; });
        if (stop_) return;
      }
      // consecutive tasks of one role, about 1 MiB per expert: large requests, as a sequential read makes
      const RolePlan& r = roles_[tasks_[k].role];
      const std::size_t es = dtype_size(r.dtype);
      std::size_t end = k + 1;
      std::int64_t count = tasks_[k].count;
      while (end < tasks_.size() && tasks_[end].role == tasks_[k].role && static_cast<double>(count) * es < 1e6)
        count += tasks_[end++].count;
      for (const std::uint8_t* first : r.first) {
        const auto a = reinterpret_cast<std::uintptr_t>(first + static_cast<std::size_t>(tasks_[k].first) * es);
        const std::uintptr_t b = a + static_cast<std::size_t>(count) * es, a0 = a / page * page;
        ::madvise(reinterpret_cast<void*>(a0), b - a0, MADV_WILLNEED);  // a hint: failure changes nothing
      }
      k = end;
    }
  }

  const std::vector<RolePlan>& roles_;
  const std::vector<Task>& tasks_;
  const std::size_t window_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t folded_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

// Sums one task with `kernel` (whose lanes are empty); `staging` holds E x kernel.block() doubles.
GramSums run_task(const TensorSource& src, const RolePlan& r, const Task& t, GramKernel& kernel,
                  std::vector<double>& staging) {
  const auto E = static_cast<std::int64_t>(r.views.size());
  if (r.direct) {
    const std::size_t es = dtype_size(r.dtype);
    std::vector<const std::uint8_t*> rows(r.first.size());
    for (std::size_t e = 0; e < rows.size(); ++e) rows[e] = r.first[e] + static_cast<std::size_t>(t.first) * es;
    kernel.add(r.dtype, rows.data(), t.count);
    return kernel.take();
  }
  // Staged: pieces of one kernel segment, so that the lanes see the same sequence as one add() over the task.
  const std::int64_t piece = GramKernel::kSegment;
  staging.resize(static_cast<std::size_t>(E * piece));
  std::vector<const double*> rows(static_cast<std::size_t>(E));
  for (std::int64_t at = t.first; at < t.first + t.count; at += piece) {
    const std::int64_t n = std::min(piece, t.first + t.count - at);
    for (std::int64_t e = 0; e < E; ++e) {
      double* row = staging.data() + e * piece;
      read_view_f64(src, *r.views[static_cast<std::size_t>(e)], at, n, row);
      rows[static_cast<std::size_t>(e)] = row;
    }
    kernel.add(rows.data(), n);
  }
  return kernel.take();
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
                       "): " + matrix_element(flat, v->cols) + " of the expert's matrix is " + nonfinite_name(x) +
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
  std::vector<RolePlan> roles;
  std::vector<Task> tasks;
  for (const auto& role : g.roles) {
    roles.push_back(plan_role(src, layer, role));
    const std::int64_t n = roles.back().n;
    g.dim += n;
    for (std::int64_t at = 0; at < n; at += kTaskCoordinates)
      tasks.push_back(Task{roles.size() - 1, at, std::min(kTaskCoordinates, n - at)});
  }
  // A tensor's pages may be dropped once the last role that reads it is summed (keeps resident memory to
  // about one role of one layer).
  std::vector<std::vector<std::string>> release_after(roles.size());
  for (std::size_t r = 0; r < roles.size(); ++r)
    for (const MatrixView* v : roles[r].views) {
      bool later = false;
      for (std::size_t q = r + 1; q < roles.size() && !later; ++q)
        for (const MatrixView* w : roles[q].views) later = later || w->tensor == v->tensor;
      if (!later) release_after[r].push_back(v->tensor);
    }

  if (g.dim == 0) {
    std::string names;
    for (const auto& r : g.roles) names += (names.empty() ? "" : ",") + r;
    fail_input(src.path(), layer.key + ": the experts' chosen matrices (" + names +
                               ") hold no values (zero-size tensors): there is nothing to compare");
  }
  // Threads take tasks in order; finished tasks are added to the total strictly in task order.
  GramSums total(g.experts);
  std::map<std::size_t, GramSums> done;  // finished, waiting for their turn
  std::size_t next_fold = 0;
  std::atomic<std::size_t> next_task{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
  std::mutex mu;
  // Read ahead about 32 MiB of a memory-mapped file (only roles read in place: staged ones go through
  // read_view_f64, whose reads are not strips).
  std::unique_ptr<Readahead> readahead;
  const bool mapped = dynamic_cast<const SafetensorsFile*>(&src) || dynamic_cast<const ShardedSafetensors*>(&src);
  if (mapped && std::all_of(roles.begin(), roles.end(), [](const RolePlan& r) { return r.direct; })) {
    const double task_bytes = static_cast<double>(kTaskCoordinates) * static_cast<double>(E) *
                              static_cast<double>(dtype_size(roles.front().dtype));
    readahead = std::make_unique<Readahead>(roles, tasks, static_cast<std::size_t>(std::max(2.0, 32e6 / task_bytes)));
  }
  const auto worker = [&] {
    try {
      GramKernel kernel(g.experts, opts.chunk);
      std::vector<double> staging;
      for (std::size_t k; !stop.load(std::memory_order_relaxed) && (k = next_task.fetch_add(1)) < tasks.size();) {
        GramSums s = run_task(src, roles[tasks[k].role], tasks[k], kernel, staging);
        std::lock_guard<std::mutex> lock(mu);
        done.emplace(k, std::move(s));
        const std::size_t before = next_fold;
        for (auto it = done.find(next_fold); it != done.end(); it = done.find(next_fold)) {
          total.add(it->second);
          done.erase(it);
          const std::size_t r = tasks[next_fold].role;
          ++next_fold;
          if (next_fold == tasks.size() || tasks[next_fold].role != r)
            for (const auto& t : release_after[r]) src.release(t);
        }
        if (readahead && next_fold != before) readahead->advance(next_fold);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
      stop = true;
    }
  };
  const int threads =
      static_cast<int>(std::min<std::size_t>(std::max(1, opts.threads), std::max<std::size_t>(1, tasks.size())));
  std::vector<std::thread> pool;
  try {
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  } catch (...) {  // could not start a thread: stop the others before unwinding
    stop = true;
    for (auto& th : pool) th.join();
    throw;
  }
  worker();
  for (auto& th : pool) th.join();
  readahead.reset();
  if (error) std::rethrow_exception(error);

  g.gram = total.gram_matrix();
  // A NaN or infinity anywhere in an expert's vector makes its squared norm non-finite: name the element.
  for (Eigen::Index e = 0; e < E; ++e) {
    if (std::isfinite(g.gram(e, e))) continue;
    std::vector<const MatrixView*> views;
    for (const auto& role : g.roles) views.push_back(layer.experts[static_cast<std::size_t>(e)].find(role));
    fail_non_finite(src, layer.key, layer.experts[static_cast<std::size_t>(e)].index, views);
  }
  const double sq_dev = total.sq_dev;
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
  g.param_variance = sq_dev / static_cast<double>(E - 1) / D;
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
