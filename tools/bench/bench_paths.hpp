#pragma once
// Benchmarks only: switch a model between its fast paths and the reference paths they replaced, so that one run
// can print before/after figures on the same weights and data.
//   batched experts (model/moe.hpp, batched_experts) vs one module call per expert;
//   eval-mode convolutions whose double backward is made of first-order kernels (model/backbone.hpp,
//   fast_double_backward) vs LibTorch's native convolution double backward.
#include <memory>

#include "moescope/model/backbone.hpp"
#include "moescope/model/classifier.hpp"
#include "moescope/model/lm.hpp"
#include "moescope/model/moe.hpp"
#include "moescope/model/task.hpp"

namespace moescope::bench_switch {

/// Sets batched_experts on every MoE layer of the model; returns how many layers it set.
inline int set_batched_experts(const TaskModel& model, bool batched) {
  int n = 0;
  for (const auto& ref : model.moe_layers()) {
    if (auto* g = dynamic_cast<GatedMixtureImpl*>(ref.layer)) {
      g->options.batched_experts(batched);
      ++n;
    } else if (auto* s = dynamic_cast<SparseMoEImpl*>(ref.layer)) {
      s->options.batched_experts(batched);
      ++n;
    } else if (auto* so = dynamic_cast<SoftMoEImpl*>(ref.layer)) {
      so->options.batched_experts(batched);
      ++n;
    }
  }
  return n;
}

/// Sets fast_double_backward on a classifier's CNN or ResNet-18 backbone; false when the model has neither.
inline bool set_fast_double_backward(const TaskModel& model, bool on) {
  auto* c = dynamic_cast<ClassifierImpl*>(&model.module());
  if (c == nullptr) return false;
  const auto m = c->backbone.ptr();
  if (auto cnn = std::dynamic_pointer_cast<SmallCNNImpl>(m)) {
    cnn->options.fast_double_backward(on);
    return true;
  }
  if (auto resnet = std::dynamic_pointer_cast<ResNet18Impl>(m)) {
    resnet->options.fast_double_backward(on);
    return true;
  }
  return false;
}

}  // namespace moescope::bench_switch
