#include "model/llama_model.hpp"

#include <algorithm>
#include <string>

#include "layers.hpp"
#include "lyre/plugin.hpp"

namespace lyre::cpu {
namespace {

// Sub-buffers start on 64-byte boundaries (16 floats) so kernels see aligned rows.
int64_t aligned(int64_t n) { return (n + 15) / 16 * 16; }

}  // namespace

template <typename T>
LlamaModel<T>::LlamaModel(const LlamaConfig& config, ModelOptions options)
    : config_(config), options_(options) {
  if (options_.logprob_chunk_rows < 0)
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                        "logprob_chunk_rows must be >= 1 (or 0 for the memory-budget "
                        "default), got " +
                            std::to_string(options_.logprob_chunk_rows));
  index_ = add_llama_parameters(params_, config);
  params_.allocate();
  inv_freq_ = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling);
}

template <typename T>
const T* LlamaModel<T>::head_weight() const {
  return params_.value(index_.lm_head);
}

template <typename T>
T* LlamaModel<T>::head_grad() {
  return params_.grad(index_.lm_head);  // the embedding's gradient when tied: both uses add into it
}

template <typename T>
int64_t LlamaModel<T>::head_chunk_rows(const int32_t* targets, int64_t N) const {
  const int64_t rows = std::count_if(targets, targets + N, [](int32_t t) { return t >= 0; });
  if (options_.logprob_chunk_rows > 0)
    return std::max<int64_t>(1, std::min(options_.logprob_chunk_rows, rows));
  return logprob_head_chunk_rows(rows, config_.vocab_size, static_cast<int64_t>(sizeof(T)));
}

template <typename T>
void LlamaModel<T>::ensure_rope(int64_t max_position) {
  const int64_t needed = max_position + 1;
  if (needed <= rope_rows_) return;
  // Grow in powers of two so that a run sees few rebuilds; never past the model's limit.
  int64_t rows = 256;
  while (rows < needed) rows *= 2;
  rows = std::min(rows, config_.max_position_embeddings);
  rope_table(rope_cos_, rope_sin_, inv_freq_, rows);
  const size_t half = static_cast<size_t>(config_.head_dim / 2);
  if (rope_cos_.size() != rows * half || rope_sin_.size() != rows * half)
    throw plugin::Error(LYRE_ERROR_INTERNAL, "rope_table returned tables of the wrong size");
  rope_rows_ = rows;
  rope_charge_.set(static_cast<int64_t>((rope_cos_.capacity() + rope_sin_.capacity()) * sizeof(T)));
}

template <typename T>
typename LlamaModel<T>::Scratch LlamaModel<T>::scratch(int64_t rows) {
  const int64_t d = config_.hidden_size, F = config_.intermediate_size;
  const int64_t widths[] = {d, d, d, 1, config_.qkv_dim(), config_.q_dim(),
                            config_.num_attention_heads, 2 * F, F, F, 1, 1};
  int64_t total = 0;
  for (int64_t w : widths) total += aligned(rows * w);
  scratch_.reserve(static_cast<size_t>(total));
  T* p = scratch_.data();
  T* out[12];
  for (int i = 0; i < 12; ++i) {
    out[i] = p;
    p += aligned(rows * widths[i]);
  }
  return Scratch{out[0], out[1], out[2], out[3], out[4], out[5],
                 out[6], out[7], out[8], out[9], out[10], out[11]};
}

template <typename T>
int64_t LlamaModel<T>::saved_layer_size(int64_t rows) const {
  const int64_t d = config_.hidden_size;
  return aligned(rows * d) + aligned(rows * config_.qkv_dim()) + aligned(rows * config_.q_dim()) +
         aligned(rows * config_.num_attention_heads) + aligned(rows * d) +
         aligned(rows * 2 * config_.intermediate_size);
}

template <typename T>
int64_t LlamaModel<T>::saved_size(int64_t rows) const {
  return config_.num_hidden_layers * saved_layer_size(rows) + aligned(rows * config_.hidden_size) +
         2 * aligned(rows);
}

