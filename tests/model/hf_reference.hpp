#pragma once
// A plain float64 reference of the Hugging Face MoE families, written independently of src/model/hf*.cpp: it reads
// config.json with nlohmann and the weights tensor by tensor from the safetensors file, and computes token by token
// with Eigen vectors and explicit loops (attention as sums over earlier positions, RoPE as 2x2 rotations, routing
// by sorting expert indices). It shares no code with the implementation beyond the safetensors reader.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "moescope/io/checkpoint.hpp"

namespace moescope::testing::hfref {

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct RefOutput {
  std::vector<Mat> hidden;  // L + 1 matrices [S, H]: embeddings, then each layer's output
  Mat logits;               // [S, V]
  // Per MoE layer (in layer order): chosen experts and their weights per token.
  std::vector<std::vector<std::vector<std::pair<int, double>>>> routing;
};

class Reference {
 public:
  explicit Reference(const std::string& dir) {
    std::ifstream in(dir + "/config.json");
    in >> cfg_;
    src_ = open_checkpoint(dir);
    arch_ = cfg_["architectures"][0].get<std::string>();
    H_ = geti("hidden_size");
    V_ = geti("vocab_size");
    L_ = geti("num_hidden_layers");
    nh_ = geti("num_attention_heads");
    kv_ = has("num_key_value_heads") ? geti("num_key_value_heads") : nh_;
    eps_ = cfg_["rms_norm_eps"].get<double>();
    theta_ = cfg_["rope_theta"].get<double>();
    mla_ = arch_ == "DeepseekV2ForCausalLM" || arch_ == "DeepseekV3ForCausalLM";
    hd_ = has("head_dim") ? geti("head_dim") : H_ / nh_;
    if (mla_) {
      nope_ = geti("qk_nope_head_dim");
      rope_ = geti("qk_rope_head_dim");
      vd_ = geti("v_head_dim");
      r_ = geti("kv_lora_rank");
      qr_ = has("q_lora_rank") ? geti("q_lora_rank") : 0;
    } else {
      rope_ = hd_;
    }
    // rotary frequencies
    const double d = static_cast<double>(rope_);
    inv_.resize(rope_ / 2);
    for (std::int64_t i = 0; i < rope_ / 2; ++i) inv_[i] = std::pow(theta_, -2.0 * static_cast<double>(i) / d);
    scale_ = 1.0 / std::sqrt(static_cast<double>(mla_ ? nope_ + rope_ : hd_));
    if (has("rope_scaling")) {
      const auto& rs = cfg_["rope_scaling"];
      const std::string type = rs.value("type", rs.value("rope_type", std::string("default")));
      const double factor = rs.value("factor", 1.0);
      if (type == "linear") {
        for (auto& f : inv_) f /= factor;
      } else if (type == "yarn") {
        const double orig = rs["original_max_position_embeddings"].get<double>();
        const double bf = rs.value("beta_fast", 32.0), bs = rs.value("beta_slow", 1.0);
        auto dim_of = [&](double rot) { return d * std::log(orig / (rot * 2 * M_PI)) / (2 * std::log(theta_)); };
        const double lo = std::max(std::floor(dim_of(bf)), 0.0);
        double hi = std::min(std::ceil(dim_of(bs)), d - 1);
        if (hi == lo) hi += 0.001;
        for (std::int64_t i = 0; i < rope_ / 2; ++i) {
          const double ramp = std::clamp((static_cast<double>(i) - lo) / (hi - lo), 0.0, 1.0);
          const double keep_extrapolated = 1.0 - ramp;
          inv_[i] = inv_[i] / factor * ramp + inv_[i] * keep_extrapolated;
        }
        auto m = [&](double s, double k) { return s <= 1 ? 1.0 : 0.1 * k * std::log(s) + 1.0; };
        const double ms = rs.value("mscale", 1.0), msa = rs.value("mscale_all_dim", 0.0);
        rope_gain_ = m(factor, ms) / m(factor, msa);
        if (msa != 0.0) scale_ *= m(factor, msa) * m(factor, msa);
      }
    }
  }

  bool has(const std::string& k) const { return cfg_.contains(k) && !cfg_[k].is_null(); }
  std::int64_t geti(const std::string& k) const { return cfg_[k].get<std::int64_t>(); }
  double getd(const std::string& k, double def) const { return has(k) ? cfg_[k].get<double>() : def; }
  bool getb(const std::string& k, bool def) const { return has(k) ? cfg_[k].get<bool>() : def; }

