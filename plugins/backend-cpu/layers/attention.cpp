// Grouped-query causal attention with document masking, flash style: forward keeps only the
// log-sum-exp of each query's scores; backward recomputes the probabilities. Queries go in
// blocks of kQueryBlock rows: a block's scores against the keys it may see are one small GEMM
// into a per-thread tile (kQueryBlock x T), so no (T,T) matrix per head ever exists.
// Blocks start at each run of equal segment ids, not at multiples of kQueryBlock: a document
// packed at any offset of a row is then computed with exactly the same operations, in the same
// order, as the document alone at offset 0, so packing changes no bit of its results (and no
// query wastes work on the masked keys of earlier documents).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "layers.hpp"
#include "vec_math.hpp"

namespace lyre::cpu {
namespace {

constexpr int64_t kQueryBlock = 64;

void check_heads(int64_t Hq, int64_t Hkv, int64_t D) {
  if (Hkv <= 0 || Hq <= 0 || Hq % Hkv != 0 || D <= 0)
    throw std::invalid_argument("attention: need Hq a positive multiple of Hkv and D > 0, got Hq=" +
                                std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
                                " D=" + std::to_string(D));
}

// first (B*T): the first position of each token's segment in its row, the earliest key it may
// see. Segments are usually contiguous, which the shortcut makes linear.
std::vector<int64_t> segment_starts(const int32_t* seg, int64_t B, int64_t T) {
  std::vector<int64_t> first(size_t(B * T));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* s = seg + b * T;
    int64_t* f = first.data() + b * T;
    for (int64_t i = 0; i < T; ++i) {
      if (i > 0 && s[i] == s[i - 1]) {
        f[i] = f[i - 1];
        continue;
      }
      f[i] = i;
      for (int64_t j = 0; j < i; ++j)
        if (s[j] == s[i]) {
          f[i] = j;
          break;
        }
    }
  }
  return first;
}

// A block of queries [i0, i1) and the keys [j0, i1) that any of them may see.
struct Block {
  int64_t i0, i1, j0;
};

// The query blocks of one row: each run of equal segment ids is cut into blocks of kQueryBlock
// from the run's start. `first` is that row's segment_starts.
std::vector<Block> query_blocks(const int32_t* seg, const int64_t* first, int64_t T) {
  std::vector<Block> blocks;
  for (int64_t r0 = 0; r0 < T;) {
    int64_t r1 = r0 + 1;
    while (r1 < T && seg[r1] == seg[r0]) ++r1;
    for (int64_t i0 = r0; i0 < r1; i0 += kQueryBlock) {
      const int64_t i1 = std::min(r1, i0 + kQueryBlock);
      blocks.push_back({i0, i1, *std::min_element(first + i0, first + i1)});
    }
    r0 = r1;
  }
  return blocks;
}

// query_blocks of every row of a batch.
std::vector<std::vector<Block>> batch_blocks(const int32_t* segment_ids, int64_t B, int64_t T) {
  const std::vector<int64_t> first = segment_starts(segment_ids, B, T);
  std::vector<std::vector<Block>> blocks(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) blocks[size_t(b)] = query_blocks(segment_ids + b * T, first.data() + b * T, T);
  return blocks;
}

// Masks out, in a row of scores over keys [j0, j0 + L), the keys query i may not see: later
// positions and other segments.
template <typename T>
inline void mask_row(T* row, const int32_t* seg, int64_t i, int64_t j0, int64_t L) {
  const int32_t s = seg[i];
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t jj = 0; jj < L; ++jj) {
    const int64_t j = j0 + jj;
    row[jj] = (j > i || seg[j] != s) ? neg_inf : row[jj];
  }
}

}  // namespace

// qkv (B*T, (Hq+2*Hkv)*D), segment_ids (B*T) -> out (B*T, Hq*D), lse (B*T, Hq)
// Work is split over (batch, query head); every task costs the same.
template <typename T>
void attention_forward(T* out, T* lse, const T* qkv, const int32_t* segment_ids, int64_t B,
                       int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D) {
  check_heads(Hq, Hkv, D);
  const int64_t S = (Hq + 2 * Hkv) * D, group = Hq / Hkv, OS = Hq * D;
  const T scale = T(1) / std::sqrt(T(D));
  const std::vector<std::vector<Block>> blocks = batch_blocks(segment_ids, B, Tlen);
  const int64_t tile_size = kQueryBlock * Tlen;
  std::vector<T> tiles(size_t(omp_get_max_threads()) * tile_size);
#pragma omp parallel
  {
    T* tile = tiles.data() + omp_get_thread_num() * tile_size;
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / group;
        const T* rows = qkv + b * Tlen * S;
        const int32_t* seg = segment_ids + b * Tlen;
        for (const Block& blk : blocks[size_t(b)]) {
          const int64_t m = blk.i1 - blk.i0, L = blk.i1 - blk.j0;
          // tile (m, L) = scale * Q[i0:i1] . K[j0:i1]^T
          gemm<T>(false, true, m, L, D, scale, rows + blk.i0 * S + h * D, S,
                  rows + blk.j0 * S + (Hq + g) * D, S, T(0), tile, L);
          for (int64_t r = 0; r < m; ++r) {
            T* row = tile + r * L;
            const int64_t i = blk.i0 + r;
            mask_row(row, seg, i, blk.j0, L);
            const T mx = detail::max_of(row, L);
            const T sum = detail::exp_shift_sum(row, L, mx);
            const T inv = T(1) / sum;
#pragma omp simd
            for (int64_t jj = 0; jj < L; ++jj) row[jj] *= inv;
            lse[(b * Tlen + i) * Hq + h] = mx + std::log(sum);
          }
          // out[i0:i1] = P . V[j0:i1]
          gemm<T>(false, false, m, D, L, T(1), tile, L, rows + blk.j0 * S + (Hq + Hkv + g) * D, S,
                  T(0), out + (b * Tlen + blk.i0) * OS + h * D, OS);
        }
      }
  }
}

