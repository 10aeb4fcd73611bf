// RMSNorm: out = x / sqrt(mean(x^2) + eps) * weight.
#include <omp.h>

#include <vector>

#include "layers.hpp"
#include "partition.hpp"
#include "rmsnorm_row.hpp"

namespace lyre::cpu {

// x (N,C), weight (C) -> out (N,C), rstd (N)
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* weight, int64_t N, int64_t C, T eps) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    rstd[n] = detail::rmsnorm_row_forward(out + n * C, x + n * C, weight, C, eps);
}

// dout (N,C) -> dx (N,C) +=, dweight (C) += sum_n dout * x * rstd
// dweight: each thread sums its fixed block of rows into its own partial, then the partials are
// added in thread order, so the result is the same on every run with the same thread count.
template <typename T>
void rmsnorm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight,
                      const T* rstd, int64_t N, int64_t C) {
  std::vector<T> partial(dweight ? size_t(omp_get_max_threads()) * C : 0);
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    T* pw = dweight ? partial.data() + t * C : nullptr;
    const detail::Range rows = detail::static_share(N, t, nt);
    for (int64_t n = rows.begin; n < rows.end; ++n) {
      const T* xn = x + n * C;
      const T* gn = dout + n * C;
      const T r = rstd[n];
      detail::rmsnorm_row_backward<true>(dx + n * C, gn, xn, weight, r, C);
      if (pw) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pw[c] += gn[c] * xn[c] * r;
      }
    }
    if (dweight) {
#pragma omp barrier
      const detail::Range cols = detail::static_share(C, t, nt, 16);
      for (int u = 0; u < nt; ++u) {
        const T* pu = partial.data() + u * C;
#pragma omp simd
        for (int64_t c = cols.begin; c < cols.end; ++c) dweight[c] += pu[c];
      }
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int64_t, int64_t,
                                     float);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int64_t,
                                      int64_t, double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int64_t, int64_t);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, int64_t, int64_t);

}  // namespace lyre::cpu
