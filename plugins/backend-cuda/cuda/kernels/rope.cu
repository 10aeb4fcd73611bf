// Rotary position embedding in Hugging Face's rotate_half layout, in place on the query and key
// heads of the fused qkv rows: pair i of a head is (x[i], x[i + D/2]), rotated by the angle of
// row n's position. Block n takes row n (one position, one table row); its threads take packs of
// V pairs across the Hq + Hkv heads. (With a grid-stride loop over rows around the loop over
// packs, nvcc 13 splits the 16-byte stores into 4-byte ones; one row per block keeps them whole.)
#include <climits>
#include <string>

#include "kernels.hpp"
#include "memory_bound.cuh"

namespace lyre::cuda {
namespace {

// Sign = 1 rotates by +angle (forward), -1 by -angle (backward: a rotation's transpose is its
// inverse): (a, b) -> (a cos - b s, b cos + a s) with s = Sign * sin.
// V > 1 needs (D/2) % V == 0 and 16-byte aligned qkv, cos, sin.
template <int Sign, int V, typename T>
__global__ void rope_kernel(T* __restrict__ qkv, const int32_t* __restrict__ positions, const float* __restrict__ cos,
                            const float* __restrict__ sin, int heads, int64_t D, int64_t row_stride) {
  const int half = int(D / 2);
  const int packs_per_head = half / V;
  const int items = heads * packs_per_head;
  const int64_t n = blockIdx.x;
  const int64_t table_row = int64_t(positions[n]) * half;
  T* row = qkv + n * row_stride;
  for (int j = threadIdx.x; j < items; j += blockDim.x) {
    const int h = j / packs_per_head;
    const int i = (j - h * packs_per_head) * V;
    T* a_ptr = row + h * D + i;
    T* b_ptr = a_ptr + half;
    const auto a = mb::Pack<T, V>::load(a_ptr);
    const auto b = mb::Pack<T, V>::load(b_ptr);
    const auto c = mb::Pack<float, V>::load(cos + table_row + i);
    const auto s = mb::Pack<float, V>::load(sin + table_row + i);
    mb::Pack<T, V> a_out, b_out;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float ak = mb::to_float(a.v[k]), bk = mb::to_float(b.v[k]), sk = Sign * s.v[k];
      a_out.v[k] = mb::from_float<T>(ak * c.v[k] - bk * sk);
      b_out.v[k] = mb::from_float<T>(bk * c.v[k] + ak * sk);
    }
    a_out.store(a_ptr);
    b_out.store(b_ptr);
  }
}

template <int Sign, typename T>
void rope(T* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int64_t Hq,
          int64_t Hkv, int64_t D, cudaStream_t stream) {
  const int64_t half = D / 2;
  if (N <= 0 || half <= 0 || Hq + Hkv <= 0) return;
  if (N > INT_MAX)
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "rope: " + std::to_string(N) + " rows are more than a grid holds");
  const int heads = int(Hq + Hkv);
  const int64_t row_stride = (Hq + 2 * Hkv) * D;
  constexpr int V = 16 / sizeof(T);  // 16 bytes of T per access
  if (D % 2 == 0 && half % V == 0 && mb::aligned16(qkv) && mb::aligned16(cos) && mb::aligned16(sin)) {
    const int threads = mb::block_threads(heads * (half / V));
    rope_kernel<Sign, V><<<unsigned(N), threads, 0, stream>>>(qkv, positions, cos, sin, heads, D, row_stride);
  } else {
    const int threads = mb::block_threads(heads * half);
    rope_kernel<Sign, 1><<<unsigned(N), threads, 0, stream>>>(qkv, positions, cos, sin, heads, D, row_stride);
  }
  LYRE_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void rope_forward(T* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int64_t Hq,
                  int64_t Hkv, int64_t D, cudaStream_t stream) {
  rope<1>(qkv, positions, cos, sin, N, Hq, Hkv, D, stream);
}

template <typename T>
void rope_backward(T* dqkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int64_t Hq,
                   int64_t Hkv, int64_t D, cudaStream_t stream) {
  rope<-1>(dqkv, positions, cos, sin, N, Hq, Hkv, D, stream);
}

template void rope_forward<float>(float*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t,
                                  int64_t, cudaStream_t);
template void rope_forward<bf16>(bf16*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t,
                                 int64_t, cudaStream_t);
template void rope_backward<float>(float*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t,
                                   int64_t, cudaStream_t);
template void rope_backward<bf16>(bf16*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t,
                                  int64_t, cudaStream_t);

}  // namespace lyre::cuda
