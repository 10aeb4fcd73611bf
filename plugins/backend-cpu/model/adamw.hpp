// AdamW with decoupled weight decay, as PyTorch's torch.optim.AdamW (single-tensor path):
//   p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
// with wd = 0 for the parameter kinds in no_decay_kinds. States: "<param>.exp_avg",
// "<param>.exp_avg_sq" per trainable parameter, then "step".
#pragma once

#include "model/optimizer.hpp"

namespace lyre::cpu {

template <typename T>
class AdamW final : public Optimizer<T> {
 public:
  AdamW(ParameterStore<T>& params, const OptimizerConfig& config);
  void step(double lr, double grad_scale) override;

 private:
  Buffer<T> exp_avg_{MemoryKind::optimizer_state};
  Buffer<T> exp_avg_sq_{MemoryKind::optimizer_state};
};

}  // namespace lyre::cpu
