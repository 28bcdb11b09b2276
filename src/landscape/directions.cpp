#include "moescope/landscape/directions.hpp"

#include <cmath>
#include <map>
#include <stdexcept>

#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"

namespace moescope {
namespace {

std::string shape_text(at::IntArrayRef s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? "," : "") + std::to_string(s[i]);
  return t + "]";
}

void check_matches(const std::vector<NamedParameter>& a, const std::vector<NamedParameter>& b, const char* what) {
  if (a.size() != b.size())
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(a.size()) + " tensors for " +
                                std::to_string(b.size()) + " parameters");
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first)
      throw std::invalid_argument(std::string(what) + ": tensor " + std::to_string(i) + " is '" + a[i].first +
                                  "', parameter is '" + b[i].first + "'");
    if (a[i].second.sizes() != b[i].second.sizes())
      throw std::invalid_argument(std::string(what) + ": '" + a[i].first + "' has shape " +
                                  shape_text(a[i].second.sizes()) + ", parameter " +
                                  shape_text(b[i].second.sizes()));
  }
}

// Scales d (contiguous, same shape as w) to w by n. Norms are taken in the tensors' dtype, as loss-landscape does.
void normalize_tensor(torch::Tensor& d, const torch::Tensor& w, Normalization n) {
  switch (n) {
    case Normalization::None:
      return;
    case Normalization::Filter: {
      if (d.dim() == 0) {
        d.mul_(w.abs() / (d.abs() + 1e-10));
        return;
      }
      // Rows are the indices of dim 0: output neurons of a Linear weight [out, in], filters of a Conv [out, in, k, k].
      auto d2 = d.view({d.size(0), -1});
      const auto w2 = w.reshape({w.size(0), -1});
      d2.mul_(w2.norm(2, {1}, /*keepdim=*/true) / (d2.norm(2, {1}, /*keepdim=*/true) + 1e-10));
      return;
    }
    case Normalization::Layer: {
      const auto dn = d.norm();
      // A zero direction stays zero (loss-landscape would produce NaN).
      if (dn.item<double>() > 0) d.mul_(w.norm() / dn);
      return;
    }
  }
}

}  // namespace

const char* normalization_name(Normalization n) {
  switch (n) {
    case Normalization::None:
      return "none";
    case Normalization::Filter:
      return "filter";
    case Normalization::Layer:
      return "layer";
  }
  return "?";
}

Normalization parse_normalization(const std::string& name, const std::string& flag) {
  if (name == "none") return Normalization::None;
  if (name == "filter") return Normalization::Filter;
  if (name == "layer") return Normalization::Layer;
  throw InputError(flag + " '" + name + "': expected none, filter or layer");
}

const char* small_tensor_rule_name(SmallTensorRule r) {
  switch (r) {
    case SmallTensorRule::Zero:
      return "biasbn";
    case SmallTensorRule::CopyWeights:
      return "weights";
    case SmallTensorRule::Normalize:
      return "none";
  }
  return "?";
}

SmallTensorRule parse_small_tensor_rule(const std::string& name, const std::string& flag) {
  if (name == "biasbn") return SmallTensorRule::Zero;
  if (name == "weights") return SmallTensorRule::CopyWeights;
  if (name == "none") return SmallTensorRule::Normalize;
  throw InputError(flag + " '" + name + "': expected biasbn (zero), weights (copy the weights) or none (normalise)");
}

std::int64_t Direction::numel() const {
  std::int64_t n = 0;
  for (const auto& p : parts) n += p.second.numel();
  return n;
}

double Direction::norm() const {
  double s = 0;
  for (const auto& p : parts) s += p.second.to(torch::kFloat64).square().sum().item<double>();
  return std::sqrt(s);
}

