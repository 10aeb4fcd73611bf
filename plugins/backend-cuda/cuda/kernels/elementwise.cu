// Casts and adds over flat arrays. Grid-stride loops over packs of 16-byte accesses where both
// pointers are 16-byte aligned, element by element where they are not (a range of a flat buffer
// may start anywhere); the last n % V elements always go element by element.
#include <type_traits>

#include "kernels.hpp"
#include "memory_bound.cuh"

namespace lyre::cuda {
namespace {

constexpr int kThreads = 256;

// in (n) TIn -> out (n) TOut. packed: both pointers 16-byte aligned.
template <int V, typename TOut, typename TIn>
__global__ void convert_kernel(TOut* __restrict__ out, const TIn* __restrict__ in, int64_t n, bool packed) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t packs = packed ? n / V : 0;
  for (int64_t i = first; i < packs; i += stride) {
    const auto x = mb::Pack<TIn, V>::load(in + i * V);
    mb::Pack<TOut, V> y;
#pragma unroll
    for (int k = 0; k < V; ++k) y.v[k] = mb::from_float<TOut>(mb::to_float(x.v[k]));
    y.store(out + i * V);
  }
  for (int64_t i = packs * V + first; i < n; i += stride) out[i] = mb::from_float<TOut>(mb::to_float(in[i]));
}

// out (n) += in (n)
template <int V>
__global__ void add_inplace_kernel(float* __restrict__ out, const float* __restrict__ in, int64_t n, bool packed) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t packs = packed ? n / V : 0;
  for (int64_t i = first; i < packs; i += stride) {
    auto y = mb::Pack<float, V>::load(out + i * V);
    const auto x = mb::Pack<float, V>::load(in + i * V);
#pragma unroll
    for (int k = 0; k < V; ++k) y.v[k] += x.v[k];
    y.store(out + i * V);
  }
  for (int64_t i = packs * V + first; i < n; i += stride) out[i] += in[i];
}

// in (n) TIn -> out (n) TOut; float to float is a plain copy.
template <typename TOut, typename TIn>
void convert(TOut* out, const TIn* in, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<TOut, TIn>) {
    if (out != in)
      LYRE_CUDA_CHECK(cudaMemcpyAsync(out, in, size_t(n) * sizeof(TIn), cudaMemcpyDeviceToDevice, stream));
  } else {
    // 8 elements: 16 bytes of bf16 on one side, 32 bytes of float on the other.
    constexpr int V = 8;
    const bool packed = mb::aligned16(out) && mb::aligned16(in);
    const int blocks = mb::grid_blocks(packed ? (n + V - 1) / V : n, kThreads);
    convert_kernel<V><<<blocks, kThreads, 0, stream>>>(out, in, n, packed);
    LYRE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

template <typename T>
void cast_from_float(T* out, const float* in, int64_t n, cudaStream_t stream) {
  convert(out, in, n, stream);
}

template <typename T>
void cast_to_float(float* out, const T* in, int64_t n, cudaStream_t stream) {
  convert(out, in, n, stream);
}

void add_inplace(float* out, const float* in, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int V = 4;
  const bool packed = mb::aligned16(out) && mb::aligned16(in);
  const int blocks = mb::grid_blocks(packed ? (n + V - 1) / V : n, kThreads);
  add_inplace_kernel<V><<<blocks, kThreads, 0, stream>>>(out, in, n, packed);
  LYRE_CUDA_CHECK_LAUNCH();
}

template void cast_from_float<float>(float*, const float*, int64_t, cudaStream_t);
template void cast_from_float<bf16>(bf16*, const float*, int64_t, cudaStream_t);
template void cast_to_float<float>(float*, const float*, int64_t, cudaStream_t);
template void cast_to_float<bf16>(float*, const bf16*, int64_t, cudaStream_t);

}  // namespace lyre::cuda
