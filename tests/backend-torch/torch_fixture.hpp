// What the backend-torch tests share: the plugins of this build tree, tiny Llama configs,
// random weights copied between models, and packed batches.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "data/batch.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::test {

// Discovered once per process: every test uses the same loaded libraries.
inline PluginRegistry& registry() {
  static PluginRegistry r = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  return r;
}
inline std::shared_ptr<LoadedPlugin> torch_backend() { return registry().backend("torch"); }
inline std::shared_ptr<LoadedPlugin> cpu_backend() { return registry().backend("cpu"); }

// d=32, 4 query heads over 2 kv heads of 8, F=48, V=64, L=2.
inline std::string tiny_config(bool tied, const std::string& extra = "") {
  return std::string(R"({"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": )") + (tied ? "true" : "false") + extra + "}";
}

// Weights whose activations stay O(1): matrices N(0, 1/in), embeddings N(0, 1), norms near 1.
// Logits then differ by O(1), so argmax is the same under any rounding.
inline void randomize(Model& model, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const ParameterInfo& p : model.parameters()) {
    std::vector<float> v(static_cast<size_t>(p.numel()));
    const float scale = p.kind == LYRE_PARAM_MATRIX ? 1.0f / std::sqrt(static_cast<float>(p.shape[1])) : 1.0f;
    for (float& x : v) x = p.kind == LYRE_PARAM_NORM ? 1.0f + 0.1f * normal(rng) : scale * normal(rng);
    model.write(p.index, v);
  }
}

inline void copy_weights(const Model& from, Model& to) {
  for (const ParameterInfo& p : from.parameters()) to.write(p.index, from.read(p.index));
}

// B rows of T: each row holds two documents (positions restart, segments 1 and 2) and ends in
// padding (segment 0, target -1); the last token of each document has no target.
inline Batch packed_batch(int64_t B, int64_t T, int32_t vocab, uint64_t seed) {
  Batch b(B, T);
  std::mt19937_64 rng(seed);
  for (int64_t r = 0; r < B; ++r) {
    const int64_t first = 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(T / 2));
    const int64_t used = std::min<int64_t>(T, first + 2 + static_cast<int64_t>(rng() % 3));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = r * T + t;
      const bool padding = t >= used;
      const bool second = t >= first;
      b.tokens[n] = padding ? 0 : static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
      b.segment_ids[n] = padding ? 0 : second ? 2 : 1;
      b.positions[n] = padding ? 0 : static_cast<int32_t>(second ? t - first : t);
      b.loss_mask[n] = padding ? 0 : 1;
    }
    for (int64_t t = 0; t + 1 < T; ++t) {
      const int64_t n = r * T + t;
      if (b.segment_ids[n] != 0 && b.segment_ids[n + 1] == b.segment_ids[n]) b.targets[n] = b.tokens[n + 1];
    }
  }
  b.num_samples = B;
  return b;
}

// d(sum of logp * weights)/d(logp): a fixed, uneven upstream gradient.
inline std::vector<float> upstream(const Batch& b) {
  std::vector<float> d(static_cast<size_t>(b.size()));
  for (size_t i = 0; i < d.size(); ++i) d[i] = b.targets[i] < 0 ? 0.0f : -0.1f * static_cast<float>(1 + i % 7);
  return d;
}

inline std::vector<std::vector<float>> all_grads(const Model& m) {
  std::vector<std::vector<float>> g;
  for (const ParameterInfo& p : m.parameters()) g.push_back(m.read(p.index, LYRE_TENSOR_GRAD));
  return g;
}

inline float max_abs(const std::vector<std::vector<float>>& tensors) {
  float m = 0;
  for (const auto& t : tensors)
    for (float x : t) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace lyre::test
