// LlamaModel::generate: prefill the prompts with the full-sequence kernels, appending each
// layer's roped K and V to a cache, then decode one token per row per step, the new query
// attending to its row's cache. Tokens are picked on the host from float logits by backend-cpu's
// TokenSampler, so greedy decoding picks what backend-cpu picks from the same logits.
//
// Decode steps run every row, finished or not: the cache kernels index cache rows by batch row,
// and a finished row appends nothing (count 0) and is never sampled again.
#include <algorithm>
#include <string>
#include <vector>

#include "llama_model.hpp"

namespace lyre::cuda {
namespace {

// Waits for the stream when the scope ends, so that buffers released after it (declared before
// it) are no longer in use by queued kernels, even when an error cuts the work short.
class StreamDrain {
 public:
  explicit StreamDrain(cudaStream_t stream) : stream_(stream) {}
  ~StreamDrain() { cudaStreamSynchronize(stream_); }
  StreamDrain(const StreamDrain&) = delete;
  StreamDrain& operator=(const StreamDrain&) = delete;

 private:
  cudaStream_t stream_;
};

}  // namespace

void LlamaModel::generate(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows, int64_t prompt_cols,
                          int32_t max_new_tokens, int32_t eos_token_id, const cpu::SamplingOptions& sampling,
                          int32_t* out_tokens, int32_t* out_lengths) {
  plugin::TraceSpan span("generate", "generate (%lld rows, up to %d new tokens)", static_cast<long long>(rows),
                         max_new_tokens);
  cpu::check_generate_request(config_, sampling, prompt, prompt_lengths, rows, prompt_cols, max_new_tokens, out_tokens,
                              out_lengths);
  std::fill(out_tokens, out_tokens + rows * max_new_tokens, 0);
  std::fill(out_lengths, out_lengths + rows, 0);
  if (max_new_tokens == 0) return;
  if (precision() == Precision::bf16)
    generate_impl<bf16>(prompt, prompt_lengths, rows, prompt_cols, max_new_tokens, eos_token_id, sampling, out_tokens,
                        out_lengths);
  else
    generate_impl<float>(prompt, prompt_lengths, rows, prompt_cols, max_new_tokens, eos_token_id, sampling,
                         out_tokens, out_lengths);
}

template <typename T>
void LlamaModel::generate_impl(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows, int64_t prompt_cols,
                               int32_t max_new_tokens, int32_t eos_token_id, const cpu::SamplingOptions& sampling,
                               int32_t* out_tokens, int32_t* out_lengths) {
  const int64_t B = rows, Tp = prompt_cols, N = B * Tp, V = config_.vocab_size, d = config_.hidden_size;
  const int64_t F = config_.intermediate_size, L = config_.num_hidden_layers;
  const int64_t Hq = config_.num_attention_heads, Hkv = config_.num_key_value_heads, D = config_.head_dim;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const int64_t max_len = Tp + max_new_tokens;  // cache entries per row: prompt, then fed tokens
  cudaStream_t s = stream();

  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) longest = std::max<int64_t>(longest, prompt_lengths[b]);
  ensure_rope(std::max<int64_t>(longest + max_new_tokens - 2, 0));

  // The scratch arena (generate keeps nothing in it, and a pending train forward's activations
  // live elsewhere): layer tensors for the N prefill rows, of which decoding uses the first B;
  // the prefill's ids (tokens, positions, segments: N each; cache start, count: B each); a
  // decode step's ids (tokens, positions, start, count, length: B each); the last prompt
  // position's norm output and the logits of each row.
  struct Plan {
    float* x;
    T *xn, *delta, *qkv, *att, *gu, *h, *xn_last;
    float *rstd, *lse, *logits;
    int32_t *prefill_ids, *step_ids;
  };
  auto carve = [&](Carver& c) {
    Plan p;
    p.x = c.take<float>(N * d);
    p.xn = c.take<T>(N * d);
    p.delta = c.take<T>(N * d);
    p.qkv = c.take<T>(N * config_.qkv_dim());
    p.att = c.take<T>(N * config_.q_dim());
    p.gu = c.take<T>(N * 2 * F);
    p.h = c.take<T>(N * F);
    p.xn_last = c.take<T>(B * d);
    p.rstd = c.take<float>(N);
    p.lse = c.take<float>(N * Hq);
    p.logits = c.take<float>(B * V);
    p.prefill_ids = c.take<int32_t>(3 * N + 2 * B);
    p.step_ids = c.take<int32_t>(5 * B);
    return p;
  };
  Carver measure(nullptr);
  carve(measure);
  Carver carver(grow(scratch_, measure.used()));
  const Plan p = carve(carver);

  // K of every layer, then V of every layer: (L, B, Hkv, max_len, D) each. Released when
  // generate returns (back to the allocator's cache: a like-sized generate reuses it).
  const int64_t layer_cache = B * Hkv * max_len * D;
  DeviceBuffer<T> kv(MemoryKind::workspace);
  kv.reserve(static_cast<size_t>(2 * L * layer_cache));
  StreamDrain drain(s);  // after kv: runs before kv is released
  auto k_cache = [&](int64_t l) { return kv.data() + l * layer_cache; };
  auto v_cache = [&](int64_t l) { return kv.data() + (L + l) * layer_cache; };
  const T* embed = params_.compute_weight<T>(index_.embed);
  const T* head = params_.compute_weight<T>(index_.lm_head);
  const float* final_norm = params_.value(index_.final_norm);
  std::vector<float> logits(static_cast<size_t>(B * V));

