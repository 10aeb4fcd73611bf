#include "model.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "lyre/plugin.hpp"

namespace lyre::libtorch {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

[[noreturn]] void bad_id(const char* tensor, int64_t n, int64_t cols, int32_t value, const std::string& rule) {
  throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(tensor) + ": value " + std::to_string(value) +
                                                       " at row " + std::to_string(n / cols) + ", col " +
                                                       std::to_string(n % cols) + " " + rule);
}

// An int32 host array of rows*cols as an int64 tensor (B,T) (a copy: the caller's memory is
// borrowed only for the call).
at::Tensor ids_tensor(const int32_t* data, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<int32_t*>(data), {rows, cols}, at::kInt).to(at::kLong);
}

// Logits (rows, V) budget of the head per chunk; at least kMinChunkRows rows.
constexpr int64_t kHeadLogitsBudget = int64_t(256) << 20;
constexpr int64_t kMinChunkRows = 64;

// x (..., d) -> x * rsqrt(mean(x^2) + eps) * weight
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
}

// x (m,d), norm weight (d), head (V,d), targets (m) -> logp (m): the log-prob head of one chunk.
at::Tensor head_chunk(const at::Tensor& x, const at::Tensor& norm_weight, const at::Tensor& head,
                      const at::Tensor& targets, double eps) {
  const at::Tensor logits = at::linear(rms_norm(x, norm_weight, eps), head);
  return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - logits.logsumexp(-1);
}

// x (N,d), rows (M) the rows with a target, their targets (M) -> logp (N), 0 off `rows`, with at
// most `chunk` rows of logits at a time.
at::Tensor chunked_logp(const at::Tensor& x, const at::Tensor& norm_weight, const at::Tensor& head,
                        const at::Tensor& rows, const at::Tensor& targets, double eps, int64_t chunk) {
  at::Tensor logp = at::zeros({x.size(0)}, x.options());
  for (int64_t r0 = 0; r0 < rows.size(0); r0 += chunk) {
    const at::Tensor r = rows.narrow(0, r0, std::min(chunk, rows.size(0) - r0));
    logp.index_copy_(0, r, head_chunk(x.index_select(0, r), norm_weight, head, targets.narrow(0, r0, r.size(0)), eps));
  }
  return logp;
}