template <typename T>
typename LlamaModel<T>::Saved LlamaModel<T>::saved(int64_t layer, int64_t rows) {
  const int64_t d = config_.hidden_size;
  T* p = saved_.data() + layer * saved_layer_size(rows);
  Saved s;
  s.x_in = p;    p += aligned(rows * d);
  s.qkv = p;     p += aligned(rows * config_.qkv_dim());
  s.att = p;     p += aligned(rows * config_.q_dim());
  s.lse = p;     p += aligned(rows * config_.num_attention_heads);
  s.x_mid = p;   p += aligned(rows * d);
  s.gu = p;
  return s;
}

template <typename T>
typename LlamaModel<T>::SavedFinal LlamaModel<T>::saved_final(int64_t rows) {
  T* p = saved_.data() + config_.num_hidden_layers * saved_layer_size(rows);
  SavedFinal f;
  f.x = p;          p += aligned(rows * config_.hidden_size);
  f.head_rstd = p;  p += aligned(rows);
  f.head_lse = p;
  return f;
}

template <typename T>
void LlamaModel<T>::layer_forward(size_t layer, int64_t rows, const int32_t* positions,
                                  const LayerIO& io, const Scratch& s, const Attend& attend,
                                  const char* span_category) {
  const LlamaLayerIndex& li = index_.layers[layer];
  const int64_t d = config_.hidden_size, F = config_.intermediate_size, D = config_.head_dim;
  const int64_t qkvd = config_.qkv_dim(), qd = config_.q_dim();
  const T eps = static_cast<T>(config_.rms_norm_eps);

  {
    plugin::TraceSpan span(span_category, "layer %zu attention forward", layer);
    rmsnorm_forward(s.norm_out, s.rstd, io.x_in, params_.value(li.input_norm), rows, d, eps);
    linear_forward(io.qkv, s.norm_out, params_.value(li.q), rows, d, qkvd);
    rope_forward(io.qkv, positions, rope_cos_.data(), rope_sin_.data(), rows,
                 config_.num_attention_heads, D, qkvd, rope_rows_);
    rope_forward(io.qkv + qd, positions, rope_cos_.data(), rope_sin_.data(), rows,
                 config_.num_key_value_heads, D, qkvd, rope_rows_);
    attend(io.qkv, io.att, io.lse);
    // x_mid = x_in + att o_proj^T: the residual add rides on the GEMM's beta.
    if (io.x_mid != io.x_in) std::copy(io.x_in, io.x_in + rows * d, io.x_mid);
    gemm<T>(false, true, rows, d, qd, T(1), io.att, qd, params_.value(li.o), qd, T(1), io.x_mid, d);
  }

  plugin::TraceSpan span(span_category, "layer %zu mlp forward", layer);
  rmsnorm_forward(s.norm_out, s.rstd, io.x_mid, params_.value(li.post_norm), rows, d, eps);
  linear_forward(io.gu, s.norm_out, params_.value(li.gate), rows, d, 2 * F);
  swiglu_forward(s.h, io.gu, rows, F);
  if (io.x_out != io.x_mid) std::copy(io.x_mid, io.x_mid + rows * d, io.x_out);
  gemm<T>(false, true, rows, d, F, T(1), s.h, F, params_.value(li.down), F, T(1), io.x_out, d);
}

template <typename T>
void LlamaModel<T>::trunk_nograd(const TokenBatch& b, const Scratch& s) {
  const int64_t N = b.rows * b.cols;
  {
    plugin::TraceSpan span("forward", "embedding forward");
    embedding_forward(s.resid, b.tokens, params_.value(index_.embed), N, config_.hidden_size,
                      config_.vocab_size);
  }
  const Attend attend = [&](T* qkv, T* att, T* lse) {
    attention_forward(att, lse, qkv, b.segment_ids, b.rows, b.cols, config_.num_attention_heads,
                      config_.num_key_value_heads, config_.head_dim);
  };
  const LayerIO io{s.resid, s.qkv, s.att, s.lse, s.resid, s.gu, s.resid};
  for (size_t l = 0; l < index_.layers.size(); ++l)
    layer_forward(l, N, b.positions, io, s, attend, "forward");
}

template <typename T>
void LlamaModel<T>::head_logits(T* logits, const T* x, int64_t rows, const Scratch& s) {
  const int64_t d = config_.hidden_size;
  rmsnorm_forward(s.norm_out, s.rstd, x, params_.value(index_.final_norm), rows, d,
                  static_cast<T>(config_.rms_norm_eps));
  linear_forward(logits, s.norm_out, head_weight(), rows, d, config_.vocab_size);
}

