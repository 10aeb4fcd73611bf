// The fused log-prob head: lm_head -> log-softmax -> gather of each row's target, chunk_rows rows
// at a time, so at most chunk_rows x V float logits exist. The GEMMs (cuBLASLt) dominate; the row
// kernels read each logit once (forward) or read it and write its gradient once (backward).
//
// Targets: the caller has checked them on the host, so every target is < 0 (no target) or in
// [0, V). A target >= V is never read past: forward gives that row NaN (logp and lse), loudly.
//
// Workspace, from its start (256-byte aligned, as device_allocate gives it):
//   logits  (chunk_rows, V) float
//   dlogits (chunk_rows, V) T, at the next 256-byte boundary; only when T is not float (for
//           float the gradient overwrites the logits in place)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "kernels.hpp"

namespace lyre::cuda {
namespace {

constexpr int64_t kLogitsBudgetBytes = int64_t(256) << 20;
constexpr int64_t kMinChunkRows = 64;
constexpr size_t kWorkspaceAlign = 256;

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Where dlogits (chunk_rows, V) T lives: after the float logits, or the logits themselves for float.
template <typename T>
T* dlogits_buffer(void* workspace, int64_t chunk_rows, int64_t V) {
  if constexpr (std::is_same_v<T, float>) {
    return static_cast<float*>(workspace);
  } else {
    const size_t offset = align_up(size_t(chunk_rows) * size_t(V) * sizeof(float), kWorkspaceAlign);
    return reinterpret_cast<T*>(static_cast<char*>(workspace) + offset);
  }
}

// ---- Row kernels: one block per row, blockDim.x a multiple of 32 ----

// The online log-sum-exp state of a set of values: its max and sum(exp(x - max)).
struct MaxSum {
  float max, sum;
};

__device__ __forceinline__ void push(MaxSum& s, float x) {
  if (x > s.max) {
    s.sum = s.sum * expf(s.max - x) + 1.0f;  // expf(-inf) = 0 for the first value
    s.max = x;
  } else {
    s.sum += expf(x - s.max);  // a NaN logit lands here and makes the sum NaN
  }
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return a;  // both empty (threads past the end of a short row)
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

__device__ __forceinline__ MaxSum warp_merge(MaxSum s) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, s.max, offset), __shfl_xor_sync(0xffffffffu, s.sum, offset)};
    s = merge(s, other);
  }
  return s;
}

// The whole block's state; valid in thread 0 only. Every thread of the block must call it.
__device__ MaxSum block_merge(MaxSum s) {
  __shared__ MaxSum per_warp[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  s = warp_merge(s);
  if (lane == 0) per_warp[warp] = s;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    s = lane < warps ? per_warp[lane] : MaxSum{-INFINITY, 0.0f};
    s = warp_merge(s);
  }
  return s;
}

// logits (rows, V) float, targets (rows) -> lse (rows), logp (rows); 0 and 0 without a target.
// kVec: V % 4 == 0 and logits 16-byte aligned, so every row can be read as float4.
template <bool kVec>
__global__ void __launch_bounds__(1024)
    row_logprob_kernel(float* __restrict__ logp, float* __restrict__ lse, const float* __restrict__ logits,
                       const int32_t* __restrict__ targets, int64_t V) {
  const int64_t r = blockIdx.x;
  const int32_t target = targets[r];
  if (target < 0) {  // the whole block leaves together, before any barrier
    if (threadIdx.x == 0) logp[r] = lse[r] = 0.0f;
    return;
  }
  const float* row = logits + r * V;
  MaxSum s{-INFINITY, 0.0f};
  if constexpr (kVec) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    for (int64_t i = threadIdx.x; i < V / 4; i += blockDim.x) {
      const float4 x = __ldcs(row4 + i);  // read once: do not keep it in L2
      push(s, x.x);
      push(s, x.y);
      push(s, x.z);
      push(s, x.w);
    }
  } else {
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) push(s, __ldcs(row + i));
  }
  s = block_merge(s);
  if (threadIdx.x == 0) {
    const float row_lse = s.max + logf(s.sum);
    lse[r] = target < V ? row_lse : NAN;
    logp[r] = target < V ? row[target] - row_lse : NAN;
  }
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T>
__device__ __forceinline__ void store4(T* p, float a, float b, float c, float d);
template <>
__device__ __forceinline__ void store4<float>(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
template <>
__device__ __forceinline__ void store4<bf16>(bf16* p, float a, float b, float c, float d) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  uint2 bits;  // one 8-byte store
  memcpy(&bits.x, &lo, sizeof(lo));
  memcpy(&bits.y, &hi, sizeof(hi));
  *reinterpret_cast<uint2*>(p) = bits;
}

