#include "moescope/io/synthetic_model.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "moescope/io/hf_config.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"
#include "moescope/util/files.hpp"

namespace moescope {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;
namespace fs = std::filesystem;

std::string utf8(std::uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's byte-level alphabet: the printable bytes stand for themselves, the other 68 bytes for U+0100 onwards, in
// the order of GPT-2's bytes_to_unicode (printable ones first); token id i is the i-th of that list.
std::vector<std::string> byte_level_alphabet() {
  std::vector<int> bs;
  for (int b = 0x21; b <= 0x7E; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<std::uint32_t> cs(bs.begin(), bs.end());
  std::vector<bool> seen(256, false);
  for (int b : bs) seen[static_cast<std::size_t>(b)] = true;
  std::uint32_t n = 0;
  for (int b = 0; b < 256; ++b)
    if (!seen[static_cast<std::size_t>(b)]) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  std::vector<std::string> out;
  for (auto c : cs) out.push_back(utf8(c));
  return out;
}

// A few dozen frequent English merges; "_" stands for the word-start marker (GPT-2's "Ġ", SentencePiece's "▁").
const std::vector<std::pair<std::string, std::string>>& merge_table() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {"_", "t"},  {"_", "a"}, {"h", "e"},  {"i", "n"},  {"r", "e"},  {"o", "n"}, {"_t", "he"}, {"e", "r"},
      {"_", "s"},  {"a", "t"}, {"_", "w"},  {"_", "o"},  {"e", "n"},  {"_", "c"}, {"i", "t"},   {"i", "s"},
      {"a", "n"},  {"o", "r"}, {"e", "s"},  {"_", "b"},  {"e", "d"},  {"_", "f"}, {"in", "g"},  {"_", "p"},
      {"o", "u"},  {"_a", "n"}, {"a", "l"}, {"a", "r"},  {"_t", "o"}, {"_", "m"}, {"_o", "f"},  {"_", "in"},
      {"_", "d"},  {"_", "h"}, {"_an", "d"}};
  return m;
}

std::string marked(const std::string& s, const std::string& marker) {
  std::string out;
  for (char c : s) out += c == '_' ? marker : std::string(1, c);
  return out;
}

ordered_json added_token(std::int64_t id, const std::string& content) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", true}};
}

ordered_json byte_level(bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", trim_offsets}, {"use_regex", use_regex}};
}

ordered_json split(const std::string& regex) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}

