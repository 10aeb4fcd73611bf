#include "model/sgd.hpp"

namespace lyre::cpu {

template <typename T>
Sgd<T>::Sgd(ParameterStore<T>& params, const OptimizerConfig& config) : Optimizer<T>(params, config) {
  if (config.momentum > 0) {
    momentum_buffer_.assign_zero(params.total_numel());
    this->add_states("momentum_buffer", momentum_buffer_);
  }
  this->add_step_state();
}

template <typename T>
void Sgd<T>::step(double lr, double grad_scale) {
  const OptimizerConfig& c = this->config_;
  // PyTorch starts the buffer as a copy of the first gradient (step 0 = no buffer yet).
  const bool first = this->step_ == 0;
  ++this->step_;
  const T scale = static_cast<T>(grad_scale), rate = static_cast<T>(lr);
  const T mu = static_cast<T>(c.momentum), damp = static_cast<T>(1.0 - c.dampening);
  const bool use_momentum = c.momentum > 0, nesterov = c.nesterov;
  ParameterStore<T>& ps = this->params_;
  for (const ParameterInfo& p : ps.infos()) {
    if (!p.trainable) continue;
    const T wd = static_cast<T>(c.decays(p.kind) ? c.weight_decay : 0.0);
    T* w = ps.values() + p.offset;
    const T* g = ps.grads() + p.offset;
    T* buf = use_momentum ? momentum_buffer_.data() + p.offset : nullptr;
    const int64_t n = static_cast<int64_t>(p.numel);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T gi = g[i] * scale + wd * w[i];
      if (use_momentum) {
        buf[i] = first ? gi : mu * buf[i] + damp * gi;
        gi = nesterov ? gi + mu * buf[i] : buf[i];
      }
      w[i] -= rate * gi;
    }
  }
}

template class Sgd<float>;
template class Sgd<double>;

}  // namespace lyre::cpu
