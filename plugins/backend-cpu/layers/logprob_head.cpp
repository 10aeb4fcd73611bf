// Fused final RMSNorm -> lm_head -> log-softmax -> gather of each row's target. Only rows with a
// target are computed, chunk_rows at a time, so at most chunk_rows x V logits ever exist.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "layers.hpp"
#include "partition.hpp"
#include "rmsnorm_row.hpp"
#include "vec_math.hpp"

namespace lyre::cpu {
namespace {

// The rows with a target, in order. Throws for a target >= V.
std::vector<int64_t> rows_with_target(const int32_t* targets, int64_t N, int64_t V) {
  std::vector<int64_t> rows;
  rows.reserve(size_t(N));
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] >= V)
      throw std::out_of_range("logprob head: target " + std::to_string(targets[n]) + " at row " +
                              std::to_string(n) + " is outside the vocabulary [0, " +
                              std::to_string(V) + ")");
    if (targets[n] >= 0) rows.push_back(n);
  }
  return rows;
}

void check_chunk(int64_t chunk_rows) {
  if (chunk_rows <= 0)
    throw std::invalid_argument("logprob head: chunk_rows must be positive, got " +
                                std::to_string(chunk_rows));
}

}  // namespace

// Workspace, in elements of T: logits (chunk_rows, V), normed and dnormed (chunk_rows, C) each.
int64_t logprob_head_workspace(int64_t chunk_rows, int64_t C, int64_t V) {
  return chunk_rows * (V + 2 * C);
}

int64_t logprob_head_chunk_rows(int64_t rows, int64_t V, int64_t elem_bytes) {
  if (V < 1 || elem_bytes < 1)
    throw std::invalid_argument("logprob head: V and elem_bytes must be positive, got " +
                                std::to_string(V) + " and " + std::to_string(elem_bytes));
  const int64_t fit =
      std::max(kLogprobHeadLogitsBudget / (V * elem_bytes), kLogprobHeadMinChunkRows);
  if (rows <= fit) return std::max<int64_t>(1, rows);
  // The fewest chunks that fit, made equal: 2048 rows at V=32000 run as 2 x 1024, not
  // 1048 + 1000 (same GEMM count, smaller workspace, no short last chunk).
  const int64_t chunks = (rows + fit - 1) / fit;
  return (rows + chunks - 1) / chunks;
}

// x (N,C), norm_weight (C), head (V,C), targets (N) -> logp (N), rstd (N), lse (N)
// Rows without a target get logp = rstd = lse = 0.
template <typename T>
void logprob_head_forward(T* logp, T* rstd, T* lse, const T* x, const T* norm_weight,
                          const T* head, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                          int64_t chunk_rows, T* workspace, double eps) {
  check_chunk(chunk_rows);
  const std::vector<int64_t> rows = rows_with_target(targets, N, V);
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] < 0) logp[n] = rstd[n] = lse[n] = T(0);
  T* logits = workspace;
  T* normed = workspace + chunk_rows * V;
  const int64_t R = int64_t(rows.size());
  for (int64_t r0 = 0; r0 < R; r0 += chunk_rows) {
    const int64_t m = std::min(chunk_rows, R - r0);
    const int64_t* chunk = rows.data() + r0;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; ++r)
      rstd[chunk[r]] = detail::rmsnorm_row_forward(normed + r * C, x + chunk[r] * C, norm_weight,
                                                   C, T(eps));
    gemm<T>(false, true, m, V, C, T(1), normed, C, head, C, T(0), logits, V);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      const int64_t n = chunk[r];
      const T* l = logits + r * V;
      const T mx = detail::max_of(l, V);
      lse[n] = mx + std::log(detail::sum_exp_shift(l, V, mx));
      logp[n] = l[targets[n]] - lse[n];
    }
  }
}

