// SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g).
#include "layers.hpp"
#include "vec_math.hpp"

namespace lyre::cpu {

// gu (N,2F): gate [0,F), up [F,2F) -> out (N,F)
template <typename T>
void swiglu_forward(T* out, const T* gu, int64_t N, int64_t F) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* g = gu + n * 2 * F;
    const T* u = g + F;
    T* o = out + n * F;
    detail::sigmoid(o, g, F);
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) o[f] = g[f] * o[f] * u[f];
  }
}

// dout (N,F) -> dgu (N,2F) =
// dgate = dout * up * s * (1 + g * (1 - s)), dup = dout * g * s, with s = sigmoid(g)
template <typename T>
void swiglu_backward(T* dgu, const T* dout, const T* gu, int64_t N, int64_t F) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* g = gu + n * 2 * F;
    const T* u = g + F;
    const T* d = dout + n * F;
    T* dg = dgu + n * 2 * F;
    T* du = dg + F;
    detail::sigmoid(dg, g, F);  // dg holds s until overwritten below
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) {
      const T s = dg[f];
      du[f] = d[f] * g[f] * s;
      dg[f] = d[f] * u[f] * s * (T(1) + g[f] * (T(1) - s));
    }
  }
}

template void swiglu_forward<float>(float*, const float*, int64_t, int64_t);
template void swiglu_forward<double>(double*, const double*, int64_t, int64_t);
template void swiglu_backward<float>(float*, const float*, const float*, int64_t, int64_t);
template void swiglu_backward<double>(double*, const double*, const double*, int64_t, int64_t);

}  // namespace lyre::cpu
