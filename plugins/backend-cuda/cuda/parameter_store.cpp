#include "parameter_store.hpp"

#include <type_traits>
#include <vector>

#include "kernels.hpp"

namespace lyre::cuda {

size_t ParameterStore::add(std::string name, LyreParamKind kind, std::vector<int64_t> shape) {
  if (values_.data() != nullptr)
    throw plugin::Error(LYRE_ERROR_INTERNAL, "backend-cuda: parameter " + name + " added after allocate()");
  const size_t index = cpu::append_parameter(infos_, std::move(name), kind, std::move(shape));
  total_ += infos_[index].numel;
  return index;
}

void ParameterStore::allocate(cudaStream_t stream) {
  if (total_ == 0) return;
  values_.reserve(total_);
  grads_.reserve(total_);
  LYRE_CUDA_CHECK(cudaMemsetAsync(values_.data(), 0, total_ * sizeof(float), stream));
  LYRE_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, total_ * sizeof(float), stream));
  // Norm scales start at one; there are few of them (2L+1 vectors of d), so the ones come from
  // the host rather than from a fill kernel.
  std::vector<float> ones;
  for (const ParameterInfo& p : infos_) {
    if (p.kind != LYRE_PARAM_NORM || p.numel == 0) continue;
    ones.assign(p.numel, 1.0f);
    LYRE_CUDA_CHECK(cudaMemcpyAsync(values_.data() + p.offset, ones.data(), p.numel * sizeof(float),
                                    cudaMemcpyHostToDevice, stream));
    LYRE_CUDA_CHECK(cudaStreamSynchronize(stream));  // `ones` is reused for the next norm
  }
  if (precision_ == Precision::bf16) {
    lowp_.reserve(total_);
    refresh_lowp(stream);
  }
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

size_t ParameterStore::find(const std::string& name) const {
  for (size_t i = 0; i < infos_.size(); ++i)
    if (infos_[i].name == name) return i;
  throw plugin::Error(LYRE_ERROR_NOT_FOUND, "backend-cuda: no parameter named " + name);
}

template <typename T>
const T* ParameterStore::compute_weight(size_t i) const {
  const ParameterInfo& p = infos_.at(i);
  if constexpr (std::is_same_v<T, float>) {
    if (precision_ != Precision::fp32)
      throw plugin::Error(LYRE_ERROR_INTERNAL, "backend-cuda: fp32 weights asked of a bf16 model (" + p.name + ")");
    return values_.data() + p.offset;
  } else {
    static_assert(std::is_same_v<T, bf16>, "compute weights are float or bf16");
    if (precision_ != Precision::bf16)
      throw plugin::Error(LYRE_ERROR_INTERNAL, "backend-cuda: bf16 weights asked of an fp32 model (" + p.name + ")");
    return lowp_.data() + p.offset;
  }
}

template const float* ParameterStore::compute_weight<float>(size_t) const;
template const bf16* ParameterStore::compute_weight<bf16>(size_t) const;

void ParameterStore::zero_grads(cudaStream_t stream) {
  if (total_ > 0) LYRE_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, total_ * sizeof(float), stream));
}

// Host buffers here are the caller's pageable memory: each copy is waited for before returning,
// so the caller may reuse or free the buffer at once.
void ParameterStore::write_value(size_t i, const float* host, cudaStream_t stream) {
  const ParameterInfo& p = infos_.at(i);
  if (p.numel == 0) return;
  LYRE_CUDA_CHECK(cudaMemcpyAsync(values_.data() + p.offset, host, p.numel * sizeof(float),
                                  cudaMemcpyHostToDevice, stream));
  if (precision_ == Precision::bf16)
    cast_from_float<bf16>(lowp_.data() + p.offset, values_.data() + p.offset, static_cast<int64_t>(p.numel), stream);
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void ParameterStore::read_value(size_t i, float* host, cudaStream_t stream) {
  const ParameterInfo& p = infos_.at(i);
  if (p.numel == 0) return;
  LYRE_CUDA_CHECK(cudaMemcpyAsync(host, values_.data() + p.offset, p.numel * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void ParameterStore::write_grad(size_t i, const float* host, cudaStream_t stream) {
  const ParameterInfo& p = infos_.at(i);
  if (p.numel == 0) return;
  LYRE_CUDA_CHECK(cudaMemcpyAsync(grads_.data() + p.offset, host, p.numel * sizeof(float),
                                  cudaMemcpyHostToDevice, stream));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void ParameterStore::read_grad(size_t i, float* host, cudaStream_t stream) {
  const ParameterInfo& p = infos_.at(i);
  if (p.numel == 0) return;
  LYRE_CUDA_CHECK(cudaMemcpyAsync(host, grads_.data() + p.offset, p.numel * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void ParameterStore::refresh_lowp(cudaStream_t stream) {
  if (precision_ != Precision::bf16 || total_ == 0) return;
  cast_from_float<bf16>(lowp_.data(), values_.data(), static_cast<int64_t>(total_), stream);
}

}  // namespace lyre::cuda
