// Grouped-query causal attention with document masking, flash-attention style (FlashAttention-2):
// forward runs an online softmax over tiles of keys and keeps only each query's log-sum-exp;
// backward recomputes the probabilities tile by tile from it. No (T, T) matrix exists in device
// memory. Also the KV cache of generate: append, and one-query decode attention.
//
// Two implementations of forward and backward:
//  - tensor cores (bf16, D = 64 or 128): mma.sync m16n8k16 bf16 with fp32 accumulation for
//    Q.K^T, P.V and the four backward products; scores, softmax, exp and lse in fp32.
//  - simple (float and bf16, any even D <= 256): tiles staged in shared memory as float, fp32
//    FMA throughout; true fp32 for the fp32 mode, and the bf16 path the fast one is checked
//    against. LYRE_CUDA_ATTENTION=simple forces it for bf16 too.
//
// Masking skips whole tiles cheaply: a block first scans the segment ids for the range of keys
// (forward) or queries (backward) that can be visible at all, which is exact for the usual
// packing (contiguous documents, padding at the end) and conservative otherwise; inside that
// range each score is masked by j <= i and equal segment ids, and a tile wholly below the
// diagonal inside one segment skips the per-score test.
//
// Backward: one block per (key tile, query head, row). Its dK, dV partial sums live in registers
// over all query tiles, then go by float atomics into an fp32 accumulator of the dqkv layout;
// dQ is added per (query tile, key tile) by float atomics into the same accumulator (as in
// FlashAttention-2). So dqkv is not bit-reproducible run to run (summation order of atomics).
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "kernels.hpp"

namespace lyre::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- Small device helpers ----

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Two consecutive elements (the first at an even index, so the pair is aligned) as float.
__device__ __forceinline__ float2 load2(const float* p) { return *reinterpret_cast<const float2*>(p); }
__device__ __forceinline__ float2 load2(const bf16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}
__device__ __forceinline__ void store2(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}

// p[0] += a, p[1] += b (p 8-byte aligned).
__device__ __forceinline__ void atomic_add2(float* p, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}

// One dynamic shared memory base for every kernel of this file.
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char lyre_attention_smem[];
  return lyre_attention_smem;
}

// ---- Which tiles can hold a visible score at all ----
// The segment ids of a block of queries [i0, i_end) span [lo, hi]; no key before the first key
// of the row whose id lies in [lo, hi] is visible to any of them. Called by every thread of the
// block (it synchronizes); seg is the row's segment ids.
struct VisibleKeys {
  int first_key;
  int seg_lo, seg_hi;
};

constexpr int kScanPerThread = 8;  // segment ids each thread reads per step of a scan

template <int kThreads>
__device__ VisibleKeys scan_visible_keys(const int32_t* seg, int i0, int i_end) {
  __shared__ int s_lo, s_hi, s_first;
  if (threadIdx.x == 0) {
    s_lo = INT_MAX;
    s_hi = INT_MIN;
    s_first = i0;  // query i0 sees itself
  }
  __syncthreads();
  int lo = INT_MAX, hi = INT_MIN;
  for (int i = i0 + int(threadIdx.x); i < i_end; i += kThreads) {
    lo = min(lo, seg[i]);
    hi = max(hi, seg[i]);
  }
  if (lo <= hi) {
    atomicMin(&s_lo, lo);
    atomicMax(&s_hi, hi);
  }
  __syncthreads();
  lo = s_lo;
  hi = s_hi;
  // From the start of the row, a few ids per thread per step, until a step finds one in range.
  for (int base = 0; base < i0; base += kThreads * kScanPerThread) {
    int found = INT_MAX;
#pragma unroll
    for (int k = 0; k < kScanPerThread; ++k) {
      const int j = base + k * kThreads + int(threadIdx.x);
      if (j < i0) {
        const int s = seg[j];
        if (s >= lo && s <= hi) found = min(found, j);
      }
    }
    if (__syncthreads_or(found != INT_MAX)) {  // the same answer in every thread: a uniform break
      if (found != INT_MAX) atomicMin(&s_first, found);
      break;
    }
  }
  __syncthreads();
  return {s_first, lo, hi};
}

// The mirror image for backward: the keys [j0, j_end) span segment ids [lo, hi]; no query after
// the last query of the row whose id lies in [lo, hi] sees any of them.
struct VisibleQueries {
  int last_query;
  int seg_lo, seg_hi;
};

template <int kThreads>
__device__ VisibleQueries scan_visible_queries(const int32_t* seg, int j0, int j_end, int Tlen) {
  __shared__ int s_lo, s_hi, s_last;
  if (threadIdx.x == 0) {
    s_lo = INT_MAX;
    s_hi = INT_MIN;
    s_last = j_end - 1;  // key j_end - 1 is seen by itself as a query
  }
  __syncthreads();
  int lo = INT_MAX, hi = INT_MIN;
  for (int j = j0 + int(threadIdx.x); j < j_end; j += kThreads) {
    lo = min(lo, seg[j]);
    hi = max(hi, seg[j]);
  }
  if (lo <= hi) {
    atomicMin(&s_lo, lo);
    atomicMax(&s_hi, hi);
  }
  __syncthreads();
  lo = s_lo;
  hi = s_hi;
  // From the end of the row backwards, until a step finds one in range.
  for (int top = Tlen; top > j_end; top -= kThreads * kScanPerThread) {
    int found = -1;
#pragma unroll
    for (int k = 0; k < kScanPerThread; ++k) {
      const int i = top - 1 - (k * kThreads + int(threadIdx.x));
      if (i >= j_end) {
        const int s = seg[i];
        if (s >= lo && s <= hi) found = max(found, i);
      }
    }
    if (__syncthreads_or(found >= 0)) {
      if (found >= 0) atomicMax(&s_last, found);
      break;
    }
  }
  __syncthreads();
  return {s_last, lo, hi};
}

// ---- Simple kernels: float tiles in shared memory, fp32 FMA ----
// Tiles of 32 queries x 32 keys, 256 threads: 8 threads per query row (forward) or key row
// (backward), each owning 4 scores of the tile and every 8th column of D. kMaxD (32, 64, 128,
// 256) bounds D at compile time so the per-thread accumulators stay in registers. Shared rows
// are D + 1 floats wide (odd), so the rows a warp reads at once fall in distinct banks.
constexpr int kSimpleTile = 32;
constexpr int kSimpleThreads = 256;

size_t simple_forward_smem(int64_t D) {
  const int64_t Dp = D + 1;
  return sizeof(float) * size_t(3 * kSimpleTile * Dp + kSimpleTile * (kSimpleTile + 1)) + sizeof(int) * kSimpleTile;
}
size_t simple_backward_smem(int64_t D) {
  const int64_t Dp = D + 1;
  return sizeof(float) * size_t(4 * kSimpleTile * Dp + 2 * kSimpleTile * (kSimpleTile + 1) + 2 * kSimpleTile) +
         sizeof(int) * kSimpleTile;
}

