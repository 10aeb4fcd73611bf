// Token embedding: a gather forward, a scatter-add backward.
#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "layers.hpp"
#include "partition.hpp"

namespace lyre::cpu {
namespace {

void check_tokens(const int32_t* tokens, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    if (tokens[n] < 0 || tokens[n] >= V)
      throw std::out_of_range("embedding: token id " + std::to_string(tokens[n]) + " at row " +
                              std::to_string(n) + " is outside the vocabulary [0, " +
                              std::to_string(V) + ")");
}

}  // namespace

// tokens (N), table (V,C) -> out (N,C)
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t N, int64_t C,
                       int64_t V) {
  check_tokens(tokens, N, V);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) std::copy_n(table + tokens[n] * C, C, out + n * C);
}

// dout (N,C) -> dtable (V,C) +=
// Repeated tokens add into the same row, so threads split the columns, not the rows: every
// element then sums its rows in increasing n whatever the thread count.
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t V) {
  check_tokens(tokens, N, V);
#pragma omp parallel
  {
    const detail::Range cols =
        detail::static_share(C, omp_get_thread_num(), omp_get_num_threads(), 16);
    for (int64_t n = 0; n < N; ++n) {
      T* d = dtable + tokens[n] * C;
      const T* g = dout + n * C;
#pragma omp simd
      for (int64_t c = cols.begin; c < cols.end; ++c) d[c] += g[c];
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t,
                                       int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<double>(double*, const double*, const int32_t*, int64_t,
                                         int64_t, int64_t);

}  // namespace lyre::cpu
