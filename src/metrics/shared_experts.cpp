#include "moescope/metrics/shared_experts.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "moescope/io/report.hpp"

namespace moescope {

namespace {
constexpr double kSharedExpertNaN = std::numeric_limits<double>::quiet_NaN();
}

SharedExpertAccumulator::SharedExpertAccumulator(std::string key, std::string kind, std::int64_t experts) {
  if (experts < 1) throw std::invalid_argument("SharedExpertAccumulator: experts must be >= 1");
  r_.key = std::move(key);
  r_.kind = std::move(kind);
  r_.experts = experts;
  r_.overlap_tokens.assign(static_cast<std::size_t>(experts), 0.0);
  sum_.assign(static_cast<std::size_t>(experts), 0.0);
}

void SharedExpertAccumulator::add_token(const double* cos_e, double mixture_cos, double norm, double mixture_norm,
                                        double gate) {
  for (std::size_t e = 0; e < sum_.size(); ++e)
    if (!std::isnan(cos_e[e])) sum_[e] += cos_e[e], r_.overlap_tokens[e] += 1.0;
  if (!std::isnan(mixture_cos)) mixture_sum_ += mixture_cos, mixture_count_ += 1.0;
  norm_sum_ += norm;
  mixture_norm_sum_ += mixture_norm;
  gate_sum_ += gate;  // NaN stays NaN: ungated
  ++r_.tokens;
}

SharedExpertActivations SharedExpertAccumulator::result() const {
  SharedExpertActivations r = r_;
  const double T = static_cast<double>(r.tokens);
  r.overlap.resize(sum_.size());
  for (std::size_t e = 0; e < sum_.size(); ++e)
    r.overlap[e] = r.overlap_tokens[e] > 0 ? sum_[e] / r.overlap_tokens[e] : kSharedExpertNaN;
  r.mixture_overlap = mixture_count_ > 0 ? mixture_sum_ / mixture_count_ : kSharedExpertNaN;
  r.mean_norm = r.tokens > 0 ? norm_sum_ / T : kSharedExpertNaN;
  r.mixture_norm = r.tokens > 0 ? mixture_norm_sum_ / T : kSharedExpertNaN;
  r.mean_gate = r.tokens > 0 ? gate_sum_ / T : kSharedExpertNaN;
  return r;
}

void write_shared_experts(ReportWriter& w, const std::vector<SharedExpertActivations>& shared) {
  for (const auto& s : shared) {
    const std::string base = "/activations/" + s.key + "/shared_expert";
    const auto E = static_cast<std::size_t>(s.experts);
    w.create_group(base);
    w.write(base + "/overlap", s.overlap, {E});
    w.write(base + "/overlap_tokens", s.overlap_tokens, {E});
    w.write_scalar(base + "/mixture_overlap", s.mixture_overlap);
    w.write_scalar(base + "/mean_norm", s.mean_norm);
    w.write_scalar(base + "/mixture_norm", s.mixture_norm);
    w.write_scalar(base + "/mean_gate", s.mean_gate);
    w.write_int(base + "/tokens", {s.tokens}, {});
    w.set_attr(base, "kind", s.kind);
    w.set_attr(base, "definition",
               std::string("s(t): the shared expert's output as the block adds it (gate included); y_e(t): routed "
                           "expert e on the same input; r(t): the routed mixture sum_k w_k y_{e_k}. overlap[e] = mean "
                           "cos(s, y_e); mixture_overlap = mean cos(s, r); mean_norm = mean |s|; mixture_norm = mean "
                           "|r|; mean_gate = mean sigmoid gate (NaN: ungated). Not part of the routed overlap."));
  }
}

}  // namespace moescope
