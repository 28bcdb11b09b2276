// Token data for language models with their own tokenizer: text encoded by a tokenizer.json, or an id file.
#include "moescope/data/token_dataset_torch.hpp"

#include <algorithm>

#include "moescope/data/split.hpp"
#include "moescope/data/text.hpp"
#include "moescope/data/token_ids.hpp"
#include "moescope/data/tokenizer.hpp"
#include "moescope/util/error.hpp"

namespace moescope {

std::vector<std::int32_t> read_token_data(const DataSpec& spec, const TokenDataContext& ctx) {
  if (spec.name != "text" && spec.name != "tokens")
    throw std::invalid_argument("read_token_data: data '" + spec.name + "' is not text or tokens");
  if (spec.path.empty())
    throw InputError("data config: " + spec.name + " needs a path (" +
                     (spec.name == "text" ? std::string("text:PATH") : std::string("tokens:FILE, or --tokens FILE")) + ")");
  std::vector<std::int32_t> ids;
  std::string where = spec.path;
  if (spec.name == "text") {
    if (ctx.tokenizer.empty())
      throw InputError("data " + spec.name + ":" + spec.path +
                       ": text is tokenised by a model's tokenizer.json, and this model has none (give token ids with "
                       "--tokens FILE)");
    const Tokenizer tok = Tokenizer::from_file(ctx.tokenizer);
    const std::string text = read_text(spec.path);
    if (text.empty()) fail_input(spec.path, "holds no text");
    ids = tok.encode(text, /*add_special=*/true);
    where = spec.path + " (tokenised by " + ctx.tokenizer + ")";
  } else {
    ids = read_token_ids(spec.path, 0);  // range-checked below, naming the model's vocab_size
  }
  if (ctx.vocab_size > 0)
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= ctx.vocab_size)
        fail_input(where, "id " + std::to_string(ids[i]) + " at position " + std::to_string(i) + " is outside [0, " +
                              std::to_string(ctx.vocab_size) + "): vocab_size" +
                              (ctx.vocab_source.empty() ? std::string() : " of " + ctx.vocab_source));
  return ids;
}

TensorSplit token_windows(const std::vector<std::int32_t>& ids, std::int64_t context, std::int64_t max_windows) {
  if (context < 1) throw std::invalid_argument("token_windows: context must be >= 1, got " + std::to_string(context));
  const auto total = static_cast<std::int64_t>(ids.size());
  std::int64_t n = total > 0 ? (total - 1) / context : 0;
  if (max_windows > 0) n = std::min(n, max_windows);
  TensorSplit s;
  if (n == 0) {
    s.inputs = torch::empty({0, context}, torch::kInt64);
    s.targets = torch::empty({0, context}, torch::kInt64);
    return s;
  }
  const auto all =
      torch::from_blob(const_cast<std::int32_t*>(ids.data()), {n * context + 1}, torch::kInt32).to(torch::kInt64);
  s.inputs = all.narrow(0, 0, n * context).view({n, context}).clone();
  s.targets = all.narrow(0, 1, n * context).view({n, context}).clone();
  return s;
}

Dataset load_token_dataset(const DataSpec& spec, const TokenDataContext& ctx) {
  if (spec.context < 1) throw InputError("data config: field 'context' must be >= 1, got " + std::to_string(spec.context));
  const std::vector<std::int32_t> ids = read_token_data(spec, ctx);
  const ContiguousSplit cut = split_contiguous(static_cast<std::int64_t>(ids.size()), SplitFractions{});
  auto part = [&](std::int64_t begin, std::int64_t end) {
    return std::vector<std::int32_t>(ids.begin() + begin, ids.begin() + end);
  };
  Dataset d;
  d.spec = spec;
  d.is_text = true;
  d.input_shape = {spec.context};
  std::int64_t largest = -1;
  for (auto id : ids) largest = std::max<std::int64_t>(largest, id);
  d.num_classes = ctx.vocab_size > 0 ? ctx.vocab_size : largest + 1;
  d.train = token_windows(part(0, cut.train_end), spec.context, spec.max_train);
  d.valid = token_windows(part(cut.train_end, cut.valid_end), spec.context, spec.max_eval);
  d.test = token_windows(part(cut.valid_end, cut.n), spec.context, spec.max_eval);
  if (d.train.size() == 0)
    fail_input(spec.path, std::to_string(ids.size()) + " token ids are too few for one training sequence of " +
                              std::to_string(spec.context) + " tokens (the first 90% go to train; lower --context)");
  return d;
}

}  // namespace moescope
