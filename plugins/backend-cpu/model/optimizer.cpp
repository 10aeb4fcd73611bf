#include "model/optimizer.hpp"

#include <algorithm>

#include "model/adamw.hpp"
#include "model/sgd.hpp"

namespace lyre::cpu {

template <typename T>
Optimizer<T>::Optimizer(ParameterStore<T>& params, const OptimizerConfig& config)
    : params_(params), config_(config) {
  constexpr size_t kChunk = size_t(1) << 15;
  for (const ParameterInfo& p : params.infos()) {
    if (!p.trainable) continue;
    for (size_t off = 0; off < p.numel; off += kChunk)
      chunks_.push_back({p.offset + off, std::min(kChunk, p.numel - off)});
  }
  partials_.resize(chunks_.size());
}

template <typename T>
double Optimizer<T>::grad_squared_norm() const {
  const T* g = params_.grads();
  const int64_t n = static_cast<int64_t>(chunks_.size());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n; ++c) {
    const T* x = g + chunks_[c].offset;
    double sum = 0;
    for (size_t i = 0; i < chunks_[c].count; ++i) sum += static_cast<double>(x[i]) * x[i];
    partials_[c] = sum;
  }
  double total = 0;
  for (double p : partials_) total += p;
  return total;
}

template <typename T>
void Optimizer<T>::add_states(const std::string& suffix, Buffer<T>& buffer) {
  for (const ParameterInfo& p : params_.infos())
    if (p.trainable) states_.push_back({p.name + "." + suffix, p.shape, buffer.data() + p.offset});
}

template <typename T>
void Optimizer<T>::add_step_state() {
  states_.push_back({"step", {1}, nullptr});
}

template <typename T>
std::unique_ptr<Optimizer<T>> make_optimizer(ParameterStore<T>& params, const std::string& json_text) {
  const OptimizerConfig c = parse_optimizer_config(json_text);
  if (c.type == OptimizerConfig::Type::sgd) return std::make_unique<Sgd<T>>(params, c);
  return std::make_unique<AdamW<T>>(params, c);
}

template class Optimizer<float>;
template class Optimizer<double>;
template std::unique_ptr<Optimizer<float>> make_optimizer(ParameterStore<float>&, const std::string&);
template std::unique_ptr<Optimizer<double>> make_optimizer(ParameterStore<double>&, const std::string&);

}  // namespace lyre::cpu