// dst (32, Dp) float <- rows [r0, r0 + 32) of src (row stride `stride`, columns [col0, col0 + D));
// zeros for rows at or past Tlen.
template <typename T>
__device__ void simple_load_tile(float* dst, const T* src, int r0, int Tlen, int64_t stride, int64_t col0, int D,
                                 int Dp) {
  const int half = D / 2;
  for (int idx = int(threadIdx.x); idx < kSimpleTile * half; idx += kSimpleThreads) {
    const int r = idx / half, p = idx - r * half;
    float2 v = make_float2(0.0f, 0.0f);
    if (r0 + r < Tlen) v = load2(src + int64_t(r0 + r) * stride + col0 + 2 * p);
    dst[r * Dp + 2 * p] = v.x;
    dst[r * Dp + 2 * p + 1] = v.y;
  }
}

// grid (Hq, query tiles, B); the last query tiles (the most keys) are scheduled first.
template <typename T, int kMaxD>
__global__ void __launch_bounds__(kSimpleThreads)
    attention_forward_simple(T* out, float* lse, const T* qkv, const int32_t* segment_ids, int Tlen, int Hq,
                             int Hkv, int D, float scale_log2) {
  constexpr int BM = kSimpleTile, BN = kSimpleTile, kCols = kMaxD / 8;
  const int Dp = D + 1;
  float* sQ = reinterpret_cast<float*>(dynamic_smem());
  float* sK = sQ + BM * Dp;
  float* sV = sK + BN * Dp;
  float* sP = sV + BN * Dp;  // (BM, BN + 1)
  int* sKseg = reinterpret_cast<int*>(sP + BM * (BN + 1));

  const int h = blockIdx.x, b = blockIdx.z;
  const int qt = int(gridDim.y) - 1 - int(blockIdx.y);
  const int i0 = qt * BM, i_end = min(i0 + BM, Tlen);
  const int64_t S = int64_t(Hq + 2 * Hkv) * D;
  const int g = h / (Hq / Hkv);
  const int32_t* seg = segment_ids + int64_t(b) * Tlen;
  const T* rows = qkv + int64_t(b) * Tlen * S;
  const int tid = threadIdx.x, r = tid >> 3, c8 = tid & 7;
  const int i = i0 + r;

  const VisibleKeys vis = scan_visible_keys<kSimpleThreads>(seg, i0, i_end);
  const int qseg = i < Tlen ? seg[i] : 0;
  simple_load_tile(sQ, rows, i0, Tlen, S, int64_t(h) * D, D, Dp);

  float o[kCols];
#pragma unroll
  for (int k = 0; k < kCols; ++k) o[k] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (int jt = vis.first_key / BN; jt <= (i_end - 1) / BN; ++jt) {
    const int j0 = jt * BN;
    __syncthreads();  // the previous tile's sK, sV, sKseg are read; sQ is written (first tile)
    simple_load_tile(sK, rows, j0, Tlen, S, int64_t(Hq + g) * D, D, Dp);
    simple_load_tile(sV, rows, j0, Tlen, S, int64_t(Hq + Hkv + g) * D, D, Dp);
    if (tid < BN) sKseg[tid] = j0 + tid < Tlen ? seg[j0 + tid] : 0;
    __syncthreads();

    // Scores of row r against keys c8 + 8k, in log2 units; masked ones -inf.
    float s[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int c = c8 + 8 * k;
      const float* q = sQ + r * Dp;
      const float* kr = sK + c * Dp;
      float acc = 0.0f;
#pragma unroll 4
      for (int d = 0; d < D; ++d) acc = fmaf(q[d], kr[d], acc);
      const int j = j0 + c;
      s[k] = (j <= i && sKseg[c] == qseg) ? acc * scale_log2 : -INFINITY;
    }
    float mx = fmaxf(fmaxf(s[0], s[1]), fmaxf(s[2], s[3]));
#pragma unroll
    for (int off = 1; off < 8; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float m_new = fmaxf(m, mx);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet: no NaN
    const float alpha = exp2f(m - m_use);
    float psum = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float p = exp2f(s[k] - m_use);
      sP[r * (BN + 1) + c8 + 8 * k] = p;
      psum += p;
    }
#pragma unroll
    for (int off = 1; off < 8; off <<= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
    l = l * alpha + psum;
    m = m_new;
#pragma unroll
    for (int k = 0; k < kCols; ++k) o[k] *= alpha;
    __syncwarp();  // row r of sP is written and read by the same 8 lanes

    for (int c = 0; c < BN; ++c) {
      const float p = sP[r * (BN + 1) + c];
      const float* v = sV + c * Dp;
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int d = c8 + 8 * k;
        if (d < D) o[k] = fmaf(p, v[d], o[k]);
      }
    }
  }

  if (i < Tlen) {
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* orow = out + (int64_t(b) * Tlen + i) * Hq * D + int64_t(h) * D;
#pragma unroll
    for (int k = 0; k < kCols; ++k) {
      const int d = c8 + 8 * k;
      if (d < D) orow[d] = from_f<T>(o[k] * inv);
    }
    if (c8 == 0) lse[(int64_t(b) * Tlen + i) * Hq + h] = l > 0.0f ? (m + log2f(l)) * kLn2 : -INFINITY;
  }
}