// The log-prob head as one autograd node that keeps no logits: forward runs the chunks without a
// graph; backward runs each chunk again with one and lets autograd differentiate it
// (torch::autograd::grad), so the gradient is still autograd's and never a hand-written softmax
// backward. Gradient checkpointing of the head, done by autograd itself.
struct ChunkedLogprobHead : public torch::autograd::Function<ChunkedLogprobHead> {
  // Runs without a graph (Function::apply turns grad mode off around it).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& norm_weight,
                            const at::Tensor& head, const at::Tensor& rows, const at::Tensor& targets,
                            double eps, int64_t chunk) {
    ctx->save_for_backward({x, norm_weight, head, rows, targets});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["chunk"] = chunk;
    return chunked_logp(x, norm_weight, head, rows, targets, eps, chunk);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &norm_weight = saved[1], &head = saved[2];
    const at::Tensor &rows = saved[3], &targets = saved[4];
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const at::Tensor& dlogp = grad_outputs[0];
    at::Tensor dx = at::zeros_like(x), dnorm = at::zeros_like(norm_weight), dhead = at::zeros_like(head);
    for (int64_t r0 = 0; r0 < rows.size(0); r0 += chunk) {
      const at::Tensor r = rows.narrow(0, r0, std::min(chunk, rows.size(0) - r0));
      at::Tensor xc = x.index_select(0, r).detach().requires_grad_(true);
      at::Tensor nw = norm_weight.detach().requires_grad_(true);
      at::Tensor hw = head.detach().requires_grad_(true);
      variable_list g;
      {
        at::AutoGradMode enable(true);
        const at::Tensor lp = head_chunk(xc, nw, hw, targets.narrow(0, r0, r.size(0)), eps);
        g = torch::autograd::grad({lp}, {xc, nw, hw}, {dlogp.index_select(0, r)});
      }
      dx.index_add_(0, r, g[0]);
      dnorm.add_(g[1]);
      dhead.add_(g[2]);
    }
    return {dx, dnorm, dhead, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

LlamaModel::LlamaModel(const LlamaConfig& config, Precision precision, int64_t logprob_chunk_rows)
    : config_(config),
      dtype_(precision == Precision::fp64 ? at::kDouble : at::kFloat),
      logprob_chunk_rows_(logprob_chunk_rows) {
  const int64_t d = config.hidden_size, F = config.intermediate_size, V = config.vocab_size;
  const int64_t qd = config.q_dim(), kvd = config.kv_dim();
  embed_ = add("model.embed_tokens.weight", LYRE_PARAM_EMBEDDING, {V, d});
  std::vector<size_t> layer_index;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    layer_index.push_back(add(p + "input_layernorm.weight", LYRE_PARAM_NORM, {d}));
    add(p + "self_attn.q_proj.weight", LYRE_PARAM_MATRIX, {qd, d});
    add(p + "self_attn.k_proj.weight", LYRE_PARAM_MATRIX, {kvd, d});
    add(p + "self_attn.v_proj.weight", LYRE_PARAM_MATRIX, {kvd, d});
    add(p + "self_attn.o_proj.weight", LYRE_PARAM_MATRIX, {d, qd});
    add(p + "post_attention_layernorm.weight", LYRE_PARAM_NORM, {d});
    add(p + "mlp.gate_proj.weight", LYRE_PARAM_MATRIX, {F, d});
    add(p + "mlp.up_proj.weight", LYRE_PARAM_MATRIX, {F, d});
    add(p + "mlp.down_proj.weight", LYRE_PARAM_MATRIX, {d, F});
  }
  final_norm_ = add("model.norm.weight", LYRE_PARAM_NORM, {d});
  lm_head_ = config.tie_word_embeddings ? embed_ : add("lm_head.weight", LYRE_PARAM_EMBEDDING, {V, d});
  for (size_t i : layer_index) {  // a layer's nine parameters, in the order added above
    auto value = [&](size_t k) { return params_[i + k].value; };
    layers_.push_back({value(0), value(1), value(2), value(3), value(4), value(5), value(6), value(7), value(8)});
  }
  const std::vector<double> inv_freq = rope_inv_freq(config);
  inv_freq_ = at::tensor(inv_freq, at::kDouble);
}

size_t LlamaModel::add(const std::string& name, LyreParamKind kind, std::vector<int64_t> shape) {
  at::Tensor value = at::zeros(shape, at::TensorOptions().dtype(dtype_));
  value.set_requires_grad(true);
  value.mutable_grad() = at::zeros_like(value);
  params_.push_back({name, kind, std::move(shape), value});
  return params_.size() - 1;
}

const at::Tensor& LlamaModel::head_weight() const { return params_[lm_head_].value; }

void LlamaModel::validate(const TokenBatch& b) const {
  plugin::require(b.rows >= 1 && b.cols >= 1, "batch: expected at least one row and one column, got [" +
                                                  std::to_string(b.rows) + "," + std::to_string(b.cols) + "]");
  plugin::require(b.tokens && b.targets && b.positions && b.segment_ids, "batch: a tensor is missing");
  const int64_t V = config_.vocab_size, max_pos = config_.max_position_embeddings;
  for (int64_t n = 0; n < b.rows * b.cols; ++n) {
    if (b.tokens[n] < 0 || b.tokens[n] >= V)
      bad_id("tokens", n, b.cols, b.tokens[n], "is outside the vocabulary [0, " + std::to_string(V) + ")");
    if (b.targets[n] >= V)
      bad_id("targets", n, b.cols, b.targets[n],
             "is outside the vocabulary [0, " + std::to_string(V) + ") (< 0 means no target)");
    if (b.positions[n] < 0 || b.positions[n] >= max_pos)
      bad_id("positions", n, b.cols, b.positions[n],
             "is outside [0, max_position_embeddings = " + std::to_string(max_pos) + ")");
    if (b.segment_ids[n] < 0) bad_id("segment_ids", n, b.cols, b.segment_ids[n], "is negative");
  }
}

// angle = position * inv_freq, cos and sin in double, then cast; dimension 1 broadcasts over heads.
std::pair<at::Tensor, at::Tensor> LlamaModel::rope_tables(const at::Tensor& positions) const {
  const at::Tensor angles = positions.to(at::kDouble).unsqueeze(-1) * inv_freq_;
  return {angles.cos().to(dtype_).unsqueeze(1), angles.sin().to(dtype_).unsqueeze(1)};
}

namespace {

// x (B,H,T,D) in Hugging Face's rotate_half layout: pair i is (x[i], x[i+D/2]), rotated by the
// angle whose cos and sin are (B,1,T,D/2).
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
  return at::cat({a * cos - b * sin, b * cos + a * sin}, -1);
}

}  // namespace

