// Shared fixtures of the backend-cpu model tests: a tiny Llama config, seeded weights, and
// packed batches built from documents.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "model/llama_config.hpp"
#include "model/llama_model.hpp"

namespace lyre::cpu::test {

// 2 layers, GQA (4 query heads over 2 kv heads), head_dim 4 != hidden/heads, llama3 rope
// scaling whose band cuts between the two frequencies of a head, and an HF key we ignore.
inline std::string tiny_config_json(bool tied, const char* rms_norm_eps = "1e-5") {
  return std::string(R"({
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "torch_dtype": "float32",
    "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4,
    "vocab_size": 13, "max_position_embeddings": 64, "rope_theta": 10000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "bos_token_id": 1,
    "rms_norm_eps": )") + rms_norm_eps + ", \"tie_word_embeddings\": " + (tied ? "true" : "false") + "}";
}

inline LlamaConfig tiny_config(bool tied, const char* rms_norm_eps = "1e-5") {
  return parse_llama_config(tiny_config_json(tied, rms_norm_eps));
}

// Writes seeded weights (as double, so float and double models can share them): matrices and
// embeddings normal with std 0.5, norm weights 1 + 0.2 * normal.
template <typename T>
void init_weights(LlamaModel<T>& model, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto& ps = model.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const ParameterInfo& p = ps.info(i);
    T* v = ps.value(i);
    for (size_t j = 0; j < p.numel; ++j) {
      const double z = normal(rng);
      v[j] = static_cast<T>(p.kind == LYRE_PARAM_NORM ? 1.0 + 0.2 * z : 0.5 * z);
    }
  }
}

template <typename To, typename From>
void copy_weights(LlamaModel<To>& to, const LlamaModel<From>& from) {
  for (size_t i = 0; i < from.params().size(); ++i) {
    const From* src = from.params().value(i);
    To* dst = to.params().value(i);
    for (size_t j = 0; j < from.params().info(i).numel; ++j) dst[j] = static_cast<To>(src[j]);
  }
}

// Owned int32 arrays for a TokenBatch.
struct HostBatch {
  int64_t rows = 0, cols = 0;
  std::vector<int32_t> tokens, targets, positions, segments;

  HostBatch(int64_t r, int64_t c)
      : rows(r), cols(c), tokens(r * c, 0), targets(r * c, -1), positions(r * c, 0),
        segments(r * c, 0) {}

  // Places a document at (row, col): tokens predict the next token of the same document.
  void place(int64_t row, int64_t col, const std::vector<int32_t>& doc, int32_t segment) {
    for (size_t i = 0; i < doc.size(); ++i) {
      const int64_t n = row * cols + col + static_cast<int64_t>(i);
      tokens[n] = doc[i];
      targets[n] = i + 1 < doc.size() ? doc[i + 1] : -1;
      positions[n] = static_cast<int32_t>(i);
      segments[n] = segment;
    }
  }

  TokenBatch view() const {
    return {tokens.data(), targets.data(), positions.data(), segments.data(), rows, cols};
  }
};

inline HostBatch single_document(const std::vector<int32_t>& doc) {
  HostBatch b(1, static_cast<int64_t>(doc.size()));
  b.place(0, 0, doc, 1);
  return b;
}

const std::vector<int32_t> kDocA{3, 7, 1, 12}, kDocB{5, 5, 9}, kDocC{2, 11, 4, 8, 6};

// Row 0 packs documents A and B; row 1 holds C and two padding tokens.
inline HostBatch packed_batch() {
  HostBatch b(2, 7);
  b.place(0, 0, kDocA, 1);
  b.place(0, 4, kDocB, 2);
  b.place(1, 0, kDocC, 1);
  return b;
}

inline std::vector<double> random_weights(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> w(n);
  for (double& x : w) x = u(rng);
  return w;
}

}  // namespace lyre::cpu::test