template <typename T>
void LlamaModel<T>::forward(const TokenBatch& b, ForwardMode mode, T* logp) {
  const int64_t max_position = check_token_batch(b, config_, /*need_targets=*/true);
  plugin::require(logp != nullptr, "forward: logp is NULL");
  if (mode == ForwardMode::train) pending_backward_ = false;  // a failure below leaves nothing

  const int64_t N = b.rows * b.cols, d = config_.hidden_size, V = config_.vocab_size;
  const int64_t chunk = head_chunk_rows(b.targets, N);
  ensure_rope(max_position);
  head_workspace_holds_train_chunk_ = false;  // whatever runs below overwrites it
  head_workspace_.reserve(static_cast<size_t>(logprob_head_workspace(chunk, d, V)));
  const Scratch s = scratch(N);
  const T* final_norm = params_.value(index_.final_norm);

  if (mode == ForwardMode::no_grad) {
    trunk_nograd(b, s);
    plugin::TraceSpan span("forward", "logprob head forward");
    logprob_head_forward(logp, s.head_rstd, s.head_lse, s.resid, final_norm, head_weight(),
                         b.targets, N, d, V, chunk, head_workspace_.data(), config_.rms_norm_eps);
    return;
  }

  saved_.reserve(static_cast<size_t>(saved_size(N)));
  saved_ids_.reserve(static_cast<size_t>(4 * N));
  int32_t* ids = saved_ids_.data();
  std::copy(b.tokens, b.tokens + N, ids);
  std::copy(b.targets, b.targets + N, ids + N);
  std::copy(b.positions, b.positions + N, ids + 2 * N);
  std::copy(b.segment_ids, b.segment_ids + N, ids + 3 * N);
  const int32_t* positions = ids + 2 * N;
  const int32_t* segments = ids + 3 * N;

  {
    plugin::TraceSpan span("forward", "embedding forward");
    embedding_forward(saved(0, N).x_in, ids, params_.value(index_.embed), N, d, V);
  }
  const Attend attend = [&](T* qkv, T* att, T* lse) {
    attention_forward(att, lse, qkv, segments, b.rows, b.cols, config_.num_attention_heads,
                      config_.num_key_value_heads, config_.head_dim);
  };
  const SavedFinal fin = saved_final(N);
  const int64_t L = config_.num_hidden_layers;
  for (int64_t l = 0; l < L; ++l) {
    const Saved sv = saved(l, N);
    T* x_out = l + 1 < L ? saved(l + 1, N).x_in : fin.x;
    layer_forward(static_cast<size_t>(l), N, positions,
                  LayerIO{sv.x_in, sv.qkv, sv.att, sv.lse, sv.x_mid, sv.gu, x_out}, s, attend,
                  "forward");
  }
  {
    plugin::TraceSpan span("forward", "logprob head forward");
    logprob_head_forward(logp, fin.head_rstd, fin.head_lse, fin.x, final_norm, head_weight(),
                         ids + N, N, d, V, chunk, head_workspace_.data(), config_.rms_norm_eps);
  }
  head_workspace_holds_train_chunk_ = true;
  saved_head_chunk_rows_ = chunk;
  saved_rows_ = b.rows;
  saved_cols_ = b.cols;
  pending_backward_ = true;
}

