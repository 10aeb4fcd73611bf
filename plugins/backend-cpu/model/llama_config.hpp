// A Hugging Face Llama config.json, parsed and checked: the shapes LlamaModel is built from.
#pragma once

#include <cstdint>
#include <string>

#include "layers.hpp"

namespace lyre::cpu {

struct LlamaConfig {
  int64_t hidden_size = 0;        // d
  int64_t intermediate_size = 0;  // F
  int64_t num_hidden_layers = 0;  // L
  int64_t num_attention_heads = 0;  // Hq
  int64_t num_key_value_heads = 0;  // Hkv (= Hq when absent)
  int64_t head_dim = 0;             // D (= d / Hq when absent)
  int64_t vocab_size = 0;           // V
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;

  int64_t q_dim() const { return num_attention_heads * head_dim; }    // Hq*D
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }   // Hkv*D
  int64_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }          // fused QKV width
};

// Parses config.json text. Keys this backend does not use are ignored (HF configs carry many);
// a missing or unsupported value throws lyre::plugin::Error(INVALID_ARGUMENT) naming the key
// and the value.
LlamaConfig parse_llama_config(const std::string& json_text);

// Forward + backward FLOPs per token for rows of seq_len tokens, the numerator of MFU: 6 per
// matmul parameter (lm head included, tied or not; the embedding lookup is no matmul) plus
// attention, counted at full seq_len (not halved for the causal mask, as PaLM's MFU does):
// 4*T*Hq*D per layer forward for QK^T and PV, times 3 for forward + backward.
double llama_train_flops_per_token(const LlamaConfig& config, int64_t seq_len);

}  // namespace lyre::cpu
