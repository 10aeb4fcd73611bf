// LlamaModel::generate: prefill the prompts with the full-sequence layers, keeping each layer's
// roped K and V in a cache, then decode one token per row per step, the new query attending to
// the cached keys and values of its own row.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "layers.hpp"
#include "lyre/plugin.hpp"
#include "model/llama_model.hpp"

namespace lyre::cpu {
namespace {

// One query per active row against its row's cache.
// qkv (A, (Hq+2Hkv)*D) roped; k_cache, v_cache (B, Hkv, cache_len, D) of one layer;
// row_of[r] the cache row of active row r, length[r] its cached entries (the new one included)
// -> att (A, Hq*D). scores: A*Hq*cache_len scratch.
template <typename T>
void decode_attention(T* att, const T* qkv, const T* k_cache, const T* v_cache,
                      const int32_t* row_of, const int32_t* length, int64_t A, int64_t Hq,
                      int64_t Hkv, int64_t D, int64_t cache_len, T* scores) {
  const int64_t group = Hq / Hkv, qkvd = (Hq + 2 * Hkv) * D;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D)));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < A * Hq; ++i) {
    const int64_t r = i / Hq, h = i % Hq, g = h / group, n = length[r];
    const T* q = qkv + r * qkvd + h * D;
    const int64_t head_base = (static_cast<int64_t>(row_of[r]) * Hkv + g) * cache_len * D;
    const T* K = k_cache + head_base;
    const T* Vc = v_cache + head_base;
    T* sc = scores + i * cache_len;
    T top = -std::numeric_limits<T>::infinity();
    for (int64_t t = 0; t < n; ++t) {
      T dot = 0;
      for (int64_t e = 0; e < D; ++e) dot += q[e] * K[t * D + e];
      sc[t] = dot * scale;
      top = std::max(top, sc[t]);
    }
    T sum = 0;
    for (int64_t t = 0; t < n; ++t) {
      sc[t] = std::exp(sc[t] - top);
      sum += sc[t];
    }
    T* o = att + r * Hq * D + h * D;
    std::fill(o, o + D, T(0));
    for (int64_t t = 0; t < n; ++t) {
      const T w = sc[t] / sum;
      for (int64_t e = 0; e < D; ++e) o[e] += w * Vc[t * D + e];
    }
  }
}

}  // namespace

