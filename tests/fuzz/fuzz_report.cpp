// libFuzzer target for the HDF5 report reader (ReportReader, behind `correlate`, `compare-spaces`, a run's log.h5
// on --resume): the input is written to a file and opened; every object reachable from the root is listed, every
// dataset read as numbers or strings and every attribute the readers use looked up. HDF5 itself parses the file
// (Debian's libhdf5, not instrumented): a crash inside it is reported as a finding of HDF5, not of moescope.
// Only InputError may refuse an input. Built with -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "moescope/io/report.hpp"
#include "moescope/util/error.hpp"

namespace {

void walk(const moescope::ReportReader& r, const std::string& group, int depth, int& budget) {
  if (depth > 8 || budget <= 0) return;
  for (const std::string& name : r.list(group)) {
    if (--budget <= 0) return;
    const std::string path = (group == "/" ? "" : group) + "/" + name;
    try {
      try {
        (void)r.list(path);  // a group
        walk(r, path, depth + 1, budget);
      } catch (const moescope::InputError& e) {
        moescope::fuzz::refused(e);
        try {
          std::vector<std::size_t> dims;
          (void)r.read(path, &dims);
        } catch (const moescope::InputError& e2) {
          moescope::fuzz::refused(e2);
          (void)r.read_strings(path);
        }
      }
      for (const char* a : {"index_order", "layer", "experts", "matrices", "definition"})
        if (r.has_attr(path, a)) (void)r.attr(path, a);
    } catch (const moescope::InputError& e) {
      moescope::fuzz::refused(e);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  const std::string path = fuzz::write_scratch("fuzz.h5", data, size);
  try {
    const ReportReader r(path);
    for (const char* a : {"moescope_version", "command_line", "seed", "threads"})
      if (r.has_attr("/", a)) (void)r.attr("/", a);
    int budget = 200;
    walk(r, "/", 0, budget);
    if (r.exists("/geometry/layer_00/overlap")) (void)r.read_matrix("/geometry/layer_00/overlap");
    if (r.exists("/train/step")) (void)r.read_scalar("/train/test_loss");
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  return 0;
}
