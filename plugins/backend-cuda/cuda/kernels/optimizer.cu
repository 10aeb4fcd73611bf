// Multi-tensor optimizer kernels over the flat float buffers: one block per OptimizerChunk (at
// most kOptimizerChunk elements with its own weight decay), so one launch updates every
// parameter. The per-element arithmetic follows backend-cpu's model/adamw.cpp and model/sgd.cpp
// operation for operation (PyTorch's torch.optim.AdamW / SGD); the scalars are formed in double
// on the host, as PyTorch forms them in Python.
#include <climits>
#include <cmath>
#include <string>

#include "kernels.hpp"
#include "memory_bound.cuh"

namespace lyre::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPack = 4;  // floats: 16 bytes

struct AdamwScalars {
  float grad_scale, beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float step_size;  // lr / (1 - beta1^t)
  float bc2_sqrt;   // sqrt(1 - beta2^t)
  double lr;        // for 1 - lr * weight_decay, formed in double per chunk
};

struct SgdScalars {
  float grad_scale, lr, momentum, one_minus_dampening;
  bool use_momentum, nesterov, first_step;
};

__device__ __forceinline__ void adamw_update(float& p, float& m, float& v, float grad, float keep,
                                             const AdamwScalars& s) {
  const float g = grad * s.grad_scale;
  p *= keep;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  p -= s.step_size * m / (sqrtf(v) / s.bc2_sqrt + s.eps);
}

__device__ __forceinline__ void sgd_update(float& p, float& buf, float grad, float wd, const SgdScalars& s) {
  float g = grad * s.grad_scale + wd * p;
  if (s.use_momentum) {
    buf = s.first_step ? g : s.momentum * buf + s.one_minus_dampening * g;
    g = s.nesterov ? g + s.momentum * buf : buf;
  }
  p -= s.lr * g;
}

// Packs of kPack where the chunk's offset allows (bases 16-byte aligned: `aligned`), then the
// rest one by one.
__device__ __forceinline__ int64_t chunk_packs(const OptimizerChunk& chunk, bool aligned) {
  return aligned && chunk.offset % kPack == 0 ? chunk.numel / kPack : 0;
}

template <typename T>
__global__ void adamw_kernel(float* __restrict__ params, T* __restrict__ params_lowp, const float* __restrict__ grads,
                             float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq,
                             const OptimizerChunk* __restrict__ chunks, AdamwScalars s, bool aligned) {
  const OptimizerChunk chunk = chunks[blockIdx.x];
  const float keep = float(1.0 - s.lr * double(chunk.weight_decay));
  float* p = params + chunk.offset;
  const float* g = grads + chunk.offset;
  float* m = exp_avg + chunk.offset;
  float* v = exp_avg_sq + chunk.offset;
  T* lowp = params_lowp != nullptr ? params_lowp + chunk.offset : nullptr;
  const int64_t packs = chunk_packs(chunk, aligned);
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const int64_t e = i * kPack;
    auto pp = mb::Pack<float, kPack>::load(p + e);
    auto mm = mb::Pack<float, kPack>::load(m + e);
    auto vv = mb::Pack<float, kPack>::load(v + e);
    const auto gg = mb::Pack<float, kPack>::load(g + e);
#pragma unroll
    for (int k = 0; k < kPack; ++k) adamw_update(pp.v[k], mm.v[k], vv.v[k], gg.v[k], keep, s);
    pp.store(p + e);
    mm.store(m + e);
    vv.store(v + e);
    if (lowp != nullptr) {
      mb::Pack<T, kPack> low;
#pragma unroll
      for (int k = 0; k < kPack; ++k) low.v[k] = mb::from_float<T>(pp.v[k]);
      low.store(lowp + e);
    }
  }
  for (int64_t e = packs * kPack + threadIdx.x; e < chunk.numel; e += blockDim.x) {
    float pe = p[e], me = m[e], ve = v[e];
    adamw_update(pe, me, ve, g[e], keep, s);
    p[e] = pe;
    m[e] = me;
    v[e] = ve;
    if (lowp != nullptr) lowp[e] = mb::from_float<T>(pe);
  }
}