// grid (Hq, key tiles, B). dacc (B*T, (Hq+2Hkv)*D) float += dQ, dK, dV of this block's key tile
// and query head. lse2, di (B, Hq, T): lse * log2(e) and rowsum(dO * O) from the prepare kernel.
template <typename T, int kMaxD>
__global__ void __launch_bounds__(kSimpleThreads, 1)
    attention_backward_simple(float* dacc, const T* dout, const T* qkv, const float* lse2, const float* di,
                              const int32_t* segment_ids, int Tlen, int Hq, int Hkv, int D, float scale_log2,
                              float scale) {
  constexpr int BM = kSimpleTile, BN = kSimpleTile, kCols = kMaxD / 8;
  const int Dp = D + 1;
  float* sK = reinterpret_cast<float*>(dynamic_smem());
  float* sV = sK + BN * Dp;
  float* sQ = sV + BN * Dp;
  float* sdO = sQ + BM * Dp;
  float* sP = sdO + BM * Dp;    // P^T (BN, BM + 1)
  float* sdS = sP + BN * (BM + 1);  // dS^T * scale (BN, BM + 1)
  float* sLse = sdS + BN * (BM + 1);
  float* sDi = sLse + BM;
  int* sQseg = reinterpret_cast<int*>(sDi + BM);

  const int h = blockIdx.x, kt = blockIdx.y, b = blockIdx.z;
  const int j0 = kt * BN, j_end = min(j0 + BN, Tlen);
  const int64_t S = int64_t(Hq + 2 * Hkv) * D, OS = int64_t(Hq) * D;
  const int g = h / (Hq / Hkv);
  const int32_t* seg = segment_ids + int64_t(b) * Tlen;
  const T* rows = qkv + int64_t(b) * Tlen * S;
  const T* drows = dout + int64_t(b) * Tlen * OS;
  const float* lse_row = lse2 + (int64_t(b) * Hq + h) * Tlen;
  const float* di_row = di + (int64_t(b) * Hq + h) * Tlen;
  const int tid = threadIdx.x, r = tid >> 3, c8 = tid & 7;
  const int j = j0 + r;  // this thread's key row (dK, dV); also its query row in the dQ step

  const VisibleQueries vis = scan_visible_queries<kSimpleThreads>(seg, j0, j_end, Tlen);
  const int kseg = j < Tlen ? seg[j] : 0;
  simple_load_tile(sK, rows, j0, Tlen, S, int64_t(Hq + g) * D, D, Dp);
  simple_load_tile(sV, rows, j0, Tlen, S, int64_t(Hq + Hkv + g) * D, D, Dp);

  float dk[kCols], dv[kCols];
#pragma unroll
  for (int k = 0; k < kCols; ++k) dk[k] = dv[k] = 0.0f;

  for (int qt = kt; qt <= vis.last_query / BM; ++qt) {  // BM == BN: query tile kt holds key j0
    const int i0 = qt * BM;
    __syncthreads();  // the previous tile's sQ, sdO, sdS, ... are read
    simple_load_tile(sQ, rows, i0, Tlen, S, int64_t(h) * D, D, Dp);
    simple_load_tile(sdO, drows, i0, Tlen, OS, int64_t(h) * D, D, Dp);
    if (tid < BM) {
      const int i = i0 + tid;
      const bool ok = i < Tlen;
      sLse[tid] = ok ? lse_row[i] : 0.0f;
      sDi[tid] = ok ? di_row[i] : 0.0f;
      sQseg[tid] = ok ? seg[i] : 0;
    }
    __syncthreads();

    // P^T and dS^T of key row r against queries c8 + 8k.
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int q = c8 + 8 * k, i = i0 + q;
      const float* kr = sK + r * Dp;
      const float* vr = sV + r * Dp;
      const float* qr = sQ + q * Dp;
      const float* dor = sdO + q * Dp;
      float s = 0.0f, dp = 0.0f;
#pragma unroll 4
      for (int d = 0; d < D; ++d) {
        s = fmaf(kr[d], qr[d], s);
        dp = fmaf(vr[d], dor[d], dp);
      }
      const bool visible = i < Tlen && j <= i && sQseg[q] == kseg;
      const float p = visible ? exp2f(s * scale_log2 - sLse[q]) : 0.0f;
      sP[r * (BM + 1) + q] = p;
      sdS[r * (BM + 1) + q] = p * (dp - sDi[q]) * scale;
    }
    __syncwarp();  // row r of sP, sdS is written and read by the same 8 lanes

    for (int q = 0; q < BM; ++q) {
      const float p = sP[r * (BM + 1) + q], ds = sdS[r * (BM + 1) + q];
      const float* qr = sQ + q * Dp;
      const float* dor = sdO + q * Dp;
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int d = c8 + 8 * k;
        if (d < D) {
          dv[k] = fmaf(p, dor[d], dv[k]);
          dk[k] = fmaf(ds, qr[d], dk[k]);
        }
      }
    }
    __syncthreads();  // every row of sdS is written

    // dQ of query row r: sum over the tile's keys of dS * K.
    const int i = i0 + r;
    if (i < Tlen) {
      float* dq = dacc + (int64_t(b) * Tlen + i) * S + int64_t(h) * D;
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int d = c8 + 8 * k;
        if (d < D) {
          float acc = 0.0f;
          for (int c = 0; c < BN; ++c) acc = fmaf(sdS[c * (BM + 1) + r], sK[c * Dp + d], acc);
          atomicAdd(dq + d, acc);
        }
      }
    }
  }

  if (j < Tlen) {
    float* drow = dacc + (int64_t(b) * Tlen + j) * S;
#pragma unroll
    for (int k = 0; k < kCols; ++k) {
      const int d = c8 + 8 * k;
      if (d < D) {
        atomicAdd(drow + int64_t(Hq + g) * D + d, dk[k]);
        atomicAdd(drow + int64_t(Hq + Hkv + g) * D + d, dv[k]);
      }
    }
  }
}

// ---- Tensor-core kernels (bf16, D = 64 or 128) ----
// 4 warps. Shared rows are D + 8 bf16 wide: 16-byte aligned for cp.async and ldmatrix, and 8
// consecutive rows start in 8 distinct 16-byte bank groups, so ldmatrix has no conflicts.
// Fragment layouts are those of mma.m16n8k16 (PTX ISA, "Matrix fragments for mma.m16n8k16"):
// lane = 4 * gr + tq; A (16x16): a0 (row gr, k 2tq..+1), a1 (row gr+8), a2 (row gr, k 2tq+8..+9),
// a3 (row gr+8, k 2tq+8..); B (16x8): b0 (k 2tq..+1, col gr), b1 (k 2tq+8..+9, col gr);
// C (16x8): c0,c1 (row gr, cols 2tq, 2tq+1), c2,c3 (row gr+8). An ldmatrix.x4 takes the row
// addresses of its four 8x8 matrices from lanes 0-7, 8-15, 16-23, 24-31.
constexpr int kTcThreads = 128;
constexpr int kTcKeys = 64;  // keys per tile (forward) and per block (backward)
constexpr int kTcQueriesBwd = 64;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, asynchronously; zeros when !fill (src is then not read).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool fill) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(fill ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool fill) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(fill ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
// d (16x8 fp32) += a (16x16 bf16) . b (16x8 bf16)
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two floats as bf16x2: lo in the low half (the lower column of a fragment pair).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return u;
}
// The A fragment (16 rows x 16 k) made of two C fragments side by side (n-tiles 2kk, 2kk+1):
// how a tile of probabilities, computed as an accumulator, feeds the next product.
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// dst (ROWS, D + 8) bf16 <- rows [r0, r0 + ROWS) of src (row stride `stride`, columns
// [col0, col0 + D)), zeros past Tlen; asynchronous (cp.async, not committed here).
template <int D, int ROWS>
__device__ __forceinline__ void tc_load_rows(bf16* dst, const bf16* src, int r0, int Tlen, int64_t stride,
                                             int64_t col0) {
  constexpr int kChunksPerRow = D / 8;
  for (int c = int(threadIdx.x); c < ROWS * kChunksPerRow; c += kTcThreads) {
    const int r = c / kChunksPerRow, cc = (c % kChunksPerRow) * 8;
    const bool ok = r0 + r < Tlen;
    const bf16* p = ok ? src + int64_t(r0 + r) * stride + col0 + cc : src;
    cp_async_16(dst + r * (D + 8) + cc, p, ok);
  }
}

template <int D, int MT>
constexpr size_t tc_forward_smem() {
  return sizeof(bf16) * size_t((64 * MT + 4 * kTcKeys) * (D + 8)) + sizeof(int) * kTcKeys;
}

