// RMSNorm, fused with the residual add forward: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
// A block takes whole rows (grid-striding over them) and makes two passes over each: the row sum
// (float, block-wide, fixed order), then the outputs. The second pass re-reads what the first
// read or wrote, from L1/L2: a row is at most a few tens of KB. Each thread touches the same
// columns in both passes, so x_out may alias x_in and the re-read needs no barrier.
#include <algorithm>
#include <string>

#include "kernels.hpp"
#include "memory_bound.cuh"

namespace lyre::cuda {
namespace {

// 8 floats (two 16-byte accesses) or 8 bf16 (one) per pack.
constexpr int kPack = 8;

template <typename T>
bool packable(int64_t C, const T* p) {
  return C % kPack == 0 && (p == nullptr || mb::aligned16(p));
}

// x_in, delta (N, C) -> x_out (N, C) = x_in + delta, rstd (N), norm_out (N, C) T.
template <int V, typename T>
__global__ void residual_rmsnorm_forward_kernel(float* x_out, T* __restrict__ norm_out, float* __restrict__ rstd,
                                                const float* x_in, const T* __restrict__ delta,
                                                const float* __restrict__ weight, int64_t N, int64_t C, float eps) {
  __shared__ float scratch[32];
  const int64_t first = int64_t(threadIdx.x) * V, step = int64_t(blockDim.x) * V;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    float* xo = x_out + n * C;
    const float* xi = x_in + n * C;
    float ss = 0.0f;
    for (int64_t c = first; c < C; c += step) {
      auto x = mb::Pack<float, V>::load(xi + c);
      if (delta != nullptr) {
        const auto d = mb::Pack<T, V>::load(delta + n * C + c);
#pragma unroll
        for (int k = 0; k < V; ++k) x.v[k] += mb::to_float(d.v[k]);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) ss += x.v[k] * x.v[k];
      x.store(xo + c);
    }
    ss = mb::block_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / float(C) + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    T* y = norm_out + n * C;
    for (int64_t c = first; c < C; c += step) {
      const auto x = mb::Pack<float, V>::load(xo + c);
      const auto w = mb::Pack<float, V>::load(weight + c);
      mb::Pack<T, V> out;
#pragma unroll
      for (int k = 0; k < V; ++k) out.v[k] = mb::from_float<T>(x.v[k] * r * w.v[k]);
      out.store(y + c);
    }
  }
}

// dout (N, C) T -> dx (N, C) +=, dweight (C) += sum over rows of dout * x * rstd.
// dx = rstd * w * dout - x * rstd^3 / C * sum(w * dout * x).
// dweight: each block sums its rows into C floats of shared memory (every thread only its own
// columns), then adds them with one atomic per column.
template <int V, typename T>
__global__ void rmsnorm_backward_kernel(float* dx, float* dweight, const T* __restrict__ dout,
                                       const float* __restrict__ x, const float* __restrict__ weight,
                                       const float* __restrict__ rstd, int64_t N, int64_t C) {
  extern __shared__ __align__(16) float dweight_partial[];  // (C) when dweight != nullptr
  __shared__ float scratch[32];
  const bool with_dweight = dweight != nullptr;
  const int64_t first = int64_t(threadIdx.x) * V, step = int64_t(blockDim.x) * V;
  if (with_dweight)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dweight_partial[c] = 0.0f;
  __syncthreads();
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float r = rstd[n];
    const T* g_row = dout + n * C;
    const float* x_row = x + n * C;
    float* dx_row = dx + n * C;
    float s = 0.0f;
    for (int64_t c = first; c < C; c += step) {
      const auto g = mb::Pack<T, V>::load(g_row + c);
      const auto xv = mb::Pack<float, V>::load(x_row + c);
      const auto w = mb::Pack<float, V>::load(weight + c);
#pragma unroll
      for (int k = 0; k < V; ++k) s += w.v[k] * mb::to_float(g.v[k]) * xv.v[k];
    }
    s = mb::block_sum(s, scratch);
    const float coef = s * r * r * r / float(C);
    for (int64_t c = first; c < C; c += step) {
      const auto g = mb::Pack<T, V>::load(g_row + c);
      const auto xv = mb::Pack<float, V>::load(x_row + c);
      const auto w = mb::Pack<float, V>::load(weight + c);
      auto d = mb::Pack<float, V>::load(dx_row + c);
#pragma unroll
      for (int k = 0; k < V; ++k) d.v[k] += r * w.v[k] * mb::to_float(g.v[k]) - coef * xv.v[k];
      d.store(dx_row + c);
      if (with_dweight) {
        auto p = mb::Pack<float, V>::load(dweight_partial + c);
#pragma unroll
        for (int k = 0; k < V; ++k) p.v[k] += mb::to_float(g.v[k]) * xv.v[k] * r;
        p.store(dweight_partial + c);
      }
    }
  }
  if (with_dweight) {
    __syncthreads();
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dweight + c, dweight_partial[c]);
  }
}