template <typename T>
void LlamaModel<T>::backward(const T* dlogp) {
  if (!pending_backward_)
    throw plugin::Error(LYRE_ERROR_FAILED_PRECONDITION,
                        "backward needs a train forward first (its activations are consumed by "
                        "one backward)");
  plugin::require(dlogp != nullptr, "backward: dlogp is NULL");
  pending_backward_ = false;

  const int64_t B = saved_rows_, Tn = saved_cols_, N = B * Tn;
  const int64_t d = config_.hidden_size, F = config_.intermediate_size, V = config_.vocab_size;
  const int64_t D = config_.head_dim, Hq = config_.num_attention_heads;
  const int64_t Hkv = config_.num_key_value_heads, qkvd = config_.qkv_dim(), qd = config_.q_dim();
  const T eps = static_cast<T>(config_.rms_norm_eps);
  const int32_t* ids = saved_ids_.data();
  const int32_t *tokens = ids, *targets = ids + N, *positions = ids + 2 * N, *segments = ids + 3 * N;
  const Scratch s = scratch(N);
  const SavedFinal fin = saved_final(N);
  T* dx = s.resid;  // d(loss)/d(residual stream), walked back layer by layer

  const bool reuse_last_chunk = head_workspace_holds_train_chunk_;
  head_workspace_holds_train_chunk_ = false;  // backward overwrites the workspace
  {
    plugin::TraceSpan span("backward", "logprob head backward");
    logprob_head_backward(dx, params_.grad(index_.final_norm), head_grad(), dlogp, fin.x,
                          params_.value(index_.final_norm), head_weight(), targets, fin.head_rstd,
                          fin.head_lse, N, d, V, saved_head_chunk_rows_, head_workspace_.data(),
                          reuse_last_chunk);
  }

  for (int64_t l = config_.num_hidden_layers - 1; l >= 0; --l) {
    const LlamaLayerIndex& li = index_.layers[static_cast<size_t>(l)];
    const Saved sv = saved(l, N);
    T* dgu = s.gu;
    T* datt = s.att;
    T* dqkv = s.qkv;

    // MLP: x_out = x_mid + swiglu(rmsnorm(x_mid) Wgu^T) Wdown^T; the norm and swiglu outputs
    // are recomputed rather than kept.
    {
      plugin::TraceSpan span("backward", "layer %lld mlp backward", static_cast<long long>(l));
      rmsnorm_forward(s.norm_out, s.rstd, sv.x_mid, params_.value(li.post_norm), N, d, eps);
      swiglu_forward(s.h, sv.gu, N, F);
      linear_backward(s.dh, params_.grad(li.down), dx, s.h, params_.value(li.down), N, F, d, false);
      swiglu_backward(dgu, s.dh, sv.gu, N, F);
      linear_backward(s.dnorm, params_.grad(li.gate), dgu, s.norm_out, params_.value(li.gate), N,
                      d, 2 * F, false);
      rmsnorm_backward(dx, params_.grad(li.post_norm), s.dnorm, sv.x_mid,
                       params_.value(li.post_norm), s.rstd, N, d);
    }

    // Attention: x_mid = x_in + attention(rope(rmsnorm(x_in) Wqkv^T)) Wo^T.
    plugin::TraceSpan span("backward", "layer %lld attention backward", static_cast<long long>(l));
    linear_backward(datt, params_.grad(li.o), dx, sv.att, params_.value(li.o), N, qd, d, false);
    attention_backward(dqkv, datt, sv.att, sv.lse, sv.qkv, segments, B, Tn, Hq, Hkv, D);
    rope_backward(dqkv, positions, rope_cos_.data(), rope_sin_.data(), N, Hq, D, qkvd, rope_rows_);
    rope_backward(dqkv + qd, positions, rope_cos_.data(), rope_sin_.data(), N, Hkv, D, qkvd,
                  rope_rows_);
    rmsnorm_forward(s.norm_out, s.rstd, sv.x_in, params_.value(li.input_norm), N, d, eps);
    linear_backward(s.dnorm, params_.grad(li.q), dqkv, s.norm_out, params_.value(li.q), N, d, qkvd,
                    false);
    rmsnorm_backward(dx, params_.grad(li.input_norm), s.dnorm, sv.x_in,
                     params_.value(li.input_norm), s.rstd, N, d);
  }
  plugin::TraceSpan span("backward", "embedding backward");
  embedding_backward(params_.grad(index_.embed), dx, tokens, N, d, V);
}

template <typename T>
void LlamaModel<T>::logits(const TokenBatch& b, T* out) {
  const int64_t max_position = check_token_batch(b, config_, /*need_targets=*/false);
  plugin::require(out != nullptr, "logits: out is NULL");
  ensure_rope(max_position);
  const Scratch s = scratch(b.rows * b.cols);
  trunk_nograd(b, s);
  head_logits(out, s.resid, b.rows * b.cols, s);
}

template class LlamaModel<float>;
template class LlamaModel<double>;

}  // namespace lyre::cpu
