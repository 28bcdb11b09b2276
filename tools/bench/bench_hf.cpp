// Benchmark (not a test): the forward pass of a Hugging Face MoE model of a few hundred million parameters, in
// float32 and bfloat16. A Mixtral-shaped folder is written with write_synthetic_model (default: hidden 1024, 8 layers,
// 8 experts of width 2816, top-2, 16 heads with 4 key/value heads, vocabulary 32000: 0.64 G parameters); then, each in
// a fresh process (so its peak RSS is its own), with the same threads and the same random token ids:
//  - moescope: load_hf_model (weights mapped from the file) and HFCausalLM::forward;
//  - plain LibTorch: the same forward written here with plain ops (matmul with transposed weights, the attention
//    softmax, the expert loop), no module code and no fused kernels, on the same mapped weights: the ratio says
//    what moescope's module structure costs or saves;
//  - PyTorch eager (Debian's python3-torch, when present): tools/hf_eager_reference.py --time, transformers'
//    eager computation in plain PyTorch, in the environment moescope runs in (OMP_WAIT_POLICY=PASSIVE, OpenBLAS
//    kernels: util/runtime.hpp): the number a PyTorch user compares with.
// Prints tokens/s (best of --repeat passes after one warm-up), the ratios, the largest logit difference between
// moescope and the plain forward, and each process's peak RSS against the weights' bytes.
//
// Usage: bench_hf [--dir D] [--hidden 1024] [--layers 8] [--experts 8] [--intermediate 2816] [--vocab 32000]
//                 [--heads 16] [--kv-heads 4] [--batch 1] [--seq 128] [--repeat 3] [--threads N]
//                 [--dtypes f32,bf16] [--no-eager] [--keep]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "moescope/io/synthetic_model.hpp"
#include "moescope/model/hf.hpp"
#include "moescope/util/runtime.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace moescope {
namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The Mixtral forward with plain LibTorch ops on the model's own (mapped) weights: what a user would write by hand.
torch::Tensor plain_forward(const HFCausalLMImpl& model, const torch::Tensor& ids) {
  const HFConfig& c = model.config();
  std::map<std::string, torch::Tensor> W;
  for (const auto& p : model.named_parameters()) W[p.key()] = p.value();
  const auto dt = W.at("model.embed_tokens.weight").scalar_type();
  const std::int64_t B = ids.size(0), S = ids.size(1), H = c.hidden_size, nh = c.num_attention_heads,
                     kv = c.num_key_value_heads, hd = c.head_dim, E = c.num_experts, k = c.num_experts_per_tok;
  auto rms = [&](const torch::Tensor& x, const torch::Tensor& w) {
    auto h = x.to(torch::kFloat);
    h = h * torch::rsqrt(h.pow(2).mean(-1, true) + c.rms_norm_eps);
    return w * h.to(dt);
  };
  auto lin = [](const torch::Tensor& x, const torch::Tensor& w) { return torch::matmul(x, w.t()); };
  const auto inv = 1.0 / torch::pow(c.rope_theta, torch::arange(0, hd, 2, torch::kInt64).to(torch::kFloat) / hd);
  const auto f = torch::outer(torch::arange(S, torch::kInt64).to(torch::kFloat), inv);
  const auto emb = torch::cat({f, f}, -1);
  const auto cos = emb.cos().to(dt), sin = emb.sin().to(dt);
  auto rotate = [&](const torch::Tensor& x) {
    const auto x1 = x.narrow(-1, 0, hd / 2), x2 = x.narrow(-1, hd / 2, hd / 2);
    return x * cos + torch::cat({-x2, x1}, -1) * sin;
  };
  const auto mask = torch::full({S, S}, -std::numeric_limits<float>::infinity()).triu(1).to(dt);
  auto h = W.at("model.embed_tokens.weight").index_select(0, ids.reshape(-1)).view({B, S, H});
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto x = rms(h, W.at(p + "input_layernorm.weight"));
    auto q = lin(x, W.at(p + "self_attn.q_proj.weight")).view({B, S, nh, hd}).transpose(1, 2);
    auto kk = lin(x, W.at(p + "self_attn.k_proj.weight")).view({B, S, kv, hd}).transpose(1, 2);
    auto v = lin(x, W.at(p + "self_attn.v_proj.weight")).view({B, S, kv, hd}).transpose(1, 2);
    q = rotate(q);
    kk = rotate(kk).repeat_interleave(nh / kv, 1);
    v = v.repeat_interleave(nh / kv, 1);
    auto scores = torch::matmul(q, kk.transpose(2, 3)) / std::sqrt(static_cast<double>(hd)) + mask;
    auto att = torch::matmul(torch::softmax(scores.to(torch::kFloat), -1).to(dt), v);
    h = h + lin(att.transpose(1, 2).reshape({B, S, nh * hd}), W.at(p + "self_attn.o_proj.weight"));

    const std::string m = p + "block_sparse_moe.";
    x = rms(h, W.at(p + "post_attention_layernorm.weight")).reshape({B * S, H});
    const auto probs = torch::softmax(lin(x, W.at(m + "gate.weight")).to(torch::kFloat), -1);
    auto top = torch::topk(probs, k, -1);
    auto w = std::get<0>(top);
    w = (w / w.sum(-1, true)).to(dt);
    const auto sel = std::get<1>(top);
    auto out = torch::zeros_like(x);
    for (std::int64_t e = 0; e < E; ++e) {
      const auto hit = (sel == e).nonzero();
      if (hit.size(0) == 0) continue;
      const auto tok = hit.select(1, 0), slot = hit.select(1, 1);
      const std::string ex = m + "experts." + std::to_string(e) + ".";
      const auto xe = x.index_select(0, tok);
      const auto y = lin(torch::silu(lin(xe, W.at(ex + "w1.weight"))) * lin(xe, W.at(ex + "w3.weight")),
                         W.at(ex + "w2.weight"));
      out.index_add_(0, tok, y * w.index({tok, slot}).unsqueeze(-1));
    }
    h = h + out.view({B, S, H});
  }
  return lin(rms(h, W.at("model.norm.weight")), W.at("lm_head.weight"));
}