  Mat mat(const std::string& name) const {
    const auto& info = src_->at(name);
    const std::vector<double> v = src_->read_all_f64(name);
    return Eigen::Map<const RowMat>(v.data(), info.shape[0], info.shape[1]);
  }
  Vec vec(const std::string& name) const {
    const std::vector<double> v = src_->read_all_f64(name);
    return Eigen::Map<const Vec>(v.data(), static_cast<Eigen::Index>(v.size()));
  }
  bool tensor(const std::string& name) const { return src_->find(name) != nullptr; }

  static Vec rms(const Vec& x, const Vec& w, double eps) {
    return (x / std::sqrt(x.squaredNorm() / static_cast<double>(x.size()) + eps)).cwiseProduct(w);
  }
  static double silu(double z) { return z / (1.0 + std::exp(-z)); }

  Vec mlp(const std::string& p, const std::string& g, const std::string& u, const std::string& dn, const Vec& x) const {
    const Vec a = mat(p + g + ".weight") * x, b = mat(p + u + ".weight") * x;
    Vec h(a.size());
    for (Eigen::Index i = 0; i < a.size(); ++i) h[i] = silu(a[i]) * b[i];
    return mat(p + dn + ".weight") * h;
  }

  // Rotation of one head's rotary part at position pos: halves (i, i + d/2), or adjacent pairs (2i, 2i + 1).
  Vec rotate(const Vec& x, std::int64_t pos, bool pairs) const {
    Vec y = x;
    const std::int64_t h = x.size() / 2;
    for (std::int64_t i = 0; i < h; ++i) {
      const double a = static_cast<double>(pos) * inv_[i], c = std::cos(a) * rope_gain_, s = std::sin(a) * rope_gain_;
      const std::int64_t i1 = pairs ? 2 * i : i, i2 = pairs ? 2 * i + 1 : i + h;
      y[i1] = x[i1] * c - x[i2] * s;
      y[i2] = x[i2] * c + x[i1] * s;
    }
    return y;
  }

  bool is_moe(std::int64_t l) const {
    if (arch_ == "MixtralForCausalLM" || arch_ == "OlmoeForCausalLM") return true;
    if (arch_ == "Qwen2MoeForCausalLM" || arch_ == "Qwen3MoeForCausalLM") {
      std::vector<std::int64_t> only;
      if (has("mlp_only_layers")) only = cfg_["mlp_only_layers"].get<std::vector<std::int64_t>>();
      const std::int64_t step = has("decoder_sparse_step") ? geti("decoder_sparse_step") : 1;
      return std::find(only.begin(), only.end(), l) == only.end() && (l + 1) % step == 0;
    }
    const std::int64_t first = has("first_k_dense_replace") ? geti("first_k_dense_replace") : 0;
    const std::int64_t freq = has("moe_layer_freq") ? geti("moe_layer_freq") : 1;
    return has("n_routed_experts") && l >= first && l % freq == 0;
  }