ordered_json bos_template(const std::string& bos, std::int64_t bos_id) {
  auto special = [&](int type_id) { return ordered_json{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
  auto seq = [](const char* id, int type_id) { return ordered_json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  return {{"type", "TemplateProcessing"},
          {"single", {special(0), seq("A", 0)}},
          {"pair", {special(0), seq("A", 0), special(1), seq("B", 1)}},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
}

// Special tokens of each family (after the BPE vocabulary; Mixtral's come first, as in Llama's vocabulary).
std::vector<std::string> special_tokens(const std::string& family) {
  if (family == "mixtral") return {"<unk>", "<s>", "</s>"};
  if (family == "qwen2-moe" || family == "qwen3-moe") return {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  if (family == "olmoe") return {"<|endoftext|>", "<|padding|>"};
  return {u8"<｜begin▁of▁sentence｜>", u8"<｜end▁of▁sentence｜>"};  // DeepSeek
}

std::int64_t special_id(const ordered_json& tok, const std::string& content) {
  for (const auto& t : tok["added_tokens"])
    if (t["content"] == content) return t["id"].get<std::int64_t>();
  return -1;
}

void check_family(const std::string& f) {
  for (const auto& k : synthetic_model_families())
    if (k == f) return;
  std::string known;
  for (const auto& k : synthetic_model_families()) known += (known.empty() ? "" : ", ") + k;
  throw InputError("synthetic model: unknown family '" + f + "' (known: " + known + ")");
}

const char* torch_dtype_name(DType t) {
  return t == DType::F64 ? "float64" : t == DType::BF16 ? "bfloat16" : "float32";
}

// Tensor values: norm weights around 1, biases small, matrices with std 1/sqrt(fan_in) (embeddings: 1).
void fill_values(const std::string& name, const std::vector<std::int64_t>& shape, std::uint64_t seed, float* out) {
  Rng rng(seed * 0x9e3779b97f4a7c15ULL ^ fnv1a64(name));
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  double mean = 0.0, sd = 1.0;
  if (ends("norm.weight")) {
    mean = 1.0, sd = 0.1;
  } else if (ends(".bias")) {
    sd = 0.1;
  } else if (ends("e_score_correction_bias")) {
    sd = 0.05;
  } else if (name != "model.embed_tokens.weight" && shape.size() == 2) {
    sd = 1.0 / std::sqrt(static_cast<double>(shape[1]));
  }
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(mean + sd * rng.gaussian());
}

}  // namespace

std::vector<std::string> synthetic_model_families() {
  return {"mixtral", "qwen2-moe", "qwen3-moe", "olmoe", "deepseek-moe", "deepseek-v2", "deepseek-v3"};
}

ordered_json synthetic_tokenizer(const std::string& family) {
  check_family(family);
  const bool spm = family == "mixtral";  // SentencePiece-style BPE with byte fallback
  const std::string marker = spm ? u8"▁" : u8"Ġ";
  ordered_json vocab = ordered_json::object();
  ordered_json added = ordered_json::array();
  std::int64_t next = 0;
  const auto specials = special_tokens(family);
  if (spm) {
    for (const auto& s : specials) {
      added.push_back(added_token(next, s));
      vocab[s] = next++;
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      vocab[name] = next++;
    }
    vocab[marker] = next++;
    for (int c = 0x21; c <= 0x7E; ++c) vocab[std::string(1, static_cast<char>(c))] = next++;
  } else {
    for (const auto& s : byte_level_alphabet()) vocab[s] = next++;
  }
  ordered_json merges = ordered_json::array();
  for (const auto& [a, b] : merge_table()) {
    const std::string l = marked(a, marker), r = marked(b, marker);
    merges.push_back(l + " " + r);
    vocab[l + r] = next++;
  }
  if (!spm)
    for (const auto& s : specials) {
      added.push_back(added_token(next, s));
      vocab[s] = next++;
    }

  ordered_json model = {{"type", "BPE"}, {"dropout", nullptr}};
  ordered_json t = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}};
  if (spm) {
    // Llama / Mistral: "▁" marks spaces (prepended to the text), unknown characters fall back to byte tokens.
    t["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Prepend"}, {"prepend", marker}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", marker}}}}};
    t["pre_tokenizer"] = nullptr;
    t["post_processor"] = bos_template("<s>", 1);
    t["decoder"] = {{"type", "Sequence"},
                    {"decoders",
                     {{{"type", "Replace"}, {"pattern", {{"String", marker}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
    model.update(ordered_json{{"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
                              {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true}});
  } else if (family == "qwen2-moe" || family == "qwen3-moe") {
    t["normalizer"] = {{"type", "NFC"}};
    t["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {split(R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"),
          byte_level(false, false)}}};
    t["post_processor"] = byte_level(false, false);
    t["decoder"] = byte_level(false, false);
  } else if (family == "olmoe") {
    // GPT-NeoX's tokenizer (OLMo's Dolma variant): NFC, then GPT-2's byte-level regex split.
    t["normalizer"] = {{"type", "NFC"}};
    t["pre_tokenizer"] = byte_level(true, true);
    t["post_processor"] = byte_level(true, true);
    t["decoder"] = byte_level(true, true);
  } else if (family == "deepseek-v3") {
    t["normalizer"] = {{"type", "Sequence"}, {"normalizers", ordered_json::array()}};
    t["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {split(R"(\p{N}{1,3})"), split(u8"[一-龥\u3040-ゟ゠-ヿ]+"),
          split(u8R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"),
          byte_level(false, false)}}};
    t["post_processor"] = bos_template(specials[0], next - 2);
    t["decoder"] = byte_level(true, true);
  } else {  // DeepSeek LLM (DeepSeek-MoE, V2): the splits llama.cpp calls deepseek-llm
    t["normalizer"] = {{"type", "Sequence"}, {"normalizers", ordered_json::array()}};
    t["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {split("[\r\n]"),
          split(u8R"(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)"),
          split(u8R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)"), split(R"(\s+$)"), split(u8"[一-龥ࠀ-一가-퟿]+"),
          split(R"(\p{N}+)"), byte_level(true, false)}}};
    t["post_processor"] = bos_template(specials[0], next - 2);
    t["decoder"] = byte_level(true, true);
  }
  if (!spm)
    model.update(ordered_json{{"unk_token", nullptr}, {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
                              {"fuse_unk", false}, {"byte_fallback", false}});
  model["vocab"] = vocab;
  model["merges"] = merges;
  t["model"] = model;
  return t;
}

json synthetic_model_config(const SyntheticModelOptions& o) {
  check_family(o.family);
  const ordered_json tok = synthetic_tokenizer(o.family);
  const std::int64_t V = static_cast<std::int64_t>(tok["model"]["vocab"].size());
  const auto sp = special_tokens(o.family);
  const std::string& f = o.family;
  json c;
  if (f == "mixtral") {
    c = {{"architectures", {"MixtralForCausalLM"}}, {"model_type", "mixtral"}, {"hidden_size", 32},
         {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
         {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5}, {"rope_theta", 1e6}, {"sliding_window", nullptr},
         {"num_local_experts", 4}, {"num_experts_per_tok", 2}, {"router_aux_loss_coef", 0.02},
         {"router_jitter_noise", 0.0}, {"bos_token_id", special_id(tok, sp[1])},
         {"eos_token_id", special_id(tok, sp[2])}};
  } else if (f == "qwen2-moe") {
    c = {{"architectures", {"Qwen2MoeForCausalLM"}}, {"model_type", "qwen2_moe"}, {"hidden_size", 32},
         {"intermediate_size", 64}, {"moe_intermediate_size", 16}, {"shared_expert_intermediate_size", 48},
         {"num_hidden_layers", 3}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
         {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1e6}, {"use_sliding_window", false},
         {"sliding_window", 128}, {"max_window_layers", 3}, {"decoder_sparse_step", 1}, {"mlp_only_layers", {1}},
         {"num_experts", 6}, {"num_experts_per_tok", 2}, {"norm_topk_prob", false}, {"router_aux_loss_coef", 0.001},
         {"bos_token_id", special_id(tok, sp[0])}, {"eos_token_id", special_id(tok, sp[0])}};
  } else if (f == "qwen3-moe") {
    c = {{"architectures", {"Qwen3MoeForCausalLM"}}, {"model_type", "qwen3_moe"}, {"hidden_size", 32},
         {"intermediate_size", 64}, {"moe_intermediate_size", 16}, {"num_hidden_layers", 2},
         {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 16}, {"attention_bias", false},
         {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1e6}, {"rope_scaling", nullptr},
         {"use_sliding_window", false}, {"sliding_window", nullptr}, {"max_window_layers", 2},
         {"decoder_sparse_step", 1}, {"mlp_only_layers", json::array()}, {"num_experts", 8},
         {"num_experts_per_tok", 2}, {"norm_topk_prob", true}, {"router_aux_loss_coef", 0.001},
         {"bos_token_id", special_id(tok, sp[0])}, {"eos_token_id", special_id(tok, sp[2])}};
  } else if (f == "olmoe") {
    c = {{"architectures", {"OlmoeForCausalLM"}}, {"model_type", "olmoe"}, {"hidden_size", 32},
         {"intermediate_size", 16}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
         {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"rope_scaling", nullptr},
         {"attention_bias", false}, {"clip_qkv", nullptr}, {"num_experts", 8}, {"num_experts_per_tok", 2},
         {"norm_topk_prob", false}, {"router_aux_loss_coef", 0.01}, {"bos_token_id", nullptr},
         {"pad_token_id", special_id(tok, sp[1])}, {"eos_token_id", special_id(tok, sp[0])}};
  } else if (f == "deepseek-moe") {
    c = {{"architectures", {"DeepseekForCausalLM"}}, {"model_type", "deepseek"}, {"hidden_size", 32},
         {"intermediate_size", 64}, {"moe_intermediate_size", 16}, {"num_hidden_layers", 3},
         {"num_attention_heads", 4}, {"num_key_value_heads", 4}, {"max_position_embeddings", 128},
         {"rms_norm_eps", 1e-6}, {"rope_theta", 10000}, {"rope_scaling", nullptr}, {"attention_bias", false},
         {"first_k_dense_replace", 1}, {"moe_layer_freq", 1}, {"n_routed_experts", 6}, {"n_shared_experts", 2},
         {"num_experts_per_tok", 2}, {"norm_topk_prob", false}, {"scoring_func", "softmax"},
         {"aux_loss_alpha", 0.001}, {"seq_aux", true}, {"bos_token_id", special_id(tok, sp[0])},
         {"eos_token_id", special_id(tok, sp[1])}};
  } else {
    const bool v3 = f == "deepseek-v3";
    c = {{"architectures", {v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"}},
         {"model_type", v3 ? "deepseek_v3" : "deepseek_v2"}, {"hidden_size", 32}, {"intermediate_size", 64},
         {"moe_intermediate_size", 16}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
         {"num_key_value_heads", 4}, {"kv_lora_rank", 16}, {"q_lora_rank", v3 ? json(24) : json(nullptr)},
         {"qk_rope_head_dim", 16}, {"qk_nope_head_dim", 8}, {"v_head_dim", 12}, {"max_position_embeddings", 256},
         {"rms_norm_eps", 1e-6}, {"rope_theta", 10000}, {"attention_bias", false}, {"first_k_dense_replace", 1},
         {"moe_layer_freq", 1}, {"n_routed_experts", 8}, {"n_shared_experts", v3 ? 1 : 2}, {"num_experts_per_tok", 2},
         {"n_group", v3 ? 4 : 1}, {"topk_group", v3 ? 2 : 1}, {"topk_method", v3 ? "noaux_tc" : "greedy"},
         {"scoring_func", v3 ? "sigmoid" : "softmax"}, {"norm_topk_prob", v3}, {"routed_scaling_factor", v3 ? 2.5 : 1.0},
         {"aux_loss_alpha", 0.001}, {"seq_aux", true},
         {"rope_scaling",
          {{"type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 64}, {"beta_fast", 32},
           {"beta_slow", 1}, {"mscale", v3 ? 1.0 : 0.707}, {"mscale_all_dim", v3 ? 1.0 : 0.707}}},
         {"bos_token_id", special_id(tok, sp[0])}, {"eos_token_id", special_id(tok, sp[1])}};
    if (v3) c["num_nextn_predict_layers"] = 0;
  }
  c["vocab_size"] = V;
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = false;
  c["initializer_range"] = 0.02;
  c["use_cache"] = true;
  c["torch_dtype"] = torch_dtype_name(o.dtype);
  const bool routed_width_is_intermediate = f == "mixtral" || f == "olmoe";
  if (o.layers > 0) c["num_hidden_layers"] = o.layers;
  if (o.hidden > 0) c["hidden_size"] = o.hidden;
  if (o.experts > 0)
    c[f == "mixtral" ? "num_local_experts" : f.rfind("deepseek", 0) == 0 ? "n_routed_experts" : "num_experts"] = o.experts;
  if (o.intermediate > 0) c[routed_width_is_intermediate ? "intermediate_size" : "moe_intermediate_size"] = o.intermediate;
  c.merge_patch(o.config_overrides);
  return c;
}

void write_synthetic_model(const std::string& dir, const SyntheticModelOptions& o) {
  check_family(o.family);
  if (o.dtype != DType::F32 && o.dtype != DType::BF16 && o.dtype != DType::F64)
    throw InputError("synthetic model: dtype must be F32, BF16 or F64");
  if (o.shards < 1) throw InputError("synthetic model: shards must be >= 1");
  if (!o.config_overrides.is_object()) throw InputError("synthetic model: config overrides must be a JSON object");
  const json cfg_json = synthetic_model_config(o);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail_input(dir, "cannot create folder: " + ec.message());
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const HFConfig cfg = parse_hf_config(cfg_json, cfg_path);  // the loader's view decides the tensors
  write_file_atomic(cfg_path, cfg_json.dump(2) + "\n");

  const ordered_json tok = synthetic_tokenizer(o.family);
  write_file_atomic((fs::path(dir) / "tokenizer.json").string(), tok.dump(2) + "\n");
  const auto sp = special_tokens(o.family);
  const bool spm = o.family == "mixtral", deepseek = o.family.rfind("deepseek", 0) == 0;
  ordered_json tc = {{"add_bos_token", spm || deepseek}, {"add_eos_token", false},
                     {"model_max_length", cfg.max_position_embeddings},
                     {"clean_up_tokenization_spaces", false}};
  if (spm) {
    tc.update(ordered_json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"legacy", true},
                           {"tokenizer_class", "LlamaTokenizer"}});
  } else if (o.family == "olmoe") {
    tc.update(ordered_json{{"bos_token", nullptr}, {"eos_token", sp[0]}, {"pad_token", sp[1]},
                           {"tokenizer_class", "GPTNeoXTokenizer"}});
  } else if (deepseek) {
    tc.update(ordered_json{{"bos_token", sp[0]}, {"eos_token", sp[1]}, {"tokenizer_class", "LlamaTokenizerFast"}});
  } else {
    tc.update(ordered_json{{"bos_token", nullptr}, {"eos_token", o.family == "qwen3-moe" ? sp[2] : sp[0]},
                           {"pad_token", sp[0]}, {"tokenizer_class", "Qwen2Tokenizer"}});
  }
  write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), tc.dump(2) + "\n");

  // Weights, in model order; tensor i goes to shard floor(bytes before i * shards / total).
  std::vector<TensorInfo> infos;
  for (const auto& s : hf_tensor_specs(cfg)) {
    infos.push_back({s.name, hf_float32_tensor(s.name) && o.dtype != DType::F64 ? DType::F32 : o.dtype, s.shape});
  }
  auto fill = [&](const TensorInfo& t, std::uint8_t* dst) {
    std::vector<float> buf(static_cast<std::size_t>(t.numel()));
    fill_values(t.name, t.shape, o.seed, buf.data());
    if (t.dtype == DType::F64) {  // float64 values are the float32 draws widened (exact)
      for (std::size_t i = 0; i < buf.size(); ++i) {
        const double v = buf[i];
        std::memcpy(dst + 8 * i, &v, 8);
      }
    } else {
      convert_from_f32(t.dtype, buf.data(), buf.size(), dst);
    }
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"generator", "moescope synthetic model"}};
  auto write_part = [&](const std::string& file, std::size_t a, std::size_t b) {
    const std::vector<TensorInfo> part(infos.begin() + static_cast<std::ptrdiff_t>(a),
                                       infos.begin() + static_cast<std::ptrdiff_t>(b));
    write_safetensors_streamed(file, part, [&](std::size_t i, std::uint8_t* dst) { fill(part[i], dst); }, meta);
  };
  if (o.shards == 1) {
    write_part((fs::path(dir) / "model.safetensors").string(), 0, infos.size());
    return;
  }
  std::uint64_t total = 0;
  for (const auto& t : infos) total += t.nbytes();
  std::vector<std::size_t> shard_of(infos.size());
  std::uint64_t before = 0;
  for (std::size_t i = 0; i < infos.size(); ++i) {
    shard_of[i] = static_cast<std::size_t>(std::min<std::uint64_t>(static_cast<std::uint64_t>(o.shards - 1),
                                                                    total ? before * o.shards / total : 0));
    before += infos[i].nbytes();
  }
  json weight_map = json::object();
  std::size_t a = 0;
  for (int s = 0; s < o.shards; ++s) {
    std::size_t b = a;
    while (b < infos.size() && shard_of[b] == static_cast<std::size_t>(s)) ++b;
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, o.shards);
    write_part((fs::path(dir) / name).string(), a, b);
    for (std::size_t i = a; i < b; ++i) weight_map[infos[i].name] = name;
    a = b;
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

}  // namespace moescope