// dlogp (N) -> dx (N,C) =, dnorm_weight (C) +=, dhead (V,C) += (either may be null: frozen)
// Per chunk, last to first: logits again (or, for the last chunk with reuse_last_chunk, the
// forward's still in the workspace), dlogits = dlogp * (onehot - softmax) in place,
// dhead += dlogits^T . normed, dnormed = dlogits . head, then the RMSNorm backward of each row.
// The reused logits come from the same GEMM on the same normed rows (rmsnorm_row_apply
// reproduces rmsnorm_row_forward bit for bit), so reuse changes no bit of the result.
template <typename T>
void logprob_head_backward(T* dx, T* dnorm_weight, T* dhead, const T* dlogp, const T* x,
                           const T* norm_weight, const T* head, const int32_t* targets,
                           const T* rstd, const T* lse, int64_t N, int64_t C, int64_t V,
                           int64_t chunk_rows, T* workspace, bool reuse_last_chunk) {
  check_chunk(chunk_rows);
  const std::vector<int64_t> rows = rows_with_target(targets, N, V);
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] < 0) std::fill_n(dx + n * C, C, T(0));
  T* dlogits = workspace;
  T* normed = workspace + chunk_rows * V;
  T* dnormed = normed + chunk_rows * C;
  const int64_t R = int64_t(rows.size());
  const int64_t chunks = (R + chunk_rows - 1) / chunk_rows;
  for (int64_t k = chunks - 1; k >= 0; --k) {
    const int64_t r0 = k * chunk_rows;
    const int64_t m = std::min(chunk_rows, R - r0);
    const int64_t* chunk = rows.data() + r0;
    if (!(reuse_last_chunk && k == chunks - 1)) {
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < m; ++r)
        detail::rmsnorm_row_apply(normed + r * C, x + chunk[r] * C, norm_weight, rstd[chunk[r]],
                                  C);
      gemm<T>(false, true, m, V, C, T(1), normed, C, head, C, T(0), dlogits, V);
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      const int64_t n = chunk[r];
      T* l = dlogits + r * V;
      detail::exp_shift_sum(l, V, lse[n]);  // l = softmax
      const T a = -dlogp[n];
#pragma omp simd
      for (int64_t v = 0; v < V; ++v) l[v] *= a;
      l[targets[n]] += dlogp[n];
    }
    if (dhead) gemm<T>(true, false, V, C, m, T(1), dlogits, V, normed, C, T(1), dhead, C);
    gemm<T>(false, false, m, C, V, T(1), dlogits, V, head, C, T(0), dnormed, C);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      const int64_t n = chunk[r];
      detail::rmsnorm_row_backward<false>(dx + n * C, dnormed + r * C, x + n * C, norm_weight,
                                          rstd[n], C);
    }
    // dnorm_weight: threads split the columns, each adds the chunk's rows in order.
    if (dnorm_weight) {
#pragma omp parallel
      {
        const detail::Range cols =
            detail::static_share(C, omp_get_thread_num(), omp_get_num_threads(), 16);
        for (int64_t r = 0; r < m; ++r) {
          const T* g = dnormed + r * C;
          const T* xn = x + chunk[r] * C;
          const T rs = rstd[chunk[r]];
#pragma omp simd
          for (int64_t c = cols.begin; c < cols.end; ++c) dnorm_weight[c] += g[c] * xn[c] * rs;
        }
      }
    }
  }
}

template void logprob_head_forward<float>(float*, float*, float*, const float*, const float*,
                                          const float*, const int32_t*, int64_t, int64_t, int64_t,
                                          int64_t, float*, double);
template void logprob_head_forward<double>(double*, double*, double*, const double*,
                                           const double*, const double*, const int32_t*, int64_t,
                                           int64_t, int64_t, int64_t, double*, double);
template void logprob_head_backward<float>(float*, float*, float*, const float*, const float*,
                                           const float*, const float*, const int32_t*,
                                           const float*, const float*, int64_t, int64_t, int64_t,
                                           int64_t, float*, bool);
template void logprob_head_backward<double>(double*, double*, double*, const double*,
                                            const double*, const double*, const double*,
                                            const int32_t*, const double*, const double*, int64_t,
                                            int64_t, int64_t, int64_t, double*, bool);

}  // namespace lyre::cpu