// grid (Hq, query tiles, B), 4 warps; warp w owns query rows [16 MT w, 16 MT (w + 1)) of the
// block's 64 MT. Keys in tiles of 64, K and V double-buffered through cp.async.
template <int D, int MT>
__global__ void __launch_bounds__(kTcThreads)
    attention_forward_tc(bf16* out, float* lse, const bf16* qkv, const int32_t* segment_ids, int Tlen, int Hq,
                         int Hkv, float scale_log2) {
  constexpr int BM = 64 * MT, BN = kTcKeys, Dp = D + 8, KD = D / 16;
  bf16* sQ = reinterpret_cast<bf16*>(dynamic_smem());
  bf16* sK = sQ + BM * Dp;      // 2 stages of (BN, Dp)
  bf16* sV = sK + 2 * BN * Dp;  // 2 stages of (BN, Dp)
  int* sKseg = reinterpret_cast<int*>(sV + 2 * BN * Dp);

  const int h = blockIdx.x, b = blockIdx.z;
  const int qt = int(gridDim.y) - 1 - int(blockIdx.y);
  const int i0 = qt * BM, i_end = min(i0 + BM, Tlen);
  const int64_t S = int64_t(Hq + 2 * Hkv) * D;
  const int g = h / (Hq / Hkv);
  const int32_t* seg = segment_ids + int64_t(b) * Tlen;
  const bf16* rows = qkv + int64_t(b) * Tlen * S;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gr = lane >> 2, tq = lane & 3;
  const int lr = lane & 7, lm = lane >> 3;  // ldmatrix: row within its matrix, which matrix

  const VisibleKeys vis = scan_visible_keys<kTcThreads>(seg, i0, i_end);
  const int jt_first = vis.first_key / BN, jt_last = (i_end - 1) / BN;
  const bool one_segment = vis.seg_lo == vis.seg_hi;

  tc_load_rows<D, BM>(sQ, rows, i0, Tlen, S, int64_t(h) * D);
  tc_load_rows<D, BN>(sK, rows, jt_first * BN, Tlen, S, int64_t(Hq + g) * D);
  tc_load_rows<D, BN>(sV, rows, jt_first * BN, Tlen, S, int64_t(Hq + Hkv + g) * D);
  cp_async_commit();
  int kseg_next = 0;
  if (tid < BN && jt_first * BN + tid < Tlen) kseg_next = seg[jt_first * BN + tid];

  // This thread's query rows: row0 + 16 mt + 8 hf, rows gr and gr + 8 of each m-tile.
  const int row0 = i0 + warp * 16 * MT + gr;
  int qseg[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int i = row0 + 16 * mt + 8 * hf;
      qseg[mt][hf] = i < Tlen ? seg[i] : 0;
    }

  uint32_t qf[MT][KD][4];
  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][n][e] = 0.0f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.0f;
  }

  for (int jt = jt_first; jt <= jt_last; ++jt) {
    const int stage = (jt - jt_first) & 1, j0 = jt * BN;
    const bool has_next = jt < jt_last;
    if (has_next) {  // the other stage was last read before the previous iteration's final barrier
      tc_load_rows<D, BN>(sK + (stage ^ 1) * BN * Dp, rows, j0 + BN, Tlen, S, int64_t(Hq + g) * D);
      tc_load_rows<D, BN>(sV + (stage ^ 1) * BN * Dp, rows, j0 + BN, Tlen, S, int64_t(Hq + Hkv + g) * D);
      cp_async_commit();
    }
    const int kseg_mine = kseg_next;
    if (tid < BN) sKseg[tid] = kseg_mine;
    kseg_next = 0;
    if (has_next && tid < BN && j0 + BN + tid < Tlen) kseg_next = seg[j0 + BN + tid];
    if (has_next)
      cp_async_wait<1>();
    else
      cp_async_wait<0>();
    // Unmasked tile: every key at or before every query, all in the queries' one segment.
    const bool unmasked = __syncthreads_and(tid >= BN || (one_segment && kseg_mine == vis.seg_lo)) &&
                          j0 + BN - 1 <= i0;

    if (jt == jt_first) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int kk = 0; kk < KD; ++kk)
          ldmatrix_x4(qf[mt][kk], sQ + (warp * 16 * MT + mt * 16 + (lm & 1) * 8 + lr) * Dp + kk * 16 + (lm >> 1) * 8);
    }
    const bf16* k_s = sK + stage * BN * Dp;
    const bf16* v_s = sV + stage * BN * Dp;

    // S = Q K^T: 8 n-tiles of 8 keys per m-tile.
    float s[MT][8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk)
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t kb[4];  // b0, b1 of keys np*16 + [0, 8), then of np*16 + [8, 16)
        ldmatrix_x4(kb, k_s + (np * 16 + (lm >> 1) * 8 + lr) * Dp + kk * 16 + (lm & 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16(s[mt][2 * np], qf[mt][kk], kb[0], kb[1]);
          mma_bf16(s[mt][2 * np + 1], qf[mt][kk], kb[2], kb[3]);
        }
      }

    // Online softmax, in log2 units. Each row's max is shared by the 4 lanes of a quad; the
    // row sums stay per lane until the end.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[mt][n][e] * scale_log2;
          if (!unmasked) {
            const int col = n * 8 + 2 * tq + (e & 1);
            if (j0 + col > row0 + 16 * mt + 8 * (e >> 1) || sKseg[col] != qseg[mt][e >> 1]) x = -INFINITY;
          }
          s[mt][n][e] = x;
        }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < 8; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * hf], s[mt][n][2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[mt][hf], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: no NaN
        const float alpha = exp2f(m[mt][hf] - m_use);
        m[mt][hf] = m_new;
        float psum = 0.0f;
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          s[mt][n][2 * hf] = exp2f(s[mt][n][2 * hf] - m_use);
          s[mt][n][2 * hf + 1] = exp2f(s[mt][n][2 * hf + 1] - m_use);
          psum += s[mt][n][2 * hf] + s[mt][n][2 * hf + 1];
        }
        l[mt][hf] = l[mt][hf] * alpha + psum;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
          o[mt][n][2 * hf] *= alpha;
          o[mt][n][2 * hf + 1] *= alpha;
        }
      }
    }

    // O += P V: P (bf16) straight from the score accumulators; V through ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) c_to_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];  // b0, b1 of d columns dp*16 + [0, 8), then of dp*16 + [8, 16)
        ldmatrix_x4_trans(vb, v_s + (kk * 16 + (lm & 1) * 8 + lr) * Dp + dp * 16 + (lm >> 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma_bf16(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // this stage's K, V and sKseg are read before they are loaded again
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float lsum = l[mt][hf];
      lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
      lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
      const int i = row0 + 16 * mt + 8 * hf;
      if (i >= Tlen) continue;
      const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
      bf16* orow = out + (int64_t(b) * Tlen + i) * Hq * D + int64_t(h) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        store2(orow + n * 8 + 2 * tq, o[mt][n][2 * hf] * inv, o[mt][n][2 * hf + 1] * inv);
      if (tq == 0)
        lse[(int64_t(b) * Tlen + i) * Hq + h] = lsum > 0.0f ? (m[mt][hf] + log2f(lsum)) * kLn2 : -INFINITY;
    }
}

template <int D>
constexpr size_t tc_backward_smem() {
  return sizeof(bf16) * size_t((2 * kTcKeys + 2 * kTcQueriesBwd) * (D + 8) + kTcKeys * (kTcQueriesBwd + 8)) +
         sizeof(float) * 2 * kTcQueriesBwd + sizeof(int) * kTcQueriesBwd;
}

// grid (Hq, key tiles, B), 4 warps. The block keeps its 64 keys' K and V in shared memory and
// walks the query tiles that can see them. Warp w owns keys [16 w, 16 w + 16) for S^T = K Q^T,
// dP^T = V dO^T, dV += P^T dO and dK += dS^T Q, then queries [16 w, 16 w + 16) of the tile for
// dQ = dS K (dS^T through shared memory). The next query tile loads while dQ is computed.
template <int D>
__global__ void __launch_bounds__(kTcThreads)
    attention_backward_tc(float* dacc, const bf16* dout, const bf16* qkv, const float* lse2, const float* di,
                          const int32_t* segment_ids, int Tlen, int Hq, int Hkv, float scale_log2, float scale) {
  constexpr int BN = kTcKeys, BM = kTcQueriesBwd, Dp = D + 8, SP = BM + 8, KD = D / 16;
  constexpr int QH = D > 64 ? 2 : 1, NQ = BM / QH;
  bf16* sK = reinterpret_cast<bf16*>(dynamic_smem());
  bf16* sV = sK + BN * Dp;
  bf16* sQ = sV + BN * Dp;
  bf16* sdO = sQ + BM * Dp;
  bf16* sdS = sdO + BM * Dp;  // dS^T * scale, (BN, SP)
  float* sLse = reinterpret_cast<float*>(sdS + BN * SP);
  float* sDi = sLse + BM;
  int* sQseg = reinterpret_cast<int*>(sDi + BM);

  const int h = blockIdx.x, kt = blockIdx.y, b = blockIdx.z;
  const int j0 = kt * BN, j_end = min(j0 + BN, Tlen);
  const int64_t S = int64_t(Hq + 2 * Hkv) * D, OS = int64_t(Hq) * D;
  const int g = h / (Hq / Hkv);
  const int32_t* seg = segment_ids + int64_t(b) * Tlen;
  const bf16* rows = qkv + int64_t(b) * Tlen * S;
  const bf16* drows = dout + int64_t(b) * Tlen * OS;
  const float* lse_row = lse2 + (int64_t(b) * Hq + h) * Tlen;
  const float* di_row = di + (int64_t(b) * Hq + h) * Tlen;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gr = lane >> 2, tq = lane & 3;
  const int lr = lane & 7, lm = lane >> 3;

  const VisibleQueries vis = scan_visible_queries<kTcThreads>(seg, j0, j_end, Tlen);
  const int qt_first = kt, qt_last = vis.last_query / BM;  // BM == BN: query tile kt holds key j0
  const bool one_segment = vis.seg_lo == vis.seg_hi;

  // Issues the loads of query tile qt: Q, dO, lse2, Di (cp.async), and returns this thread's
  // query segment id (threads < BM).
  auto load_query_tile = [&](int qt) {
    const int q0 = qt * BM;
    tc_load_rows<D, BM>(sQ, rows, q0, Tlen, S, int64_t(h) * D);
    tc_load_rows<D, BM>(sdO, drows, q0, Tlen, OS, int64_t(h) * D);
    const int t = tid & (BM - 1);
    const bool ok = q0 + t < Tlen;
    if (tid < BM)
      cp_async_4(sLse + t, ok ? lse_row + q0 + t : lse_row, ok);
    else
      cp_async_4(sDi + t, ok ? di_row + q0 + t : di_row, ok);
    cp_async_commit();
    return (tid < BM && ok) ? seg[q0 + t] : 0;
  };

  tc_load_rows<D, BN>(sK, rows, j0, Tlen, S, int64_t(Hq + g) * D);
  tc_load_rows<D, BN>(sV, rows, j0, Tlen, S, int64_t(Hq + Hkv + g) * D);
  int qseg_next = load_query_tile(qt_first);  // K, V complete with this group

  // This thread's key rows: kj[hf] = row gr (hf 0) or gr + 8 (hf 1) of the warp's 16.
  int kj[2], kseg[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    kj[hf] = j0 + warp * 16 + gr + 8 * hf;
    kseg[hf] = kj[hf] < Tlen ? seg[kj[hf]] : 0;
  }

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;

  for (int qt = qt_first; qt <= qt_last; ++qt) {
    const int i0 = qt * BM;
    const int qseg_mine = qseg_next;
    if (tid < BM) sQseg[tid] = qseg_mine;
    cp_async_wait<0>();
    // Unmasked tile: every query at or after every key, all in the keys' one segment.
    const bool unmasked =
        __syncthreads_and(tid >= BM || (one_segment && qseg_mine == vis.seg_lo && i0 + tid < Tlen)) &&
        i0 >= j0 + BN - 1;

    // The tile's queries in QH parts of NQ, which bounds the live score registers (D = 128).
#pragma unroll
    for (int qh = 0; qh < QH; ++qh) {
      const int q_off = qh * NQ;
      // S^T = K Q^T and dP^T = V dO^T: the warp's 16 keys x NQ queries (NQ / 8 n-tiles).
      float st[NQ / 8][4], dpt[NQ / 8][4];
#pragma unroll
      for (int n = 0; n < NQ / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        uint32_t ka[4], va[4];
        ldmatrix_x4(ka, sK + (warp * 16 + (lm & 1) * 8 + lr) * Dp + kk * 16 + (lm >> 1) * 8);
        ldmatrix_x4(va, sV + (warp * 16 + (lm & 1) * 8 + lr) * Dp + kk * 16 + (lm >> 1) * 8);
#pragma unroll
        for (int np = 0; np < NQ / 16; ++np) {
          uint32_t qb[4], ob[4];  // b0, b1 of queries np*16 + [0, 8), then of np*16 + [8, 16)
          ldmatrix_x4(qb, sQ + (q_off + np * 16 + (lm >> 1) * 8 + lr) * Dp + kk * 16 + (lm & 1) * 8);
          ldmatrix_x4(ob, sdO + (q_off + np * 16 + (lm >> 1) * 8 + lr) * Dp + kk * 16 + (lm & 1) * 8);
          mma_bf16(st[2 * np], ka, qb[0], qb[1]);
          mma_bf16(st[2 * np + 1], ka, qb[2], qb[3]);
          mma_bf16(dpt[2 * np], va, ob[0], ob[1]);
          mma_bf16(dpt[2 * np + 1], va, ob[2], ob[3]);
        }
      }

      // P^T = exp(S^T - lse) (0 where masked), dS^T = P^T (dP^T - Di) * scale, in place.
#pragma unroll
      for (int n = 0; n < NQ / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = q_off + n * 8 + 2 * tq + (e & 1), i = i0 + col, hf = e >> 1;
          const bool visible = unmasked || (i < Tlen && kj[hf] <= i && sQseg[col] == kseg[hf]);
          const float p = visible ? exp2f(st[n][e] * scale_log2 - sLse[col]) : 0.0f;
          st[n][e] = p;
          dpt[n][e] = p * (dpt[n][e] - sDi[col]) * scale;
        }

      // dV += P^T dO, dK += dS^T Q: A from the accumulators, B through ldmatrix.trans.
#pragma unroll
      for (int kk = 0; kk < NQ / 16; ++kk) {
        uint32_t pa[4], sa[4];
        c_to_a(pa, st[2 * kk], st[2 * kk + 1]);
        c_to_a(sa, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t ob[4], qb[4];  // b0, b1 of d columns dp*16 + [0, 8), then of dp*16 + [8, 16)
          ldmatrix_x4_trans(ob, sdO + (q_off + kk * 16 + (lm & 1) * 8 + lr) * Dp + dp * 16 + (lm >> 1) * 8);
          ldmatrix_x4_trans(qb, sQ + (q_off + kk * 16 + (lm & 1) * 8 + lr) * Dp + dp * 16 + (lm >> 1) * 8);
          mma_bf16(dv[2 * dp], pa, ob[0], ob[1]);
          mma_bf16(dv[2 * dp + 1], pa, ob[2], ob[3]);
          mma_bf16(dk[2 * dp], sa, qb[0], qb[1]);
          mma_bf16(dk[2 * dp + 1], sa, qb[2], qb[3]);
        }
      }

      // dS^T to shared memory (row = key, column = query) for the dQ product.
#pragma unroll
      for (int n = 0; n < NQ / 8; ++n)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf)
          *reinterpret_cast<uint32_t*>(sdS + (warp * 16 + gr + 8 * hf) * SP + q_off + n * 8 + 2 * tq) =
              pack_bf16(dpt[n][2 * hf], dpt[n][2 * hf + 1]);
    }
    __syncthreads();  // sdS complete; sQ, sdO, sLse, sDi, sQseg no longer read this tile

    if (qt < qt_last) qseg_next = load_query_tile(qt + 1);

    // dQ = dS K for queries [16 w, 16 w + 16): A = dS (ldmatrix.trans of dS^T), B = K (.trans).
    // 64 columns of D at a time, which keeps the accumulators of D = 128 in registers.
#pragma unroll
    for (int dc = 0; dc < D; dc += 64) {
      float dq[8][4];
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[n][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t sa[4];
        ldmatrix_x4_trans(sa, sdS + (kk * 16 + (lm >> 1) * 8 + lr) * SP + warp * 16 + (lm & 1) * 8);
#pragma unroll
        for (int dp = 0; dp < 4; ++dp) {
          uint32_t kb[4];
          ldmatrix_x4_trans(kb, sK + (kk * 16 + (lm & 1) * 8 + lr) * Dp + dc + dp * 16 + (lm >> 1) * 8);
          mma_bf16(dq[2 * dp], sa, kb[0], kb[1]);
          mma_bf16(dq[2 * dp + 1], sa, kb[2], kb[3]);
        }
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int i = i0 + warp * 16 + gr + 8 * hf;
        if (i >= Tlen) continue;
        float* dqrow = dacc + (int64_t(b) * Tlen + i) * S + int64_t(h) * D + dc;
#pragma unroll
        for (int n = 0; n < 8; ++n) atomic_add2(dqrow + n * 8 + 2 * tq, dq[n][2 * hf], dq[n][2 * hf + 1]);
      }
    }
    // The next iteration's barrier orders these sdS reads before its sdS writes, and its
    // cp.async wait completes the loads issued above.
  }

#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    if (kj[hf] >= Tlen) continue;
    float* drow = dacc + (int64_t(b) * Tlen + kj[hf]) * S;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      atomic_add2(drow + int64_t(Hq + g) * D + n * 8 + 2 * tq, dk[n][2 * hf], dk[n][2 * hf + 1]);
      atomic_add2(drow + int64_t(Hq + Hkv + g) * D + n * 8 + 2 * tq, dv[n][2 * hf], dv[n][2 * hf + 1]);
    }
  }
}

