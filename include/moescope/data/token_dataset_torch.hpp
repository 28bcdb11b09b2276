#pragma once
// Token data for causal language models that bring their own tokenizer (Hugging Face model folders), as a Dataset:
//  - "text" (DataSpec name, `--data text:PATH`): a text file or a folder of them (read_text's rules), encoded with
//    a tokenizer.json (data/tokenizer.hpp) as one string with the tokenizer's special tokens added
//    (Tokenizer::encode(text, true): e.g. Llama/Mixtral's "<s>" in front, nothing for GPT-2-style byte level);
//  - "tokens" (`--tokens FILE`): token ids from a file (data/token_ids.hpp: text, .npy, safetensors), flattened.
// The ids are split contiguously as text-byte / text-char split their bytes and characters (split_contiguous with
// SplitFractions' defaults): train = the first 90% of the ids, valid = the next 5%, test = the last 5%. Each split is
// cut into non-overlapping windows of `context` ids; a window's targets are its ids shifted by one, the last target
// being the id after the window (so a split of n ids gives floor((n - 1) / context) windows), as the byte and
// character corpora are windowed.
#include <cstdint>
#include <string>
#include <vector>

#include "moescope/data/dataset_torch.hpp"

namespace moescope {

/// What the data needs from the model that reads it.
struct TokenDataContext {
  /// The tokenizer.json that encodes "text" data ("": text data cannot be read).
  std::string tokenizer;
  /// Ids must lie in [0, vocab_size) (0: only >= 0); `vocab_source` (e.g. ".../config.json") is named in the error.
  std::int64_t vocab_size = 0;
  std::string vocab_source;
};

/// Reads spec.path as spec.name ("text" or "tokens") says, splits and windows it by spec.context (max_train and
/// max_eval cut the windows). Dataset::num_classes is vocab_size (or, without one, the largest id + 1),
/// input_shape {context}, is_text true, vocab null. Throws InputError naming the file: unreadable or empty text,
/// no tokenizer for text, a tokenizer.json that is not supported, an id out of range ("ids.txt: id 300 at position
/// 7 is outside [0, 288): vocab_size of config.json"), or too few ids for one training window.
Dataset load_token_dataset(const DataSpec& spec, const TokenDataContext& context);

/// The ids of spec.path before splitting (the whole text encoded, or the whole file), range-checked as above.
std::vector<std::int32_t> read_token_data(const DataSpec& spec, const TokenDataContext& context);

/// Non-overlapping windows of `context` ids with next-id targets: inputs and targets int64 [n, context] with
/// n = floor((size - 1) / context), cut to max_windows when > 0.
TensorSplit token_windows(const std::vector<std::int32_t>& ids, std::int64_t context, std::int64_t max_windows = 0);

}  // namespace moescope
