// SGD as PyTorch's torch.optim.SGD: weight decay added to the gradient (g += wd*p, skipped for
// no_decay_kinds), then optional momentum (buf = g on the first step, else
// buf = momentum*buf + (1-dampening)*g; nesterov: g += momentum*buf, else g = buf),
// p -= lr*g. States: "<param>.momentum_buffer" when momentum > 0, then "step".
#pragma once

#include "model/optimizer.hpp"

namespace lyre::cpu {

template <typename T>
class Sgd final : public Optimizer<T> {
 public:
  Sgd(ParameterStore<T>& params, const OptimizerConfig& config);
  void step(double lr, double grad_scale) override;

 private:
  Buffer<T> momentum_buffer_{MemoryKind::optimizer_state};
};

}  // namespace lyre::cpu
