// One row of RMSNorm, forward and backward (private to layers/): shared by rmsnorm.cpp and the
// fused log-prob head, which normalises rows it picks out of the batch.
#pragma once

#include <cmath>
#include <cstdint>

#include "vec_math.hpp"

namespace lyre::cpu::detail {

// x (C), w (C) -> out (C) = x * r * w; returns r = 1/sqrt(mean(x^2) + eps)
template <typename T>
inline T rmsnorm_row_forward(T* out, const T* x, const T* w, int64_t C, T eps) {
  const T r = T(1) / std::sqrt(dot(x, x, C) / T(C) + eps);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] = x[c] * r * w[c];
  return r;
}

// out (C) = x * r * w with a saved r (the backward's recomputation, bit-identical to forward)
template <typename T>
inline void rmsnorm_row_apply(T* out, const T* x, const T* w, T r, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] = x[c] * r * w[c];
}

// dout (C) -> dx (C) (+= if Accumulate, else =):
// dx = r*w*dout - x * r^3/C * sum(w*dout*x)
template <bool Accumulate, typename T>
inline void rmsnorm_row_backward(T* dx, const T* dout, const T* x, const T* w, T r, int64_t C) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < C; ++c) s += w[c] * dout[c] * x[c];
  const T k = s * r * r * r / T(C);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const T v = r * w[c] * dout[c] - k * x[c];
    if constexpr (Accumulate) {
      dx[c] += v;
    } else {
      dx[c] = v;
    }
  }
}

}  // namespace lyre::cpu::detail
