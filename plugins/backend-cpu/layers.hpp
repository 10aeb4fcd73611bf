// The CPU backend's layers: forward and backward side by side, templated on the scalar type.
// float is what the backend trains with (matmuls through oneDNN); double is the reference the
// gradient checks in tests/backend-cpu run against finite differences.
//
// Conventions: row-major; N = B*T rows (tokens); "+=" in a comment means the function
// accumulates into that output, otherwise it overwrites. Every function is deterministic for a
// fixed OMP thread count (no atomics, no reductions whose order depends on scheduling).
#pragma once

#include <cstdint>
#include <vector>

namespace lyre::cpu {

// ---- GEMM ----
// C[M,N] = alpha * op(A) * op(B) + beta * C, row-major with leading dimensions.
// op(A) is [M,K]: A is [M,K] (lda >= K) or, transposed, [K,M] (lda >= M).
// float: oneDNN's dnnl_sgemm. double: plain loops (reference, tests only).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// ---- Linear (no bias) ----
// inp (N,C), weight (OC,C) -> out (N,OC)
template <typename T>
void linear_forward(T* out, const T* inp, const T* weight, int64_t N, int64_t C, int64_t OC);
// dout (N,OC) -> dinp (N,C) (+= if accumulate_dinp, else =), dweight (OC,C) +=
// dinp may be nullptr (not needed), dweight may be nullptr (frozen weight).
template <typename T>
void linear_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                     int64_t N, int64_t C, int64_t OC, bool accumulate_dinp);

// ---- Token embedding ----
// tokens (N), table (V,C) -> out (N,C). Throws std::out_of_range naming the first bad id.
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t N, int64_t C,
                       int64_t V);
// dout (N,C) -> dtable (V,C) +=
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t V);

// ---- RMSNorm ----
// x (N,C), weight (C) -> out (N,C), rstd (N) = 1/sqrt(mean(x^2) + eps)
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* weight, int64_t N, int64_t C, T eps);
// dout (N,C) -> dx (N,C) +=, dweight (C) += (dweight may be nullptr)
template <typename T>
void rmsnorm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight,
                      const T* rstd, int64_t N, int64_t C);

// ---- Rotary position embedding (Hugging Face "rotate_half" layout) ----
// For head_dim D, pair i in [0, D/2) rotates (x[i], x[i + D/2]) by angle pos * inv_freq[i].
struct RopeScaling {
  enum class Type { none, linear, llama3 } type = Type::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;              // llama3
  double high_freq_factor = 4.0;             // llama3
  double original_max_position_embeddings = 8192;  // llama3
};
// inv_freq[i] = theta^(-2i/D), then adjusted by the scaling (llama3: smooth interpolation
// between factor-scaled low frequencies and unscaled high frequencies; linear: / factor).
std::vector<double> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling);
// Table of cos and sin for positions [0, max_pos): cos,sin (max_pos, D/2), computed in double.
template <typename T>
void rope_table(std::vector<T>& cos, std::vector<T>& sin, const std::vector<double>& inv_freq,
                int64_t max_pos);
// In place on H heads of each row: x points at row 0, head 0; a row is row_stride elements
// long; head h of row n starts at x + n*row_stride + h*D. positions (N) index the tables.
// Throws std::out_of_range when a position is >= max_pos.
template <typename T>
void rope_forward(T* x, const int32_t* positions, const T* cos, const T* sin, int64_t N,
                  int64_t H, int64_t D, int64_t row_stride, int64_t max_pos);
// The inverse rotation, in place on the gradient (same layout).
template <typename T>
void rope_backward(T* dx, const int32_t* positions, const T* cos, const T* sin, int64_t N,
                   int64_t H, int64_t D, int64_t row_stride, int64_t max_pos);

// ---- Grouped-query causal attention with document masking ----
// qkv (B*T, (Hq + 2*Hkv)*D): per row, Hq query heads, then Hkv key heads, then Hkv value heads,
// each D wide (the fused QKV projection's output, RoPE already applied to q and k).
// Query head h reads kv head h / (Hq/Hkv). Token i of a row attends to token j of the same row
// iff j <= i and segment_ids[j] == segment_ids[i]. Scale 1/sqrt(D).
// -> out (B*T, Hq*D), lse (B*T, Hq) = log-sum-exp of each query's scaled scores (saved for
// backward, which recomputes the probabilities: no (T,T) matrix per head is kept).
template <typename T>
void attention_forward(T* out, T* lse, const T* qkv, const int32_t* segment_ids, int64_t B,
                       int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D);
