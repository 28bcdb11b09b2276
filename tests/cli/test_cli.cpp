// The moescope executable as a user meets it: exit codes, one-line errors naming the file, reports that are
// complete or absent, provenance.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "moescope/io/report.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/io/synthetic.hpp"
#include "moescope/util/sha256.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::read_bytes;
using testing::run_moescope;
using testing::TempDir;
using testing::write_bytes;

std::string small_checkpoint(const TempDir& dir, const std::string& family = "mixtral", double rho = 0.5) {
  SyntheticCheckpointOptions o;
  o.family = family;
  o.experts = 4;
  o.rho = rho;
  const std::string p = dir.file(family + ".safetensors");
  write_synthetic_checkpoint(p, o);
  return p;
}

int line_count(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Cli, VersionAndHelp) {
  auto r = run_moescope({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("moescope 0."), std::string::npos) << r.out;
  r = run_moescope({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"inspect", "geometry", "synth"}) EXPECT_NE(r.out.find(sub), std::string::npos) << sub;
  r = run_moescope({"geometry", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--matrices"), std::string::npos);
}

TEST(Cli, BadUsageExitsTwo) {
  EXPECT_EQ(run_moescope({}).exit_code, 2);
  EXPECT_EQ(run_moescope({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(run_moescope({"geometry"}).exit_code, 2);  // missing checkpoint and -o
}

TEST(Cli, InspectTextAndJson) {
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir, "qwen2-moe");
  auto r = run_moescope({"inspect", ckpt});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("family: olmoe-qwen-deepseek"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4 experts + 1 shared"), std::string::npos) << r.out;
  r = run_moescope({"inspect", ckpt, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["layout"]["family"], "olmoe-qwen-deepseek");
  EXPECT_EQ(j["layout"]["layers"].size(), 2u);
  EXPECT_EQ(j["layout"]["layers"][0]["experts"], 4);
  EXPECT_EQ(j["tensor_count"], SafetensorsFile(ckpt).tensors().size());
}

TEST(Cli, GeometryWritesReportWithProvenance) {
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir, "mixtral", 1.0);  // rho = 1: identical experts, MSO 1
  const std::string out = dir.file("r.h5");
  auto r = run_moescope({"--threads", "2", "geometry", ckpt, "-o", out, "--matrices", "gate,up", "--layers", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader rep(out);
  EXPECT_FALSE(rep.exists("/geometry/layer_00"));
  EXPECT_NEAR(rep.read_scalar("/geometry/layer_01/mso"), 1.0, 1e-9);
  std::vector<std::size_t> dims;
  rep.read("/geometry/layer_01/overlap", &dims);
  EXPECT_EQ(dims, (std::vector<std::size_t>{4, 4}));
  EXPECT_EQ(std::get<std::string>(rep.attr("/geometry/layer_01", "matrices")), "gate,up");
  EXPECT_EQ(std::get<std::string>(rep.attr("/", "checkpoint_sha256")), sha256_file(ckpt));
  EXPECT_EQ(std::get<std::string>(rep.attr("/", "checkpoint_hash_scope")), "file");
  EXPECT_EQ(std::get<std::int64_t>(rep.attr("/", "threads")), 2);
  const auto cmd = std::get<std::string>(rep.attr("/", "command_line"));
  EXPECT_NE(cmd.find("geometry"), std::string::npos);
  EXPECT_NE(cmd.find("--layers 1"), std::string::npos);
  EXPECT_NE(r.out.find("layer_01"), std::string::npos);  // the summary table
}

TEST(Cli, SameThreadsSameNumbers) {
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir);
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(run_moescope({"--threads", "2", "geometry", ckpt, "-o", dir.file("r" + std::to_string(i) + ".h5")}).exit_code, 0);
  ReportReader a(dir.file("r0.h5")), b(dir.file("r1.h5"));
  EXPECT_EQ(a.read("/geometry/layer_00/gram"), b.read("/geometry/layer_00/gram"));
}

// Each corrupt checkpoint: exit 2, one line on stderr naming the file.
TEST(Cli, CorruptCheckpointsExitTwoNamingTheFile) {
  TempDir dir;
  const std::string good = small_checkpoint(dir);
  const auto bytes = read_bytes(good);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[static_cast<std::size_t>(i)];
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));

  auto with_header = [&](std::string h) {
    h.resize(n, ' ');  // keep the length so only the content is wrong
    auto b = bytes;
    std::copy(h.begin(), h.end(), b.begin() + 8);
    return b;
  };
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> cases;
  cases.push_back({"truncated", std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 100)});
  {
    auto b = bytes;
    b[7] = 0x7f;  // header length far past the end (and over the 100 MB limit)
    cases.push_back({"oversized_header", b});
  }
  {
    std::string h = header;
    const auto pos = h.find("\"F32\"");
    h.replace(pos, 5, "\"Q7\" ");
    cases.push_back({"bad_dtype", with_header(h)});
  }
  {
    // make the second tensor's offsets start inside the first one's
    auto j = nlohmann::json::parse(header);
    std::string first, second;
    for (auto& [k, v] : j.items())
      if (k != "__metadata__") {
        if (v["data_offsets"][0] == 0) first = k;
      }
    for (auto& [k, v] : j.items())
      if (k != "__metadata__" && v["data_offsets"][0] == j[first]["data_offsets"][1]) second = k;
    j[second]["data_offsets"][0] = j[second]["data_offsets"][0].get<std::uint64_t>() - 4;
    j[second]["data_offsets"][1] = j[second]["data_offsets"][1].get<std::uint64_t>() - 4;
    std::string h = j.dump();
    ASSERT_LE(h.size(), n);
    cases.push_back({"overlapping_offsets", with_header(h)});
  }
  cases.push_back({"not_json", with_header("{\"a\": [1, 2")});
  cases.push_back({"tiny", {1, 2, 3}});

  for (const auto& [name, b] : cases) {
    const std::string path = dir.file(name + ".safetensors");
    write_bytes(path, b);
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"inspect", path}, std::vector<std::string>{"geometry", path, "-o", dir.file(name + ".h5")}}) {
      const auto r = run_moescope(args);
      EXPECT_EQ(r.exit_code, 2) << name << ": " << r.err;
      EXPECT_NE(r.err.find(path), std::string::npos) << name << ": " << r.err;
      EXPECT_EQ(line_count(r.err), 1) << name << ": " << r.err;
    }
    EXPECT_FALSE(testing::file_exists(dir.file(name + ".h5")));
  }
  const auto r = run_moescope({"inspect", dir.file("missing.safetensors")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("missing.safetensors"), std::string::npos);
}

TEST(Cli, FailedRunLeavesTheOldReportUntouched) {
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir);
  const std::string out = dir.file("r.h5");
  ASSERT_EQ(run_moescope({"geometry", ckpt, "-o", out}).exit_code, 0);
  const auto before = read_bytes(out);
  // fails after the report was opened: the experts have no 'fc9' matrix
  const auto r = run_moescope({"geometry", ckpt, "-o", out, "--matrices", "fc9"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("fc9"), std::string::npos) << r.err;
  EXPECT_EQ(read_bytes(out), before);
  EXPECT_FALSE(testing::file_exists(out + ".tmp"));
}

TEST(Cli, SynthWritesEveryFamilyThatGeometryReads) {
  TempDir dir;
  for (const auto& fam : synthetic_families()) {
    const std::string p = dir.file(fam + ".safetensors");
    ASSERT_EQ(run_moescope({"synth", fam, "-o", p, "--experts", "3", "--dtype", "BF16"}).exit_code, 0) << fam;
    const auto r = run_moescope({"geometry", p, "-o", dir.file(fam + ".h5"), "--hash", "none"});
    EXPECT_EQ(r.exit_code, 0) << fam << ": " << r.err;
  }
  const auto r = run_moescope({"synth", "mixtral", "-o", dir.file("s"), "--shards", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(run_moescope({"geometry", dir.file("s"), "-o", dir.file("s.h5")}).exit_code, 0);
  ReportReader rep(dir.file("s.h5"));
  EXPECT_EQ(std::get<std::string>(rep.attr("/", "checkpoint_hash_scope")), "index");
}

TEST(Cli, CorrelateAcrossReports) {
  // five checkpoints with rho = 0.1 .. 0.9: the MSO of every layer follows rho^2 (plus noise of order 1/D),
  // so layer 0's and layer 1's MSO rank identically and correlate almost perfectly
  TempDir dir;
  std::vector<std::string> reports;
  for (int i = 0; i < 5; ++i) {
    const std::string ckpt = dir.file("c" + std::to_string(i) + ".safetensors");
    ASSERT_EQ(run_moescope({"synth", "mixtral", "-o", ckpt, "--rho", std::to_string(0.1 + 0.2 * i), "--experts", "3"}).exit_code, 0);
    reports.push_back(dir.file("r" + std::to_string(i) + ".h5"));
    ASSERT_EQ(run_moescope({"geometry", ckpt, "-o", reports.back(), "--hash", "none"}).exit_code, 0);
  }
  std::vector<std::string> args = {"correlate"};
  args.insert(args.end(), reports.begin(), reports.end());
  for (const char* a : {"--x", "/geometry/layer_00/mso", "--y", "/geometry/layer_01/mso", "-o"}) args.push_back(a);
  args.push_back(dir.file("c.h5"));
  const auto r = run_moescope(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader c(dir.file("c.h5"));
  EXPECT_GT(c.read_scalar("/correlation/pearson_r"), 0.95);  // both layers follow rho^2
  EXPECT_NEAR(c.read_scalar("/correlation/spearman_rho"), 1.0, 1e-12);
  EXPECT_EQ(c.read("/correlation/x").size(), 5u);
  EXPECT_LE(c.read_scalar("/correlation/ci_low"), c.read_scalar("/correlation/pearson_r"));
  args[args.size() - 4] = "/geometry/layer_09/mso";  // --y of a layer that is not there
  const auto bad = run_moescope(args);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("layer_09"), std::string::npos) << bad.err;
}

TEST(Cli, PlotScriptDrawsTheGeometryFigures) {
  if (std::system("/usr/bin/python3 -c 'import h5py, matplotlib, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with h5py, matplotlib and numpy is not installed";
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir);
  ASSERT_EQ(run_moescope({"geometry", ckpt, "-o", dir.file("r.h5")}).exit_code, 0);
  const std::string cmd = "/usr/bin/python3 " + std::string(MOESCOPE_SOURCE_DIR) + "/tools/plot.py " +
                          dir.file("r.h5") + " -o " + dir.file("fig") + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  for (const char* f : {"geometry_overlap.png", "geometry_overlap.pdf", "geometry_mso.png", "geometry_mso.pdf"})
    EXPECT_GT(testing::read_bytes(dir.file("fig/") + f).size(), 1000u) << f;
  // a missing report: exit 2 and a message naming it
  const std::string bad = "/usr/bin/python3 " + std::string(MOESCOPE_SOURCE_DIR) + "/tools/plot.py " +
                          dir.file("absent.h5") + " -o " + dir.file("fig2") + " 2>" + dir.file("err");
  EXPECT_EQ(WEXITSTATUS(std::system(bad.c_str())), 2);
  const auto err = testing::read_bytes(dir.file("err"));
  EXPECT_NE(std::string(err.begin(), err.end()).find("absent.h5"), std::string::npos);
}

}  // namespace
}  // namespace moescope
