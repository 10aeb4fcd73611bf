// GEMM: float through oneDNN's sgemm, double as plain loops (the reference the gradient checks
// use; simple on purpose).
//
// Row invariance: oneDNN computes every row of C with the same operations, in the same order,
// whatever M is, as long as M >= 16; below that it takes a small-M path that rounds differently.
// A document packed into a long row and the same document alone must give the same log-probs,
// so products of fewer than kMinRows rows are computed as kMinRows rows, zero-padded
// (tests/backend-cpu-layers/gemm_invariance.cpp pins the property this relies on).
#include <dnnl.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "layers.hpp"

namespace lyre::cpu {

// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C; beta == 0 never reads C (BLAS rule).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // op(A)*op(B) is empty: C = beta * C
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    constexpr int64_t kMinRows = 16;
    dnnl_status_t st;
    if (M < kMinRows) {
      thread_local std::vector<float> a_rows, c_rows;
      a_rows.assign(size_t(kMinRows * K), 0.0f);
      c_rows.assign(size_t(kMinRows * N), 0.0f);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k) a_rows[size_t(i * K + k)] = trans_a ? A[k * lda + i] : A[i * lda + k];
      if (beta != 0.0f)
        for (int64_t i = 0; i < M; ++i) std::copy_n(C + i * ldc, N, c_rows.data() + i * N);
      st = dnnl_sgemm('N', trans_b ? 'T' : 'N', kMinRows, N, K, alpha, a_rows.data(), K, B, ldb, beta,
                      c_rows.data(), N);
      for (int64_t i = 0; i < M; ++i) std::copy_n(c_rows.data() + i * N, N, C + i * ldc);
    } else {
      st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
    if (st != dnnl_success)
      throw std::runtime_error("dnnl_sgemm failed with status " + std::to_string(int(st)) +
                               " (M=" + std::to_string(M) + " N=" + std::to_string(N) +
                               " K=" + std::to_string(K) + ")");
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        T acc = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T a = trans_a ? A[k * lda + i] : A[i * lda + k];
          const T b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
          acc += a * b;
        }
        T& c = C[i * ldc + j];
        c = beta == T(0) ? alpha * acc : alpha * acc + beta * c;
      }
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

}  // namespace lyre::cpu
