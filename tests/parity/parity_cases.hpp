// The parity suite's inputs: a fixed list of small random Llama configs, and for each the batches,
// weights and d(loss)/d(logp) both backends receive. Everything comes from seeded generators, so
// every run compares the same numbers, and a case prints itself so a failure names it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.hpp"
#include "plugin/handles.hpp"

namespace lyre::parity {

struct ParityCase {
  int index = 0;
  uint64_t seed = 0;  // weights, batches and dlogp of this case

  // The model (Hugging Face config.json keys).
  int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0;
  int64_t head_dim = 0;  // 0: not in the config (hidden_size / num_heads)
  int64_t vocab_size = 0, max_position_embeddings = 0;
  bool tied = false;
  double rope_theta = 10000.0, rms_norm_eps = 1e-5;
  std::string rope_scaling = "null";  // JSON: null or the rope_scaling object

  // The data.
  int64_t batch_size = 0, seq_len = 0;
  double weight_std = 0.05;  // of matrices and embeddings; norms are 1 + N(0, 0.1)

  std::string config_json() const;
  // One line: "case 3 (seed ..): MQA heads 4/1, d=64 ffn=97 L=2 head_dim=16 ... B=2 T=13".
  std::string describe() const;
};

// The fixed list: MHA, GQA and MQA each with no, linear and llama3 rope scaling, alternately tied
// and untied, explicit head_dim on some; sizes, eps, vocab, B and odd T drawn from a seeded RNG.
std::vector<ParityCase> parity_cases();

// Batch `which` (0, 1, 2, ...) of a case: packed rows of several documents, each with positions
// restarting at 0 and target -1 at its last token, and right padding (segment 0, target -1,
// loss_mask 0). The first row always opens with a document of 3 or more tokens and packs at
// least two; the last row always ends in padding.
Batch make_batch(const ParityCase& c, int which);

// Random d(loss)/d(logp) for a batch, 0 where the target is < 0.
std::vector<float> make_dlogp(const Batch& batch, uint64_t seed);

// Random weights for a parameter list: matrices and embeddings N(0, weight_std), norms
// 1 + N(0, 0.1), biases N(0, weight_std). One vector per parameter, in list order.
std::vector<std::vector<float>> make_weights(const std::vector<ParameterInfo>& params,
                                             const ParityCase& c);

}  // namespace lyre::parity