template <typename T>
__global__ void sgd_kernel(float* __restrict__ params, T* __restrict__ params_lowp, const float* __restrict__ grads,
                           float* __restrict__ momentum_buf, const OptimizerChunk* __restrict__ chunks, SgdScalars s,
                           bool aligned) {
  const OptimizerChunk chunk = chunks[blockIdx.x];
  float* p = params + chunk.offset;
  const float* g = grads + chunk.offset;
  float* buf = s.use_momentum ? momentum_buf + chunk.offset : nullptr;
  T* lowp = params_lowp != nullptr ? params_lowp + chunk.offset : nullptr;
  const int64_t packs = chunk_packs(chunk, aligned);
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const int64_t e = i * kPack;
    auto pp = mb::Pack<float, kPack>::load(p + e);
    const auto gg = mb::Pack<float, kPack>::load(g + e);
    mb::Pack<float, kPack> bb{};
    if (buf != nullptr) bb = mb::Pack<float, kPack>::load(buf + e);
#pragma unroll
    for (int k = 0; k < kPack; ++k) sgd_update(pp.v[k], bb.v[k], gg.v[k], chunk.weight_decay, s);
    pp.store(p + e);
    if (buf != nullptr) bb.store(buf + e);
    if (lowp != nullptr) {
      mb::Pack<T, kPack> low;
#pragma unroll
      for (int k = 0; k < kPack; ++k) low.v[k] = mb::from_float<T>(pp.v[k]);
      low.store(lowp + e);
    }
  }
  for (int64_t e = packs * kPack + threadIdx.x; e < chunk.numel; e += blockDim.x) {
    float pe = p[e], be = buf != nullptr ? buf[e] : 0.0f;
    sgd_update(pe, be, g[e], chunk.weight_decay, s);
    p[e] = pe;
    if (buf != nullptr) buf[e] = be;
    if (lowp != nullptr) lowp[e] = mb::from_float<T>(pe);
  }
}

// scratch[chunk] = sum over the chunk of double(x)^2: each thread its strided elements in order,
// then the block's fixed tree.
__global__ void chunk_squares_kernel(double* __restrict__ scratch, const float* __restrict__ x,
                                     const OptimizerChunk* __restrict__ chunks, bool aligned) {
  __shared__ double reduce[32];
  const OptimizerChunk chunk = chunks[blockIdx.x];
  const float* xc = x + chunk.offset;
  const int64_t packs = chunk_packs(chunk, aligned);
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const auto xx = mb::Pack<float, kPack>::load(xc + i * kPack);
#pragma unroll
    for (int k = 0; k < kPack; ++k) sum += double(xx.v[k]) * double(xx.v[k]);
  }
  for (int64_t e = packs * kPack + threadIdx.x; e < chunk.numel; e += blockDim.x) sum += double(xc[e]) * double(xc[e]);
  sum = mb::block_sum(sum, reduce);
  if (threadIdx.x == 0) scratch[blockIdx.x] = sum;
}

// *out = sum of scratch (n), by one block in a fixed order.
__global__ void sum_scratch_kernel(double* __restrict__ out, const double* __restrict__ scratch, int64_t n) {
  __shared__ double reduce[32];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += scratch[i];
  sum = mb::block_sum(sum, reduce);
  if (threadIdx.x == 0) *out = sum;
}

// One block per chunk: grid.x holds up to 2^31 - 1.
void check_chunks(int64_t num_chunks, const char* what) {
  if (num_chunks > INT_MAX)
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(what) + ": " + std::to_string(num_chunks) +
                                                         " chunks are more than one launch takes");
}

}  // namespace

