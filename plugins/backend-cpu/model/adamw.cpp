#include "model/adamw.hpp"

#include <cmath>

namespace lyre::cpu {

template <typename T>
AdamW<T>::AdamW(ParameterStore<T>& params, const OptimizerConfig& config)
    : Optimizer<T>(params, config) {
  exp_avg_.assign_zero(params.total_numel());
  exp_avg_sq_.assign_zero(params.total_numel());
  for (const ParameterInfo& p : params.infos()) {
    if (!p.trainable) continue;
    this->states_.push_back({p.name + ".exp_avg", p.shape, exp_avg_.data() + p.offset});
    this->states_.push_back({p.name + ".exp_avg_sq", p.shape, exp_avg_sq_.data() + p.offset});
  }
  this->add_step_state();
}

template <typename T>
void AdamW<T>::step(double lr, double grad_scale) {
  const OptimizerConfig& c = this->config_;
  const int64_t t = ++this->step_;
  // Scalars in double, as PyTorch computes them in Python before touching the tensors.
  const T step_size = static_cast<T>(lr / (1.0 - std::pow(c.beta1, static_cast<double>(t))));
  const T bc2_sqrt = static_cast<T>(std::sqrt(1.0 - std::pow(c.beta2, static_cast<double>(t))));
  const T b1 = static_cast<T>(c.beta1), b2 = static_cast<T>(c.beta2);
  const T one_minus_b1 = static_cast<T>(1.0 - c.beta1), one_minus_b2 = static_cast<T>(1.0 - c.beta2);
  const T eps = static_cast<T>(c.eps), scale = static_cast<T>(grad_scale);
  ParameterStore<T>& ps = this->params_;
  for (const ParameterInfo& p : ps.infos()) {
    if (!p.trainable) continue;
    const T keep = static_cast<T>(1.0 - lr * (c.decays(p.kind) ? c.weight_decay : 0.0));
    T* w = ps.values() + p.offset;
    const T* g = ps.grads() + p.offset;
    T* m = exp_avg_.data() + p.offset;
    T* v = exp_avg_sq_.data() + p.offset;
    const int64_t n = static_cast<int64_t>(p.numel);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i] * scale;
      w[i] *= keep;
      m[i] = b1 * m[i] + one_minus_b1 * gi;
      v[i] = b2 * v[i] + one_minus_b2 * gi * gi;
      w[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    }
  }
}

template class AdamW<float>;
template class AdamW<double>;

}  // namespace lyre::cpu