// ---- Backward's first and last steps ----
// One warp per (token, query head): di = rowsum(dO * O), lse2 = lse * log2(e), both (B, Hq, T).
template <typename T>
__global__ void attention_backward_prepare(float* di, float* lse2, const T* dout, const T* out, const float* lse,
                                           int64_t N, int Tlen, int Hq, int D) {
  const int64_t w = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (w >= N * Hq) return;  // whole warps
  const int64_t n = w / Hq;
  const int h = int(w - n * Hq);
  const T* dor = dout + n * Hq * D + int64_t(h) * D;
  const T* orow = out + n * Hq * D + int64_t(h) * D;
  float acc = 0.0f;
  for (int p = lane; p < D / 2; p += 32) {
    const float2 a = load2(dor + 2 * p), c = load2(orow + 2 * p);
    acc = fmaf(a.x, c.x, fmaf(a.y, c.y, acc));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) {
    const int64_t b = n / Tlen, i = n - b * Tlen;
    const int64_t idx = (b * Hq + h) * Tlen + i;
    di[idx] = acc;
    lse2[idx] = lse[n * Hq + h] * kLog2e;
  }
}

// out[k] = bf16(in[k]), n even (pairs).
__global__ void attention_convert_bf16(bf16* out, const float* in, int64_t n) {
  for (int64_t k = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 2; k < n; k += int64_t(gridDim.x) * blockDim.x * 2) {
    const float2 v = *reinterpret_cast<const float2*>(in + k);
    store2(out + k, v.x, v.y);
  }
}