LlamaModel::Qkv LlamaModel::attention_inputs(const Layer& layer, const at::Tensor& x, const at::Tensor& cos,
                                             const at::Tensor& sin) const {
  const int64_t B = x.size(0), T = x.size(1), D = config_.head_dim;
  const at::Tensor h = rms_norm(x, layer.input_norm, config_.rms_norm_eps);
  auto heads = [&](const at::Tensor& w, int64_t H) { return at::linear(h, w).view({B, T, H, D}).transpose(1, 2); };
  return {rotate(heads(layer.q, config_.num_attention_heads), cos, sin),
          rotate(heads(layer.k, config_.num_key_value_heads), cos, sin),
          heads(layer.v, config_.num_key_value_heads)};
}

at::Tensor LlamaModel::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& allowed) const {
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), Tk = k.size(2), group = Hq / Hkv;
  // Query head h reads kv head h / group: repeat each kv head `group` times, adjacent.
  auto widen = [&](const at::Tensor& t) {
    return t.unsqueeze(2).expand({B, Hkv, group, Tk, D}).reshape({B, Hq, Tk, D});
  };
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const at::Tensor scores = at::matmul(q, widen(k).transpose(-1, -2)) * scale;
  const at::Tensor p = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity()).softmax(-1);
  return at::matmul(p, widen(v)).transpose(1, 2).reshape({B, Tq, Hq * D});
}

at::Tensor LlamaModel::mlp_block(const Layer& layer, const at::Tensor& x) const {
  const at::Tensor h = rms_norm(x, layer.post_norm, config_.rms_norm_eps);
  return x + at::linear(at::silu(at::linear(h, layer.gate)) * at::linear(h, layer.up), layer.down);
}

int64_t LlamaModel::head_chunk_rows(int64_t rows) const {
  if (rows <= 0) return 1;
  if (logprob_chunk_rows_ > 0) return std::min(logprob_chunk_rows_, rows);
  const int64_t fit = std::max(kHeadLogitsBudget / (config_.vocab_size * static_cast<int64_t>(at::elementSize(dtype_))),
                               kMinChunkRows);
  const int64_t chunks = (rows + fit - 1) / fit;
  return (rows + chunks - 1) / chunks;
}

at::Tensor LlamaModel::logprob_head(const at::Tensor& x, const at::Tensor& targets, bool train) const {
  const at::Tensor rows = targets.ge(0).nonzero().squeeze(1);
  const at::Tensor row_targets = targets.index_select(0, rows);
  const int64_t chunk = head_chunk_rows(rows.size(0));
  const at::Tensor& norm = params_[final_norm_].value;
  if (train) return ChunkedLogprobHead::apply(x, norm, head_weight(), rows, row_targets, config_.rms_norm_eps, chunk);
  return chunked_logp(x, norm, head_weight(), rows, row_targets, config_.rms_norm_eps, chunk);
}

