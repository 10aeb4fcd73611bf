// Token embedding: a gather of table rows forward, a scatter-add of gradient rows backward (float
// atomics: repeated tokens add into the same row, in no fixed order). A block handles whole rows,
// grid-striding over them; its threads stride over the columns in packs of V.
#include "kernels.hpp"
#include "memory_bound.cuh"

namespace lyre::cuda {
namespace {

// tokens (N), table (vocab, C) T -> out (N, C) float, V columns per pack: V > 1 needs C % V == 0
// and 16-byte aligned bases.
template <int V, typename T>
__global__ void embedding_forward_kernel(float* __restrict__ out, const int32_t* __restrict__ tokens,
                                         const T* __restrict__ table, int64_t N, int64_t C) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* src = table + int64_t(tokens[n]) * C;
    float* dst = out + n * C;
    for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V) {
      const auto x = mb::Pack<T, V>::load(src + c);
      mb::Pack<float, V> y;
#pragma unroll
      for (int k = 0; k < V; ++k) y.v[k] = mb::to_float(x.v[k]);
      y.store(dst + c);
    }
  }
}

// dout (N, C) -> dtable (vocab, C) +=. V is 4 (one float4 atomic on sm_90) or 1.
template <int V>
__global__ void embedding_backward_kernel(float* dtable, const float* __restrict__ dout,
                                          const int32_t* __restrict__ tokens, int64_t N, int64_t C) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kVectorAtomic = V == 4;  // atomicAdd(float4*) exists from sm_90 on
#else
  constexpr bool kVectorAtomic = false;
#endif
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    float* dst = dtable + int64_t(tokens[n]) * C;
    const float* src = dout + n * C;
    for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V) {
      const auto g = mb::Pack<float, V>::load(src + c);
      if constexpr (kVectorAtomic) {
        atomicAdd(reinterpret_cast<float4*>(dst + c), make_float4(g.v[0], g.v[1], g.v[2], g.v[3]));
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) atomicAdd(dst + c + k, g.v[k]);
      }
    }
  }
}

}  // namespace

template <typename T>
void embedding_forward(float* out, const int32_t* tokens, const T* table, int64_t N, int64_t C,
                       cudaStream_t stream) {
  if (N <= 0 || C <= 0) return;
  constexpr int V = 8;  // 16 bytes of bf16 (32 of float) per load
  if (C % V == 0 && mb::aligned16(out) && mb::aligned16(table)) {
    const int threads = mb::block_threads(C / V);
    embedding_forward_kernel<V><<<mb::row_blocks(N, threads), threads, 0, stream>>>(out, tokens, table, N, C);
  } else {
    const int threads = mb::block_threads(C);
    embedding_forward_kernel<1><<<mb::row_blocks(N, threads), threads, 0, stream>>>(out, tokens, table, N, C);
  }
  LYRE_CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t C,
                        cudaStream_t stream) {
  if (N <= 0 || C <= 0) return;
  constexpr int V = 4;
  if (C % V == 0 && mb::aligned16(dtable) && mb::aligned16(dout)) {
    const int threads = mb::block_threads(C / V);
    embedding_backward_kernel<V><<<mb::row_blocks(N, threads), threads, 0, stream>>>(dtable, dout, tokens, N, C);
  } else {
    const int threads = mb::block_threads(C);
    embedding_backward_kernel<1><<<mb::row_blocks(N, threads), threads, 0, stream>>>(dtable, dout, tokens, N, C);
  }
  LYRE_CUDA_CHECK_LAUNCH();
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t, cudaStream_t);
template void embedding_forward<bf16>(float*, const int32_t*, const bf16*, int64_t, int64_t, cudaStream_t);

}  // namespace lyre::cuda