template <typename T>
void LlamaModel<T>::generate(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows,
                             int64_t prompt_cols, int32_t max_new_tokens, int32_t eos_token_id,
                             const SamplingOptions& sampling, int32_t* out_tokens,
                             int32_t* out_lengths) {
  plugin::TraceSpan span("generate", "generate (%lld rows, up to %d new tokens)",
                         static_cast<long long>(rows), max_new_tokens);
  const int64_t longest =
      check_generate_request(config_, sampling, prompt, prompt_lengths, rows, prompt_cols,
                             max_new_tokens, out_tokens, out_lengths);
  const int64_t B = rows, Tp = prompt_cols, V = config_.vocab_size, d = config_.hidden_size;
  const int64_t Hq = config_.num_attention_heads, Hkv = config_.num_key_value_heads;
  const int64_t D = config_.head_dim, qd = config_.q_dim(), kvd = config_.kv_dim();
  const int64_t qkvd = config_.qkv_dim(), L = config_.num_hidden_layers;

  std::fill(out_tokens, out_tokens + B * max_new_tokens, 0);
  std::fill(out_lengths, out_lengths + B, 0);
  if (max_new_tokens == 0) return;

  const int64_t cache_len = longest + max_new_tokens - 1;
  ensure_rope(std::max<int64_t>(cache_len - 1, 0));

  // Prefill inputs: padding becomes token 0 at position 0 in segment 0 (masked off).
  const int64_t N = B * Tp;
  const PrefillIds prefill = prefill_ids(prompt, prompt_lengths, B, Tp);

  const int64_t layer_cache = B * Hkv * cache_len * D;
  Buffer<T> kv(MemoryKind::workspace);  // K of every layer, then V of every layer
  kv.reserve(static_cast<size_t>(2 * L * layer_cache));
  Buffer<T> logits(MemoryKind::workspace);
  logits.reserve(static_cast<size_t>(B * V));
  Buffer<T> scores(MemoryKind::workspace);
  scores.reserve(static_cast<size_t>(B * Hq * cache_len));
  auto k_cache = [&](int64_t l) { return kv.data() + l * layer_cache; };
  auto v_cache = [&](int64_t l) { return kv.data() + (L + l) * layer_cache; };
  // Copies K and V of `row` of qkv into cache slot (b, t) of layer l.
  auto store_kv = [&](int64_t l, const T* qkv_row, int64_t b, int64_t t) {
    for (int64_t g = 0; g < Hkv; ++g) {
      const int64_t slot = ((b * Hkv + g) * cache_len + t) * D;
      std::copy(qkv_row + qd + g * D, qkv_row + qd + (g + 1) * D, k_cache(l) + slot);
      std::copy(qkv_row + qd + kvd + g * D, qkv_row + qd + kvd + (g + 1) * D, v_cache(l) + slot);
    }
  };

  // ---- Prefill ----
  {
    plugin::TraceSpan prefill_span("generate", "prefill (%lld rows of %lld)",
                                   static_cast<long long>(B), static_cast<long long>(Tp));
    const Scratch s = scratch(N);
    embedding_forward(s.resid, prefill.tokens.data(), params_.value(index_.embed), N, d, V);
    int64_t layer = 0;
    const Attend attend = [&](T* qkv, T* att, T* lse) {
      attention_forward(att, lse, qkv, prefill.segment_ids.data(), B, Tp, Hq, Hkv, D);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < prompt_lengths[b]; ++t) store_kv(layer, qkv + (b * Tp + t) * qkvd, b, t);
    };
    const LayerIO io{s.resid, s.qkv, s.att, s.lse, s.resid, s.gu, s.resid};
    for (layer = 0; layer < L; ++layer)
      layer_forward(static_cast<size_t>(layer), N, prefill.positions.data(), io, s, attend,
                    "generate");
    // The last prompt position of each row predicts its first new token.
    for (int64_t b = 0; b < B; ++b) {
      const T* src = s.resid + (b * Tp + prompt_lengths[b] - 1) * d;
      std::copy(src, src + d, s.dnorm + b * d);
    }
    head_logits(logits.data(), s.dnorm, B, s);
  }

  // ---- Decode ----
  std::vector<TokenSampler> samplers;
  for (int64_t b = 0; b < B; ++b) samplers.emplace_back(sampling, static_cast<uint64_t>(b));
  std::vector<int32_t> active(static_cast<size_t>(B));   // cache row of each active row
  std::vector<int32_t> cached(static_cast<size_t>(B));   // entries in each cache row
  for (int64_t b = 0; b < B; ++b) {
    active[b] = static_cast<int32_t>(b);
    cached[b] = prompt_lengths[b];
  }
  std::vector<int32_t> step_tokens(active.size()), step_positions(active.size()), lengths(active.size());

  for (int32_t step = 0;; ++step) {
    // Pick a token for every active row from its logits (row r of `logits`).
    size_t still = 0;
    for (size_t r = 0; r < active.size(); ++r) {
      const int32_t b = active[r];
      const int32_t tok = samplers[b].pick(logits.data() + static_cast<int64_t>(r) * V, V);
      out_tokens[b * max_new_tokens + step] = tok;
      out_lengths[b] = step + 1;
      if (tok == eos_token_id || step + 1 == max_new_tokens) continue;
      active[still] = b;
      step_tokens[still] = tok;
      ++still;
    }
    active.resize(still);
    if (active.empty()) break;

    // Feed the new tokens: one row each, at the next position of its row.
    const int64_t A = static_cast<int64_t>(active.size());
    plugin::TraceSpan decode_span("generate", "decode token %d (%lld rows)", step + 1,
                                  static_cast<long long>(A));
    for (int64_t r = 0; r < A; ++r) {
      step_positions[r] = cached[active[r]];
      lengths[r] = cached[active[r]] + 1;
    }
    const Scratch s = scratch(A);  // A <= B <= N: no growth, no allocation
    embedding_forward(s.resid, step_tokens.data(), params_.value(index_.embed), A, d, V);
    int64_t layer = 0;
    const Attend attend = [&](T* qkv, T* att, T*) {
      for (int64_t r = 0; r < A; ++r) store_kv(layer, qkv + r * qkvd, active[r], step_positions[r]);
      decode_attention(att, qkv, k_cache(layer), v_cache(layer), active.data(), lengths.data(), A,
                       Hq, Hkv, D, cache_len, scores.data());
    };
    const LayerIO io{s.resid, s.qkv, s.att, s.lse, s.resid, s.gu, s.resid};
    for (layer = 0; layer < L; ++layer)
      layer_forward(static_cast<size_t>(layer), A, step_positions.data(), io, s, attend, "generate");
    head_logits(logits.data(), s.resid, A, s);
    for (int64_t r = 0; r < A; ++r) ++cached[active[r]];
  }
}

template void LlamaModel<float>::generate(const int32_t*, const int32_t*, int64_t, int64_t, int32_t,
                                          int32_t, const SamplingOptions&, int32_t*, int32_t*);
template void LlamaModel<double>::generate(const int32_t*, const int32_t*, int64_t, int64_t, int32_t,
                                           int32_t, const SamplingOptions&, int32_t*, int32_t*);

}  // namespace lyre::cpu
