#pragma once
// Token ids from a file (`--tokens FILE`): text, NumPy .npy or safetensors, flattened to one sequence and
// range-checked against a vocabulary. Nothing read from the file is trusted: sizes, offsets and counts are
// checked against the file's length before any element is read.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moescope {

/// The format of a token-id file.
enum class TokenIdFormat {
  Text,         // whitespace-separated decimal integers (ASCII space, \t, \n, \r, \v, \f)
  Npy,          // NumPy .npy v1-v3: integer dtype i1 i2 i4 i8 u1 u2 u4 u8 (either byte order), any shape, C order
  Safetensors,  // exactly one tensor (besides __metadata__) of dtype I8 U8 I16 U16 I32 U32 I64 U64, any shape
};

/// The ids of `path`, flattened in storage (C) order. The format is the extension's (".npy", ".safetensors"),
/// else the content's: the "\x93NUMPY" magic, a safetensors header (8-byte length then '{'), or text.
/// Every id must lie in [0, vocab_size) (vocab_size <= 0: only that it is >= 0 and fits int32). An empty file
/// (or array) gives no ids. Throws InputError with one line naming the file, e.g. "ids.npy: position 17: id 50257
/// is outside the vocabulary [0, 50257)", "ids.txt: line 3, position 9: 'x1' is not an integer", or the header
/// field that is wrong (bad magic or
/// version, a header or data past the end of the file, a non-integer or structured dtype, Fortran order with
/// more than one dimension above 1, a negative or overflowing shape, data of the wrong length, not exactly one
/// tensor, offsets that do not cover the data).
std::vector<std::int32_t> read_token_ids(const std::string& path, std::int64_t vocab_size);

/// The same for bytes in memory; `name` stands for the file in messages and its extension picks the format as
/// for read_token_ids.
std::vector<std::int32_t> parse_token_ids(std::string_view bytes, const std::string& name, std::int64_t vocab_size);

/// The format read_token_ids would read `bytes` (named `name`) as.
TokenIdFormat detect_token_id_format(std::string_view bytes, const std::string& name);

}  // namespace moescope
