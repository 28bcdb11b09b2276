#pragma once
// Which data a run trains on and is analysed on: a JSON-round-tripping spec (torch-free). Loading it into tensors
// is data/dataset_torch.hpp.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moescope/data/clustered_task.hpp"

namespace moescope {

/// A data set and how it is cut. JSON keys are the field names.
struct DataSpec {
  /// "fashion-mnist" (IDX files, default path kFashionMnistDir), "cifar10" (binary batches in `path`),
  /// "clustered" (the synthetic clustered task), "text-word" (WikiText/PTB: path holds
  /// {wiki.,}{train,valid,test}.tokens or ptb.{train,valid,test}.txt as read_word_corpus reads them),
  /// "text-byte" / "text-char" (a text file or a folder of text files, split contiguously),
  /// "text" (a text file or folder encoded by a model's tokenizer.json) and "tokens" (a token-id file): the data of
  /// models with their own tokenizer (data/token_dataset_torch.hpp; "text" needs the model to read it).
  std::string name = "fashion-mnist";
  /// Empty: the name's default (fashion-mnist only).
  std::string path;
  /// Images and the clustered task: fraction of the train files held out as validation (split_indices(seed)).
  double valid_fraction = 0.1;
  /// When > 0, keep only the first N samples (sequences for text) of the train split / of valid and test.
  std::int64_t max_train = 0;
  std::int64_t max_eval = 0;
  /// Text: tokens per sequence (non-overlapping windows; targets are the inputs shifted by one).
  std::int64_t context = 64;
  /// The clustered task's sizes; its seed is `seed`. The test split is a further 20% generated after train.
  ClusteredTaskOptions clustered;
  /// Seeds the validation split and the clustered task.
  std::uint64_t seed = 0;

  bool is_image() const { return name == "fashion-mnist" || name == "cifar10"; }
  bool is_text() const { return name == "text-word" || name == "text-byte" || name == "text-char"; }
  /// "text" or "tokens": ids for a model's own vocabulary.
  bool is_tokens() const { return name == "text" || name == "tokens"; }
};
void to_json(nlohmann::json& j, const DataSpec& s);
/// Missing keys keep their defaults; unknown keys, wrong types or values out of range throw InputError naming the
/// key ("data config: field 'context': ...").
void from_json(const nlohmann::json& j, DataSpec& s);

/// A --data argument: "" keeps `base`; "NAME" or "NAME:PATH" sets the name (and path; for a new name the other
/// fields keep base's values); a path ending in ".json" is read as a whole DataSpec. Throws InputError naming
/// `what` (the flag or config key it came from) or the file.
DataSpec parse_data_arg(const std::string& arg, const DataSpec& base = {}, const std::string& what = "data");

/// The split names, "train", "valid", "test"; throws InputError naming `what` (a flag or key) for anything else.
void check_split_name(const std::string& name, const std::string& what);

/// The evaluation set of an analysis of a run (hessian, landscape, activations): which data, which splits, how
/// many samples, in what batches. One default for every analysis.
struct EvalSpec {
  std::string data;                          ///< "" = the run's own data; else as parse_data_arg reads it
  std::vector<std::string> splits{"train"};  ///< "train", "valid", "test"
  std::int64_t max_samples = 1000;           ///< the first N samples of each split (0: all)
  std::int64_t batch_size = 256;             ///< samples per forward pass: memory only, results do not depend on it
  std::int64_t context = 0;                  ///< text data: tokens per sequence (0: the data spec's own)
};

}  // namespace moescope
