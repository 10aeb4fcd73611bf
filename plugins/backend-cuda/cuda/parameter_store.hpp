// backend-cuda's parameters: named, laid end to end in flat device buffers of one layout.
//   values  float master weights (what ReadTensor/WriteTensor, checkpoints and the optimizer see)
//   grads   float gradients (accumulated across micro-batches until zero_grad)
//   lowp    the bf16 working copy the matmuls read, in bf16 precision only (nullptr in fp32),
//           refreshed from values by the optimizer's step (same pass) and by every write_value.
// Parameter i is the range [offset, offset + numel) of all three. Parameters added one after
// another are adjacent, which is how the model fuses q/k/v (and gate/up) into one GEMM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "device_memory.hpp"
#include "lyre/abi.h"
#include "model/parameter_info.hpp"

namespace lyre::cuda {

using cpu::ParameterInfo;  // offset: into values(), grads(), lowp()

class ParameterStore {
 public:
  explicit ParameterStore(Precision precision) : precision_(precision) {}

  // Before allocate(): appends a parameter right after the previous one; returns its index.
  size_t add(std::string name, LyreParamKind kind, std::vector<int64_t> shape);
  // Allocates values (zero, norms one), grads (zero) and, in bf16, the working copy.
  void allocate(cudaStream_t stream);

  Precision precision() const { return precision_; }
  size_t size() const { return infos_.size(); }
  const ParameterInfo& info(size_t i) const { return infos_.at(i); }
  const std::vector<ParameterInfo>& infos() const { return infos_; }
  // Index of the parameter with this name; throws Error(NOT_FOUND) naming it.
  size_t find(const std::string& name) const;
  size_t total_numel() const { return total_; }

  float* values() { return values_.data(); }
  float* grads() { return grads_.data(); }
  bf16* lowp() { return lowp_.data(); }  // nullptr in fp32
  float* value(size_t i) { return values_.data() + infos_.at(i).offset; }
  float* grad(size_t i) { return grads_.data() + infos_.at(i).offset; }
  // The copy the matmuls read for parameter i, as T: T = float reads values (fp32 precision),
  // T = bf16 reads lowp (bf16 precision). Asking for the other type is a logic error (throws).
  template <typename T>
  const T* compute_weight(size_t i) const;

  void zero_grads(cudaStream_t stream);
  // Host <-> device copies of one parameter (float host data of numel elements). write_value
  // refreshes the bf16 copy too. Synchronous with respect to the host buffer.
  void write_value(size_t i, const float* host, cudaStream_t stream);
  void read_value(size_t i, float* host, cudaStream_t stream);
  void write_grad(size_t i, const float* host, cudaStream_t stream);
  void read_grad(size_t i, float* host, cudaStream_t stream);
  // Re-derives the bf16 working copy of every parameter from the master weights (bf16 only).
  void refresh_lowp(cudaStream_t stream);

 private:
  Precision precision_;
  std::vector<ParameterInfo> infos_;
  size_t total_ = 0;
  DeviceBuffer<float> values_{MemoryKind::parameters};
  DeviceBuffer<float> grads_{MemoryKind::gradients};
  DeviceBuffer<bf16> lowp_{MemoryKind::parameters};
};

}  // namespace lyre::cuda
