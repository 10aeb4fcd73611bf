// Named parameters laid end to end in one value buffer and one gradient buffer of the same
// layout: parameter i is the range [offset, offset + numel) of both. Parameters added one after
// another are adjacent, which is how the model fuses q/k/v (and gate/up) into one GEMM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lyre/abi.h"
#include "model/memory_tracker.hpp"
#include "model/parameter_info.hpp"

namespace lyre::cpu {

template <typename T>
class ParameterStore {
 public:
  ParameterStore() : values_(MemoryKind::parameters), grads_(MemoryKind::gradients) {}

  // Before allocate(): appends a parameter right after the previous one; returns its index.
  size_t add(std::string name, LyreParamKind kind, std::vector<int64_t> shape);
  // Allocates values (zero, norms one) and gradients (zero).
  void allocate();

  size_t size() const { return infos_.size(); }
  const ParameterInfo& info(size_t i) const { return infos_.at(i); }
  const std::vector<ParameterInfo>& infos() const { return infos_; }
  // Index of the parameter with this name; throws Error(NOT_FOUND) naming it.
  size_t find(const std::string& name) const;

  T* value(size_t i) { return values_.data() + infos_.at(i).offset; }
  const T* value(size_t i) const { return values_.data() + infos_.at(i).offset; }
  T* grad(size_t i) { return grads_.data() + infos_.at(i).offset; }
  const T* grad(size_t i) const { return grads_.data() + infos_.at(i).offset; }

  size_t total_numel() const { return total_; }
  T* values() { return values_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  void zero_grads();

 private:
  std::vector<ParameterInfo> infos_;
  size_t total_ = 0;
  Buffer<T> values_;
  Buffer<T> grads_;
};

}  // namespace lyre::cpu
