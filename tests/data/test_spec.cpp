// data/spec: the data spec's JSON, the --data argument and split names (torch-free).
#include "moescope/data/spec.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

using namespace moescope;

namespace {

DataSpec small_clustered() { return moescope::testing::clustered_data(500, 6, 3, 4, 3); }

}  // namespace

TEST(DataSpec, JsonRoundTripAndErrors) {
  DataSpec s = small_clustered();
  s.max_eval = 7;
  nlohmann::json j = s;
  const DataSpec back = j.get<DataSpec>();
  EXPECT_EQ(nlohmann::json(back), j);
  EXPECT_THROW((nlohmann::json{{"name", "mnist"}}.get<DataSpec>()), InputError);
  EXPECT_THROW((nlohmann::json{{"nmae", "cifar10"}}.get<DataSpec>()), InputError);
  EXPECT_THROW((nlohmann::json{{"valid_fraction", 1.0}}.get<DataSpec>()), InputError);
}

TEST(DataSpec, ParseDataArg) {
  const DataSpec base = small_clustered();
  EXPECT_EQ(nlohmann::json(parse_data_arg("", base)), nlohmann::json(base));
  const DataSpec c = parse_data_arg("cifar10:/x/y", base);
  EXPECT_EQ(c.name, "cifar10");
  EXPECT_EQ(c.path, "/x/y");
  EXPECT_EQ(c.seed, base.seed);
  EXPECT_THROW(parse_data_arg("imagenet", base), InputError);
  moescope::testing::TempDir dir;
  const std::string f = dir.file("d.json");
  std::ofstream(f) << R"({"name": "text-byte", "path": "corpus.txt", "context": 9})";
  const DataSpec t = parse_data_arg(f, base);
  EXPECT_EQ(t.name, "text-byte");
  EXPECT_EQ(t.context, 9);
  std::ofstream(f) << R"({"name": )";
  EXPECT_THROW(parse_data_arg(f, base), InputError);
}

TEST(DataSpec, SplitNamesAreCheckedNamingTheirSource) {
  EXPECT_NO_THROW(check_split_name("valid", "--split"));
  try {
    check_split_name("validation", "--split");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "--split: unknown split 'validation' (train, valid, test)");
  }
  // Values out of range name the key.
  try {
    nlohmann::json{{"name", "clustered"}, {"context", 0}}.get<DataSpec>();
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'context'"), std::string::npos) << e.what();
  }
}
