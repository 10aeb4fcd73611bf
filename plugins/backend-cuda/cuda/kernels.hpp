// backend-cuda's kernels: what the model launches, forward and backward side by side.
//
// Conventions
//  - Every pointer is device memory unless named *_host. Every launcher is asynchronous on
//    `stream` and checks its launch (LYRE_CUDA_CHECK_LAUNCH); none synchronizes.
//  - Row-major; N = B*T rows (tokens); d = hidden size; "+=" in a comment means the kernel adds
//    into that output, otherwise it overwrites.
//  - `T` is the activation type: bf16 ("precision": "bf16") or float ("fp32"). Loads of T widen
//    to float; every sum, norm statistic, softmax and exp runs in float. The residual stream,
//    norm weights, gradients of parameters, optimizer state and master weights are float in both
//    precisions.
//  - Templates are instantiated for T = float and T = bf16 in the .cu file that defines them.
//  - Alignment: activation and workspace pointers are 256-byte aligned (the model carves its
//    arenas so; attention's simple, prepare and decode kernels rely on at least 8 bytes).
//    Parameter pointers (weights, their gradients) are only element-aligned: parameters are packed
//    without padding, so every kernel that reads them checks before taking a vector path.
//  - Reductions over rows into one parameter gradient (embedding, norm weights) may use float
//    atomics: results are then not bit-reproducible run to run (documented, not hidden).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.hpp"

namespace lyre::cuda {

// ---- Conversions and simple element-wise work (kernels/elementwise.cu) ----
// out[i] = T(in[i]) (round to nearest even for bf16), n elements.
template <typename T>
void cast_from_float(T* out, const float* in, int64_t n, cudaStream_t stream);
// out[i] = float(in[i])
template <typename T>
void cast_to_float(float* out, const T* in, int64_t n, cudaStream_t stream);
// out[i] += in[i] (float)
void add_inplace(float* out, const float* in, int64_t n, cudaStream_t stream);

// ---- Token embedding (kernels/embedding.cu) ----
// tokens (N) int32 in [0, V) (checked on the host before), table (V, C) of T -> out (N, C) float
// (the residual stream starts in float).
template <typename T>
void embedding_forward(float* out, const int32_t* tokens, const T* table, int64_t N, int64_t C,
                       cudaStream_t stream);
// dout (N, C) float -> dtable (V, C) float += (atomics)
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t C,
                        cudaStream_t stream);

// ---- RMSNorm, optionally fused with the residual add (kernels/rmsnorm.cu) ----
// x_out (N, C) float = x_in + delta (delta may be nullptr: x_out = x_in; x_out may alias x_in),
// then norm_out (N, C) T = x_out * rstd * weight, rstd (N) float = 1/sqrt(mean(x_out^2) + eps).
// weight (C) float (the master copy: norm weights are never cast).
template <typename T>
void residual_rmsnorm_forward(float* x_out, T* norm_out, float* rstd, const float* x_in, const T* delta,
                              const float* weight, int64_t N, int64_t C, float eps, cudaStream_t stream);
// dout (N, C) T (the gradient of norm_out) -> dx (N, C) float +=, dweight (C) float += (may be
// nullptr). x is the norm's input (x_out above), rstd from forward.
template <typename T>
void rmsnorm_backward(float* dx, float* dweight, const T* dout, const float* x, const float* weight,
                      const float* rstd, int64_t N, int64_t C, cudaStream_t stream);

// ---- Rotary position embedding, HF rotate_half layout (kernels/rope.cu) ----
// qkv (N, (Hq + 2*Hkv)*D) T: rotates the Hq query heads and the Hkv key heads of each row in
// place (value heads untouched). Pair i in [0, D/2) of a head is (x[i], x[i + D/2]), rotated by
// angle positions[n] * inv_freq[i]: cos/sin tables (max_pos, D/2) float, computed on the host in
// double. positions (N) int32 in [0, max_pos) (checked on the host).
template <typename T>
void rope_forward(T* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N,
                  int64_t Hq, int64_t Hkv, int64_t D, cudaStream_t stream);
// The inverse rotation, in place on dqkv (same layout).
template <typename T>
void rope_backward(T* dqkv, const int32_t* positions, const float* cos, const float* sin, int64_t N,
                   int64_t Hq, int64_t Hkv, int64_t D, cudaStream_t stream);

// ---- SwiGLU (kernels/swiglu.cu) ----
// gu (N, 2F) T: gate in columns [0, F), up in [F, 2F) -> out (N, F) T = silu(gate) * up
template <typename T>
void swiglu_forward(T* out, const T* gu, int64_t N, int64_t F, cudaStream_t stream);
// dout (N, F) T -> dgu (N, 2F) T (overwritten)
template <typename T>
void swiglu_backward(T* dgu, const T* dout, const T* gu, int64_t N, int64_t F, cudaStream_t stream);

