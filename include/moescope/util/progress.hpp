#pragma once
// The one progress channel: every long computation (training, Lanczos, trace probes, SLQ, grid points, activation
// batches, geometry layers) reports through a ProgressFn; the library never prints, the CLI renders (a live line
// with rate and ETA on a terminal, a line per stage otherwise).
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace moescope {

/// A snapshot of a running stage.
struct Progress {
  std::string stage;         ///< what runs: "train", "lanczos", "hutch++", "slq", "landscape", "activations", ...
  std::int64_t done = 0;     ///< units finished in this stage (steps, points, batches, probes, layers)
  std::int64_t total = 0;    ///< units in the stage; 0 when unknown (an iterative solver reports its step cap)
  std::string unit;          ///< "steps", "points", "batches", "probes", "layers", "matvecs"
  double value = std::nan("");  ///< a stage-specific measure (loss, largest relative Ritz bound), NaN for none
  std::string value_name;    ///< what `value` is ("loss", "bound"), "" for none
  std::string detail;        ///< optional short free text ("lr 1.2e-3 acc 0.91")
  bool finished = false;     ///< the last report of the stage
  /// A one-off message worth a line of its own ("resuming at step 300", "step 41 skipped: gradient norm is nan");
  /// the counters may be left as they were.
  std::string note;
};

/// Called by the library as work proceeds (never from inside a tight loop more than a few times per second's
/// worth of work; never concurrently). May be empty.
using ProgressFn = std::function<void(const Progress&)>;

/// A report (the fields in their order; the defaults are "none").
inline Progress make_progress(std::string stage, std::int64_t done, std::int64_t total, std::string unit,
                              double value = std::nan(""), std::string value_name = {}, std::string detail = {},
                              bool finished = false, std::string note = {}) {
  Progress p;
  p.stage = std::move(stage);
  p.done = done;
  p.total = total;
  p.unit = std::move(unit);
  p.value = value;
  p.value_name = std::move(value_name);
  p.detail = std::move(detail);
  p.finished = finished;
  p.note = std::move(note);
  return p;
}

/// Calls `fn` if it is set.
inline void report(const ProgressFn& fn, const Progress& p) {
  if (fn) fn(p);
}

}  // namespace moescope
