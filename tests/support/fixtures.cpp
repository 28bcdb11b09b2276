#include "support/fixtures.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "moescope/io/safetensors.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"

namespace moescope::testing {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "moescope-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

std::string file_text(const std::string& path) {
  const std::vector<std::uint8_t> b = read_bytes(path);
  return std::string(b.begin(), b.end());
}

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(f), {});
}

bool file_exists(const std::string& path) { return std::filesystem::exists(path); }

namespace {
std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

CliResult run_moescope(const std::vector<std::string>& args) {
  // $MOESCOPE_BIN overrides the executable CMake built next to the tests
  const char* bin = std::getenv("MOESCOPE_BIN");
#ifdef MOESCOPE_BIN_PATH
  if (!bin) bin = MOESCOPE_BIN_PATH;
#endif
  if (!bin) throw std::runtime_error("MOESCOPE_BIN is not set");
  TempDir d;
  std::string cmd = quote(bin);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " >" + quote(d.file("out")) + " 2>" + quote(d.file("err")) + " </dev/null";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(d.file("out"));
  r.err = slurp(d.file("err"));
  return r;
}

std::vector<std::uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<std::uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<std::uint8_t> bf16_bytes(const std::vector<float>& v) {
  std::vector<std::uint8_t> b(v.size() * 2);
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
    const std::uint16_t h = static_cast<std::uint16_t>(bits >> 16);
    std::memcpy(&b[2 * i], &h, 2);
  }
  return b;
}

void write_small_safetensors(const std::string& path) {
  const float w[2] = {1.0f, 2.0f};
  TensorToWrite t;
  t.info = TensorInfo{"w", DType::F32, {2}};
  t.data = w;
  write_safetensors(path, {t});
}

int line_count(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

std::string small_checkpoint(const TempDir& dir, const std::string& family, double rho) {
  SyntheticCheckpointOptions o;
  o.family = family;
  o.experts = 4;
  o.rho = rho;
  const std::string p = dir.file(family + ".safetensors");
  write_synthetic_checkpoint(p, o);
  return p;
}

DataSpec clustered_data(std::int64_t samples, std::int64_t dim, std::int64_t clusters, std::int64_t classes,
                        std::uint64_t seed) {
  DataSpec s;
  s.name = "clustered";
  s.clustered.samples = samples;
  s.clustered.dim = dim;
  s.clustered.clusters = clusters;
  s.clustered.classes = classes;
  s.seed = seed;
  return s;
}

}  // namespace moescope::testing