Direction random_direction(const std::vector<NamedParameter>& params, const RandomDirectionOptions& opts) {
  if (params.empty()) throw std::invalid_argument("random_direction: no parameters");
  torch::NoGradGuard no_grad;
  Rng rng(opts.seed);
  Direction d;
  d.kind = "random";
  d.seed = opts.seed;
  std::vector<double> buf;
  for (const auto& [name, w] : params) {
    // Drawn on the CPU in float64 in a fixed order, then converted: the same numbers for any thread count or device.
    buf.resize(static_cast<std::size_t>(w.numel()));
    rng.fill_gaussian(buf.data(), w.numel());
    auto t = torch::from_blob(buf.data(), w.sizes(), torch::kFloat64).to(w.device(), w.scalar_type(), false, /*copy=*/true);
    d.parts.emplace_back(name, t.contiguous());
  }
  normalize_direction(d, params, opts.normalization, opts.small);
  return d;
}

void normalize_direction(Direction& d, const std::vector<NamedParameter>& params, Normalization n,
                         SmallTensorRule small) {
  check_matches(d.parts, params, "normalize_direction");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto& t = d.parts[i].second;
    const auto w = params[i].second.detach();
    if (!t.is_contiguous()) t = t.contiguous();
    if (t.dim() <= 1) {
      switch (small) {
        case SmallTensorRule::Zero:
          t.zero_();
          continue;
        case SmallTensorRule::CopyWeights:
          t.copy_(w);
          continue;
        case SmallTensorRule::Normalize:
          break;
      }
    }
    normalize_tensor(t, w, n);
  }
  d.normalization = n;
  d.small = small;
}

Direction direction_from_flat(const std::vector<NamedParameter>& params, const torch::Tensor& flat,
                              const std::string& kind) {
  std::int64_t n = 0;
  for (const auto& p : params) n += p.second.numel();
  if (flat.numel() != n)
    throw std::invalid_argument("direction_from_flat: vector has " + std::to_string(flat.numel()) +
                                " elements, the parameters " + std::to_string(n));
  torch::NoGradGuard no_grad;
  const auto f = flat.detach().reshape({-1});
  Direction d;
  d.kind = kind;
  std::int64_t at = 0;
  for (const auto& [name, w] : params) {
    auto t = f.slice(0, at, at + w.numel()).view(w.sizes()).to(w.device(), w.scalar_type(), false, /*copy=*/true);
    d.parts.emplace_back(name, t.contiguous());
    at += w.numel();
  }
  return d;
}

Direction difference_direction(const std::vector<NamedParameter>& from, const std::vector<NamedParameter>& to,
                               const std::string& what_to) {
  std::map<std::string, torch::Tensor> other;
  for (const auto& p : to) other.emplace(p.first, p.second);
  if (other.size() != from.size())
    throw InputError(what_to + ": " + std::to_string(to.size()) + " selected parameters, the model has " +
                     std::to_string(from.size()));
  torch::NoGradGuard no_grad;
  Direction d;
  d.kind = "difference";
  d.source = what_to;
  for (const auto& [name, w] : from) {
    const auto it = other.find(name);
    if (it == other.end()) throw InputError(what_to + ": no parameter '" + name + "'");
    if (it->second.sizes() != w.sizes())
      throw InputError(what_to + ": '" + name + "' has shape " + shape_text(it->second.sizes()) + ", the model " +
                       shape_text(w.sizes()));
    auto t = it->second.detach().to(w.device(), w.scalar_type()) - w.detach();
    d.parts.emplace_back(name, t.contiguous());
  }
  return d;
}

void save_directions(const std::string& path, const std::vector<Direction>& dirs,
                     const std::vector<std::string>& labels, const Provenance& provenance) {
  if (dirs.size() != labels.size())
    throw std::invalid_argument("save_directions: " + std::to_string(dirs.size()) + " directions, " +
                                std::to_string(labels.size()) + " labels");
  ReportWriter w(path);
  w.write_provenance(provenance);
  w.create_group("/directions");
  w.write_strings("/directions/labels", labels);
  for (std::size_t k = 0; k < dirs.size(); ++k) {
    const Direction& d = dirs[k];
    const std::string g = "/directions/" + labels[k];
    std::vector<std::string> names;
    for (const auto& [name, t] : d.parts) {
      if (name.empty() || name.find('/') != std::string::npos)
        throw std::invalid_argument("save_directions: parameter name '" + name + "' cannot be an HDF5 name");
      names.push_back(name);
      const auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
      std::vector<std::size_t> dims(c.sizes().begin(), c.sizes().end());
      w.write(g + "/tensors/" + name, std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel()),
              dims);
    }
    w.write_strings(g + "/names", names);
    w.set_attr(g, "kind", d.kind);
    w.set_attr(g, "normalization", std::string(normalization_name(d.normalization)));
    w.set_attr(g, "ignore", std::string(small_tensor_rule_name(d.small)));
    // Attributes are int64; the seed's bits are kept (a seed above 2^63 reads back negative, cast back).
    w.set_attr(g, "seed", static_cast<std::int64_t>(d.seed));
    w.set_attr(g, "source", d.source);
    w.set_attr(g, "norm", d.norm());
  }
  w.commit();
}

