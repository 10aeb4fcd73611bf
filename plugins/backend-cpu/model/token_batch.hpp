// The ids a Llama backend is given, as both Llama backends take them: a forward's micro-batch
// and generate's prompts, checked on the host in the same words (errors are
// Error(INVALID_ARGUMENT) naming the tensor, row, column and value), and the batch generate's
// prefill makes of the prompts.
#pragma once

#include <cstdint>
#include <vector>

#include "model/llama_config.hpp"
#include "model/token_sampler.hpp"

namespace lyre::cpu {

// One micro-batch: host int32 arrays of rows*cols, row-major, borrowed for the call (LyreBatch).
struct TokenBatch {
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;  // < 0: no target (logp 0); may be NULL where unused
  const int32_t* positions = nullptr;
  const int32_t* segment_ids = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Checks the batch against `config`: at least one row and column, every array set (targets
// only when `need_targets`), tokens and targets inside the vocabulary (a target < 0 is none),
// positions inside [0, max_position_embeddings), segment ids >= 0. Without `need_targets` the
// targets are not read. Returns the largest position.
int64_t check_token_batch(const TokenBatch& batch, const LlamaConfig& config, bool need_targets);

// Checks what generate is asked for: the sampling options, a prompt of rows x prompt_cols (both
// >= 1), max_new_tokens >= 0, every array set, each prompt length in [1, prompt_cols] with ids
// inside the vocabulary, and room for length + max_new_tokens - 1 positions. Returns the longest
// prompt length.
int64_t check_generate_request(const LlamaConfig& config, const SamplingOptions& sampling,
                               const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows,
                               int64_t prompt_cols, int32_t max_new_tokens,
                               const int32_t* out_tokens, const int32_t* out_lengths);

// Generate's prefill of rows x cols right-padded prompts as a batch's ids: row b's
// prompt_lengths[b] tokens at positions 0, 1, ... in segment 1, padding as token 0 at position 0
// in segment 0 (masked off by document masking).
struct PrefillIds {
  std::vector<int32_t> tokens, positions, segment_ids;  // rows * cols each
};
PrefillIds prefill_ids(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows,
                       int64_t cols);

}  // namespace lyre::cpu