// ---- Grouped-query causal attention with document masking (kernels/attention.cu) ----
// qkv (B*T, (Hq + 2*Hkv)*D) T, roped: per row Hq query heads, then Hkv key heads, then Hkv value
// heads, each D wide. Query head h reads kv head h / (Hq/Hkv). Token i of a row attends to token
// j of the same row iff j <= i and segment_ids[j] == segment_ids[i] (segment 0 = padding, which
// attends only to padding of the same row: its output is finite and unused). Scale 1/sqrt(D).
// Flash-attention tiling: no (T, T) matrix exists in device memory.
// -> out (B*T, Hq*D) T, lse (B*T, Hq) float = log-sum-exp of each query's scaled scores.
// D: any even value <= 256 (64 and 128 are the fast paths).
template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, const int32_t* segment_ids, int64_t B, int64_t Tlen,
                       int64_t Hq, int64_t Hkv, int64_t D, cudaStream_t stream);
// Workspace attention_backward needs, in bytes.
size_t attention_backward_workspace(int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D);
// dout (B*T, Hq*D) T -> dqkv (B*T, (Hq + 2*Hkv)*D) T (overwritten, same layout as qkv).
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* out, const float* lse, const T* qkv,
                        const int32_t* segment_ids, int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D,
                        void* workspace, cudaStream_t stream);

// ---- KV cache for generate (kernels/attention.cu) ----
// Cache layout: k_cache, v_cache (B, Hkv, max_len, D) T.
// Copies the roped key and value heads of qkv rows (B*cols, (Hq+2Hkv)*D), column c of row b, to
// cache position start[b] + c for c < count[b] (start, count: (B) int32, device).
template <typename T>
void kv_cache_append(T* k_cache, T* v_cache, const T* qkv, const int32_t* start, const int32_t* count,
                     int64_t B, int64_t cols, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_len,
                     cudaStream_t stream);
// One query per row: q rows (B, (Hq+2Hkv)*D) T (only the query heads are read; roped), attending
// to cache positions [0, length[b]) of row b (length (B) int32, device, >= 1) -> out (B, Hq*D) T.
template <typename T>
void decode_attention(T* out, const T* qkv, const T* k_cache, const T* v_cache, const int32_t* length,
                      int64_t B, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_len, cudaStream_t stream);

// ---- Matmuls through cuBLASLt (kernels/gemm.cpp) ----
// One per model: the cuBLASLt handle, a 32 MiB workspace (allocated once, through
// device_allocate) and a cache of chosen algorithms per shape (heuristic queried once).
class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // C (M, N) row-major, leading dimension ldc = alpha * op(A) * op(B) + beta * C.
  // op(A) is (M, K): A is (M, K) row-major (lda >= K), or trans_a: A is (K, M) (lda >= M).
  // op(B) is (K, N): B is (K, N) (ldb >= N), or trans_b: B is (N, K) (ldb >= K).
  // A and B are TIn; C is TOut (float or TIn). Compute in fp32 (CUBLAS_COMPUTE_32F: no TF32 for
  // float inputs, so fp32 mode is true fp32). beta != 0 reads C (accumulation into float
  // gradients). Instantiated for <float, float>, <bf16, bf16>, <bf16, float>.
  template <typename TIn, typename TOut>
  void matmul(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const TIn* A, int64_t lda,
              const TIn* B, int64_t ldb, float beta, TOut* C, int64_t ldc, cudaStream_t stream);

  // Linear layer without bias: inp (rows, in) T, weight (out, in) T -> out (rows, out) T.
  template <typename T>
  void linear_forward(T* out, const T* inp, const T* weight, int64_t rows, int64_t in, int64_t out_features,
                      cudaStream_t stream) {
    matmul<T, T>(false, true, rows, out_features, in, 1.0f, inp, in, weight, in, 0.0f, out, out_features, stream);
  }
  // dout (rows, out) T -> dinp (rows, in) T = (or += when accumulate_dinp; may be nullptr),
  // dweight (out, in) float += (may be nullptr: frozen).
  template <typename T>
  void linear_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight, int64_t rows,
                       int64_t in, int64_t out_features, bool accumulate_dinp, cudaStream_t stream) {
    if (dinp != nullptr)
      matmul<T, T>(false, false, rows, in, out_features, 1.0f, dout, out_features, weight, in,
                   accumulate_dinp ? 1.0f : 0.0f, dinp, in, stream);
    if (dweight != nullptr)
      matmul<T, float>(true, false, out_features, in, rows, 1.0f, dout, out_features, inp, in, 1.0f, dweight, in,
                       stream);
  }

 private:
  struct Impl;
  Impl* impl_;
};

