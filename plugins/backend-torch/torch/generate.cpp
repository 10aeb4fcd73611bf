// LlamaModel::generate: prefill the prompts through the full-sequence layers, keeping each
// layer's roped K and V in a cache (B, Hkv, cache_len, D), then decode one token per active row
// per step, its query attending to the first `length` cache entries of its own row.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "lyre/plugin.hpp"
#include "model.hpp"

namespace lyre::libtorch {
namespace {

// Picks one row's next token: argmax, or a draw from a generator of its own, so that a row's
// tokens do not depend on which other rows are still generating.
class RowSampler {
 public:
  RowSampler(const SamplingOptions& options, uint64_t row)
      : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(options.seed ^ (0x9E3779B97F4A7C15ull * (row + 1)))) {}

  // logits (V) -> a token id
  int32_t pick(const at::Tensor& logits) {
    if (options_.temperature == 0.0) return static_cast<int32_t>(logits.argmax().item<int64_t>());
    // Most likely first; equal logits in id order (a stable sort), so the cuts are deterministic.
    auto [sorted, order] = at::sort(logits.to(at::kDouble) / options_.temperature, /*stable=*/true, 0, /*descending=*/true);
    int64_t keep = sorted.size(0);
    if (options_.top_k > 0) keep = std::min<int64_t>(keep, options_.top_k);
    at::Tensor weights = (sorted.narrow(0, 0, keep) - sorted[0]).exp();
    if (options_.top_p < 1.0) {
      // The smallest most-likely set whose mass reaches top_p.
      const at::Tensor mass = weights.cumsum(0);
      const int64_t below = mass.lt(options_.top_p * mass[keep - 1]).sum().item<int64_t>();
      keep = std::min(keep, below + 1);
      weights = weights.narrow(0, 0, keep);
    }
    const int64_t choice = at::multinomial(weights, 1, /*replacement=*/false, generator_).item<int64_t>();
    return static_cast<int32_t>(order[choice].item<int64_t>());
  }

 private:
  SamplingOptions options_;
  at::Generator generator_;
};

at::Tensor int64_tensor(const std::vector<int64_t>& values) { return at::tensor(values, at::kLong); }

}  // namespace

