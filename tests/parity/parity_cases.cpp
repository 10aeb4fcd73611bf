#include "parity_cases.hpp"

#include <algorithm>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

namespace lyre::parity {
namespace {

// Fixed: changing it changes every case (and the margins the suite prints).
constexpr uint64_t kCasesSeed = 0x5eed'0f'9a71;

int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

template <typename T>
T one_of(std::mt19937_64& rng, const std::vector<T>& choices) {
  return choices[static_cast<size_t>(uniform_int(rng, 0, static_cast<int64_t>(choices.size()) - 1))];
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

std::string ParityCase::config_json() const {
  nlohmann::json j = {
      {"model_type", "llama"},
      {"architectures", {"LlamaForCausalLM"}},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_layers},
      {"num_attention_heads", num_heads},
      {"num_key_value_heads", num_kv_heads},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"rope_scaling", nlohmann::json::parse(rope_scaling)},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"tie_word_embeddings", tied},
  };
  if (head_dim > 0) j["head_dim"] = head_dim;
  return j.dump();
}

std::string ParityCase::describe() const {
  const char* attention = num_heads == num_kv_heads ? "MHA" : num_kv_heads == 1 ? "MQA" : "GQA";
  return "case " + std::to_string(index) + " (seed " + std::to_string(seed) + "): " + attention +
         " heads " + std::to_string(num_heads) + "/" + std::to_string(num_kv_heads) + ", d=" +
         std::to_string(hidden_size) + " ffn=" + std::to_string(intermediate_size) +
         " L=" + std::to_string(num_layers) + " head_dim=" +
         (head_dim > 0 ? std::to_string(head_dim) + " (explicit)"
                       : std::to_string(hidden_size / num_heads)) +
         " vocab=" + std::to_string(vocab_size) + (tied ? " tied" : " untied") +
         " rope_theta=" + number(rope_theta) + " rope_scaling=" + rope_scaling +
         " eps=" + number(rms_norm_eps) + " weight_std=" + number(weight_std) +
         ", batches B=" + std::to_string(batch_size) + " T=" + std::to_string(seq_len);
}

std::vector<ParityCase> parity_cases() {
  std::mt19937_64 rng(kCasesSeed);
  std::vector<ParityCase> cases;
  // The categorical features cycle so that all nine (attention, rope scaling) pairs occur;
  // tying alternates and head_dim is explicit on cases 0, 1, 4, 5 and 8.
  for (int i = 0; i < 9; ++i) {
    ParityCase c;
    c.index = i;
    c.seed = rng();
    const int attention = i % 3;           // 0 MHA, 1 GQA 4/2, 2 MQA 4/1
    const int rope = (i + i / 3) % 3;      // 0 none, 1 linear, 2 llama3
    c.tied = i % 2 == 1;
    const bool explicit_head_dim = i % 4 < 2;

    c.num_heads = attention == 0 ? uniform_int(rng, 2, 4) : 4;
    c.num_kv_heads = attention == 0 ? c.num_heads : attention == 1 ? 2 : 1;
    if (explicit_head_dim) {
      c.hidden_size = 8 * uniform_int(rng, 4, 12);
      c.head_dim = 2 * uniform_int(rng, 8, 16);
      if (c.head_dim * c.num_heads == c.hidden_size) c.head_dim += 2;  // must differ from d/H
    } else {
      c.hidden_size = c.num_heads * 2 * uniform_int(rng, 8, 12);  // head_dim 16..24
    }
    c.num_layers = uniform_int(rng, 1, 3);
    c.intermediate_size = uniform_int(rng, 40, 160);  // odd sizes too
    c.vocab_size = uniform_int(rng, 64, 257);
    c.rms_norm_eps = one_of<double>(rng, {1e-6, 1e-5});
    if (rope == 0) {
      c.rope_theta = one_of<double>(rng, {10000.0, 500000.0});
    } else if (rope == 1) {
      c.rope_theta = one_of<double>(rng, {10000.0, 500000.0});
      c.rope_scaling = R"({"rope_type": "linear", "factor": )" +
                       number(one_of<double>(rng, {2.0, 4.0})) + "}";
    } else {
      // With rope_theta 1e4 and head_dim 16..32 the wavelengths are 6.3, 11 (head_dim 32), 20,
      // 35, 63, ...: low/high_freq_factor 1/4 keep those under orig/4 (6.3 when orig is 32),
      // blend those between orig/4 and orig (at least one either way) and slow the rest by
      // `factor`, so every regime of the rule occurs.
      c.rope_theta = 10000.0;
      c.rope_scaling = R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, )"
                       R"("high_freq_factor": 4.0, "original_max_position_embeddings": )" +
                       std::to_string(one_of<int>(rng, {16, 32})) + "}";
    }
    c.batch_size = uniform_int(rng, 1, 3);
    c.seq_len = one_of<int64_t>(rng, {7, 9, 13, 17, 21, 33});
    c.max_position_embeddings = c.seq_len + uniform_int(rng, 0, 32);
    c.weight_std = std::uniform_real_distribution<double>(0.02, 0.1)(rng);
    cases.push_back(c);
  }
  return cases;
}

