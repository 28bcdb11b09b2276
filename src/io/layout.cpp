#include "moescope/io/layout.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "moescope/util/error.hpp"

namespace moescope {
namespace {

std::vector<std::string_view> split_name(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) return parts;
    start = dot + 1;
  }
}

// Nine digits at most so the value always fits an int.
bool is_uint(std::string_view s) {
  return !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int to_int(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

// "3" (most families) or "expert_3" (Switch, NLLB-MoE).
std::optional<int> expert_index(std::string_view c) {
  constexpr std::string_view kSwitch = "expert_";
  if (c.substr(0, kSwitch.size()) == kSwitch) c.remove_prefix(kSwitch.size());
  if (!is_uint(c)) return std::nullopt;
  return to_int(c);
}

struct MatrixName {
  std::string_view name, role, scheme;
};

// Known per-expert matrix names, the role each plays, and the family whose naming scheme it belongs to.
constexpr MatrixName kMatrixNames[] = {
    {"w1", "gate", "mixtral"},
    {"w3", "up", "mixtral"},
    {"w2", "down", "mixtral"},
    {"gate_proj", "gate", "olmoe-qwen-deepseek"},
    {"up_proj", "up", "olmoe-qwen-deepseek"},
    {"down_proj", "down", "olmoe-qwen-deepseek"},
    {"wi", "up", "switch"},
    {"wo", "down", "switch"},
    {"wi_0", "gate", "switch"},  // gated T5 variants
    {"wi_1", "up", "switch"},
    {"fc1", "up", "moescope"},
    {"fc2", "down", "moescope"},
    {"w_gate", "gate", "moescope"},
    {"w_up", "up", "moescope"},
    {"w_down", "down", "moescope"},
};

const MatrixName* matrix_name(std::string_view n) {
  for (const auto& m : kMatrixNames)
    if (m.name == n) return &m;
  return nullptr;
}

// Per-expert tensors are viewed whole: 2-D as is, 1-D (biases) as one row, higher ranks as [dim0, rest].
MatrixView plain_view(const TensorInfo& t, std::string role) {
  MatrixView v;
  v.role = std::move(role);
  v.tensor = t.name;
  if (t.shape.empty()) {
    v.rows = v.cols = 1;
  } else if (t.shape.size() == 1) {
    v.rows = 1;
    v.cols = t.shape[0];
  } else {
    v.rows = t.shape[0];
    v.cols = t.shape[0] == 0 ? 0 : t.numel() / t.shape[0];
  }
  v.row_stride = v.cols;
  return v;
}

MatrixView strided_view(std::string role, const std::string& tensor, std::int64_t offset, std::int64_t rows,
                        std::int64_t cols, std::int64_t row_stride, std::int64_t col_stride) {
  MatrixView v;
  v.role = std::move(role);
  v.tensor = tensor;
  v.offset = offset;
  v.rows = rows;
  v.cols = cols;
  v.row_stride = row_stride;
  v.col_stride = col_stride;
  return v;
}

// "0-2, 5, 7-8".
std::string ranges(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  std::string s;
  for (std::size_t i = 0; i < v.size();) {
    std::size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(v[i]);
    if (j > i) s += "-" + std::to_string(v[j]);
    i = j + 1;
  }
  return s;
}

std::string roles_string(const std::vector<MatrixView>& m) {
  std::string s = "[";
  for (std::size_t i = 0; i < m.size(); ++i) s += (i ? ", " : "") + m[i].role;
  return s + "]";
}

std::string dims_string(const MatrixView& v) {
  return std::to_string(v.rows) + " x " + std::to_string(v.cols);
}

// Where a block sits in the model: encoder/decoder part and the model's layer number.
struct Position {
  std::string part;  // "encoder", "decoder" or ""
  std::optional<int> layer;
};

Position locate(std::string_view prefix) {
  Position p;
  const auto comps = split_name(prefix);
  for (auto c : comps)
    if (c == "encoder" || c == "decoder") {
      p.part = std::string(c);
      break;
    }
  // T5/Switch spell blocks "block.<i>.layer.<j>" where j is the sub-layer (1: FFN, 2: decoder FFN), so the
  // number after "block" wins; everywhere else the last integer component is the layer.
  for (std::size_t i = 0; i + 1 < comps.size(); ++i)
    if (comps[i] == "block" && is_uint(comps[i + 1])) {
      p.layer = to_int(comps[i + 1]);
      return p;
    }
  for (auto it = comps.rbegin(); it != comps.rend(); ++it)
    if (is_uint(*it)) {
      p.layer = to_int(*it);
      break;
    }
  return p;
}

int part_rank(const std::string& part) { return part == "encoder" ? 0 : part == "decoder" ? 2 : 1; }

// One MoE block while it is being assembled.
struct LayerBuild {
  std::string prefix;
  std::string family;  // set when known at scan time (custom, fused); otherwise from the naming scheme
  Position pos;
  std::map<int, std::vector<MatrixView>> experts;
  std::vector<MatrixView> shared;
  std::string shared_gate;
  std::set<std::string> schemes;  // naming schemes of the expert matrices seen
  std::string router, router_bias;
  // Fused 3-D experts.
  const TensorInfo* gate_up = nullptr;
  const TensorInfo* gate_up_bias = nullptr;
  const TensorInfo* down = nullptr;
  const TensorInfo* down_bias = nullptr;
};

using NameIndex = std::unordered_map<std::string_view, const TensorInfo*>;

const TensorInfo* lookup(const NameIndex& idx, const std::string& name) {
  auto it = idx.find(name);
  return it == idx.end() ? nullptr : it->second;
}

// Router names in the order the families use them, each with the bias names that go with it.
void find_router(LayerBuild& b, const NameIndex& idx) {
  const std::string& p = b.prefix;
  const std::pair<std::string, std::vector<std::string>> candidates[] = {
      {p + ".gate.weight", {p + ".gate.e_score_correction_bias", p + ".gate.bias"}},
      {p + ".router.weight", {p + ".router.bias"}},
      {p + ".router.classifier.weight", {p + ".router.classifier.bias"}},
  };
  for (const auto& [w, biases] : candidates) {
    if (!lookup(idx, w)) continue;
    b.router = w;
    for (const auto& bias : biases)
      if (lookup(idx, bias)) {
        b.router_bias = bias;
        break;
      }
    return;
  }
}

std::string shape3(const TensorInfo& t) { return "'" + t.name + "' " + shape_string(t.shape); }

// Expresses fused 3-D experts as per-expert strided views.
// Shapes decide between the two fused layouts, with gate_up = [E, A, B] and down = [E, C, D]:
//   transformers v5: gate_up [E, 2I, H] (gate rows, then up rows), down [E, H, I]  <=>  A == 2D and B == C;
//   GPT-OSS:         gate_up [E, H, 2I] (gate/up interleaved columns), down [E, I, H]  <=>  B == 2C and A == D.
// Both at once would need D == 2D, i.e. an empty tensor, so for real shapes at most one holds. The router's
// name (mlp.gate for v5, mlp.router for GPT-OSS) only confirms it; a mismatch becomes a note.
// Views keep the stored orientation: GPT-OSS computes x @ W, so its views are [in, out] where the others are
// Linear's [out, in]; metrics over flattened matrices treat all experts alike either way.
void expand_fused(LayerBuild& b, std::vector<std::string>& notes) {
  if (!b.gate_up || !b.down)
    throw InputError(b.prefix + ": fused experts need both '" + b.prefix + ".experts.gate_up_proj' and '" +
                     b.prefix + ".experts.down_proj'");
  const TensorInfo& gu = *b.gate_up;
  const TensorInfo& dn = *b.down;
  const auto bad = [&](const std::string& why) {
    throw InputError(b.prefix + ": fused experts " + shape3(gu) + " and " + shape3(dn) + ": " + why);
  };
  if (gu.shape.size() != 3 || dn.shape.size() != 3) bad("expected 3-D tensors");
  for (auto d : gu.shape)
    if (d <= 0) bad("empty dimension");
  for (auto d : dn.shape)
    if (d <= 0) bad("empty dimension");
  if (gu.shape[0] != dn.shape[0]) bad("different expert counts");
  const std::int64_t E = gu.shape[0], A = gu.shape[1], B = gu.shape[2], C = dn.shape[1], D = dn.shape[2];
  const bool v5 = A == 2 * D && B == C;
  const bool oss = B == 2 * C && A == D;
  if (!v5 && !oss)
    bad("neither [E, 2I, H] with [E, H, I] (transformers v5) nor [E, H, 2I] with [E, I, H] (GPT-OSS)");

  const std::int64_t H = v5 ? B : A, I = v5 ? D : C;
  const auto check_bias = [&](const TensorInfo* t, std::int64_t width) {
    if (t && (t->shape.size() != 2 || t->shape[0] != E || t->shape[1] != width))
      bad("bias " + shape3(*t) + " should be [" + std::to_string(E) + ", " + std::to_string(width) + "]");
  };
  check_bias(b.gate_up_bias, 2 * I);
  check_bias(b.down_bias, H);

  b.family = v5 ? "fused-v5" : "gpt-oss";
  const std::string expected_router = b.prefix + (v5 ? ".gate.weight" : ".router.weight");
  if (!b.router.empty() && b.router != expected_router)
    notes.push_back(b.prefix + ": router '" + b.router + "' is unusual for the " + b.family +
                    " expert shapes; the shapes decide the layout");
  if (oss && !b.gate_up_bias)
    notes.push_back(b.prefix + ": gate_up_proj " + shape_string(gu.shape) +
                    " read as GPT-OSS (gate/up interleaved in the last dim); a layout that concatenates them "
                    "(Llama-4) would be misread");

  for (std::int64_t e = 0; e < E; ++e) {
    std::vector<MatrixView> m;
    if (v5) {
      m.push_back(strided_view("gate", gu.name, e * 2 * I * H, I, H, H, 1));
      m.push_back(strided_view("up", gu.name, e * 2 * I * H + I * H, I, H, H, 1));
      m.push_back(strided_view("down", dn.name, e * H * I, H, I, I, 1));
      if (b.gate_up_bias) {
        m.push_back(strided_view("gate_bias", b.gate_up_bias->name, e * 2 * I, 1, I, I, 1));
        m.push_back(strided_view("up_bias", b.gate_up_bias->name, e * 2 * I + I, 1, I, I, 1));
      }
    } else {
      m.push_back(strided_view("gate", gu.name, e * H * 2 * I, H, I, 2 * I, 2));
      m.push_back(strided_view("up", gu.name, e * H * 2 * I + 1, H, I, 2 * I, 2));
      m.push_back(strided_view("down", dn.name, e * I * H, I, H, H, 1));
      if (b.gate_up_bias) {
        m.push_back(strided_view("gate_bias", b.gate_up_bias->name, e * 2 * I, 1, I, 2 * I, 2));
        m.push_back(strided_view("up_bias", b.gate_up_bias->name, e * 2 * I + 1, 1, I, 2 * I, 2));
      }
    }
    if (b.down_bias) m.push_back(strided_view("down_bias", b.down_bias->name, e * H, 1, H, H, 1));
    b.experts[static_cast<int>(e)] = std::move(m);
  }
}

// The family whose naming scheme and router name the block follows, "generic" when it mixes or differs.
std::string scheme_family(const LayerBuild& b) {
  if (b.schemes.size() != 1) return "generic";
  const std::string& s = *b.schemes.begin();
  const std::string& p = b.prefix;
  if ((s == "mixtral" || s == "olmoe-qwen-deepseek") && b.router == p + ".gate.weight") return s;
  if (s == "switch" && b.router == p + ".router.classifier.weight") return s;
  if (s == "moescope" && b.router == p + ".router.weight") return s;
  return "generic";
}

std::string activation_of(const std::vector<MatrixView>& m) {
  const auto has = [&](const char* r) {
    return std::any_of(m.begin(), m.end(), [&](const MatrixView& v) { return v.role == r; });
  };
  if (has("gate") && has("up") && has("down")) return "swiglu";
  if (has("up") && has("down")) return "relu";
  return "";
}

std::string sanitize(const std::string& s) {
  std::string r = s;
  for (char& c : r)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return r;
}

ExpertLayout make_expert(int index, std::vector<MatrixView> m, const std::string& where) {
  std::sort(m.begin(), m.end(), [](const MatrixView& a, const MatrixView& b) { return a.role < b.role; });
  for (std::size_t i = 1; i < m.size(); ++i)
    if (m[i].role == m[i - 1].role)
      throw InputError(where + ": expert " + std::to_string(index) + " has two matrices for role '" + m[i].role +
                       "': '" + m[i - 1].tensor + "' and '" + m[i].tensor + "'");
  ExpertLayout e;
  e.index = index;
  e.matrices = std::move(m);
  return e;
}

// Numbers, orders, keys and validates the assembled blocks.
Layout finish(std::vector<LayerBuild> builds, const NameIndex& idx, std::vector<std::string> notes) {
  Layout out;
  // Blocks without a number in their prefix count from 0 in name order, skipping numbers already taken.
  std::sort(builds.begin(), builds.end(),
            [](const LayerBuild& a, const LayerBuild& b) { return a.prefix < b.prefix; });
  std::map<std::string, std::set<int>> taken;
  for (const auto& b : builds)
    if (b.pos.layer) taken[b.pos.part].insert(*b.pos.layer);
  for (auto& b : builds) {
    if (b.pos.layer) continue;
    auto& used = taken[b.pos.part];
    int n = 0;
    while (used.count(n)) ++n;
    b.pos.layer = n;
    used.insert(n);
  }
  std::stable_sort(builds.begin(), builds.end(), [](const LayerBuild& a, const LayerBuild& b) {
    return std::make_tuple(part_rank(a.pos.part), *a.pos.layer, a.prefix) <
           std::make_tuple(part_rank(b.pos.part), *b.pos.layer, b.prefix);
  });

  std::vector<std::string> keys;
  for (const auto& b : builds) keys.push_back(layer_key(*b.pos.layer, b.pos.part));
  std::map<std::string, int> key_count;
  for (const auto& k : keys) ++key_count[k];
  std::set<std::string> used_keys;
  for (std::size_t i = 0; i < builds.size(); ++i) {
    if (key_count[keys[i]] > 1) {
      // Two blocks claim one layer number (e.g. a vision tower and a language model): the prefix tells them apart.
      std::string k = sanitize(builds[i].prefix);
      if (k.empty() || used_keys.count(k)) k = keys[i] + "_" + std::to_string(i);
      notes.push_back("layer key '" + keys[i] + "' is ambiguous; block '" + builds[i].prefix + "' is reported as '" +
                      k + "'");
      keys[i] = k;
    }
    used_keys.insert(keys[i]);
  }

  std::map<std::string, int> family_count;
  for (std::size_t i = 0; i < builds.size(); ++i) {
    LayerBuild& b = builds[i];
    MoELayerLayout L;
    L.key = keys[i];
    L.prefix = b.prefix;
    L.layer = *b.pos.layer;
    L.router = b.router;
    L.router_bias = b.router_bias;
    L.shared_expert_gate = b.shared_gate;
    const std::string where = L.key + " (" + (b.prefix.empty() ? std::string("no prefix") : b.prefix) + ")";

    int expected = 0;
    for (auto& [index, m] : b.experts) {
      if (index != expected)
        throw InputError(where + ": expert indices must run 0..E-1 without gaps; expert " +
                         std::to_string(expected) + " is missing (next found: " + std::to_string(index) + ")");
      ++expected;
      L.experts.push_back(make_expert(index, std::move(m), where));
    }
    const ExpertLayout& ref = L.experts.front();
    for (const auto& e : L.experts) {
      const bool same_roles =
          e.matrices.size() == ref.matrices.size() &&
          std::equal(e.matrices.begin(), e.matrices.end(), ref.matrices.begin(),
                     [](const MatrixView& a, const MatrixView& b) { return a.role == b.role; });
      if (!same_roles)
        throw InputError(where + ": expert " + std::to_string(e.index) + " has matrices " + roles_string(e.matrices) +
                         " but expert " + std::to_string(ref.index) + " has " + roles_string(ref.matrices));
      for (std::size_t j = 0; j < e.matrices.size(); ++j) {
        const MatrixView& a = e.matrices[j];
        const MatrixView& r = ref.matrices[j];
        if (a.rows != r.rows || a.cols != r.cols)
          throw InputError(where + ": expert " + std::to_string(e.index) + " '" + a.role + "' is " + dims_string(a) +
                           " ('" + a.tensor + "') but expert " + std::to_string(ref.index) + "'s is " +
                           dims_string(r) + " ('" + r.tensor + "')");
      }
    }
    if (!b.shared.empty()) L.shared_experts.push_back(make_expert(0, std::move(b.shared), where + " shared expert"));
    L.activation = activation_of(ref.matrices);

    const std::int64_t E = static_cast<std::int64_t>(L.experts.size());
    if (!L.router.empty()) {
      const TensorInfo* r = lookup(idx, L.router);
      if (r && (r->shape.empty() || r->shape[0] != E))
        notes.push_back(L.key + ": router '" + L.router + "' " + shape_string(r->shape) + " does not have " +
                        std::to_string(E) + " rows, one per expert found");
    }
    ++family_count[b.family];
    out.layers.push_back(std::move(L));
  }

  if (out.layers.empty()) {
    out.family = "none";
  } else {
    out.family = builds.front().family;
    if (family_count.size() > 1) {
      std::string s;
      for (const auto& [f, n] : family_count) s += (s.empty() ? "" : ", ") + f + " (" + std::to_string(n) + ")";
      notes.push_back("layers follow different naming schemes: " + s + "; family is that of the first layer");
    }
  }
  out.notes = std::move(notes);
  return out;
}

// Notes the dense FFN blocks ("<X>.mlp.<matrix>.weight" outside any MoE block) of a model that has MoE layers.
void note_dense(const std::vector<TensorInfo>& tensors, const std::vector<LayerBuild>& builds,
                std::vector<std::string>& notes) {
  if (builds.empty()) return;
  std::set<std::pair<std::string, int>> moe;
  for (const auto& b : builds)
    if (b.pos.layer) moe.insert({b.pos.part, *b.pos.layer});
  std::map<std::string, std::vector<int>> dense;  // part -> layers
  for (const auto& t : tensors) {
    const auto c = split_name(t.name);
    const std::size_t n = c.size();
    if (n < 4 || c[n - 1] != "weight" || c[n - 3] != "mlp" || !matrix_name(c[n - 2])) continue;
    const Position p = locate(std::string_view(t.name).substr(0, t.name.size() - c[n - 2].size() - 8));
    if (p.layer && !moe.count({p.part, *p.layer})) dense[p.part].push_back(*p.layer);
  }
  for (auto part : {"encoder", "", "decoder"}) {
    auto it = dense.find(part);
    if (it == dense.end()) continue;
    std::vector<int> v = it->second;
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    const std::string who = std::string(*part ? std::string(part) + " " : "") + (v.size() == 1 ? "layer " : "layers ");
    notes.push_back(who + ranges(v) + (v.size() == 1 ? " is" : " are") + " dense (no experts)");
  }
}

Layout detect_builtin(const std::vector<TensorInfo>& tensors, const NameIndex& idx) {
  std::map<std::string, LayerBuild> by_prefix;
  std::map<std::string, std::vector<MatrixView>> shared;  // prefix -> shared-expert views
  std::map<std::string, std::string> shared_gate;
  std::vector<std::string> notes;
  std::set<std::string> mxfp4;

  for (const auto& t : tensors) {
    const auto c = split_name(t.name);
    const std::size_t n = c.size();
    // Prefix = the name before component i (without its dot).
    const auto prefix_before = [&](std::size_t i) {
      return t.name.substr(0, static_cast<std::size_t>(c[i].data() - t.name.data()) - (i ? 1 : 0));
    };
    if (n >= 4 && c[n - 4] == "experts") {
      // <P>.experts.<e>.<matrix>.weight|bias; anything else there (FP8 weight_scale_inv) is not a matrix.
      const auto e = expert_index(c[n - 3]);
      const MatrixName* m = matrix_name(c[n - 2]);
      if (!e || !m || (c[n - 1] != "weight" && c[n - 1] != "bias")) continue;
      LayerBuild& b = by_prefix[prefix_before(n - 4)];
      b.schemes.insert(std::string(m->scheme));
      const std::string role = std::string(m->role) + (c[n - 1] == "bias" ? "_bias" : "");
      b.experts[*e].push_back(plain_view(t, role));
    } else if (n >= 2 && c[n - 2] == "experts") {
      const auto last = c[n - 1];
      const auto slot = last == "gate_up_proj"        ? &LayerBuild::gate_up
                        : last == "gate_up_proj_bias" ? &LayerBuild::gate_up_bias
                        : last == "down_proj"         ? &LayerBuild::down
                        : last == "down_proj_bias"    ? &LayerBuild::down_bias
                                                      : nullptr;
      if (slot) {
        by_prefix[prefix_before(n - 2)].*slot = &t;
      } else if (last == "gate_up_proj_blocks" || last == "down_proj_blocks") {
        mxfp4.insert(prefix_before(n - 2));
      }
    } else if (n >= 4 && (c[n - 3] == "shared_expert" || c[n - 3] == "shared_experts")) {
      const MatrixName* m = matrix_name(c[n - 2]);
      if (!m || (c[n - 1] != "weight" && c[n - 1] != "bias")) continue;
      const std::string role = std::string(m->role) + (c[n - 1] == "bias" ? "_bias" : "");
      shared[prefix_before(n - 3)].push_back(plain_view(t, role));
    } else if (n >= 3 && c[n - 2] == "shared_expert_gate" && c[n - 1] == "weight") {
      shared_gate[prefix_before(n - 2)] = t.name;
    }
  }

  for (const auto& p : mxfp4)
    if (!by_prefix.count(p))
      notes.push_back(p + ": MXFP4-quantised experts (*_blocks/*_scales) are not supported; dequantise them first");

  std::vector<LayerBuild> builds;
  for (auto& [prefix, b] : by_prefix) {
    b.prefix = prefix;
    b.pos = locate(prefix);
    find_router(b, idx);
    if (b.gate_up || b.down) {
      if (!b.experts.empty())
        throw InputError(prefix + ": both fused 3-D experts and per-expert tensors ('" +
                         b.experts.begin()->second.front().tensor + "')");
      expand_fused(b, notes);
    } else if (b.experts.empty()) {
      continue;  // only biases of fused experts: nothing to report
    } else {
      b.family = scheme_family(b);
    }
    if (auto it = shared.find(prefix); it != shared.end()) b.shared = std::move(it->second);
    if (auto it = shared_gate.find(prefix); it != shared_gate.end()) b.shared_gate = it->second;
    builds.push_back(std::move(b));
  }
  note_dense(tensors, builds, notes);
  return finish(std::move(builds), idx, std::move(notes));
}

struct CustomPattern {
  std::regex re;
  std::size_t layer = 0, expert = 0, matrix = 0;  // numbered groups
};

// Rewrites (?<name>...) to (...) and records each name's group number; escapes and bracket expressions are
// skipped so that "\(" or "[(]" do not count as groups.
CustomPattern compile_pattern(const std::string& pattern, const std::string& source) {
  const auto fail = [&](const std::string& what) { throw InputError(source + ": " + what); };
  std::string rewritten;
  std::map<std::string, std::size_t> groups;
  std::size_t count = 0;
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char ch = pattern[i];
    if (ch == '\\') {
      rewritten += ch;
      if (i + 1 < pattern.size()) rewritten += pattern[++i];
      continue;
    }
    if (in_class) {
      if (ch == ']') in_class = false;
      rewritten += ch;
      continue;
    }
    if (ch == '[') {
      in_class = true;
    } else if (ch == '(') {
      const bool special = i + 1 < pattern.size() && pattern[i + 1] == '?';
      const bool named = special && i + 2 < pattern.size() && pattern[i + 2] == '<' &&
                         (i + 3 >= pattern.size() || (pattern[i + 3] != '=' && pattern[i + 3] != '!'));
      if (named) {
        const std::size_t close = pattern.find('>', i + 3);
        if (close == std::string::npos) fail("unterminated group name in '" + pattern + "'");
        const std::string name = pattern.substr(i + 3, close - i - 3);
        if (name != "layer" && name != "expert" && name != "matrix")
          fail("unknown group name '" + name + "' (expected layer, expert, matrix)");
        if (groups.count(name)) fail("group '" + name + "' appears twice");
        groups[name] = ++count;
        rewritten += '(';
        i = close;
        continue;
      }
      if (!special) ++count;
    }
    rewritten += ch;
  }
  for (const char* g : {"layer", "expert", "matrix"})
    if (!groups.count(g)) fail("missing group (?<" + std::string(g) + ">...) in '" + pattern + "'");
  CustomPattern cp;
  try {
    cp.re = std::regex(rewritten, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("invalid regex '" + pattern + "': " + e.what());
  }
  if (cp.re.mark_count() != count) fail("could not count the groups of '" + pattern + "'");
  cp.layer = groups["layer"];
  cp.expert = groups["expert"];
  cp.matrix = groups["matrix"];
  return cp;
}

Layout detect_custom(const std::vector<TensorInfo>& tensors, const NameIndex& idx, const std::string& pattern,
                     const std::string& source) {
  const CustomPattern cp = compile_pattern(pattern, source);
  std::map<std::pair<int, std::string>, LayerBuild> builds_by;
  for (const auto& t : tensors) {
    std::smatch m;
    if (!std::regex_match(t.name, m, cp.re)) continue;
    const auto number = [&](std::size_t g, const char* what) {
      const std::string s = m[g].matched ? m[g].str() : std::string();
      if (!is_uint(s))
        throw InputError(source + ": group '" + std::string(what) + "' matched '" + s + "' in tensor '" +
                         t.name + "', not a number");
      return to_int(s);
    };
    const int layer = number(cp.layer, "layer");
    const int expert = number(cp.expert, "expert");
    const std::string matrix = m[cp.matrix].str();
    if (matrix.empty())
      throw InputError(source + ": group 'matrix' matched nothing in tensor '" + t.name + "'");
    // The block's prefix: the name up to the dot before the component holding the expert number.
    const std::size_t dot = t.name.rfind('.', static_cast<std::size_t>(m.position(cp.expert)));
    std::string prefix = dot == std::string::npos ? std::string() : t.name.substr(0, dot);
    LayerBuild& b = builds_by[{layer, prefix}];
    b.prefix = std::move(prefix);
    b.pos.layer = layer;
    b.family = "custom";
    b.experts[expert].push_back(plain_view(t, matrix));
  }
  std::vector<LayerBuild> builds;
  for (auto& [k, b] : builds_by) {
    if (!b.prefix.empty()) {
      for (const char* r : {".router", ".gate"})
        if (lookup(idx, b.prefix + r + ".weight")) {
          b.router = b.prefix + r + ".weight";
          if (lookup(idx, b.prefix + r + ".bias")) b.router_bias = b.prefix + r + ".bias";
          break;
        }
    }
    builds.push_back(std::move(b));
  }
  std::vector<std::string> notes;
  if (builds.empty()) notes.push_back(source + " matched no tensor");
  return finish(std::move(builds), idx, std::move(notes));
}

}  // namespace

std::string layer_key(int layer, const std::string& part) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "layer_%02d", layer);
  return part.empty() ? std::string(buf) : part + "_" + buf;
}

