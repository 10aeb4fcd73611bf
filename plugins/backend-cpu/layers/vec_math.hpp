// Vector helpers the layer kernels share (private to layers/): dot, axpy, max, and exp/sigmoid
// over arrays. float runs AVX2 code (the library is built with -mavx2 -mfma); double is the
// plain reference. Every reduction here has a fixed order, so results do not depend on threads.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace lyre::cpu::detail {

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y += a * x
template <typename T>
inline void axpy(T* y, T a, const T* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

template <typename T>
inline T max_of(const T* x, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// exp of 8 floats: Cephes' range reduction and degree-6 polynomial, within 1e-7 relative of
// exp. Inputs below -88 give 0 (also -inf), above 88 give exp(88); NaN stays NaN. We write it
// out because glibc's vector expf is only declared under -ffast-math, and GCC will not
// if-convert the clamps of a scalar version under the default -ftrapping-math.
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-88.0f), x);  // max/min return the 2nd operand on NaN
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);
  // Adding 1.5*2^23 rounds x*log2(e) to the integer n, which then sits in the low mantissa bits.
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  // r = x - n*ln2, with ln2 split in two so the product is exact enough.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n built from its exponent bits; n = -127 gives 0.
  const __m256i bits =
      _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000 - 127));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(bits, 23)));
}

inline float hsum8(__m256 v) {
  alignas(32) float lane[8];
  _mm256_store_ps(lane, v);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// x[i] = exp(x[i] - shift); returns the sum of the new x.
inline float exp_shift_sum(float* x, int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (i < n) {  // the tail through the same kernel, padded with -inf (exp -> 0)
    alignas(32) float tail[8];
    for (int k = 0; k < 8; ++k) tail[k] = i + k < n ? x[i + k] : -INFINITY;
    const __m256 e = exp8(_mm256_sub_ps(_mm256_load_ps(tail), sh));
    _mm256_store_ps(tail, e);
    for (int64_t k = 0; i + k < n; ++k) x[i + k] = tail[k];
    acc = _mm256_add_ps(acc, e);
  }
  return hsum8(acc);
}

inline double exp_shift_sum(double* x, int64_t n, double shift) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    s += x[i];
  }
  return s;
}

// sum of exp(x[i] - shift), x untouched.
inline float sum_exp_shift(const float* x, int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
  if (i < n) {
    alignas(32) float tail[8];
    for (int k = 0; k < 8; ++k) tail[k] = i + k < n ? x[i + k] : -INFINITY;
    acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_load_ps(tail), sh)));
  }
  return hsum8(acc);
}

inline double sum_exp_shift(const double* x, int64_t n, double shift) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - shift);
  return s;
}

// y[i] = 1 / (1 + exp(-x[i])); y may alias x.
inline void sigmoid(float* y, const float* x, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_xor_ps(_mm256_loadu_ps(x + i), sign));
    _mm256_storeu_ps(y + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
  }
  if (i < n) {
    alignas(32) float tail[8] = {};
    for (int64_t k = 0; i + k < n; ++k) tail[k] = x[i + k];
    const __m256 e = exp8(_mm256_xor_ps(_mm256_load_ps(tail), sign));
    _mm256_store_ps(tail, _mm256_div_ps(one, _mm256_add_ps(one, e)));
    for (int64_t k = 0; i + k < n; ++k) y[i + k] = tail[k];
  }
}

inline void sigmoid(double* y, const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 1.0 / (1.0 + std::exp(-x[i]));
}

}  // namespace lyre::cpu::detail
