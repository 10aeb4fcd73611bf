// Rotary position embedding in Hugging Face's rotate_half layout: pair i of a head is
// (x[i], x[i + D/2]), rotated by pos * inv_freq[i].
#include <cmath>
#include <stdexcept>
#include <string>

#include "layers.hpp"

namespace lyre::cpu {

// inv_freq (D/2) -> cos, sin (max_pos, D/2), angles and trigonometry in double
template <typename T>
void rope_table(std::vector<T>& cos, std::vector<T>& sin, const std::vector<double>& inv_freq,
                int64_t max_pos) {
  const int64_t half = int64_t(inv_freq.size());
  cos.resize(size_t(max_pos * half));
  sin.resize(size_t(max_pos * half));
  T* c = cos.data();
  T* s = sin.data();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(p) * inv_freq[i];
      c[p * half + i] = T(std::cos(angle));
      s[p * half + i] = T(std::sin(angle));
    }
}

namespace {

void check_positions(const int32_t* positions, int64_t N, int64_t max_pos) {
  for (int64_t n = 0; n < N; ++n)
    if (positions[n] < 0 || positions[n] >= max_pos)
      throw std::out_of_range("rope: position " + std::to_string(positions[n]) + " at row " +
                              std::to_string(n) + " is outside the table [0, " +
                              std::to_string(max_pos) + ")");
}

// Rotates every pair of H heads per row by +angle (Sign = 1) or -angle (Sign = -1):
// (a, b) -> (a cos - s b, b cos + s a) with s = Sign * sin.
template <int Sign, typename T>
void rotate(T* x, const int32_t* positions, const T* cos, const T* sin, int64_t N, int64_t H,
            int64_t D, int64_t row_stride, int64_t max_pos) {
  check_positions(positions, N, max_pos);
  const int64_t half = D / 2;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* c = cos + positions[n] * half;
    const T* s = sin + positions[n] * half;
    for (int64_t h = 0; h < H; ++h) {
      T* a = x + n * row_stride + h * D;
      T* b = a + half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const T ai = a[i], bi = b[i], si = Sign * s[i];
        a[i] = ai * c[i] - bi * si;
        b[i] = bi * c[i] + ai * si;
      }
    }
  }
}

}  // namespace

// x rows (N, row_stride), H heads of D at x + n*row_stride + h*D, positions (N) -> x rotated
template <typename T>
void rope_forward(T* x, const int32_t* positions, const T* cos, const T* sin, int64_t N,
                  int64_t H, int64_t D, int64_t row_stride, int64_t max_pos) {
  rotate<1>(x, positions, cos, sin, N, H, D, row_stride, max_pos);
}

// dx (same layout) -> dx rotated back: the transpose of a rotation is its inverse
template <typename T>
void rope_backward(T* dx, const int32_t* positions, const T* cos, const T* sin, int64_t N,
                   int64_t H, int64_t D, int64_t row_stride, int64_t max_pos) {
  rotate<-1>(dx, positions, cos, sin, N, H, D, row_stride, max_pos);
}

template void rope_table<float>(std::vector<float>&, std::vector<float>&,
                                const std::vector<double>&, int64_t);
template void rope_table<double>(std::vector<double>&, std::vector<double>&,
                                 const std::vector<double>&, int64_t);
template void rope_forward<float>(float*, const int32_t*, const float*, const float*, int64_t,
                                  int64_t, int64_t, int64_t, int64_t);
template void rope_forward<double>(double*, const int32_t*, const double*, const double*, int64_t,
                                   int64_t, int64_t, int64_t, int64_t);
template void rope_backward<float>(float*, const int32_t*, const float*, const float*, int64_t,
                                   int64_t, int64_t, int64_t, int64_t);
template void rope_backward<double>(double*, const int32_t*, const double*, const double*,
                                    int64_t, int64_t, int64_t, int64_t, int64_t);

}  // namespace lyre::cpu