  // ---- Prefill: padding becomes token 0 at position 0 in segment 0 (masked off) ----
  {
    plugin::TraceSpan prefill_span("generate", "prefill (%lld rows of %lld)", static_cast<long long>(B),
                                   static_cast<long long>(Tp));
    const cpu::PrefillIds prefill = cpu::prefill_ids(prompt, prompt_lengths, B, Tp);
    std::vector<int32_t> start(static_cast<size_t>(B), 0), count(prompt_lengths, prompt_lengths + B);
    upload_ids(p.prefill_ids, {{prefill.tokens.data(), N},
                               {prefill.positions.data(), N},
                               {prefill.segment_ids.data(), N},
                               {start.data(), B},
                               {count.data(), B}});
    const int32_t* tokens_d = p.prefill_ids;
    const int32_t* positions_d = p.prefill_ids + N;
    const int32_t* segments_d = p.prefill_ids + 2 * N;
    const int32_t* start_d = p.prefill_ids + 3 * N;
    const int32_t* count_d = start_d + B;

    embedding_forward<T>(p.x, tokens_d, embed, N, d, s);
    int64_t layer = 0;
    const Attend<T> attend = [&](T* qkv, T* att, float* lse) {
      attention_forward<T>(att, lse, qkv, segments_d, B, Tp, Hq, Hkv, D, s);
      kv_cache_append<T>(k_cache(layer), v_cache(layer), qkv, start_d, count_d, B, Tp, Hq, Hkv, D, max_len, s);
    };
    const T* delta_prev = nullptr;
    for (layer = 0; layer < L; ++layer) {
      const LayerIO<T> io{p.x, delta_prev, p.x, p.qkv, p.att, p.lse, p.x, p.gu, p.xn, p.delta, p.h, p.rstd};
      layer_forward<T>(static_cast<size_t>(layer), N, positions_d, io, attend, "generate");
      delta_prev = p.delta;
    }
    residual_rmsnorm_forward<T>(p.x, p.xn, p.rstd, p.x, delta_prev, final_norm, N, d, eps, s);
    // The last prompt position of each row predicts its first new token.
    for (int64_t b = 0; b < B; ++b)
      LYRE_CUDA_CHECK(cudaMemcpyAsync(p.xn_last + b * d, p.xn + (b * Tp + prompt_lengths[b] - 1) * d,
                                      static_cast<size_t>(d) * sizeof(T), cudaMemcpyDeviceToDevice, s));
    head_logits<T>(gemm_, p.logits, p.xn_last, head, B, d, V, s);
    download_floats(logits.data(), p.logits, B * V);
  }

  // ---- Decode ----
  std::vector<cpu::TokenSampler> samplers;
  for (int64_t b = 0; b < B; ++b) samplers.emplace_back(sampling, static_cast<uint64_t>(b));
  std::vector<char> active(static_cast<size_t>(B), 1);
  std::vector<int32_t> cached(prompt_lengths, prompt_lengths + B);  // entries in each cache row
  std::vector<int32_t> next(static_cast<size_t>(B), 0), step_positions(next.size()), start(next.size()),
      count(next.size()), length(next.size());
  const int32_t* tokens_d = p.step_ids;
  const int32_t* positions_d = p.step_ids + B;
  const int32_t* start_d = p.step_ids + 2 * B;
  const int32_t* count_d = p.step_ids + 3 * B;
  const int32_t* length_d = p.step_ids + 4 * B;

  for (int32_t step = 0;; ++step) {
    // Pick a token for every active row from its logits (row b of `logits`).
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      if (!active[b]) continue;
      const int32_t tok = samplers[b].pick(logits.data() + b * V, V);
      out_tokens[b * max_new_tokens + step] = tok;
      out_lengths[b] = step + 1;
      if (tok == eos_token_id || step + 1 == max_new_tokens) {
        active[b] = 0;
        continue;
      }
      next[b] = tok;
      any = true;
    }
    if (!any) break;

    // Feed the new tokens at the next position of their rows; finished rows feed token 0 at
    // position 0, append nothing and attend to what they have.
    plugin::TraceSpan decode_span("generate", "decode token %d (%lld rows)", step + 1, static_cast<long long>(B));
    for (int64_t b = 0; b < B; ++b) {
      const bool on = active[b] != 0;
      next[b] = on ? next[b] : 0;
      step_positions[b] = on ? cached[b] : 0;
      start[b] = cached[b];
      count[b] = on ? 1 : 0;
      length[b] = cached[b] + (on ? 1 : 0);
    }
    upload_ids(p.step_ids, {{next.data(), B}, {step_positions.data(), B}, {start.data(), B}, {count.data(), B},
                            {length.data(), B}});
    embedding_forward<T>(p.x, tokens_d, embed, B, d, s);
    int64_t layer = 0;
    const Attend<T> attend = [&](T* qkv, T* att, float*) {
      kv_cache_append<T>(k_cache(layer), v_cache(layer), qkv, start_d, count_d, B, 1, Hq, Hkv, D, max_len, s);
      decode_attention<T>(att, qkv, k_cache(layer), v_cache(layer), length_d, B, Hq, Hkv, D, max_len, s);
    };
    const T* delta_prev = nullptr;
    for (layer = 0; layer < L; ++layer) {
      const LayerIO<T> io{p.x, delta_prev, p.x, p.qkv, p.att, p.lse, p.x, p.gu, p.xn, p.delta, p.h, p.rstd};
      layer_forward<T>(static_cast<size_t>(layer), B, positions_d, io, attend, "generate");
      delta_prev = p.delta;
    }
    residual_rmsnorm_forward<T>(p.x, p.xn, p.rstd, p.x, delta_prev, final_norm, B, d, eps, s);
    head_logits<T>(gemm_, p.logits, p.xn, head, B, d, V, s);
    download_floats(logits.data(), p.logits, B * V);
    for (int64_t b = 0; b < B; ++b)
      if (active[b]) ++cached[b];
  }
}

}  // namespace lyre::cuda