Batch make_batch(const ParityCase& c, int which) {
  std::mt19937_64 rng(c.seed + 1000003ull * static_cast<uint64_t>(which + 1));
  const int64_t B = c.batch_size, T = c.seq_len;
  Batch batch(B, T);  // all padding
  batch.num_samples = B;
  for (int64_t row = 0; row < B; ++row) {
    const bool must_pad = row == B - 1;
    const int64_t pad = must_pad ? uniform_int(rng, 1, T / 3)
                                 : (uniform_int(rng, 0, 2) == 0 ? uniform_int(rng, 1, T / 4) : 0);
    const int64_t content = T - pad;
    int64_t col = 0;
    int32_t segment = 1;
    while (col < content) {
      // Row 0 opens with a document of at least 3 tokens (so that some target depends on
      // attention to an earlier token, and q/k get a gradient), leaving room for a second.
      const int64_t len = row == 0 && segment == 1
                              ? uniform_int(rng, 3, content - 2)
                              : uniform_int(rng, 1, std::min<int64_t>(content - col, std::max<int64_t>(2, T / 2)));
      for (int64_t i = 0; i < len; ++i) {
        const size_t n = static_cast<size_t>(row * T + col + i);
        batch.tokens[n] = static_cast<int32_t>(uniform_int(rng, 0, c.vocab_size - 1));
        batch.positions[n] = static_cast<int32_t>(i);
        batch.segment_ids[n] = segment;
      }
      for (int64_t i = 0; i < len; ++i) {
        const size_t n = static_cast<size_t>(row * T + col + i);
        batch.targets[n] = i + 1 < len ? batch.tokens[n + 1] : -1;
        batch.loss_mask[n] = batch.targets[n] >= 0 ? 1 : 0;
      }
      col += len;
      ++segment;
    }
  }
  return batch;
}

std::vector<float> make_dlogp(const Batch& batch, uint64_t seed) {
  std::mt19937_64 rng(seed);
  // About the size an SFT mean loss gives (-1 / tokens), with random signs and sizes.
  const double scale = 1.0 / std::max<int64_t>(1, batch.num_target_tokens());
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<float> dlogp(batch.targets.size());
  for (size_t n = 0; n < dlogp.size(); ++n) {
    const double v = u(rng) * scale;  // drawn for every position: the stream does not depend on targets
    dlogp[n] = batch.targets[n] >= 0 ? static_cast<float>(v) : 0.0f;
  }
  return dlogp;
}

std::vector<std::vector<float>> make_weights(const std::vector<ParameterInfo>& params,
                                             const ParityCase& c) {
  std::mt19937_64 rng(c.seed ^ 0x77e1'9e17ull);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<std::vector<float>> weights;
  for (const ParameterInfo& p : params) {
    std::vector<float> w(static_cast<size_t>(p.numel()));
    for (float& x : w) {
      const double z = normal(rng);
      x = static_cast<float>(p.kind == LYRE_PARAM_NORM ? 1.0 + 0.1 * z : c.weight_std * z);
    }
    weights.push_back(std::move(w));
  }
  return weights;
}

}  // namespace lyre::parity