  // Attention output (after o_proj) for every position, given the normalised inputs xs[s].
  std::vector<Vec> attention(std::int64_t l, const std::vector<Vec>& xs) const {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    const std::int64_t S = static_cast<std::int64_t>(xs.size());
    const std::int64_t window = arch_ == "MixtralForCausalLM" && has("sliding_window") ? geti("sliding_window") : 0;
    std::vector<std::vector<Vec>> q(S), k(S), v(S);  // [s][head]
    for (std::int64_t s = 0; s < S; ++s) {
      if (mla_) {
        const std::int64_t qk = nope_ + rope_;
        Vec qf;
        if (qr_ > 0) {
          Vec a = mat(p + "q_a_proj.weight") * xs[s];
          if (tensor(p + "q_a_proj.bias")) a += vec(p + "q_a_proj.bias");
          qf = mat(p + "q_b_proj.weight") * rms(a, vec(p + "q_a_layernorm.weight"), eps_);
        } else {
          qf = mat(p + "q_proj.weight") * xs[s];
        }
        Vec ckv = mat(p + "kv_a_proj_with_mqa.weight") * xs[s];
        if (tensor(p + "kv_a_proj_with_mqa.bias")) ckv += vec(p + "kv_a_proj_with_mqa.bias");
        const Vec kpe = rotate(ckv.segment(r_, rope_), s, true);
        const Vec kvf = mat(p + "kv_b_proj.weight") * rms(ckv.head(r_), vec(p + "kv_a_layernorm.weight"), eps_);
        for (std::int64_t h = 0; h < nh_; ++h) {
          Vec qh(qk), kh(qk);
          qh << qf.segment(h * qk, nope_), rotate(qf.segment(h * qk + nope_, rope_), s, true);
          kh << kvf.segment(h * (nope_ + vd_), nope_), kpe;
          q[s].push_back(qh);
          k[s].push_back(kh);
          v[s].push_back(kvf.segment(h * (nope_ + vd_) + nope_, vd_));
        }
        continue;
      }
      Vec qf = mat(p + "q_proj.weight") * xs[s], kf = mat(p + "k_proj.weight") * xs[s],
          vf = mat(p + "v_proj.weight") * xs[s];
      if (tensor(p + "q_proj.bias")) {
        qf += vec(p + "q_proj.bias");
        kf += vec(p + "k_proj.bias");
        vf += vec(p + "v_proj.bias");
      }
      const bool olmoe = arch_ == "OlmoeForCausalLM", qwen3 = arch_ == "Qwen3MoeForCausalLM";
      if (olmoe) {
        qf = rms(qf, vec(p + "q_norm.weight"), eps_);
        kf = rms(kf, vec(p + "k_norm.weight"), eps_);
        if (has("clip_qkv")) {
          const double c = cfg_["clip_qkv"].get<double>();
          for (Vec* t : {&qf, &kf, &vf})
            for (Eigen::Index i = 0; i < t->size(); ++i) (*t)[i] = std::min(std::max((*t)[i], -c), c);
        }
      }
      for (std::int64_t h = 0; h < nh_; ++h) {
        Vec qh = qf.segment(h * hd_, hd_);
        if (qwen3) qh = rms(qh, vec(p + "q_norm.weight"), eps_);
        q[s].push_back(rotate(qh, s, false));
      }
      for (std::int64_t h = 0; h < kv_; ++h) {
        Vec kh = kf.segment(h * hd_, hd_);
        if (qwen3) kh = rms(kh, vec(p + "k_norm.weight"), eps_);
        k[s].push_back(rotate(kh, s, false));
        v[s].push_back(vf.segment(h * hd_, hd_));
      }
    }
    const Mat wo = mat(p + "o_proj.weight");
    std::vector<Vec> out(S);
    for (std::int64_t s = 0; s < S; ++s) {
      Vec cat(wo.cols());
      std::int64_t off = 0;
      for (std::int64_t h = 0; h < nh_; ++h) {
        const std::int64_t g = mla_ ? h : h / (nh_ / kv_);  // the kv head this query head reads
        std::vector<double> sc;
        std::vector<std::int64_t> ts;
        for (std::int64_t t = 0; t <= s; ++t) {
          if (window > 0 && t <= s - window) continue;
          sc.push_back(q[s][h].dot(k[t][g]) * scale_);
          ts.push_back(t);
        }
        const double mx = *std::max_element(sc.begin(), sc.end());
        double z = 0;
        for (double& x : sc) z += (x = std::exp(x - mx));
        Vec o = Vec::Zero(v[0][0].size());
        for (std::size_t j = 0; j < ts.size(); ++j) o += sc[j] / z * v[ts[j]][g];
        cat.segment(off, o.size()) = o;
        off += o.size();
      }
      out[s] = wo * cat;
      if (tensor(p + "o_proj.bias")) out[s] += vec(p + "o_proj.bias");
    }
    return out;
  }