// logits (rows, V) float -> dlogits (rows, V) T = dlogp[r] * (onehot(target) - exp(logits - lse[r])),
// all 0 on a row without a target. For T = float dlogits may be logits itself: every element is
// read and then written by the same thread, hence no __restrict__ on those two.
// kVec: V % 4 == 0 and both buffers aligned for 4-wide accesses.
template <typename T, bool kVec>
__global__ void __launch_bounds__(1024)
    row_dlogits_kernel(T* dlogits, const float* logits, const float* __restrict__ dlogp,
                       const float* __restrict__ lse, const int32_t* __restrict__ targets, int64_t V) {
  const int64_t r = blockIdx.x;
  const int32_t target = targets[r];
  const bool has_target = target >= 0;
  const float g = has_target ? dlogp[r] : 0.0f;
  const float row_lse = has_target ? lse[r] : 0.0f;
  const float* row = logits + r * V;
  T* out = dlogits + r * V;
  auto grad = [&](float logit, int64_t v) {
    if (!has_target) return 0.0f;
    const float d = -g * expf(logit - row_lse);
    return v == target ? d + g : d;
  };
  if constexpr (kVec) {
    for (int64_t i = threadIdx.x; i < V / 4; i += blockDim.x) {
      const float4 x = reinterpret_cast<const float4*>(row)[i];
      const int64_t v = 4 * i;
      store4<T>(out + v, grad(x.x, v), grad(x.y, v + 1), grad(x.z, v + 2), grad(x.w, v + 3));
    }
  } else {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) out[v] = from_float<T>(grad(row[v], v));
  }
}

// Threads per row: at least ~8 logits each, whole warps, 128 to 1024.
int row_threads(int64_t V) {
  const int64_t per_thread = (V + 7) / 8;
  return int(std::clamp<int64_t>((per_thread + 31) / 32 * 32, 128, 1024));
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

void check_shapes(const char* what, int64_t N, int64_t C, int64_t V, int64_t chunk_rows) {
  if (N < 0 || C < 1 || V < 1 || chunk_rows < 1 || chunk_rows > INT32_MAX)
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                        std::string("backend-cuda: ") + what + ": bad shape N=" + std::to_string(N) +
                            " C=" + std::to_string(C) + " V=" + std::to_string(V) +
                            " chunk_rows=" + std::to_string(chunk_rows) +
                            " (want N >= 0, C >= 1, V >= 1, 1 <= chunk_rows < 2^31)");
}

}  // namespace

size_t logprob_head_workspace(int64_t chunk_rows, int64_t /*C*/, int64_t V, size_t act_bytes) {
  const size_t elements = size_t(chunk_rows) * size_t(V);
  const size_t logits = align_up(elements * sizeof(float), kWorkspaceAlign);
  return act_bytes == sizeof(float) ? logits : logits + elements * act_bytes;
}

int64_t logprob_head_chunk_rows(int64_t N, int64_t V) {
  if (V < 1) throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda: vocabulary size " + std::to_string(V));
  const int64_t fit = std::max(kLogitsBudgetBytes / (V * int64_t(sizeof(float))), kMinChunkRows);
  if (N <= fit) return std::max<int64_t>(1, N);
  // The fewest chunks that fit, made equal (no short last chunk; a smaller workspace).
  const int64_t chunks = (N + fit - 1) / fit;
  return (N + chunks - 1) / chunks;
}