// ---- KV cache ----
// grid (cols, B): one block per qkv row; its K and V heads go to cache position start + c.
template <typename T>
__global__ void kv_cache_append_kernel(T* k_cache, T* v_cache, const T* qkv, const int32_t* start,
                                       const int32_t* count, int cols, int Hq, int Hkv, int D, int max_len) {
  const int c = blockIdx.x, b = blockIdx.y;
  if (c >= count[b]) return;
  const int pos = start[b] + c;
  if (pos < 0 || pos >= max_len) return;  // the host checks; never write outside the cache
  const int64_t S = int64_t(Hq + 2 * Hkv) * D;
  const T* src = qkv + (int64_t(b) * cols + c) * S + int64_t(Hq) * D;  // K heads, then V heads
  const int HD = Hkv * D;
  for (int e = 2 * int(threadIdx.x); e < 2 * HD; e += 2 * int(blockDim.x)) {
    const int which = e / HD, rem = e - which * HD, g = rem / D, d = rem - g * D;
    T* dst = (which == 0 ? k_cache : v_cache) + ((int64_t(b) * Hkv + g) * max_len + pos) * D + d;
    dst[0] = src[e];
    dst[1] = src[e + 1];
  }
}

// grid (Hq, B), 256 threads: one query against cache positions [0, length[b]), in chunks of
// 512 keys. Scores: 8 lanes per key; P.V: each thread owns a pair of D columns and every
// (256 / (D/2))-th key of the chunk, the partial sums meet in shared memory at the end.
constexpr int kDecodeThreads = 256;
constexpr int kDecodeChunk = 512;

