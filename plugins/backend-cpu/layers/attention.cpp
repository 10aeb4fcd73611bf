// Grouped-query causal attention with document masking, flash style: forward keeps only the
// log-sum-exp of each query's scores; backward recomputes the probabilities row by row. The
// biggest temporary is one row of T scores per thread.
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

void check_heads(int64_t Hq, int64_t Hkv, int64_t D) {
  if (Hkv <= 0 || Hq <= 0 || Hq % Hkv != 0 || D <= 0)
    throw std::invalid_argument("attention: need Hq a positive multiple of Hkv and D > 0, got Hq=" +
                                std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
                                " D=" + std::to_string(D));
}

// The keys query i may see, in increasing order: j <= i in the same segment. Never empty.
inline int64_t visible_keys(int32_t* idx, const int32_t* seg, int64_t i) {
  int64_t cnt = 0;
  const int32_t s = seg[i];
  for (int64_t j = 0; j <= i; ++j)
    if (seg[j] == s) idx[cnt++] = int32_t(j);
  return cnt;
}

}  // namespace

// qkv (B*T, (Hq+2*Hkv)*D), segment_ids (B*T) -> out (B*T, Hq*D), lse (B*T, Hq)
// Work is split over (batch, query head); each task costs the same.
template <typename T>
void attention_forward(T* out, T* lse, const T* qkv, const int32_t* segment_ids, int64_t B,
                       int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D) {
  check_heads(Hq, Hkv, D);
  const int64_t S = (Hq + 2 * Hkv) * D, group = Hq / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  const int max_threads = omp_get_max_threads();
  std::vector<T> scratch(size_t(max_threads) * (Tlen + D));
  std::vector<int32_t> visible(size_t(max_threads) * Tlen);
#pragma omp parallel
  {
    const int t = omp_get_thread_num();
    T* p = scratch.data() + t * (Tlen + D);
    T* acc = p + Tlen;
    int32_t* idx = visible.data() + t * Tlen;
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / group;
        const T* rows = qkv + b * Tlen * S;
        const T* kbase = rows + (Hq + g) * D;
        const T* vbase = rows + (Hq + Hkv + g) * D;
        const int32_t* seg = segment_ids + b * Tlen;
        for (int64_t i = 0; i < Tlen; ++i) {
          const T* q = rows + i * S + h * D;
          const int64_t cnt = visible_keys(idx, seg, i);
          T m = -std::numeric_limits<T>::infinity();
          for (int64_t c = 0; c < cnt; ++c) {
            p[c] = detail::dot(q, kbase + idx[c] * S, D) * scale;
            m = std::max(m, p[c]);
          }
          const T sum = detail::exp_shift_sum(p, cnt, m);
          std::fill_n(acc, D, T(0));
          for (int64_t c = 0; c < cnt; ++c) detail::axpy(acc, p[c], vbase + idx[c] * S, D);
          const int64_t n = b * Tlen + i;
          T* o = out + n * Hq * D + h * D;
          const T inv = T(1) / sum;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) o[d] = acc[d] * inv;
          lse[n * Hq + h] = m + std::log(sum);
        }
      }
  }
}

// dout (B*T, Hq*D) -> dqkv (B*T, (Hq+2*Hkv)*D) =
// With p_ij = exp(s_ij - lse_i), D_i = dout_i . out_i and ds_ij = p_ij (dout_i . v_j - D_i):
// dv_j += p_ij dout_i, dq_i += scale ds_ij k_j, dk_j += scale ds_ij q_i.
// Work is split over (batch, kv head): a task owns that head's dk, dv and the dq of its query
// group, so no two threads write the same element and each sum runs in a fixed order.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* out, const T* lse, const T* qkv,
                        const int32_t* segment_ids, int64_t B, int64_t Tlen, int64_t Hq,
                        int64_t Hkv, int64_t D) {
  check_heads(Hq, Hkv, D);
  const int64_t S = (Hq + 2 * Hkv) * D, group = Hq / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  const int max_threads = omp_get_max_threads();
  std::vector<T> scratch(size_t(max_threads) * Tlen);
  std::vector<int32_t> visible(size_t(max_threads) * Tlen);
#pragma omp parallel
  {
    const int t = omp_get_thread_num();
    T* p = scratch.data() + t * Tlen;
    int32_t* idx = visible.data() + t * Tlen;
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t g = 0; g < Hkv; ++g) {
        const T* rows = qkv + b * Tlen * S;
        T* drows = dqkv + b * Tlen * S;
        const T* kbase = rows + (Hq + g) * D;
        const T* vbase = rows + (Hq + Hkv + g) * D;
        T* dkbase = drows + (Hq + g) * D;
        T* dvbase = drows + (Hq + Hkv + g) * D;
        for (int64_t i = 0; i < Tlen; ++i) {
          std::fill_n(drows + i * S + g * group * D, group * D, T(0));
          std::fill_n(dkbase + i * S, D, T(0));
          std::fill_n(dvbase + i * S, D, T(0));
        }
        const int32_t* seg = segment_ids + b * Tlen;
        for (int64_t h = g * group; h < (g + 1) * group; ++h)
          for (int64_t i = 0; i < Tlen; ++i) {
            const int64_t n = b * Tlen + i;
            const T* q = rows + i * S + h * D;
            T* dq = drows + i * S + h * D;
            const T* doi = dout + n * Hq * D + h * D;
            const T Di = detail::dot(doi, out + n * Hq * D + h * D, D);
            const int64_t cnt = visible_keys(idx, seg, i);
            for (int64_t c = 0; c < cnt; ++c) p[c] = detail::dot(q, kbase + idx[c] * S, D) * scale;
            detail::exp_shift_sum(p, cnt, lse[n * Hq + h]);
            for (int64_t c = 0; c < cnt; ++c) {
              const int64_t off = idx[c] * S;
              const T dp = detail::dot(doi, vbase + off, D);
              const T ds = p[c] * (dp - Di) * scale;
              detail::axpy(dvbase + off, p[c], doi, D);
              detail::axpy(dq, ds, kbase + off, D);
              detail::axpy(dkbase + off, ds, q, D);
            }
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