// xn (N, C) T, head (V, C) T, targets (N) -> logp (N) float, lse (N) float
template <typename T>
void logprob_head_forward(Gemm& gemm, float* logp, float* lse, const T* xn, const T* head, const int32_t* targets,
                          int64_t N, int64_t C, int64_t V, int64_t chunk_rows, void* workspace, cudaStream_t stream) {
  check_shapes("logprob_head_forward", N, C, V, chunk_rows);
  float* logits = static_cast<float*>(workspace);
  const int threads = row_threads(V);
  const bool vec = V % 4 == 0 && aligned(logits, 16);
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
    const int64_t m = std::min(chunk_rows, N - r0);
    gemm.matmul<T, float>(false, true, m, V, C, 1.0f, xn + r0 * C, C, head, C, 0.0f, logits, V, stream);
    if (vec)
      row_logprob_kernel<true><<<unsigned(m), threads, 0, stream>>>(logp + r0, lse + r0, logits, targets + r0, V);
    else
      row_logprob_kernel<false><<<unsigned(m), threads, 0, stream>>>(logp + r0, lse + r0, logits, targets + r0, V);
    LYRE_CUDA_CHECK_LAUNCH();
  }
}

// dlogp (N) -> dxn (N, C) T =, dhead (V, C) float += (may be nullptr)
template <typename T>
void logprob_head_backward(Gemm& gemm, T* dxn, float* dhead, const float* dlogp, const T* xn, const T* head,
                           const int32_t* targets, const float* lse, int64_t N, int64_t C, int64_t V,
                           int64_t chunk_rows, void* workspace, cudaStream_t stream) {
  check_shapes("logprob_head_backward", N, C, V, chunk_rows);
  float* logits = static_cast<float*>(workspace);
  T* dlogits = dlogits_buffer<T>(workspace, chunk_rows, V);
  const int threads = row_threads(V);
  const bool vec = V % 4 == 0 && aligned(logits, 16) && aligned(dlogits, 4 * sizeof(T));
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
    const int64_t m = std::min(chunk_rows, N - r0);
    const T* xn_chunk = xn + r0 * C;
    gemm.matmul<T, float>(false, true, m, V, C, 1.0f, xn_chunk, C, head, C, 0.0f, logits, V, stream);
    if (vec)
      row_dlogits_kernel<T, true>
          <<<unsigned(m), threads, 0, stream>>>(dlogits, logits, dlogp + r0, lse + r0, targets + r0, V);
    else
      row_dlogits_kernel<T, false>
          <<<unsigned(m), threads, 0, stream>>>(dlogits, logits, dlogp + r0, lse + r0, targets + r0, V);
    LYRE_CUDA_CHECK_LAUNCH();
    // dxn_chunk (m, C) = dlogits (m, V) . head (V, C)
    gemm.matmul<T, T>(false, false, m, C, V, 1.0f, dlogits, V, head, C, 0.0f, dxn + r0 * C, C, stream);
    // dhead (V, C) += dlogits^T (V, m) . xn_chunk (m, C)
    if (dhead != nullptr)
      gemm.matmul<T, float>(true, false, V, C, m, 1.0f, dlogits, V, xn_chunk, C, 1.0f, dhead, C, stream);
  }
}

// xn (rows, C) T, head (V, C) T -> logits (rows, V) float
template <typename T>
void head_logits(Gemm& gemm, float* logits, const T* xn, const T* head, int64_t rows, int64_t C, int64_t V,
                 cudaStream_t stream) {
  gemm.matmul<T, float>(false, true, rows, V, C, 1.0f, xn, C, head, C, 0.0f, logits, V, stream);
}

#define LYRE_INSTANTIATE(T)                                                                                       \
  template void logprob_head_forward<T>(Gemm&, float*, float*, const T*, const T*, const int32_t*, int64_t,      \
                                        int64_t, int64_t, int64_t, void*, cudaStream_t);                        \
  template void logprob_head_backward<T>(Gemm&, T*, float*, const float*, const T*, const T*, const int32_t*,    \
                                         const float*, int64_t, int64_t, int64_t, int64_t, void*, cudaStream_t); \
  template void head_logits<T>(Gemm&, float*, const T*, const T*, int64_t, int64_t, int64_t, cudaStream_t);
LYRE_INSTANTIATE(float)
LYRE_INSTANTIATE(bf16)
#undef LYRE_INSTANTIATE

}  // namespace lyre::cuda
