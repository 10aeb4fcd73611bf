// The Llama decoder in LibTorch tensors, its gradients from autograd. Same parameters (names,
// kinds, shapes, order) and the same function as backend-cpu's LlamaModel, so the two compare
// number for number and their checkpoints interchange; none of backend-cpu's code is used.
//
// Every parameter is its own leaf tensor with requires_grad and a gradient allocated (zeros) up
// front, so autograd accumulates into the same tensor across backward calls until zero_grad.
// A train forward keeps autograd's graph (the whole trunk) until its backward; the log-prob head
// alone recomputes its chunks there instead of keeping [rows, vocab] logits (model.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "config.hpp"
#include "lyre/abi.h"
#include "options.hpp"

namespace lyre::libtorch {

// One micro-batch: int32 arrays of rows*cols, row-major, borrowed for the call (see LyreBatch).
struct TokenBatch {
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;  // < 0: no target (logp 0)
  const int32_t* positions = nullptr;
  const int32_t* segment_ids = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

struct Parameter {
  std::string name;
  LyreParamKind kind;
  std::vector<int64_t> shape;
  at::Tensor value;  // leaf, requires_grad; value.grad() is always defined
};

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
};

class LlamaModel {
 public:
  LlamaModel(const LlamaConfig& config, Precision precision, int64_t logprob_chunk_rows);
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const LlamaConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  const std::vector<Parameter>& params() const { return params_; }

  // logp (rows*cols) = log-prob of each target, 0 where the target is < 0. Checks every id and
  // position first (plugin::Error naming the tensor, row, column and value). train keeps the
  // graph for one backward, replacing an earlier train forward's.
  void forward(const TokenBatch& batch, bool train, float* logp);
  // dlogp (rows*cols of the latest train forward) -> adds into the gradients and frees the
  // graph. FAILED_PRECONDITION without a pending train forward.
  void backward(const float* dlogp);
  bool backward_ready() const { return pending_logp_.defined(); }
  int64_t pending_rows() const { return pending_rows_; }
  int64_t pending_cols() const { return pending_cols_; }
  void zero_grad();

  // Autoregressive decoding with a KV cache (generate.cpp): prompt (rows, prompt_cols)
  // right-padded, row b holding prompt_lengths[b] tokens. Writes up to max_new_tokens ids per
  // row into out_tokens (rows, max_new_tokens), stopping a row after it writes eos_token_id
  // (< 0: none); out_lengths says how many; slots after the end are 0.
  void generate(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows, int64_t prompt_cols,
                int32_t max_new_tokens, int32_t eos_token_id, const SamplingOptions& sampling,
                int32_t* out_tokens, int32_t* out_lengths);

  // backend-cpu's definition, so MFU reads the same: 6 per matmul parameter (lm head included,
  // tied or not) plus attention at full seq_len, 12 * T * Hq*D per layer.
  double train_flops_per_token(int64_t seq_len) const;
  int64_t num_parameters() const;

 private:
  struct Layer {
    at::Tensor input_norm, q, k, v, o, post_norm, gate, up, down;
  };
  // q (B,Hq,T,D), k and v (B,Hkv,T,D), q and k rotated.
  struct Qkv {
    at::Tensor q, k, v;
  };

  void validate(const TokenBatch& batch) const;
  size_t add(const std::string& name, LyreParamKind kind, std::vector<int64_t> shape);
  const at::Tensor& head_weight() const;
  // positions (B,T) int64 -> cos, sin (B,1,T,D/2) in the model's dtype, from angles in double.
  std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions) const;
  // x (B,T,d) -> roped q, k and v of layer l.
  Qkv attention_inputs(const Layer& layer, const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin) const;
  // q (B,Hq,Tq,D), k and v (B,Hkv,Tk,D), allowed (B,1,Tq,Tk) bool -> (B,Tq,Hq*D)
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& allowed) const;
  // x (B,T,d) -> x + mlp(rmsnorm(x))
  at::Tensor mlp_block(const Layer& layer, const at::Tensor& x) const;
  // Rows of [rows, vocab] logits the head holds at once for `rows` rows with a target.
  int64_t head_chunk_rows(int64_t rows) const;
  // x (N,d) after the last layer -> logp (N) of `targets` (N, int64), through the chunked head.
  at::Tensor logprob_head(const at::Tensor& x, const at::Tensor& targets, bool train) const;
  // Final norm and lm_head of x (N,d) -> logits (N,V), for generate.
  at::Tensor logits(const at::Tensor& x) const;

  LlamaConfig config_;
  at::ScalarType dtype_;
  int64_t logprob_chunk_rows_;  // 0 = the memory budget decides
  std::vector<Parameter> params_;
  std::vector<Layer> layers_;
  size_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;  // lm_head_ == embed_ when tied
  at::Tensor inv_freq_;                              // (D/2) double

  at::Tensor pending_logp_;  // the latest train forward's output, its graph attached
  int64_t pending_rows_ = 0, pending_cols_ = 0;
};

// Throws plugin::Error(INVALID_ARGUMENT) naming the field for temperature < 0, top_k < 0 or
// top_p outside (0, 1].
void validate_sampling(const SamplingOptions& options);

}  // namespace lyre::libtorch