__device__ __forceinline__ float block_max(float v, float* sw) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  if ((threadIdx.x & 31) == 0) sw[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = sw[0];
  for (int w = 1; w < kDecodeThreads / 32; ++w) r = fmaxf(r, sw[w]);
  __syncthreads();
  return r;
}
__device__ __forceinline__ float block_sum(float v, float* sw) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if ((threadIdx.x & 31) == 0) sw[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < kDecodeThreads / 32; ++w) r += sw[w];
  __syncthreads();
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kDecodeThreads)
    decode_attention_kernel(T* out, const T* qkv, const T* k_cache, const T* v_cache, const int32_t* length,
                            int Hq, int Hkv, int D, int max_len, float scale_log2) {
  __shared__ float sq[256];
  __shared__ float sp[kDecodeChunk];
  __shared__ float so[2 * kDecodeThreads];
  __shared__ float sw[kDecodeThreads / 32];
  const int h = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
  const int g = h / (Hq / Hkv);
  const int64_t S = int64_t(Hq + 2 * Hkv) * D;
  const int L = min(length[b], max_len);
  const T* K = k_cache + (int64_t(b) * Hkv + g) * max_len * D;
  const T* V = v_cache + (int64_t(b) * Hkv + g) * max_len * D;
  for (int d = tid; d < D; d += kDecodeThreads) sq[d] = to_f(qkv[int64_t(b) * S + int64_t(h) * D + d]) * scale_log2;

  const int npairs = D / 2, nsplit = kDecodeThreads / npairs;
  const int pair = tid % npairs, split = tid / npairs;
  const int group = tid >> 3, sub = tid & 7;  // 32 groups of 8 lanes, one key each
  float o0 = 0.0f, o1 = 0.0f, m = -INFINITY, l = 0.0f;
  __syncthreads();

  for (int c0 = 0; c0 < L; c0 += kDecodeChunk) {
    const int n = min(kDecodeChunk, L - c0);
    for (int base = 0; base < n; base += kDecodeThreads / 8) {  // uniform trip count: shuffles
      const int kk = base + group;
      float acc = 0.0f;
      if (kk < n) {
        const T* krow = K + int64_t(c0 + kk) * D;
        for (int p = sub; p < npairs; p += 8) {
          const float2 kv = load2(krow + 2 * p);
          acc = fmaf(sq[2 * p], kv.x, fmaf(sq[2 * p + 1], kv.y, acc));
        }
      }
      acc += __shfl_xor_sync(0xffffffffu, acc, 1);
      acc += __shfl_xor_sync(0xffffffffu, acc, 2);
      acc += __shfl_xor_sync(0xffffffffu, acc, 4);
      if (kk < n && sub == 0) sp[kk] = acc;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int kk = tid; kk < n; kk += kDecodeThreads) mx = fmaxf(mx, sp[kk]);
    const float m_new = fmaxf(m, block_max(mx, sw));  // finite: the chunk holds >= 1 key
    const float alpha = exp2f(m - m_new);
    float psum = 0.0f;
    for (int kk = tid; kk < n; kk += kDecodeThreads) {
      const float p = exp2f(sp[kk] - m_new);
      sp[kk] = p;
      psum += p;
    }
    l = l * alpha + block_sum(psum, sw);  // its barriers also publish sp
    m = m_new;
    o0 *= alpha;
    o1 *= alpha;
    if (split < nsplit)
      for (int kk = split; kk < n; kk += nsplit) {
        const float p = sp[kk];
        const float2 v = load2(V + int64_t(c0 + kk) * D + 2 * pair);
        o0 = fmaf(p, v.x, o0);
        o1 = fmaf(p, v.y, o1);
      }
    __syncthreads();  // sp is read before the next chunk's scores
  }

  if (split < nsplit) {
    so[split * D + 2 * pair] = o0;
    so[split * D + 2 * pair + 1] = o1;
  }
  __syncthreads();
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int d = tid; d < D; d += kDecodeThreads) {
    float acc = 0.0f;
    for (int s = 0; s < nsplit; ++s) acc += so[s * D + d];
    out[int64_t(b) * Hq * D + int64_t(h) * D + d] = from_f<T>(acc * inv);
  }
}

// ---- Host side ----