std::vector<Direction> load_directions(const std::string& path, const std::vector<NamedParameter>& params,
                                       std::vector<std::string>* labels_out) {
  ReportReader r(path);
  if (!r.exists("/directions/labels")) fail_input(path, "not a directions file (no /directions/labels)");
  const auto labels = r.read_strings("/directions/labels");
  if (labels.empty()) fail_input(path, "holds no directions");
  auto attr_string = [&](const std::string& g, const char* name) -> std::string {
    if (!r.has_attr(g, name)) return "";
    const AttrValue v = r.attr(g, name);
    if (const auto* s = std::get_if<std::string>(&v)) return *s;
    fail_input(path, g + ": attribute '" + name + "' is not a string");
  };
  std::vector<Direction> out;
  torch::NoGradGuard no_grad;
  for (const auto& label : labels) {
    const std::string g = "/directions/" + label;
    if (label.empty() || label.find('/') != std::string::npos || !r.exists(g + "/names"))
      fail_input(path, "direction '" + label + "' is missing");
    const auto names = r.read_strings(g + "/names");
    std::map<std::string, int> seen;
    for (const auto& n : names) {
      if (++seen[n] > 1) fail_input(path, g + ": tensor '" + n + "' appears twice");
    }
    for (const auto& n : names) {
      bool selected = false;
      for (const auto& p : params) selected = selected || p.first == n;
      if (!selected) fail_input(path, g + ": tensor '" + n + "' is not among the selected parameters (--params)");
    }
    Direction d;
    d.kind = attr_string(g, "kind");
    if (d.kind.empty()) d.kind = "file";
    d.source = attr_string(g, "source");
    const std::string norm = attr_string(g, "normalization");
    d.normalization = norm.empty() ? Normalization::None : parse_normalization(norm, path + ": " + g + " normalization");
    const std::string ign = attr_string(g, "ignore");
    d.small = ign.empty() ? SmallTensorRule::Normalize : parse_small_tensor_rule(ign, path + ": " + g + " ignore");
    if (r.has_attr(g, "seed")) {
      const AttrValue v = r.attr(g, "seed");
      if (const auto* s = std::get_if<std::int64_t>(&v)) d.seed = static_cast<std::uint64_t>(*s);
    }
    for (const auto& [name, w] : params) {
      if (!seen.count(name)) fail_input(path, g + ": no tensor for parameter '" + name + "'");
      std::vector<std::size_t> dims;
      auto values = r.read(g + "/tensors/" + name, &dims);
      const std::vector<std::size_t> want(w.sizes().begin(), w.sizes().end());
      if (dims != want || static_cast<std::int64_t>(values.size()) != w.numel()) {
        std::string got = "[";
        for (std::size_t i = 0; i < dims.size(); ++i) got += (i ? "," : "") + std::to_string(dims[i]);
        fail_input(path, g + ": tensor '" + name + "' has shape " + got + "], the parameter " + shape_text(w.sizes()));
      }
      auto t = torch::from_blob(values.data(), w.sizes(), torch::kFloat64).to(w.device(), w.scalar_type(), false, /*copy=*/true);
      d.parts.emplace_back(name, t.contiguous());
    }
    out.push_back(std::move(d));
  }
  if (labels_out) *labels_out = labels;
  return out;
}

}  // namespace moescope
