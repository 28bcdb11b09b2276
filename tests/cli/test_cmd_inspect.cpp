// `moescope inspect` (and the readers behind every command): text and JSON, corrupt files exit 2 with one line
// naming the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "moescope/io/safetensors.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using namespace testing;  // moescope::testing: TempDir, run_moescope, small_checkpoint, ...

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

}  // namespace
}  // namespace moescope