const MatrixView* ExpertLayout::find(const std::string& role) const {
  auto it = std::lower_bound(matrices.begin(), matrices.end(), role,
                             [](const MatrixView& m, const std::string& r) { return m.role < r; });
  return (it != matrices.end() && it->role == role) ? &*it : nullptr;
}

std::string matrix_role(const std::string& name) {
  const MatrixName* m = matrix_name(name);
  return m ? std::string(m->role) : name;
}

Layout detect_layout(const std::vector<TensorInfo>& tensors, const LayoutOptions& opts) {
  NameIndex idx;
  idx.reserve(tensors.size());
  for (const auto& t : tensors) idx.emplace(t.name, &t);
  if (!opts.expert_pattern.empty()) return detect_custom(tensors, idx, opts.expert_pattern, opts.pattern_source);
  return detect_builtin(tensors, idx);
}

Layout detect_layout(const TensorSource& src, const LayoutOptions& opts) {
  try {
    return detect_layout(src.tensors(), opts);
  } catch (const InputError& e) {
    fail_input(src.path(), e.what());
  }
}

void read_view_f64(const TensorSource& src, const MatrixView& view, std::int64_t first, std::int64_t count,
                   double* out) {
  const TensorInfo& info = src.at(view.tensor);
  const auto fail = [&](const std::string& what) {
    fail_input(src.file_of(view.tensor), "tensor '" + view.tensor + "' " + shape_string(info.shape) + ", view '" +
                                             view.role + "': " + what);
  };
  if (view.rows < 0 || view.cols < 0) fail("negative view size " + dims_string(view));
  if (first < 0 || count < 0 || first > view.numel() - count)
    fail("read of elements [" + std::to_string(first) + ", " + std::to_string(first + count) + ") outside its " +
         std::to_string(view.numel()) + " elements");
  if (count == 0) return;

  const auto flat = [&](std::int64_t r, std::int64_t c) {
    return view.offset + r * view.row_stride + c * view.col_stride;
  };
  // The offset is affine in (r, c), so the whole view lies within its corners' extremes.
  const std::int64_t corners[] = {flat(0, 0), flat(0, view.cols - 1), flat(view.rows - 1, 0),
                                  flat(view.rows - 1, view.cols - 1)};
  const auto [lo, hi] = std::minmax_element(std::begin(corners), std::end(corners));
  if (*lo < 0 || *hi >= info.numel())
    fail("view (offset " + std::to_string(view.offset) + ", " + dims_string(view) + ", strides " +
         std::to_string(view.row_stride) + "/" + std::to_string(view.col_stride) + ") reaches elements [" +
         std::to_string(*lo) + ", " + std::to_string(*hi) + "] outside its " + std::to_string(info.numel()));

  if (view.contiguous()) {
    src.read_f64(view.tensor, view.offset + first, count, out);
    return;
  }
  // Strided: one read per row covering the row's span, then pick every col_stride-th element.
  std::vector<double> span;
  const std::int64_t end = first + count;
  for (std::int64_t k = first; k < end;) {
    const std::int64_t r = k / view.cols, c0 = k % view.cols;
    const std::int64_t n = std::min(view.cols - c0, end - k);
    double* dst = out + (k - first);
    const std::int64_t a = flat(r, c0), b = flat(r, c0 + n - 1);
    if (view.col_stride == 1) {
      src.read_f64(view.tensor, a, n, dst);
    } else {
      const std::int64_t start = std::min(a, b), len = std::max(a, b) - start + 1;
      span.resize(static_cast<std::size_t>(len));
      src.read_f64(view.tensor, start, len, span.data());
      for (std::int64_t j = 0; j < n; ++j) dst[j] = span[static_cast<std::size_t>(flat(r, c0 + j) - start)];
    }
    k += n;
  }
}

std::vector<const MoELayerLayout*> select_layers(const Layout& layout, const std::vector<int>& wanted,
                                                 const std::string& source) {
  if (layout.layers.empty())
    fail_input(source, "no MoE layers found (family '" + layout.family +
                           "'); see `moescope inspect`, or give an expert pattern for an unknown layout");
  std::vector<const MoELayerLayout*> out;
  for (const auto& l : layout.layers)
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), l.layer) != wanted.end()) out.push_back(&l);
  for (int w : wanted)
    if (std::none_of(layout.layers.begin(), layout.layers.end(), [&](const MoELayerLayout& l) { return l.layer == w; }))
      fail_input(source, "layer " + std::to_string(w) + " has no experts (MoE layers: " + [&] {
        std::string list;
        for (const auto& l : layout.layers) list += (list.empty() ? "" : ",") + std::to_string(l.layer);
        return list;
      }() + ")");
  return out;
}

}  // namespace moescope
