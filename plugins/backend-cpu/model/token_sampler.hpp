// Picks the next token from one row of logits: greedy, or sampled with temperature, top-k and
// top-p from a seeded generator, so that a seed reproduces a generation exactly.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace lyre::cpu {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // 0 = off: keep the k most likely tokens
  double top_p = 1.0;        // 1 = off: keep the smallest most-likely set of mass >= top_p
  uint64_t seed = 0;
};

// Throws Error(INVALID_ARGUMENT) naming the field for temperature < 0, top_k < 0 or top_p
// outside (0, 1].
void validate_sampling(const SamplingOptions& options);

class TokenSampler {
 public:
  // `stream` separates generators of one seed (the row index), so a row's tokens do not depend
  // on which other rows are still generating.
  TokenSampler(const SamplingOptions& options, uint64_t stream);

  template <typename T>
  int32_t pick(const T* logits, int64_t vocab);

 private:
  double uniform();  // [0, 1), from the top 53 bits of the generator

  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<double, int32_t>> candidates_;
};

}  // namespace lyre::cpu