void check_attention_shape(const char* what, int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D) {
  if (B < 0 || Tlen < 0 || Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0 || D <= 0 || D % 2 != 0 || D > 256 ||
      (Tlen + kSimpleTile - 1) / kSimpleTile > 65535 || B > 65535)
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                        std::string(what) + ": need B in [0, 65535], T below 2^21, Hq a positive multiple of Hkv, D even "
                                            "in [2, 256]; got B=" +
                            std::to_string(B) + " T=" + std::to_string(Tlen) + " Hq=" + std::to_string(Hq) +
                            " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The tensor-core kernels: bf16, D = 64 or 128, 16-byte aligned rows, not forced off.
template <typename T>
bool use_tensor_cores(int64_t D, const void* a, const void* b) {
  if constexpr (!std::is_same_v<T, bf16>) {
    return false;
  } else {
    const char* env = std::getenv("LYRE_CUDA_ATTENTION");
    if (env != nullptr && std::strcmp(env, "simple") == 0) return false;
    return (D == 64 || D == 128) && aligned16(a) && aligned16(b);
  }
}

// f(std::integral_constant<int, kMaxD>) for the smallest kMaxD in {32, 64, 128, 256} >= D.
template <typename F>
void with_max_d(int64_t D, F&& f) {
  if (D <= 32)
    f(std::integral_constant<int, 32>{});
  else if (D <= 64)
    f(std::integral_constant<int, 64>{});
  else if (D <= 128)
    f(std::integral_constant<int, 128>{});
  else
    f(std::integral_constant<int, 256>{});
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    LYRE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, const int32_t* segment_ids, int64_t B, int64_t Tlen,
                       int64_t Hq, int64_t Hkv, int64_t D, cudaStream_t stream) {
  check_attention_shape("attention_forward", B, Tlen, Hq, Hkv, D);
  if (B == 0 || Tlen == 0) return;
  const float scale_log2 = float(1.0 / std::sqrt(double(D)) * 1.4426950408889634);
  if (use_tensor_cores<T>(D, qkv, out)) {
    if constexpr (std::is_same_v<T, bf16>) {
      auto launch = [&](auto kernel, size_t smem, int64_t BM) {
        allow_smem(kernel, smem);
        const dim3 grid(unsigned(Hq), unsigned((Tlen + BM - 1) / BM), unsigned(B));
        kernel<<<grid, kTcThreads, smem, stream>>>(out, lse, qkv, segment_ids, int(Tlen), int(Hq), int(Hkv),
                                                   scale_log2);
      };
      if (D == 64)
        launch(attention_forward_tc<64, 2>, tc_forward_smem<64, 2>(), 128);
      else
        launch(attention_forward_tc<128, 1>, tc_forward_smem<128, 1>(), 64);
      LYRE_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  with_max_d(D, [&](auto max_d) {
    auto kernel = attention_forward_simple<T, decltype(max_d)::value>;
    const size_t smem = simple_forward_smem(D);
    allow_smem(kernel, smem);
    const dim3 grid(unsigned(Hq), unsigned((Tlen + kSimpleTile - 1) / kSimpleTile), unsigned(B));
    kernel<<<grid, kSimpleThreads, smem, stream>>>(out, lse, qkv, segment_ids, int(Tlen), int(Hq), int(Hkv), int(D),
                                                   scale_log2);
  });
  LYRE_CUDA_CHECK_LAUNCH();
}

// dqkv accumulator (B*T, (Hq+2Hkv)*D) float, then di and lse2 (B, Hq, T) float each.
size_t attention_backward_workspace(int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D) {
  const size_t N = size_t(B * Tlen);
  return align256(N * size_t((Hq + 2 * Hkv) * D) * sizeof(float)) + 2 * align256(N * size_t(Hq) * sizeof(float));
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* out, const float* lse, const T* qkv,
                        const int32_t* segment_ids, int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D,
                        void* workspace, cudaStream_t stream) {
  check_attention_shape("attention_backward", B, Tlen, Hq, Hkv, D);
  if (B == 0 || Tlen == 0) return;
  const int64_t N = B * Tlen, S = (Hq + 2 * Hkv) * D;
  char* ws = static_cast<char*>(workspace);
  // fp32 mode accumulates straight into dqkv; bf16 in the workspace, converted at the end.
  float* dacc = std::is_same_v<T, float> ? reinterpret_cast<float*>(dqkv) : reinterpret_cast<float*>(ws);
  float* di = reinterpret_cast<float*>(ws + align256(size_t(N * S) * sizeof(float)));
  float* lse2 = reinterpret_cast<float*>(reinterpret_cast<char*>(di) + align256(size_t(N * Hq) * sizeof(float)));
  const double scale = 1.0 / std::sqrt(double(D));
  const float scale_log2 = float(scale * 1.4426950408889634);

  LYRE_CUDA_CHECK(cudaMemsetAsync(dacc, 0, size_t(N * S) * sizeof(float), stream));
  {
    const int64_t warps = N * Hq;
    attention_backward_prepare<T><<<unsigned((warps + 7) / 8), 256, 0, stream>>>(di, lse2, dout, out, lse, N,
                                                                                 int(Tlen), int(Hq), int(D));
    LYRE_CUDA_CHECK_LAUNCH();
  }
  if (use_tensor_cores<T>(D, qkv, dout)) {
    if constexpr (std::is_same_v<T, bf16>) {
      auto launch = [&](auto kernel, size_t smem) {
        allow_smem(kernel, smem);
        const dim3 grid(unsigned(Hq), unsigned((Tlen + kTcKeys - 1) / kTcKeys), unsigned(B));
        kernel<<<grid, kTcThreads, smem, stream>>>(dacc, dout, qkv, lse2, di, segment_ids, int(Tlen), int(Hq),
                                                      int(Hkv), scale_log2, float(scale));
      };
      if (D == 64)
        launch(attention_backward_tc<64>, tc_backward_smem<64>());
      else
        launch(attention_backward_tc<128>, tc_backward_smem<128>());
      LYRE_CUDA_CHECK_LAUNCH();
    }
  } else {
    with_max_d(D, [&](auto max_d) {
      auto kernel = attention_backward_simple<T, decltype(max_d)::value>;
      const size_t smem = simple_backward_smem(D);
      allow_smem(kernel, smem);
      const dim3 grid(unsigned(Hq), unsigned((Tlen + kSimpleTile - 1) / kSimpleTile), unsigned(B));
      kernel<<<grid, kSimpleThreads, smem, stream>>>(dacc, dout, qkv, lse2, di, segment_ids, int(Tlen), int(Hq),
                                                     int(Hkv), int(D), scale_log2, float(scale));
    });
    LYRE_CUDA_CHECK_LAUNCH();
  }
  if constexpr (std::is_same_v<T, bf16>) {
    const int64_t pairs = N * S / 2;
    const unsigned blocks = unsigned(std::min<int64_t>((pairs + 255) / 256, 65536));
    attention_convert_bf16<<<blocks, 256, 0, stream>>>(dqkv, dacc, N * S);
    LYRE_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void kv_cache_append(T* k_cache, T* v_cache, const T* qkv, const int32_t* start, const int32_t* count, int64_t B,
                     int64_t cols, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_len, cudaStream_t stream) {
  check_attention_shape("kv_cache_append", B, cols, Hq, Hkv, D);
  if (B == 0 || cols == 0) return;
  kv_cache_append_kernel<T><<<dim3(unsigned(cols), unsigned(B)), 256, 0, stream>>>(
      k_cache, v_cache, qkv, start, count, int(cols), int(Hq), int(Hkv), int(D), int(max_len));
  LYRE_CUDA_CHECK_LAUNCH();
}

template <typename T>
void decode_attention(T* out, const T* qkv, const T* k_cache, const T* v_cache, const int32_t* length, int64_t B,
                      int64_t Hq, int64_t Hkv, int64_t D, int64_t max_len, cudaStream_t stream) {
  check_attention_shape("decode_attention", B, max_len, Hq, Hkv, D);
  if (B == 0) return;
  const float scale_log2 = float(1.0 / std::sqrt(double(D)) * 1.4426950408889634);
  decode_attention_kernel<T><<<dim3(unsigned(Hq), unsigned(B)), kDecodeThreads, 0, stream>>>(
      out, qkv, k_cache, v_cache, length, int(Hq), int(Hkv), int(D), int(max_len), scale_log2);
  LYRE_CUDA_CHECK_LAUNCH();
}

#define LYRE_ATTENTION_INSTANTIATE(T)                                                                              \
  template void attention_forward<T>(T*, float*, const T*, const int32_t*, int64_t, int64_t, int64_t, int64_t,      \
                                     int64_t, cudaStream_t);                                                        \
  template void attention_backward<T>(T*, const T*, const T*, const float*, const T*, const int32_t*, int64_t,     \
                                      int64_t, int64_t, int64_t, int64_t, void*, cudaStream_t);                     \
  template void kv_cache_append<T>(T*, T*, const T*, const int32_t*, const int32_t*, int64_t, int64_t, int64_t,     \
                                   int64_t, int64_t, int64_t, cudaStream_t);                                        \
  template void decode_attention<T>(T*, const T*, const T*, const T*, const int32_t*, int64_t, int64_t, int64_t,   \
                                    int64_t, int64_t, cudaStream_t);
LYRE_ATTENTION_INSTANTIATE(float)
LYRE_ATTENTION_INSTANTIATE(bf16)
#undef LYRE_ATTENTION_INSTANTIATE

}  // namespace lyre::cuda
