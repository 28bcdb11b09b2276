#pragma once
// Shared test helpers: temporary folders, files, and running the moescope executable.
#include <cstdint>
#include <string>
#include <vector>

#include "moescope/data/spec.hpp"

namespace moescope::testing {

/// A fresh folder under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes);
void write_text(const std::string& path, const std::string& text);
std::vector<std::uint8_t> read_bytes(const std::string& path);
std::string file_text(const std::string& path);
bool file_exists(const std::string& path);

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
/// Runs the moescope executable ($MOESCOPE_BIN, else the one built beside the tests) with the given arguments.
CliResult run_moescope(const std::vector<std::string>& args);

/// A one-tensor safetensors file ("w": F32 [2] = {1, 2}).
void write_small_safetensors(const std::string& path);

/// Lines in a text (newline characters): a one-line error is 1.
int line_count(const std::string& s);

/// A small synthetic checkpoint of `family` with 4 experts per layer (io/synthetic_checkpoint.hpp), written to
/// DIR/<family>.safetensors; rho is the experts' shared fraction (1: identical experts, MSO 1).
std::string small_checkpoint(const TempDir& dir, const std::string& family = "mixtral", double rho = 0.5);

/// A clustered-task data spec (data/clustered_task.hpp) of these sizes: the tests' small, quick data.
DataSpec clustered_data(std::int64_t samples, std::int64_t dim, std::int64_t clusters, std::int64_t classes,
                        std::uint64_t seed = 0);

/// Float32 values as little-endian bytes; likewise bf16 (round to nearest even).
std::vector<std::uint8_t> f32_bytes(const std::vector<float>& v);
std::vector<std::uint8_t> bf16_bytes(const std::vector<float>& v);

}  // namespace moescope::testing
