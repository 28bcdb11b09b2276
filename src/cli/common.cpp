#include "common.hpp"

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "moescope/io/checkpoint.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/runtime.hpp"

namespace moescope::cli {

int apply_threads(const Context& ctx) {
  const int n = ctx.threads > 0 ? ctx.threads : std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(n);  // LibTorch starts with one intra-op thread on some builds
  spdlog::debug("threads {}; {}", n, ctx.runtime);
  return n;
}

int start_torch_work(const Context& ctx) {
  reexec_with_passive_openmp(ctx.argv);
  return apply_threads(ctx);
}

Provenance make_provenance(const Context& ctx, const std::string& checkpoint, std::int64_t seed) {
  Provenance p;
  p.command_line = ctx.command_line;
  p.checkpoint = checkpoint;
  if (!checkpoint.empty()) {
    const CheckpointHash h = hash_checkpoint(checkpoint, ctx.hash);
    p.checkpoint_sha256 = h.sha256;
    p.hash_scope = h.scope;
  } else {
    p.hash_scope = "none";
  }
  p.seed = seed;
  p.threads = ctx.threads > 0 ? ctx.threads : static_cast<std::int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

std::vector<double> row_major(const Eigen::MatrixXd& m) {
  std::vector<double> v(static_cast<std::size_t>(m.size()));
  Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), m.rows(), m.cols()) = m;
  return v;
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
  w.write(base + "/overlap", row_major(g.overlap), {E, E});
  w.write(base + "/gram", row_major(g.gram), {E, E});
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
}

std::vector<int> parse_index_list(const std::string& spec, const std::string& flag) {
  std::vector<int> out;
  std::size_t pos = 0;
  auto bad = [&](const std::string& why) -> void { throw InputError(flag + ": " + why + " in '" + spec + "'"); };
  auto number = [&](const std::string& s) {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 9) bad("'" + s + "' is not a number");
    return std::stoi(s);
  };
  while (pos <= spec.size()) {
    const std::size_t comma = std::min(spec.find(',', pos), spec.size());
    const std::string item = spec.substr(pos, comma - pos);
    if (const auto dash = item.find('-'); dash != std::string::npos) {
      const int a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
      if (b < a) bad("range " + item + " runs backwards");
      for (int i = a; i <= b; ++i) out.push_back(i);
    } else {
      out.push_back(number(item));
    }
    pos = comma + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace moescope::cli