at::Tensor LlamaModel::logits(const at::Tensor& x) const {
  return at::linear(rms_norm(x, params_[final_norm_].value, config_.rms_norm_eps), head_weight());
}

void LlamaModel::forward(const TokenBatch& b, bool train, float* logp_out) {
  validate(b);
  plugin::require(logp_out != nullptr, "forward: logp is NULL");
  if (train) pending_logp_ = at::Tensor();  // drops the previous graph; a failure leaves none
  const int64_t B = b.rows, T = b.cols, N = B * T;
  at::AutoGradMode grad_mode(train);

  const at::Tensor tokens = ids_tensor(b.tokens, B, T);
  const at::Tensor targets = ids_tensor(b.targets, B, T).view({N});
  const at::Tensor segments = ids_tensor(b.segment_ids, B, T);
  const auto [cos, sin] = rope_tables(ids_tensor(b.positions, B, T));
  // Query (b,i) sees key (b,j) iff j <= i in the same segment: allowed (B,1,T,T).
  const at::Tensor causal = at::ones({T, T}, at::kBool).tril();
  const at::Tensor allowed = (segments.unsqueeze(2) == segments.unsqueeze(1)).logical_and(causal).unsqueeze(1);

  at::Tensor x;
  {
    plugin::TraceSpan span("forward", "embedding forward");
    x = at::embedding(params_[embed_].value, tokens);
  }
  for (size_t l = 0; l < layers_.size(); ++l) {
    {
      plugin::TraceSpan span("forward", "layer %zu attention forward", l);
      const Qkv qkv = attention_inputs(layers_[l], x, cos, sin);
      x = x + at::linear(attend(qkv.q, qkv.k, qkv.v, allowed), layers_[l].o);
    }
    plugin::TraceSpan span("forward", "layer %zu mlp forward", l);
    x = mlp_block(layers_[l], x);
  }
  at::Tensor logp;
  {
    plugin::TraceSpan span("forward", "logprob head forward");
    logp = logprob_head(x.view({N, config_.hidden_size}), targets, train);
  }
  at::from_blob(logp_out, {N}, at::kFloat).copy_(logp.detach());
  if (train) {
    pending_logp_ = logp;
    pending_rows_ = B;
    pending_cols_ = T;
  }
}

void LlamaModel::backward(const float* dlogp) {
  if (!pending_logp_.defined())
    throw plugin::Error(LYRE_ERROR_FAILED_PRECONDITION,
                        "backward without a preceding train forward (each train forward allows one backward)");
  plugin::require(dlogp != nullptr, "backward: dlogp is NULL");
  const at::Tensor logp = std::move(pending_logp_);  // consumed, whether backward succeeds or not
  pending_logp_ = at::Tensor();
  const at::Tensor grad = at::from_blob(const_cast<float*>(dlogp), logp.sizes(), at::kFloat).to(dtype_, false, true);
  plugin::TraceSpan span("backward", "autograd backward");
  torch::autograd::backward({logp}, {grad});
}

void LlamaModel::zero_grad() {
  at::NoGradGuard no_grad;
  for (Parameter& p : params_) p.value.mutable_grad().zero_();
}

double LlamaModel::train_flops_per_token(int64_t seq_len) const {
  const double d = static_cast<double>(config_.hidden_size), F = static_cast<double>(config_.intermediate_size);
  const double L = static_cast<double>(config_.num_hidden_layers), V = static_cast<double>(config_.vocab_size);
  const double qd = static_cast<double>(config_.q_dim());
  const double qkvd = qd + 2.0 * static_cast<double>(config_.kv_dim());
  const double matmul_params = L * (d * qkvd + qd * d + 3.0 * d * F) + V * d;
  return 6.0 * matmul_params + L * 12.0 * static_cast<double>(seq_len) * qd;
}

int64_t LlamaModel::num_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.value.numel();
  return n;
}

}  // namespace lyre::libtorch
