// Generation-based evaluation: greedy-decode the completion of held-out prompt/completion
// records and count exact matches. The quickstart prints it before and after training.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "data/tokenizer.hpp"
#include "plugin/handles.hpp"

namespace lyre {

struct ExactMatchResult {
  int64_t samples = 0;
  int64_t correct = 0;
  double accuracy() const { return samples ? static_cast<double>(correct) / samples : 0.0; }
  // A few (prompt, expected, got) triples for the log.
  std::vector<std::vector<std::string>> examples;
};

// Runs over the first `max_samples` prompt/completion records of `dataset` in batches of
// `batch_size`, each prompt encoded as in training (the tokenizer's prefix ids + the prompt's
// ids), decoding up to max_new_tokens greedily and stopping at EOS. A record matches when the
// decoded text (special tokens skipped) equals its completion exactly.
ExactMatchResult exact_match(Model& model, const Dataset& dataset, const Tokenizer& tokenizer,
                             int64_t max_samples, int32_t max_new_tokens, int64_t batch_size);

}  // namespace lyre
