// A Hugging Face Llama config.json, parsed and checked, and the rotary frequencies it implies.
// Written apart from backend-cpu's parser on purpose (this backend is the independent
// reference), but it accepts the same configs and names the same keys in its errors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lyre::libtorch {

struct RopeScaling {
  enum class Type { none, linear, llama3 } type = Type::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;                    // llama3
  double high_freq_factor = 4.0;                   // llama3
  double original_max_position_embeddings = 8192;  // llama3
};

struct LlamaConfig {
  int64_t hidden_size = 0;          // d
  int64_t intermediate_size = 0;    // F
  int64_t num_hidden_layers = 0;    // L
  int64_t num_attention_heads = 0;  // Hq
  int64_t num_key_value_heads = 0;  // Hkv (= Hq when absent)
  int64_t head_dim = 0;             // D (= d / Hq when absent)
  int64_t vocab_size = 0;           // V
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

// Parses config.json text. Keys the model does not use are ignored; a missing or unsupported
// value throws plugin::Error(INVALID_ARGUMENT, "config.json: ...") naming the key and value.
LlamaConfig parse_llama_config(const std::string& json_text);

// inv_freq (D/2) in double, as transformers' rope init functions compute it: default
// theta^(-2i/D); "linear" divides by factor; "llama3" keeps high frequencies, divides low ones
// by factor and blends the band between (_compute_llama3_parameters).
std::vector<double> rope_inv_freq(const LlamaConfig& config);

}  // namespace lyre::libtorch
