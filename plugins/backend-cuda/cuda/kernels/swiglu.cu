// SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g), in float whatever T is. The grid's x
// covers a row's packs of V columns, its y strides over the rows (at most 65535 of them at once).
#include <algorithm>

#include "kernels.hpp"
#include "memory_bound.cuh"

namespace lyre::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// gu (N, 2F): gate [0, F), up [F, 2F) -> out (N, F). V > 1 needs F % V == 0, aligned bases.
template <int V, typename T>
__global__ void swiglu_forward_kernel(T* __restrict__ out, const T* __restrict__ gu, int64_t N, int64_t F) {
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= F) return;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const auto g = mb::Pack<T, V>::load(gu + n * 2 * F + c);
    const auto u = mb::Pack<T, V>::load(gu + n * 2 * F + F + c);
    mb::Pack<T, V> o;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float gk = mb::to_float(g.v[k]);
      o.v[k] = mb::from_float<T>(gk * sigmoid(gk) * mb::to_float(u.v[k]));
    }
    o.store(out + n * F + c);
  }
}

// dout (N, F) -> dgu (N, 2F): dgate = dout * up * s * (1 + g * (1 - s)), dup = dout * g * s,
// s = sigmoid(g).
template <int V, typename T>
__global__ void swiglu_backward_kernel(T* __restrict__ dgu, const T* __restrict__ dout, const T* __restrict__ gu,
                                       int64_t N, int64_t F) {
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= F) return;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const auto g = mb::Pack<T, V>::load(gu + n * 2 * F + c);
    const auto u = mb::Pack<T, V>::load(gu + n * 2 * F + F + c);
    const auto d = mb::Pack<T, V>::load(dout + n * F + c);
    mb::Pack<T, V> dg, du;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float gk = mb::to_float(g.v[k]), uk = mb::to_float(u.v[k]), dk = mb::to_float(d.v[k]);
      const float s = sigmoid(gk);
      du.v[k] = mb::from_float<T>(dk * gk * s);
      dg.v[k] = mb::from_float<T>(dk * uk * s * (1.0f + gk * (1.0f - s)));
    }
    dg.store(dgu + n * 2 * F + c);
    du.store(dgu + n * 2 * F + F + c);
  }
}

// x blocks cover the packs of a row; y blocks (rows at once) fill one resident wave.
dim3 swiglu_grid(int64_t N, int64_t packs_per_row) {
  const int64_t x = (packs_per_row + kThreads - 1) / kThreads;
  const int64_t wave = int64_t(mb::sm_count()) * (2048 / kThreads);
  const int64_t y = std::clamp<int64_t>(wave / x, 1, std::min<int64_t>(N, 65535));
  return dim3(unsigned(x), unsigned(y));
}

template <typename T>
bool packable(int64_t F, const T* a, const T* b) {
  return F % (16 / sizeof(T)) == 0 && mb::aligned16(a) && mb::aligned16(b);
}

}  // namespace

template <typename T>
void swiglu_forward(T* out, const T* gu, int64_t N, int64_t F, cudaStream_t stream) {
  if (N <= 0 || F <= 0) return;
  constexpr int V = 16 / sizeof(T);
  if (packable(F, out, gu))
    swiglu_forward_kernel<V><<<swiglu_grid(N, F / V), kThreads, 0, stream>>>(out, gu, N, F);
  else
    swiglu_forward_kernel<1><<<swiglu_grid(N, F), kThreads, 0, stream>>>(out, gu, N, F);
  LYRE_CUDA_CHECK_LAUNCH();
}

template <typename T>
void swiglu_backward(T* dgu, const T* dout, const T* gu, int64_t N, int64_t F, cudaStream_t stream) {
  if (N <= 0 || F <= 0) return;
  constexpr int V = 16 / sizeof(T);
  if (packable(F, dgu, dout) && mb::aligned16(gu))
    swiglu_backward_kernel<V><<<swiglu_grid(N, F / V), kThreads, 0, stream>>>(dgu, dout, gu, N, F);
  else
    swiglu_backward_kernel<1><<<swiglu_grid(N, F), kThreads, 0, stream>>>(dgu, dout, gu, N, F);
  LYRE_CUDA_CHECK_LAUNCH();
}

template void swiglu_forward<float>(float*, const float*, int64_t, int64_t, cudaStream_t);
template void swiglu_forward<bf16>(bf16*, const bf16*, int64_t, int64_t, cudaStream_t);
template void swiglu_backward<float>(float*, const float*, const float*, int64_t, int64_t, cudaStream_t);
template void swiglu_backward<bf16>(bf16*, const bf16*, const bf16*, int64_t, int64_t, cudaStream_t);

}  // namespace lyre::cuda