torch::Tensor bench_ids(std::int64_t batch, std::int64_t seq, std::int64_t vocab) {
  torch::manual_seed(0);
  return torch::randint(0, vocab, {batch, seq}, torch::kLong);
}

// One measurement in this (fresh) process: prints a JSON line.
int child(const std::string& dir, const std::string& what, std::int64_t batch, std::int64_t seq, int repeat,
          int threads) {
  at::set_num_threads(threads);
  torch::NoGradGuard no_grad;
  const auto t0 = Clock::now();
  HFCausalLM m = load_hf_model(dir);
  const double load = seconds_since(t0);
  const auto ids = bench_ids(batch, seq, m->config().vocab_size);
  auto run = [&] { return what == "plain" ? plain_forward(*m, ids) : m->forward(ids); };
  const auto first = run();  // warm-up: pages of the weights come in here
  std::vector<double> secs;
  for (int r = 0; r < repeat; ++r) {
    const auto t = Clock::now();
    run();
    secs.push_back(seconds_since(t));
  }
  nlohmann::json j{{"what", what}, {"load_seconds", load}, {"seconds", secs}, {"tokens", batch * seq},
                   {"tokens_per_s", static_cast<double>(batch * seq) / *std::min_element(secs.begin(), secs.end())},
                   {"dtype", std::string(c10::toString(m->dtype()))}, {"threads", at::get_num_threads()}};
  if (what == "plain") {  // the plain forward computes what moescope's does
    const auto a = m->forward(ids).to(torch::kFloat), b = first.to(torch::kFloat);
    j["max_logit_difference"] = (a - b).abs().max().item<double>() / b.abs().max().item<double>();
  }
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

struct Measured {
  nlohmann::json result;
  long max_rss_kb = 0;
  bool ok = false;
};

// Runs argv with `env` added, capturing stdout's last line as JSON, and the child's peak RSS.
Measured measure(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    close(pipefd[0]);
    close(pipefd[1]);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  close(pipefd[0]);
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  Measured r;
  r.max_rss_kb = ru.ru_maxrss;
  const auto last = out.find_last_of('{');
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && last != std::string::npos) {
    r.result = nlohmann::json::parse(out.substr(last), nullptr, false);
    r.ok = r.result.is_object();
  }
  if (!r.ok) std::fprintf(stderr, "failed: %s (status %d): %s\n", args[0].c_str(), status, out.c_str());
  return r;
}

std::uint64_t folder_bytes(const std::string& dir) {
  std::uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") n += fs::file_size(e.path());
  return n;
}

}  // namespace
}  // namespace moescope