// dout (B*T, Hq*D) -> dqkv (B*T, (Hq+2*Hkv)*D) = (overwritten, same layout as qkv)
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* out, const T* lse, const T* qkv,
                        const int32_t* segment_ids, int64_t B, int64_t Tlen, int64_t Hq,
                        int64_t Hkv, int64_t D);

// ---- SwiGLU ----
// gu (N, 2F): gate in columns [0,F), up in [F,2F) -> out (N,F) = silu(gate) * up
template <typename T>
void swiglu_forward(T* out, const T* gu, int64_t N, int64_t F);
// dout (N,F) -> dgu (N,2F) = (overwritten)
template <typename T>
void swiglu_backward(T* dgu, const T* dout, const T* gu, int64_t N, int64_t F);

// ---- Fused final norm -> lm_head -> log-softmax -> gather ----
// x (N,C) final hidden state before the last RMSNorm, norm_weight (C), head (V,C), targets (N).
// logp[n] = log_softmax(rmsnorm(x[n]) . head^T)[targets[n]], 0 where targets[n] < 0.
// Works through the rows with a valid target in chunks of `chunk_rows`, so at most
// chunk_rows*V logits exist at a time (in `workspace`, size >= logprob_head_workspace(...)).
// Saves rstd (N) and lse (N) for backward. eps is the final RMSNorm's (config rms_norm_eps).
// On return the workspace holds the last chunk's logits and normalised rows, which
// logprob_head_backward can take instead of recomputing them (reuse_last_chunk).
// Throws std::out_of_range for a target >= V.
int64_t logprob_head_workspace(int64_t chunk_rows, int64_t C, int64_t V);
// The default chunk for `rows` rows with a target and elements of elem_bytes: at most
// fit = max(kLogprobHeadLogitsBudget / (V * elem_bytes), kLogprobHeadMinChunkRows) rows, in the
// fewest chunks of <= fit rows, evened out: ceil(rows / ceil(rows / fit)); rows itself (>= 1)
// when rows <= fit.
// The logits GEMM (chunk x V x C) runs well below peak on short chunks (oneDNN sgemm: 289
// GFLOP/s at 128 rows, 501 at 1024 for V=32000, C=512), and every chunk but the last is
// recomputed in backward, so a chunk takes as many rows as a bounded logits buffer holds: fit is
// 2097 rows at V=32000 in float (a batch of 8 x 256 is one chunk, recomputed never), 523 at
// V=128256, the whole batch for a small vocabulary. Never more rows than needed, so a small
// batch allocates little. (PyTorch holds [rows, V] logits, their log-softmax and both gradients.)
inline constexpr int64_t kLogprobHeadLogitsBudget = int64_t(256) << 20;  // bytes
inline constexpr int64_t kLogprobHeadMinChunkRows = 64;
int64_t logprob_head_chunk_rows(int64_t rows, int64_t V, int64_t elem_bytes);
template <typename T>
void logprob_head_forward(T* logp, T* rstd, T* lse, const T* x, const T* norm_weight,
                          const T* head, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                          int64_t chunk_rows, T* workspace, double eps);
// dlogp (N) -> dx (N,C) = (overwritten; 0 for rows without a target), dnorm_weight (C) += (may be
// nullptr when the norm is frozen),
// dhead (V,C) += (dhead may be nullptr when the head is frozen). Walks the chunks last to first,
// recomputing each chunk's logits: dlogits = dlogp * (onehot(target) - softmax).
// reuse_last_chunk: the workspace is untouched since the logprob_head_forward with the same
// x, norm_weight, head, targets, N, C, V, chunk_rows and workspace, so the last chunk (the first
// one here) takes its logits and normalised rows from there: with one chunk nothing is
// recomputed. The result is bit-identical to reuse_last_chunk = false. Passing true when
// anything else wrote the workspace in between gives wrong gradients. Overwrites the workspace.
template <typename T>
void logprob_head_backward(T* dx, T* dnorm_weight, T* dhead, const T* dlogp, const T* x,
                           const T* norm_weight, const T* head, const int32_t* targets,
                           const T* rstd, const T* lse, int64_t N, int64_t C, int64_t V,
                           int64_t chunk_rows, T* workspace, bool reuse_last_chunk);

}  // namespace lyre::cpu