// dout (B*T, Hq*D) -> dqkv (B*T, (Hq+2*Hkv)*D) =
// With P = exp(scale Q.K^T - lse) (masked), D_i = dout_i . out_i, dS = P * (dout.V^T - D_i):
// dV += P^T dout, dQ += scale dS K, dK += scale dS^T Q.
// Work is split over (batch, kv head): a task owns that head's dK, dV and the dQ of its query
// group, so no two threads write the same element and every sum runs in a fixed order.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* out, const T* lse, const T* qkv,
                        const int32_t* segment_ids, int64_t B, int64_t Tlen, int64_t Hq,
                        int64_t Hkv, int64_t D) {
  check_heads(Hq, Hkv, D);
  const int64_t S = (Hq + 2 * Hkv) * D, group = Hq / Hkv, OS = Hq * D;
  const T scale = T(1) / std::sqrt(T(D));
  const std::vector<std::vector<Block>> blocks = batch_blocks(segment_ids, B, Tlen);
  const int64_t tile_size = kQueryBlock * Tlen;
  std::vector<T> tiles(size_t(omp_get_max_threads()) * 2 * tile_size);
#pragma omp parallel
  {
    T* p = tiles.data() + omp_get_thread_num() * 2 * tile_size;
    T* ds = p + tile_size;
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t g = 0; g < Hkv; ++g) {
        const T* rows = qkv + b * Tlen * S;
        T* drows = dqkv + b * Tlen * S;
        const int64_t koff = (Hq + g) * D, voff = (Hq + Hkv + g) * D;
        for (int64_t i = 0; i < Tlen; ++i) {
          std::fill_n(drows + i * S + g * group * D, group * D, T(0));
          std::fill_n(drows + i * S + koff, D, T(0));
          std::fill_n(drows + i * S + voff, D, T(0));
        }
        const int32_t* seg = segment_ids + b * Tlen;
        for (int64_t h = g * group; h < (g + 1) * group; ++h)
          for (const Block& blk : blocks[size_t(b)]) {
            const int64_t m = blk.i1 - blk.i0, L = blk.i1 - blk.j0;
            const T* q = rows + blk.i0 * S + h * D;
            const T* k = rows + blk.j0 * S + koff;
            const T* v = rows + blk.j0 * S + voff;
            const T* dO = dout + (b * Tlen + blk.i0) * OS + h * D;
            const T* O = out + (b * Tlen + blk.i0) * OS + h * D;
            // p (m, L) = exp(scale * Q . K^T - lse), 0 where masked
            gemm<T>(false, true, m, L, D, scale, q, S, k, S, T(0), p, L);
            for (int64_t r = 0; r < m; ++r) {
              mask_row(p + r * L, seg, blk.i0 + r, blk.j0, L);
              detail::exp_shift_sum(p + r * L, L, lse[(b * Tlen + blk.i0 + r) * Hq + h]);
            }
            // dV[j0:i1] += P^T . dO
            gemm<T>(true, false, L, D, m, T(1), p, L, dO, OS, T(1), drows + blk.j0 * S + voff, S);
            // ds (m, L) = scale * P * (dO . V^T - D_i)
            gemm<T>(false, true, m, L, D, T(1), dO, OS, v, S, T(0), ds, L);
            for (int64_t r = 0; r < m; ++r) {
              const T Di = detail::dot(dO + r * OS, O + r * OS, D);
              const T* pr = p + r * L;
              T* dr = ds + r * L;
#pragma omp simd
              for (int64_t jj = 0; jj < L; ++jj) dr[jj] = scale * pr[jj] * (dr[jj] - Di);
            }
            // dQ[i0:i1] += dS . K;  dK[j0:i1] += dS^T . Q
            gemm<T>(false, false, m, D, L, T(1), ds, L, k, S, T(1), drows + blk.i0 * S + h * D, S);
            gemm<T>(true, false, L, D, m, T(1), ds, L, q, S, T(1), drows + blk.j0 * S + koff, S);
          }
      }
  }
}

template void attention_forward<float>(float*, float*, const float*, const int32_t*, int64_t,
                                       int64_t, int64_t, int64_t, int64_t);
template void attention_forward<double>(double*, double*, const double*, const int32_t*, int64_t,
                                        int64_t, int64_t, int64_t, int64_t);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, const int32_t*, int64_t, int64_t, int64_t,
                                        int64_t, int64_t);
template void attention_backward<double>(double*, const double*, const double*, const double*,
                                         const double*, const int32_t*, int64_t, int64_t, int64_t,
                                         int64_t, int64_t);

}  // namespace lyre::cpu
