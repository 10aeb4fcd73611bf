// The Llama decoder over the layer kernels of layers.hpp, templated on the scalar type: float is
// what the backend trains with, double the reference the gradient checks run against.
//
// Parameters carry Hugging Face names and live in one ParameterStore. The q, k and v weights of
// a layer are adjacent rows of one [(Hq+2Hkv)*D, d] block, and gate/up of one [2F, d] block, so
// each projection is a single GEMM into the layout attention_forward / swiglu_forward expect.
//
// Memory: a train forward keeps, per layer, only its input x, the roped qkv, the attention
// output and its log-sum-exp, the residual after attention and the gate/up activations. Backward
// recomputes the two RMSNorm outputs and the SwiGLU output. Saved activations and scratch are
// reused across steps: a step of a size seen before allocates nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/token_batch.hpp"
#include "model/llama_config.hpp"
#include "model/llama_parameters.hpp"
#include "model/memory_tracker.hpp"
#include "model/parameter_store.hpp"
#include "model/token_sampler.hpp"

namespace lyre::cpu {

enum class ForwardMode { train, no_grad };

struct ModelOptions {
  // Rows of [rows, vocab] logits the fused head holds at once. 0: the fewest even chunks of
  // the rows with a target whose logits fit 128 MiB (logprob_head_chunk_rows); > 0 forces it.
  int64_t logprob_chunk_rows = 0;
};

template <typename T>
class LlamaModel {
 public:
  explicit LlamaModel(const LlamaConfig& config, ModelOptions options = {});
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const LlamaConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  ParameterStore<T>& params() { return params_; }
  const ParameterStore<T>& params() const { return params_; }

  // logp (rows*cols) = log-prob of each target, 0 where the target is < 0. Checks every id and
  // position, throwing Error(INVALID_ARGUMENT) naming the tensor, row, column and value.
  // train keeps what backward needs (replacing any earlier train forward's activations).
  void forward(const TokenBatch& batch, ForwardMode mode, T* logp);
  // dlogp (rows*cols) of the latest train forward -> adds into the gradients. Consumes the
  // saved activations: a second backward throws Error(FAILED_PRECONDITION), as does one
  // without a train forward.
  void backward(const T* dlogp);
  bool backward_ready() const { return pending_backward_; }
  void zero_grad() { params_.zero_grads(); }

  // Full logits (rows*cols, vocab) of every position, no gradient, materialised at once: for
  // tests and small evaluations, not for training.
  void logits(const TokenBatch& batch, T* out);

  // Autoregressive decoding with a KV cache. prompt (rows, prompt_cols) right-padded, row b
  // holding prompt_lengths[b] tokens in [1, prompt_cols]. Writes up to max_new_tokens ids per
  // row into out_tokens (rows, max_new_tokens), stopping a row after it writes eos_token_id
  // (< 0: none); out_lengths (rows) says how many; slots after the end are set to 0.
  void generate(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows,
                int64_t prompt_cols, int32_t max_new_tokens, int32_t eos_token_id,
                const SamplingOptions& sampling, int32_t* out_tokens, int32_t* out_lengths);

  // Forward + backward FLOPs per token for rows of seq_len tokens (llama_train_flops_per_token).
  double train_flops_per_token(int64_t seq_len) const {
    return llama_train_flops_per_token(config_, seq_len);
  }
  int64_t num_parameters() const { return static_cast<int64_t>(params_.total_numel()); }

 private:
  // Pointers into scratch_ for `rows` tokens: what a no_grad forward, a train forward's
  // recomputed pieces and a backward's gradients use; shared because they never overlap.
  // In backward, qkv/att/gu hold dqkv/datt/dgu and resid holds d(residual).
  struct Scratch {
    T *resid, *norm_out, *dnorm, *rstd, *qkv, *att, *lse, *gu, *h, *dh, *head_rstd, *head_lse;
  };
  // What one layer's forward reads and writes. x_mid / x_out may equal x_in (in place).
  struct LayerIO {
    const T* x_in;
    T *qkv, *att, *lse, *x_mid, *gu, *x_out;
  };
  // A train forward's saved activations of layer l, for `rows` tokens.
  struct Saved {
    T *x_in, *qkv, *att, *lse, *x_mid, *gu;
  };

  void ensure_rope(int64_t max_position);
  Scratch scratch(int64_t rows);
  Saved saved(int64_t layer, int64_t rows);
  // x after the last layer (rows, d), then the head's rstd and lse (rows each).
  struct SavedFinal {
    T *x, *head_rstd, *head_lse;
  };
  SavedFinal saved_final(int64_t rows);
  int64_t saved_layer_size(int64_t rows) const;
  int64_t saved_size(int64_t rows) const;

  // attend(qkv, att, lse) fills att from the roped qkv (full sequence or KV cache).
  using Attend = std::function<void(T* qkv, T* att, T* lse)>;
  // span_category: the category of its two profiler spans ("forward", "generate").
  void layer_forward(size_t layer, int64_t rows, const int32_t* positions, const LayerIO& io,
                     const Scratch& s, const Attend& attend, const char* span_category);
  // Embedding and every layer, no gradient, full-sequence attention; leaves x in s.resid.
  void trunk_nograd(const TokenBatch& batch, const Scratch& s);
  // Final RMSNorm of x (rows, d) then the lm head -> logits (rows, V).
  void head_logits(T* logits, const T* x, int64_t rows, const Scratch& s);

  const T* head_weight() const;
  T* head_grad();
  // The head's chunk for a batch whose targets are `targets` (N): the forced option, else the
  // memory-budget rule, never more than the rows with a target.
  int64_t head_chunk_rows(const int32_t* targets, int64_t N) const;

  LlamaConfig config_;
  ModelOptions options_;
  ParameterStore<T> params_;
  LlamaParameterIndex index_;  // where each parameter is in params_

  std::vector<double> inv_freq_;
  std::vector<T> rope_cos_, rope_sin_;
  int64_t rope_rows_ = 0;
  MemoryCharge rope_charge_{MemoryKind::workspace};

  Buffer<T> scratch_{MemoryKind::workspace};
  Buffer<T> head_workspace_{MemoryKind::workspace};
  // True only between a train forward's head and the next use of head_workspace_: the
  // workspace then still holds that forward's last chunk, which backward takes instead of
  // recomputing it. Every other use of the workspace clears it first.
  bool head_workspace_holds_train_chunk_ = false;
  int64_t saved_head_chunk_rows_ = 0;  // the chunk the saved train forward's head used
  Buffer<T> saved_{MemoryKind::activations};
  Buffer<int32_t> saved_ids_{MemoryKind::activations};  // tokens, targets, positions, segments
  int64_t saved_rows_ = 0, saved_cols_ = 0;
  bool pending_backward_ = false;
};

}  // namespace lyre::cpu