// ---- Fused log-prob head: lm_head -> log-softmax -> gather, in row chunks (kernels/logprob_head.cu)
// xn (N, C) T: the final RMSNorm's output. head (V, C) T. targets (N) int32, < 0 = no target.
// logp (N) float = log_softmax(xn[n] . head^T)[targets[n]], 0 where targets[n] < 0;
// lse (N) float saved for backward. Works through the rows in chunks of chunk_rows: at most
// chunk_rows * V float logits exist at a time (in `workspace`).
size_t logprob_head_workspace(int64_t chunk_rows, int64_t C, int64_t V, size_t act_bytes);
// The default chunk: as many rows as a 256 MiB float logits buffer holds (at least 64), evened
// out over the fewest chunks; N itself when it fits.
int64_t logprob_head_chunk_rows(int64_t N, int64_t V);
template <typename T>
void logprob_head_forward(Gemm& gemm, float* logp, float* lse, const T* xn, const T* head, const int32_t* targets,
                          int64_t N, int64_t C, int64_t V, int64_t chunk_rows, void* workspace, cudaStream_t stream);
// dlogp (N) float -> dxn (N, C) T (overwritten; 0 on rows without a target), dhead (V, C) float +=
// (may be nullptr: frozen head). Recomputes each chunk's logits: dlogits = dlogp * (onehot -
// softmax), using lse from forward.
template <typename T>
void logprob_head_backward(Gemm& gemm, T* dxn, float* dhead, const float* dlogp, const T* xn, const T* head,
                           const int32_t* targets, const float* lse, int64_t N, int64_t C, int64_t V,
                           int64_t chunk_rows, void* workspace, cudaStream_t stream);
// Full logits of the last position for generate: logits (rows, V) float = xn (rows, C) . head^T.
template <typename T>
void head_logits(Gemm& gemm, float* logits, const T* xn, const T* head, int64_t rows, int64_t C, int64_t V,
                 cudaStream_t stream);

// ---- Optimizer: multi-tensor AdamW and SGD over flat float buffers (kernels/optimizer.cu) ----
// One range of the flat buffers with its own weight decay. The host splits every parameter into
// chunks of at most kOptimizerChunk elements, so one launch covers all parameters.
struct OptimizerChunk {
  int64_t offset;  // into the flat params / grads / state buffers
  int64_t numel;   // <= kOptimizerChunk
  float weight_decay;
};
inline constexpr int64_t kOptimizerChunk = 65536;

struct AdamwHyper {
  float lr;
  // In double: 1 - beta is formed from them (PyTorch's 1 - 0.999 is 1.3e-5 away from 1 - float(0.999)).
  double beta1, beta2;
  float eps;
  float bias_correction1;  // 1 - beta1^step
  float bias_correction2;  // 1 - beta2^step
  float grad_scale;        // gradients are multiplied by it first (clipping); stored grads untouched
};
// For every chunk (chunks: device array of num_chunks): g = grad * grad_scale;
// p -= lr * weight_decay * p (decoupled, PyTorch's AdamW); m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2 (b and 1-b rounded to float from double); p -= lr * (m / bc1) / (sqrt(v / bc2) + eps).
// If params_lowp != nullptr it receives T(p) of the updated master weights (the bf16 working copy,
// same flat layout), in the same pass.
template <typename T>
void adamw_step(float* params, T* params_lowp, const float* grads, float* exp_avg, float* exp_avg_sq,
                const OptimizerChunk* chunks, int64_t num_chunks, const AdamwHyper& h, cudaStream_t stream);

struct SgdHyper {
  float lr, momentum, dampening;
  bool nesterov;
  bool first_step;  // momentum buffer starts as g (PyTorch)
  float grad_scale;
};
// PyTorch's SGD: g = grad * grad_scale + weight_decay * p; with momentum: buf = first ? g :
// momentum * buf + (1 - dampening) * g; g = nesterov ? g + momentum * buf : buf; p -= lr * g.
// momentum_buf may be nullptr when momentum == 0.
template <typename T>
void sgd_step(float* params, T* params_lowp, const float* grads, float* momentum_buf, const OptimizerChunk* chunks,
              int64_t num_chunks, const SgdHyper& h, cudaStream_t stream);

// sum of x[i]^2 over chunks (float in, double accumulation), written to *out (device double).
// Deterministic (fixed reduction order). `scratch` holds num_chunks doubles.
void squared_norm(double* out, const float* x, const OptimizerChunk* chunks, int64_t num_chunks, double* scratch,
                  cudaStream_t stream);

}  // namespace lyre::cuda
