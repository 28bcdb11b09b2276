// libFuzzer target for a run's config.json as `moescope train --config` and every analysis of a run read it: the
// input parsed as JSON, merged over the defaults as --config does, and read as a RunConfig (its DataSpec, the
// train options and the model options through check_model_config); the "data" value also goes through
// parse_data_arg as --data would give it. Links moescope_core (torch); no model is built. Only InputError may
// refuse an input, and an accepted config must survive to_json / from_json unchanged. Built with
// -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "moescope/data/spec.hpp"
#include "moescope/model/task.hpp"
#include "moescope/train/trainer.hpp"
#include "moescope/util/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    RunConfig c;
    from_json(j, c);
    const nlohmann::json back = c;
    RunConfig again;
    from_json(back, again);
    if (nlohmann::json(again) != back) __builtin_trap();
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  try {
    RunConfig c;
    from_json(merge_run_config(nlohmann::json(default_run_config()), j), c);
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  if (j.is_object()) {
    try {
      if (j.contains("model")) check_model_config(j["model"]);
    } catch (const InputError& e) {
      fuzz::refused(e);
    }
    try {
      if (j.contains("data") && j["data"].is_string()) (void)parse_data_arg(j["data"].get<std::string>());
    } catch (const InputError& e) {
      fuzz::refused(e);
    }
  }
  return 0;
}
