// DataSpec -> tensors: images, the clustered task and text windows.
#include "moescope/data/dataset_torch.hpp"

#include <algorithm>

#include "moescope/data/image.hpp"
#include "moescope/data/split.hpp"
#include "moescope/data/token_dataset_torch.hpp"
#include "moescope/util/error.hpp"

namespace moescope {

TensorSplit TensorSplit::slice(std::int64_t begin, std::int64_t end) const {
  TensorSplit out;
  out.inputs = inputs.slice(0, begin, end);
  out.targets = targets.slice(0, begin, end);
  if (groups.defined()) out.groups = groups.slice(0, begin, end);
  return out;
}

const TensorSplit& Dataset::split(const std::string& name, const std::string& what) const {
  check_split_name(name, what);
  if (name == "train") return train;
  if (name == "valid") return valid;
  return test;
}

ChannelStatistics channel_statistics(const torch::Tensor& images) {
  const auto channels = images.size(1);
  const auto x = images.to(torch::kFloat64).transpose(0, 1).reshape({channels, -1});
  const auto mean = x.mean(1);
  const auto sd = x.std(1, /*unbiased=*/false).clamp_min(1e-12);
  ChannelStatistics s;
  for (std::int64_t c = 0; c < channels; ++c) {
    s.mean.push_back(mean[c].item<double>());
    s.stddev.push_back(sd[c].item<double>());
  }
  return s;
}

namespace {

torch::Tensor int64_tensor(const std::vector<std::int64_t>& v) {
  return torch::tensor(torch::ArrayRef<std::int64_t>(v), torch::kInt64);
}

/// Pixels / 255 as float32 [N, C, H, W].
torch::Tensor image_tensor(const ImageSet& set) {
  auto bytes = torch::from_blob(const_cast<std::uint8_t*>(set.pixels.data()),
                                {set.n, set.channels, set.height, set.width}, torch::kUInt8);
  return bytes.to(torch::kFloat32).div_(255.0f);
}

TensorSplit image_split(const ImageSet& set) {
  TensorSplit s;
  s.inputs = image_tensor(set);
  s.targets = int64_tensor(set.labels);
  return s;
}

Dataset load_images(const DataSpec& spec) {
  const bool fashion = spec.name == "fashion-mnist";
  const std::string dir = spec.path.empty() ? (fashion ? std::string(kFashionMnistDir) : std::string()) : spec.path;
  if (dir.empty()) throw InputError("data config: cifar10 needs a path (the cifar-10-batches-bin folder)");
  ImageSet train_all = fashion ? read_fashion_mnist(dir, Split::train) : read_cifar10(dir, Split::train);
  ImageSet test = fashion ? read_fashion_mnist(dir, Split::test) : read_cifar10(dir, Split::test);
  const IndexSplit parts = split_indices(train_all.n, spec.valid_fraction, spec.seed);

  Dataset d;
  d.spec = spec;
  d.num_classes = train_all.classes;
  d.input_shape = {train_all.channels, train_all.height, train_all.width};
  d.train = image_split(subset(train_all, parts.train)).head(spec.max_train);
  d.valid = image_split(subset(train_all, parts.valid)).head(spec.max_eval);
  d.test = image_split(test).head(spec.max_eval);
  return d;
}

Dataset load_clustered(const DataSpec& spec) {
  ClusteredTaskOptions o = spec.clustered;
  o.seed = spec.seed;
  const std::int64_t n_train = o.samples;
  const std::int64_t n_test = std::max<std::int64_t>(1, n_train / 5);
  o.samples = n_train + n_test;  // the same seed extends the same sequence: test samples come after train
  const ClusteredTask task = make_clustered_task(o);
  auto x = torch::from_blob(const_cast<float*>(task.features.data()), {task.n, task.dim}, torch::kFloat32).clone();
  auto y = int64_tensor(task.labels);
  auto g = int64_tensor(task.cluster);
  TensorSplit all{x, y, g};
  const IndexSplit parts = split_indices(n_train, spec.valid_fraction, spec.seed);
  auto pick = [&](const std::vector<std::int64_t>& idx) {
    const auto i = int64_tensor(idx);
    return TensorSplit{x.index_select(0, i), y.index_select(0, i), g.index_select(0, i)};
  };
  Dataset d;
  d.spec = spec;
  d.num_classes = task.classes;
  d.input_shape = {task.dim};
  d.train = pick(parts.train).head(spec.max_train);
  d.valid = pick(parts.valid).head(spec.max_eval);
  d.test = all.slice(n_train, n_train + n_test).head(spec.max_eval);
  return d;
}

/// Non-overlapping windows of `context` tokens; targets are the next tokens.
TensorSplit windows(const std::vector<std::int32_t>& ids, std::int64_t context, std::int64_t max_n) {
  const std::int64_t total = static_cast<std::int64_t>(ids.size());
  std::int64_t n = total > 0 ? (total - 1) / context : 0;
  if (max_n > 0) n = std::min(n, max_n);
  TensorSplit s;
  auto all = torch::from_blob(const_cast<std::int32_t*>(ids.data()), {total}, torch::kInt32).to(torch::kInt64);
  s.inputs = n > 0 ? all.slice(0, 0, n * context).view({n, context}).clone() : torch::empty({0, context}, torch::kInt64);
  s.targets = n > 0 ? all.slice(0, 1, n * context + 1).view({n, context}).clone()
                    : torch::empty({0, context}, torch::kInt64);
  return s;
}

Dataset load_text(const DataSpec& spec) {
  if (spec.path.empty()) throw InputError("data config: " + spec.name + " needs a path");
  TextCorpus corpus;
  if (spec.name == "text-word") {
    corpus = read_word_corpus(spec.path);
  } else {
    const std::string text = read_text(spec.path);
    corpus = spec.name == "text-byte" ? byte_corpus(text) : char_corpus(text);
  }
  Dataset d;
  d.spec = spec;
  d.is_text = true;
  d.num_classes = corpus.vocab.size();
  d.input_shape = {spec.context};
  d.train = windows(corpus.train, spec.context, spec.max_train);
  d.valid = windows(corpus.valid, spec.context, spec.max_eval);
  d.test = windows(corpus.test, spec.context, spec.max_eval);
  if (d.train.size() == 0) fail_input(spec.path, "too little text for one training sequence of " +
                                                     std::to_string(spec.context) + " tokens");
  d.vocab = std::make_shared<Vocabulary>(std::move(corpus.vocab));
  return d;
}

}  // namespace

Dataset load_dataset(const DataSpec& spec) {
  if (spec.is_image()) return load_images(spec);
  if (spec.name == "clustered") return load_clustered(spec);
  if (spec.is_text()) return load_text(spec);
  if (spec.is_tokens()) return load_token_dataset(spec, {});  // no tokenizer: text needs the model's (model/task.hpp)
  throw InputError("data config: unknown data set '" + spec.name + "'");
}

}  // namespace moescope