  // The MoE block on one token; records (expert, weight) pairs.
  Vec moe(std::int64_t l, const Vec& x, std::vector<std::pair<int, double>>* chosen) const {
    const bool mixtral = arch_ == "MixtralForCausalLM";
    const std::string p = "model.layers." + std::to_string(l) + (mixtral ? ".block_sparse_moe." : ".mlp.");
    const Vec logits = mat(p + "gate.weight") * x;
    const int E = static_cast<int>(logits.size());
    const int k = static_cast<int>(geti("num_experts_per_tok"));
    const bool sigmoid = has("scoring_func") && cfg_["scoring_func"] == "sigmoid";
    Vec prob(E);
    if (sigmoid) {
      for (int e = 0; e < E; ++e) prob[e] = 1.0 / (1.0 + std::exp(-logits[e]));
    } else {
      const double mx = logits.maxCoeff();
      for (int e = 0; e < E; ++e) prob[e] = std::exp(logits[e] - mx);
      prob /= prob.sum();
    }
    Vec choice = prob;
    const std::string method = has("topk_method") ? cfg_["topk_method"].get<std::string>() : "greedy";
    if (method == "noaux_tc") choice += vec(p + "gate.e_score_correction_bias");
    if (method != "greedy") {
      const int G = static_cast<int>(geti("n_group")), per = E / G, keep = static_cast<int>(geti("topk_group"));
      std::vector<double> gscore(G);
      for (int g = 0; g < G; ++g) {
        std::vector<double> m(choice.data() + g * per, choice.data() + (g + 1) * per);
        std::sort(m.rbegin(), m.rend());
        gscore[g] = method == "noaux_tc" ? m[0] + m[1] : m[0];
      }
      std::vector<int> gi(G);
      std::iota(gi.begin(), gi.end(), 0);
      std::sort(gi.begin(), gi.end(), [&](int a, int b) { return gscore[a] > gscore[b]; });
      for (int j = keep; j < G; ++j)
        for (int e = gi[j] * per; e < (gi[j] + 1) * per; ++e) choice[e] = 0.0;
    }
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return choice[a] > choice[b]; });
    std::vector<double> w(k);
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += (w[j] = prob[order[j]]);
    const bool deepseek = arch_.rfind("Deepseek", 0) == 0;
    const bool norm = mixtral || getb("norm_topk_prob", arch_ == "DeepseekV3ForCausalLM");
    const double rsf = getd("routed_scaling_factor", 1.0);
    for (int j = 0; j < k; ++j) {
      if (!deepseek) {
        if (norm) w[j] /= sum;
      } else if (norm && k > 1) {
        w[j] /= sum + 1e-20;
        if (arch_ == "DeepseekV3ForCausalLM") w[j] *= rsf;
      } else if (arch_ != "DeepseekForCausalLM") {
        w[j] *= rsf;
      }
    }
    Vec out = Vec::Zero(x.size());
    for (int j = 0; j < k; ++j) {
      const std::string e = p + "experts." + std::to_string(order[j]) + ".";
      out += w[j] * (mixtral ? mlp(e, "w1", "w3", "w2", x) : mlp(e, "gate_proj", "up_proj", "down_proj", x));
      if (chosen) chosen->emplace_back(order[j], w[j]);
    }
    if (tensor(p + "shared_expert_gate.weight")) {
      const double g = 1.0 / (1.0 + std::exp(-(mat(p + "shared_expert_gate.weight") * x)(0)));
      out += g * mlp(p + "shared_expert.", "gate_proj", "up_proj", "down_proj", x);
    }
    if (tensor(p + "shared_experts.gate_proj.weight"))
      out += mlp(p + "shared_experts.", "gate_proj", "up_proj", "down_proj", x);
    return out;
  }

  RefOutput forward(const std::vector<std::int64_t>& ids) const {
    const std::int64_t S = static_cast<std::int64_t>(ids.size());
    RefOutput out;
    const Mat emb = mat("model.embed_tokens.weight");
    std::vector<Vec> h(S);
    for (std::int64_t s = 0; s < S; ++s) h[s] = emb.row(ids[s]).transpose();
    auto record = [&]() {
      Mat m(S, H_);
      for (std::int64_t s = 0; s < S; ++s) m.row(s) = h[s].transpose();
      out.hidden.push_back(m);
    };
    record();
    for (std::int64_t l = 0; l < L_; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      std::vector<Vec> xs(S);
      for (std::int64_t s = 0; s < S; ++s) xs[s] = rms(h[s], vec(p + "input_layernorm.weight"), eps_);
      const auto att = attention(l, xs);
      if (is_moe(l)) out.routing.emplace_back(S);
      for (std::int64_t s = 0; s < S; ++s) {
        h[s] += att[s];
        const Vec y = rms(h[s], vec(p + "post_attention_layernorm.weight"), eps_);
        h[s] += is_moe(l) ? moe(l, y, &out.routing.back()[s]) : mlp(p + "mlp.", "gate_proj", "up_proj", "down_proj", y);
      }
      record();
    }
    const Mat head = getb("tie_word_embeddings", false) ? emb : mat("lm_head.weight");
    out.logits.resize(S, V_);
    for (std::int64_t s = 0; s < S; ++s)
      out.logits.row(s) = (head * rms(h[s], vec("model.norm.weight"), eps_)).transpose();
    return out;
  }

 private:
  nlohmann::json cfg_;
  std::unique_ptr<TensorSource> src_;
  std::string arch_;
  std::int64_t H_ = 0, V_ = 0, L_ = 0, nh_ = 0, kv_ = 0, hd_ = 0, nope_ = 0, rope_ = 0, vd_ = 0, r_ = 0, qr_ = 0;
  double eps_ = 0, theta_ = 0, scale_ = 1, rope_gain_ = 1;
  bool mla_ = false;
  std::vector<double> inv_;
};

}  // namespace moescope::testing::hfref
