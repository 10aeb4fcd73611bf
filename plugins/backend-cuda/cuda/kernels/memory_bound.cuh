// What the memory-bound kernels share (elementwise, embedding, rmsnorm, rope, swiglu, optimizer):
// packs of V elements moved by the widest loads their size allows (16 bytes per access), the
// float <-> T conversions, block-wide sums, and grids sized to fill the device. Private to
// kernels/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

namespace lyre::cuda::mb {

// ---- Conversions: every kernel computes in float ----
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
// Round to nearest even, as PyTorch's .to(torch.bfloat16).
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- Packs ----
// V consecutive elements of T (float or bf16), loaded and stored in words of 16, 8 or 4 bytes
// (the widest that divides V * sizeof(T)). The address must be aligned to that word: the
// launchers check that the base pointers are 16-byte aligned and that every pack starts at a
// multiple of V elements. Elements pass to and from the words as 32-bit lanes built by bit
// operations (element 2k in the low half for bf16), which keeps the accesses whole.
template <typename T, int V>
struct Pack {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>, "Pack holds float or bf16");
  static constexpr int kBytes = V * int(sizeof(T));
  static constexpr int kWord = kBytes % 16 == 0 ? 16 : kBytes % 8 == 0 ? 8 : kBytes % 4 == 0 ? 4 : 0;
  static constexpr int kLanes = kBytes / 4;

  T v[V];

  __device__ __forceinline__ static Pack load(const T* p) {
    Pack out;
    if constexpr (kWord == 0) {
#pragma unroll
      for (int k = 0; k < V; ++k) out.v[k] = p[k];
    } else {
      unsigned lanes[kLanes];
#pragma unroll
      for (int w = 0; w < kBytes / kWord; ++w) {
        if constexpr (kWord == 16) {
          const uint4 word = reinterpret_cast<const uint4*>(p)[w];
          lanes[4 * w] = word.x, lanes[4 * w + 1] = word.y, lanes[4 * w + 2] = word.z, lanes[4 * w + 3] = word.w;
        } else if constexpr (kWord == 8) {
          const uint2 word = reinterpret_cast<const uint2*>(p)[w];
          lanes[2 * w] = word.x, lanes[2 * w + 1] = word.y;
        } else {
          lanes[w] = reinterpret_cast<const unsigned*>(p)[w];
        }
      }
      out.from_lanes(lanes);
    }
    return out;
  }

  __device__ __forceinline__ void store(T* p) const {
    if constexpr (kWord == 0) {
#pragma unroll
      for (int k = 0; k < V; ++k) p[k] = v[k];
    } else {
      unsigned lanes[kLanes];
      to_lanes(lanes);
#pragma unroll
      for (int w = 0; w < kBytes / kWord; ++w) {
        if constexpr (kWord == 16) {
          reinterpret_cast<uint4*>(p)[w] = make_uint4(lanes[4 * w], lanes[4 * w + 1], lanes[4 * w + 2], lanes[4 * w + 3]);
        } else if constexpr (kWord == 8) {
          reinterpret_cast<uint2*>(p)[w] = make_uint2(lanes[2 * w], lanes[2 * w + 1]);
        } else {
          reinterpret_cast<unsigned*>(p)[w] = lanes[w];
        }
      }
    }
  }

 private:
  __device__ __forceinline__ void from_lanes(const unsigned* lanes) {
    if constexpr (std::is_same_v<T, float>) {
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = __uint_as_float(lanes[k]);
    } else {
#pragma unroll
      for (int k = 0; k < V / 2; ++k) {
        v[2 * k] = __ushort_as_bfloat16(static_cast<unsigned short>(lanes[k] & 0xffffu));
        v[2 * k + 1] = __ushort_as_bfloat16(static_cast<unsigned short>(lanes[k] >> 16));
      }
    }
  }
  __device__ __forceinline__ void to_lanes(unsigned* lanes) const {
    if constexpr (std::is_same_v<T, float>) {
#pragma unroll
      for (int k = 0; k < V; ++k) lanes[k] = __float_as_uint(v[k]);
    } else {
#pragma unroll
      for (int k = 0; k < V / 2; ++k)
        lanes[k] = unsigned(__bfloat16_as_ushort(v[2 * k])) | (unsigned(__bfloat16_as_ushort(v[2 * k + 1])) << 16);
    }
  }
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---- Reductions ----
// Butterfly sum over the 32 lanes of a full warp; every lane ends with the same bits (each step
// adds the same two values, a + b == b + a).
template <typename F>
__device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block, returned to every thread, in a fixed order (deterministic). blockDim.x must
// be a multiple of 32; every thread of the block must call it (it synchronizes). scratch: 32
// shared elements, free again when it returns.
template <typename F>
__device__ __forceinline__ F block_sum(F v, F* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x / 32) ? scratch[lane] : F(0);
  v = warp_sum(v);
  __syncthreads();
  return v;
}

// ---- Launch shapes ----
// Streaming multiprocessors of the current device (132 on an H100 SXM), asked once per device.
inline int sm_count() {
  static std::atomic<int> cached[64];  // zero: not asked yet
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 132;
  int count = cached[device].load(std::memory_order_relaxed);
  if (count == 0) {
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0)
      count = 132;
    cached[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

// Threads for a block that loops over `items` per row: a multiple of 32, at most max_threads.
inline int block_threads(int64_t items, int max_threads = 256) {
  const int64_t rounded = (std::max<int64_t>(items, 1) + 31) / 32 * 32;
  return int(std::min<int64_t>(rounded, max_threads));
}

// Blocks for a grid-stride loop over `items` work items of one thread each: no more than the work
// needs, no more than one full-occupancy wave (2048 resident threads per SM); at least 1.
inline int grid_blocks(int64_t items, int threads) {
  const int64_t needed = (std::max<int64_t>(items, 1) + threads - 1) / threads;
  const int64_t wave = int64_t(sm_count()) * (2048 / threads);
  return int(std::min(needed, wave));
}

// Blocks for a kernel whose blocks take whole rows (grid-striding over them), `threads` each.
inline int row_blocks(int64_t rows, int threads) { return grid_blocks(rows * threads, threads); }

}  // namespace lyre::cuda::mb