void validate_sampling(const SamplingOptions& o) {
  plugin::require(std::isfinite(o.temperature) && o.temperature >= 0,
                  "sampling: temperature must be >= 0 (0 = greedy), got " + std::to_string(o.temperature));
  plugin::require(o.top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got " + std::to_string(o.top_k));
  plugin::require(o.top_p > 0 && o.top_p <= 1, "sampling: top_p must be in (0, 1] (1 = off), got " + std::to_string(o.top_p));
}

void LlamaModel::generate(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows, int64_t prompt_cols,
                          int32_t max_new_tokens, int32_t eos_token_id, const SamplingOptions& sampling,
                          int32_t* out_tokens, int32_t* out_lengths) {
  plugin::TraceSpan span("generate", "generate (%lld rows, up to %d new tokens)", static_cast<long long>(rows),
                         max_new_tokens);
  validate_sampling(sampling);
  plugin::require(rows >= 1 && prompt_cols >= 1, "generate: prompt must be [B, Tp] with B, Tp >= 1, got [" +
                                                     std::to_string(rows) + "," + std::to_string(prompt_cols) + "]");
  plugin::require(max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
  plugin::require(prompt && prompt_lengths && out_tokens && out_lengths, "generate: a tensor is NULL");
  const int64_t B = rows, Tp = prompt_cols, V = config_.vocab_size, d = config_.hidden_size;
  const int64_t Hkv = config_.num_key_value_heads, D = config_.head_dim;
  const int64_t max_pos = config_.max_position_embeddings;

  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = prompt_lengths[b];
    plugin::require(len >= 1 && len <= Tp, "generate: prompt_lengths[" + std::to_string(b) + "] = " +
                                               std::to_string(len) + " is outside [1, " + std::to_string(Tp) + "]");
    for (int64_t t = 0; t < len; ++t) {
      const int32_t id = prompt[b * Tp + t];
      plugin::require(id >= 0 && id < V, "generate: prompt token " + std::to_string(id) + " at row " +
                                             std::to_string(b) + ", col " + std::to_string(t) +
                                             " is outside the vocabulary [0, " + std::to_string(V) + ")");
    }
    // The last generated token is never fed back: positions reach len + max_new - 2.
    plugin::require(len + max_new_tokens - 1 <= max_pos,
                    "generate: row " + std::to_string(b) + ": prompt length " + std::to_string(len) +
                        " + max_new_tokens " + std::to_string(max_new_tokens) +
                        " - 1 exceeds max_position_embeddings " + std::to_string(max_pos));
    longest = std::max(longest, len);
  }
  std::fill(out_tokens, out_tokens + B * max_new_tokens, 0);
  std::fill(out_lengths, out_lengths + B, 0);
  if (max_new_tokens == 0) return;

  at::NoGradGuard no_grad;
  const int64_t cache_len = std::max(Tp, longest + max_new_tokens - 1);
  std::vector<at::Tensor> k_cache, v_cache;
  for (size_t l = 0; l < layers_.size(); ++l) {
    k_cache.push_back(at::zeros({B, Hkv, cache_len, D}, at::TensorOptions().dtype(dtype_)));
    v_cache.push_back(at::zeros_like(k_cache.back()));
  }

  // ---- Prefill: padding becomes token 0 at position 0 in segment 0 (masked off) ----
  at::Tensor logits;
  {
    plugin::TraceSpan prefill("generate", "prefill (%lld rows of %lld)", static_cast<long long>(B),
                              static_cast<long long>(Tp));
    std::vector<int64_t> tokens(static_cast<size_t>(B * Tp)), positions(tokens.size()), segments(tokens.size());
    std::vector<int64_t> last(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < Tp; ++t) {
        const bool real = t < prompt_lengths[b];
        tokens[b * Tp + t] = real ? prompt[b * Tp + t] : 0;
        positions[b * Tp + t] = real ? t : 0;
        segments[b * Tp + t] = real ? 1 : 0;
      }
      last[b] = b * Tp + prompt_lengths[b] - 1;
    }
    const at::Tensor seg = int64_tensor(segments).view({B, Tp});
    const at::Tensor allowed =
        (seg.unsqueeze(2) == seg.unsqueeze(1)).logical_and(at::ones({Tp, Tp}, at::kBool).tril()).unsqueeze(1);
    const auto [cos, sin] = rope_tables(int64_tensor(positions).view({B, Tp}));
    at::Tensor x = at::embedding(params_[embed_].value, int64_tensor(tokens).view({B, Tp}));
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Qkv qkv = attention_inputs(layers_[l], x, cos, sin);
      k_cache[l].narrow(2, 0, Tp).copy_(qkv.k);
      v_cache[l].narrow(2, 0, Tp).copy_(qkv.v);
      x = x + at::linear(attend(qkv.q, qkv.k, qkv.v, allowed), layers_[l].o);
      x = mlp_block(layers_[l], x);
    }
    // The last prompt position of each row predicts its first new token.
    logits = this->logits(x.view({B * Tp, d}).index_select(0, int64_tensor(last)));
  }

  // ---- Decode ----
  std::vector<RowSampler> samplers;
  for (int64_t b = 0; b < B; ++b) samplers.emplace_back(sampling, static_cast<uint64_t>(b));
  std::vector<int64_t> active(static_cast<size_t>(B)), cached(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    active[b] = b;
    cached[b] = prompt_lengths[b];
  }
  for (int32_t step = 0;; ++step) {
    std::vector<int64_t> still, fed;
    for (size_t r = 0; r < active.size(); ++r) {
      const int64_t b = active[r];
      const int32_t token = samplers[b].pick(logits[static_cast<int64_t>(r)]);
      out_tokens[b * max_new_tokens + step] = token;
      out_lengths[b] = step + 1;
      if (token == eos_token_id || step + 1 == max_new_tokens) continue;
      still.push_back(b);
      fed.push_back(token);
    }
    active = still;
    if (active.empty()) break;

    // Feed the new tokens: one column per active row, at the next position of its row.
    const int64_t A = static_cast<int64_t>(active.size());
    plugin::TraceSpan decode("generate", "decode token %d (%lld rows)", step + 1, static_cast<long long>(A));
    std::vector<int64_t> positions(active.size());
    for (int64_t r = 0; r < A; ++r) positions[r] = cached[active[r]];
    const at::Tensor position = int64_tensor(positions).view({A, 1});
    const at::Tensor row_index = int64_tensor(active);
    // Entry j of a row's cache is visible up to and including the new one: j <= position.
    const at::Tensor allowed = at::arange(cache_len, at::kLong).view({1, cache_len}).le(position).view({A, 1, 1, cache_len});
    const auto [cos, sin] = rope_tables(position);
    at::Tensor x = at::embedding(params_[embed_].value, int64_tensor(fed).view({A, 1}));
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Qkv qkv = attention_inputs(layers_[l], x, cos, sin);
      for (int64_t r = 0; r < A; ++r) {
        k_cache[l][active[r]].select(1, positions[r]).copy_(qkv.k[r].select(1, 0));
        v_cache[l][active[r]].select(1, positions[r]).copy_(qkv.v[r].select(1, 0));
      }
      const at::Tensor att =
          attend(qkv.q, k_cache[l].index_select(0, row_index), v_cache[l].index_select(0, row_index), allowed);
      x = x + at::linear(att, layers_[l].o);
      x = mlp_block(layers_[l], x);
    }
    logits = this->logits(x.view({A, d}));
    for (int64_t b : active) ++cached[b];
  }
}

}  // namespace lyre::libtorch
