// The parameters of a Llama as both Llama backends list them: Hugging Face names in Hugging
// Face's order, a layer's q, k and v weights added one after another (one [(Hq+2Hkv)*D, d] block
// for one GEMM in a store that lays them end to end) and its gate and up weights likewise
// ([2F, d], the [N, 2F] input swiglu expects).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lyre/abi.h"
#include "model/llama_config.hpp"

namespace lyre::cpu {

// Where each parameter went: indices into the store.
struct LlamaLayerIndex {
  size_t input_norm, q, k, v, o, post_norm, gate, up, down;
};
struct LlamaParameterIndex {
  size_t embed = 0, final_norm = 0, lm_head = 0;  // lm_head == embed when tied
  std::vector<LlamaLayerIndex> layers;
};

// Adds the parameters to `store`, anything with
// size_t add(std::string name, LyreParamKind kind, std::vector<int64_t> shape).
template <typename Store>
LlamaParameterIndex add_llama_parameters(Store& store, const LlamaConfig& config) {
  const int64_t d = config.hidden_size, F = config.intermediate_size, V = config.vocab_size;
  LlamaParameterIndex index;
  index.embed = store.add("model.embed_tokens.weight", LYRE_PARAM_EMBEDDING, {V, d});
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlamaLayerIndex li;
    li.input_norm = store.add(p + "input_layernorm.weight", LYRE_PARAM_NORM, {d});
    li.q = store.add(p + "self_attn.q_proj.weight", LYRE_PARAM_MATRIX, {config.q_dim(), d});
    li.k = store.add(p + "self_attn.k_proj.weight", LYRE_PARAM_MATRIX, {config.kv_dim(), d});
    li.v = store.add(p + "self_attn.v_proj.weight", LYRE_PARAM_MATRIX, {config.kv_dim(), d});
    li.o = store.add(p + "self_attn.o_proj.weight", LYRE_PARAM_MATRIX, {d, config.q_dim()});
    li.post_norm = store.add(p + "post_attention_layernorm.weight", LYRE_PARAM_NORM, {d});
    li.gate = store.add(p + "mlp.gate_proj.weight", LYRE_PARAM_MATRIX, {F, d});
    li.up = store.add(p + "mlp.up_proj.weight", LYRE_PARAM_MATRIX, {F, d});
    li.down = store.add(p + "mlp.down_proj.weight", LYRE_PARAM_MATRIX, {d, F});
    index.layers.push_back(li);
  }
  index.final_norm = store.add("model.norm.weight", LYRE_PARAM_NORM, {d});
  index.lm_head = config.tie_word_embeddings
                      ? index.embed
                      : store.add("lm_head.weight", LYRE_PARAM_EMBEDDING, {V, d});
  return index;
}

}  // namespace lyre::cpu
