// Linear layer without bias: two or three GEMMs.
#include "layers.hpp"

namespace lyre::cpu {

// inp (N,C), weight (OC,C) -> out (N,OC) = inp . weight^T
template <typename T>
void linear_forward(T* out, const T* inp, const T* weight, int64_t N, int64_t C, int64_t OC) {
  gemm<T>(false, true, N, OC, C, T(1), inp, C, weight, C, T(0), out, OC);
}

// dout (N,OC) -> dinp (N,C) = or += dout . weight, dweight (OC,C) += dout^T . inp
template <typename T>
void linear_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                     int64_t N, int64_t C, int64_t OC, bool accumulate_dinp) {
  if (dinp)
    gemm<T>(false, false, N, C, OC, T(1), dout, OC, weight, C, accumulate_dinp ? T(1) : T(0),
            dinp, C);
  if (dweight) gemm<T>(true, false, OC, C, N, T(1), dout, OC, inp, C, T(1), dweight, C);
}

template void linear_forward<float>(float*, const float*, const float*, int64_t, int64_t,
                                    int64_t);
template void linear_forward<double>(double*, const double*, const double*, int64_t, int64_t,
                                     int64_t);
template void linear_backward<float>(float*, float*, const float*, const float*, const float*,
                                     int64_t, int64_t, int64_t, bool);
template void linear_backward<double>(double*, double*, const double*, const double*,
                                      const double*, int64_t, int64_t, int64_t, bool);

}  // namespace lyre::cpu
