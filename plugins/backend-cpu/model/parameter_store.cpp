#include "model/parameter_store.hpp"

#include <algorithm>
#include <cstring>

#include "lyre/plugin.hpp"

namespace lyre::cpu {

template <typename T>
size_t ParameterStore<T>::add(std::string name, LyreParamKind kind, std::vector<int64_t> shape) {
  if (values_.data() != nullptr)
    throw plugin::Error(LYRE_ERROR_INTERNAL, "parameter " + name + " added after allocate()");
  const size_t index = append_parameter(infos_, std::move(name), kind, std::move(shape));
  total_ += infos_[index].numel;
  return index;
}

template <typename T>
void ParameterStore<T>::allocate() {
  values_.assign_zero(total_);
  grads_.assign_zero(total_);
  for (const ParameterInfo& p : infos_)
    if (p.kind == LYRE_PARAM_NORM) std::fill_n(values_.data() + p.offset, p.numel, T(1));
}

template <typename T>
size_t ParameterStore<T>::find(const std::string& name) const {
  for (size_t i = 0; i < infos_.size(); ++i)
    if (infos_[i].name == name) return i;
  throw plugin::Error(LYRE_ERROR_NOT_FOUND, "no parameter named " + name);
}

template <typename T>
void ParameterStore<T>::zero_grads() {
  if (total_ > 0) std::memset(static_cast<void*>(grads_.data()), 0, total_ * sizeof(T));
}

template class ParameterStore<float>;
template class ParameterStore<double>;

}  // namespace lyre::cpu