template <int V, typename T>
void launch_rmsnorm_backward(float* dx, float* dweight, const T* dout, const float* x, const float* weight,
                             const float* rstd, int64_t N, int64_t C, cudaStream_t stream) {
  const auto kernel = rmsnorm_backward_kernel<V, T>;
  const int threads = mb::block_threads((C + V - 1) / V);
  const size_t shared = dweight != nullptr ? size_t(C) * sizeof(float) : 0;
  if (shared > 48 * 1024) {
    int device = 0, limit = 0;
    LYRE_CUDA_CHECK(cudaGetDevice(&device));
    LYRE_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (shared > size_t(limit))
      throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                          "rmsnorm_backward: hidden size " + std::to_string(C) + " needs " + std::to_string(shared) +
                              " bytes of shared memory for the weight gradient; this GPU has " +
                              std::to_string(limit) + " per block");
    LYRE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
  }
  // One resident wave: more blocks would only add atomics on dweight.
  int per_sm = 0;
  LYRE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared));
  const int blocks = int(std::min<int64_t>(N, int64_t(mb::sm_count()) * std::max(per_sm, 1)));
  kernel<<<blocks, threads, shared, stream>>>(dx, dweight, dout, x, weight, rstd, N, C);
  LYRE_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void residual_rmsnorm_forward(float* x_out, T* norm_out, float* rstd, const float* x_in, const T* delta,
                              const float* weight, int64_t N, int64_t C, float eps, cudaStream_t stream) {
  if (N <= 0 || C <= 0) return;
  if (packable(C, x_out) && packable(C, norm_out) && packable(C, x_in) && packable(C, delta) &&
      packable(C, weight)) {
    const int threads = mb::block_threads(C / kPack);
    residual_rmsnorm_forward_kernel<kPack><<<mb::row_blocks(N, threads), threads, 0, stream>>>(
        x_out, norm_out, rstd, x_in, delta, weight, N, C, eps);
  } else {
    const int threads = mb::block_threads(C);
    residual_rmsnorm_forward_kernel<1><<<mb::row_blocks(N, threads), threads, 0, stream>>>(
        x_out, norm_out, rstd, x_in, delta, weight, N, C, eps);
  }
  LYRE_CUDA_CHECK_LAUNCH();
}

template <typename T>
void rmsnorm_backward(float* dx, float* dweight, const T* dout, const float* x, const float* weight,
                      const float* rstd, int64_t N, int64_t C, cudaStream_t stream) {
  if (N <= 0 || C <= 0) return;
  if (packable(C, dx) && packable(C, dweight) && packable(C, dout) && packable(C, x) && packable(C, weight))
    launch_rmsnorm_backward<kPack>(dx, dweight, dout, x, weight, rstd, N, C, stream);
  else
    launch_rmsnorm_backward<1>(dx, dweight, dout, x, weight, rstd, N, C, stream);
}

template void residual_rmsnorm_forward<float>(float*, float*, float*, const float*, const float*, const float*,
                                              int64_t, int64_t, float, cudaStream_t);
template void residual_rmsnorm_forward<bf16>(float*, bf16*, float*, const float*, const bf16*, const float*,
                                             int64_t, int64_t, float, cudaStream_t);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*,
                                      int64_t, int64_t, cudaStream_t);
template void rmsnorm_backward<bf16>(float*, float*, const bf16*, const float*, const float*, const float*,
                                     int64_t, int64_t, cudaStream_t);

}  // namespace lyre::cuda