template <typename T>
void adamw_step(float* params, T* params_lowp, const float* grads, float* exp_avg, float* exp_avg_sq,
                const OptimizerChunk* chunks, int64_t num_chunks, const AdamwHyper& h, cudaStream_t stream) {
  if (num_chunks <= 0) return;
  check_chunks(num_chunks, "adamw_step");
  AdamwScalars s;
  s.grad_scale = h.grad_scale;
  s.beta1 = float(h.beta1);
  s.beta2 = float(h.beta2);
  s.one_minus_beta1 = float(1.0 - h.beta1);
  s.one_minus_beta2 = float(1.0 - h.beta2);
  s.eps = h.eps;
  s.step_size = float(double(h.lr) / double(h.bias_correction1));
  s.bc2_sqrt = float(std::sqrt(double(h.bias_correction2)));
  s.lr = double(h.lr);
  const bool aligned = mb::aligned16(params) && mb::aligned16(grads) && mb::aligned16(exp_avg) &&
                       mb::aligned16(exp_avg_sq) && (params_lowp == nullptr || mb::aligned16(params_lowp));
  adamw_kernel<<<unsigned(num_chunks), kThreads, 0, stream>>>(params, params_lowp, grads, exp_avg, exp_avg_sq,
                                                             chunks, s, aligned);
  LYRE_CUDA_CHECK_LAUNCH();
}

template <typename T>
void sgd_step(float* params, T* params_lowp, const float* grads, float* momentum_buf, const OptimizerChunk* chunks,
              int64_t num_chunks, const SgdHyper& h, cudaStream_t stream) {
  if (num_chunks <= 0) return;
  check_chunks(num_chunks, "sgd_step");
  if (h.momentum > 0 && momentum_buf == nullptr)
    throw plugin::Error(LYRE_ERROR_INTERNAL, "sgd_step: momentum > 0 needs a momentum buffer");
  SgdScalars s;
  s.grad_scale = h.grad_scale;
  s.lr = h.lr;
  s.momentum = h.momentum;
  s.one_minus_dampening = float(1.0 - double(h.dampening));
  s.use_momentum = h.momentum > 0;
  s.nesterov = h.nesterov;
  s.first_step = h.first_step;
  const bool aligned = mb::aligned16(params) && mb::aligned16(grads) &&
                       (momentum_buf == nullptr || mb::aligned16(momentum_buf)) &&
                       (params_lowp == nullptr || mb::aligned16(params_lowp));
  sgd_kernel<<<unsigned(num_chunks), kThreads, 0, stream>>>(params, params_lowp, grads, momentum_buf, chunks, s,
                                                           aligned);
  LYRE_CUDA_CHECK_LAUNCH();
}

void squared_norm(double* out, const float* x, const OptimizerChunk* chunks, int64_t num_chunks, double* scratch,
                  cudaStream_t stream) {
  check_chunks(num_chunks, "squared_norm");
  if (num_chunks > 0) {
    chunk_squares_kernel<<<unsigned(num_chunks), kThreads, 0, stream>>>(scratch, x, chunks, mb::aligned16(x));
    LYRE_CUDA_CHECK_LAUNCH();
  }
  sum_scratch_kernel<<<1, 1024, 0, stream>>>(out, scratch, num_chunks);
  LYRE_CUDA_CHECK_LAUNCH();
}

template void adamw_step<float>(float*, float*, const float*, float*, float*, const OptimizerChunk*, int64_t,
                                const AdamwHyper&, cudaStream_t);
template void adamw_step<bf16>(float*, bf16*, const float*, float*, float*, const OptimizerChunk*, int64_t,
                               const AdamwHyper&, cudaStream_t);
template void sgd_step<float>(float*, float*, const float*, float*, const OptimizerChunk*, int64_t, const SgdHyper&,
                              cudaStream_t);
template void sgd_step<bf16>(float*, bf16*, const float*, float*, const OptimizerChunk*, int64_t, const SgdHyper&,
                             cudaStream_t);

}  // namespace lyre::cuda