int main(int argc, char** argv) {
  using namespace moescope;
  // The torch environment (util/runtime.hpp) for this process and, inherited, for every variant it starts: the
  // eager reference gets the same OpenMP policy and OpenBLAS kernels as moescope.
  reexec_with_torch_environment(argv);
  std::string dir, dtypes = "f32,bf16";
  std::int64_t hidden = 1024, layers = 8, experts = 8, intermediate = 2816, vocab = 32000, heads = 16, kv_heads = 4,
               batch = 1, seq = 128;
  int repeat = 3, threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool eager = true, keep = false;
  if (argc > 1 && std::string(argv[1]) == "--child") {
    if (argc != 8) return 2;
    return child(argv[2], argv[3], std::atoll(argv[4]), std::atoll(argv[5]), std::atoi(argv[6]), std::atoi(argv[7]));
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string("0"); };
    if (a == "--dir") dir = next();
    else if (a == "--hidden") hidden = std::stoll(next());
    else if (a == "--layers") layers = std::stoll(next());
    else if (a == "--experts") experts = std::stoll(next());
    else if (a == "--intermediate") intermediate = std::stoll(next());
    else if (a == "--vocab") vocab = std::stoll(next());
    else if (a == "--heads") heads = std::stoll(next());
    else if (a == "--kv-heads") kv_heads = std::stoll(next());
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--seq") seq = std::stoll(next());
    else if (a == "--repeat") repeat = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--dtypes") dtypes = next();
    else if (a == "--no-eager") eager = false;
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "usage: bench_hf [--dir D] [--hidden N] [--layers N] [--experts N] [--intermediate N] "
                           "[--vocab N] [--heads N] [--kv-heads N] [--batch B] [--seq S] [--repeat R] [--threads N] "
                           "[--dtypes f32,bf16] [--no-eager] [--keep]\n");
      return 2;
    }
  }
  const bool own_dir = dir.empty();
  if (own_dir) dir = (fs::temp_directory_path() / ("bench_hf_" + std::to_string(getpid()))).string();
  fs::create_directories(dir);
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const fs::path script = fs::path(self).parent_path().parent_path() / "tools" / "hf_eager_reference.py";
  const bool have_eager = eager && fs::exists(script) && fs::exists("/usr/bin/python3") &&
                          std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0;
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {  // a shared machine's figures need their context
    char line[128];
    if (std::fgets(line, sizeof line, f)) std::printf("load average: %s", line);
    std::fclose(f);
  }
  std::printf("model: Mixtral-shaped, hidden %lld, %lld layers, %lld experts of %lld (top-2), %lld heads / %lld kv, "
              "vocab %lld; batch %lld x %lld tokens; %d threads; best of %d passes after a warm-up\n",
              (long long)hidden, (long long)layers, (long long)experts, (long long)intermediate, (long long)heads,
              (long long)kv_heads, (long long)vocab, (long long)batch, (long long)seq, threads, repeat);

  std::stringstream ss(dtypes);
  for (std::string name; std::getline(ss, name, ',');) {
    const DType dt = name == "bf16" ? DType::BF16 : name == "f64" ? DType::F64 : DType::F32;
    const std::string folder = dir + "/" + name;
    if (!fs::exists(folder + "/config.json")) {
      SyntheticModelOptions o;
      o.family = "mixtral";
      o.dtype = dt;
      o.layers = static_cast<int>(layers);
      o.experts = static_cast<int>(experts);
      o.hidden = hidden;
      o.intermediate = intermediate;
      o.config_overrides = {{"vocab_size", vocab},
                            {"num_attention_heads", heads},
                            {"num_key_value_heads", kv_heads},
                            {"max_position_embeddings", std::max<std::int64_t>(4096, seq)}};
      const auto t0 = Clock::now();
      write_synthetic_model(folder, o);
      std::printf("%s: wrote %s in %.1f s\n", name.c_str(), folder.c_str(), seconds_since(t0));
    }
    const double weights_mb = static_cast<double>(folder_bytes(folder)) / 1e6;
    double params = 0;
    for (const auto& spec : hf_tensor_specs(read_hf_config(folder))) {
      double n = 1;
      for (auto d : spec.shape) n *= static_cast<double>(d);
      params += n;
    }
    const std::string b = std::to_string(batch), s = std::to_string(seq), r = std::to_string(repeat),
                      t = std::to_string(threads);
    const Measured ours = measure({self, "--child", folder, "moescope", b, s, r, t});
    const Measured plain = measure({self, "--child", folder, "plain", b, s, r, t});
    Measured py;
    if (have_eager)
      py = measure({"/usr/bin/python3", script.string(), "--time", folder, "--threads", t, "--batch", b, "--seq", s,
                    "--repeat", r},
                   {"OMP_WAIT_POLICY=PASSIVE"});
    if (!ours.ok || !plain.ok) return 1;
    const double tps = ours.result["tokens_per_s"].get<double>();
    std::printf("\n%s (%.3g G parameters, weights %.0f MB):\n", name.c_str(), params / 1e9, weights_mb);
    std::printf("  moescope         %9.1f tokens/s  load %.2f s  peak RSS %.0f MB (%.2f x the weights)\n", tps,
                ours.result["load_seconds"].get<double>(), ours.max_rss_kb / 1e3, ours.max_rss_kb / 1e3 / weights_mb);
    const double ptps = plain.result["tokens_per_s"].get<double>();
    std::printf("  plain LibTorch   %9.1f tokens/s  peak RSS %.0f MB; moescope / plain = %.2f; largest logit "
                "difference %.2g of the largest logit\n",
                ptps, plain.max_rss_kb / 1e3, tps / ptps, plain.result["max_logit_difference"].get<double>());
    if (py.ok) {
      const double etps = py.result["tokens_per_s"].get<double>();
      std::printf("  PyTorch eager    %9.1f tokens/s  load %.2f s  peak RSS %.0f MB (%.2f x the weights); "
                  "moescope / eager = %.2f (threads %d)\n",
                  etps, py.result["load_seconds"].get<double>(), py.max_rss_kb / 1e3, py.max_rss_kb / 1e3 / weights_mb,
                  tps / etps, py.result["threads"].get<int>());
    } else if (eager) {
      std::printf("  PyTorch eager    not measured (/usr/bin/python3 with torch and numpy, or %s, missing)\n",
                  script.string().c_str());
    }
  }
  if (own_dir && !keep) fs::remove_all(dir);
  else std::printf("\nmodels kept in %s\n", dir.c_str());
  return 0;
}
