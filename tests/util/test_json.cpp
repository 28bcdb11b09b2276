// util/json: option structs read from JSON with errors that name the object and the key; atomic JSON files.
#include "moescope/util/json.hpp"

#include <gtest/gtest.h>

#include "support/fixtures.hpp"

namespace moescope {
namespace {

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Json, FieldsAreReadWithTheirKeyNamedOnErrors) {
  const nlohmann::json j = {{"experts", 8}, {"lr", 0.5}, {"name", "x"}, {"widths", {1, 2}}, {"bad", "8"}};
  std::int64_t experts = 0;
  double lr = 0;
  std::string name;
  std::vector<std::int64_t> widths;
  json_fields::read(j, "model config", "experts", experts);
  json_fields::read(j, "model config", "lr", lr);
  json_fields::read(j, "model config", "name", name);
  json_fields::read(j, "model config", "widths", widths);
  EXPECT_EQ(experts, 8);
  EXPECT_EQ(lr, 0.5);
  EXPECT_EQ(name, "x");
  EXPECT_EQ(widths, (std::vector<std::int64_t>{1, 2}));
  std::int64_t untouched = 3;
  json_fields::read(j, "model config", "absent", untouched);
  EXPECT_EQ(untouched, 3);
  EXPECT_EQ(message_of([&] { json_fields::read(j, "model config", "bad", experts); }),
            "model config: field 'bad': expected an integer, got \"8\"");
  EXPECT_EQ(message_of([&] { json_fields::read(j, "model config", "name", widths); }),
            "model config: field 'name': expected a list, got \"x\"");
}

TEST(Json, UnknownFieldsAndWrongTypesAreRefused) {
  EXPECT_EQ(message_of([] { json_fields::check({{"expertz", 3}}, "lm config", "lm", {"experts"}); }),
            "lm config: unknown field 'expertz' (known: experts)");
  EXPECT_EQ(message_of([] { json_fields::check({{"type", "classifier"}}, "lm config", "lm", {"experts"}); }),
            "lm config: \"type\" is \"classifier\", expected \"lm\"");
  EXPECT_EQ(message_of([] { json_fields::check(nlohmann::json::array(), "lm config", "lm", {}); }),
            "lm config: expected a JSON object, got []");
  EXPECT_EQ(message_of([] { json_fields::check({{"type", "lm"}, {"experts", 1}}, "lm config", "lm", {"experts"}); }),
            "(no error)");
  int parsed = 0;
  const auto parse = [](const std::string& s) {
    if (s != "one") throw std::invalid_argument("unknown '" + s + "'");
    return 1;
  };
  json_fields::read_enum(nlohmann::json{{"k", "one"}}, "w", "k", parsed, parse);
  EXPECT_EQ(parsed, 1);
  EXPECT_EQ(message_of([&] { json_fields::read_enum(nlohmann::json{{"k", "two"}}, "w", "k", parsed, parse); }),
            "w: field 'k': unknown 'two'");
}

TEST(Json, AssignmentsReachAnyKey) {
  nlohmann::json j = {{"train", {{"optim", {{"lr", 0.1}}}}}};
  assign_json_path(j, "train.optim.lr=0.5", "--set");
  assign_json_path(j, "/train/optim/name=sgd", "--set");        // not JSON: a plain string
  assign_json_path(j, "model={\"type\": \"lm\"}", "--set");    // an object replaces the key whole
  assign_json_path(j, "train.regularisers.weight_orth=1e-3", "--set");  // missing objects are created
  EXPECT_EQ(j["train"]["optim"]["lr"], 0.5);
  EXPECT_EQ(j["train"]["optim"]["name"], "sgd");
  EXPECT_EQ(j["model"], (nlohmann::json{{"type", "lm"}}));
  EXPECT_EQ(j["train"]["regularisers"]["weight_orth"], 1e-3);
  EXPECT_EQ(message_of([&] { assign_json_path(j, "noequals", "--set"); }), "--set: expected KEY=VALUE, got 'noequals'");
  EXPECT_EQ(message_of([&] { assign_json_path(j, "train.optim.lr.x=1", "--set"); }).rfind("--set train.optim.lr.x=1: ", 0), 0u);
  EXPECT_EQ(json_path("a.b").to_string(), "/a/b");
}

TEST(Json, FilesAreWrittenAtomicallyAndReadWithTheirNameInErrors) {
  testing::TempDir dir;
  const std::string f = dir.file("c.json");
  write_json_file(f, {{"a", 1}});
  EXPECT_EQ(read_json_file(f, "the config"), (nlohmann::json{{"a", 1}}));
  EXPECT_FALSE(testing::file_exists(f + ".tmp"));
  testing::write_text(f, "{\"a\": ");
  EXPECT_EQ(message_of([&] { read_json_file(f, "the config"); }).rfind(f + ": not valid JSON", 0), 0u);
  EXPECT_EQ(message_of([&] { read_json_file(dir.file("none.json"), "the config"); }),
            dir.file("none.json") + ": cannot open the config");
  EXPECT_THROW(write_json_file(dir.file("no/such/dir/c.json"), {}), InputError);
}

}  // namespace
}  // namespace moescope
