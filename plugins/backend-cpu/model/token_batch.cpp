#include "model/token_batch.hpp"

#include <algorithm>
#include <string>

#include "lyre/plugin.hpp"

namespace lyre::cpu {
namespace {

[[noreturn]] void bad_id(const char* tensor, int64_t n, int64_t cols, int32_t value,
                         const std::string& rule) {
  throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(tensor) + ": value " +
                                                       std::to_string(value) + " at row " +
                                                       std::to_string(n / cols) + ", col " +
                                                       std::to_string(n % cols) + " " + rule);
}

}  // namespace

int64_t check_token_batch(const TokenBatch& b, const LlamaConfig& config, bool need_targets) {
  plugin::require(b.rows >= 1 && b.cols >= 1,
                  "batch: expected at least one row and one column, got [" +
                      std::to_string(b.rows) + "," + std::to_string(b.cols) + "]");
  plugin::require(b.tokens && b.positions && b.segment_ids && (b.targets || !need_targets),
                  "batch: a tensor is missing");
  const int64_t N = b.rows * b.cols, V = config.vocab_size;
  const int64_t max_pos = config.max_position_embeddings;
  int64_t max_seen = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (b.tokens[n] < 0 || b.tokens[n] >= V)
      bad_id("tokens", n, b.cols, b.tokens[n],
             "is outside the vocabulary [0, " + std::to_string(V) + ")");
    if (need_targets && b.targets[n] >= V)
      bad_id("targets", n, b.cols, b.targets[n],
             "is outside the vocabulary [0, " + std::to_string(V) + ") (< 0 means no target)");
    if (b.positions[n] < 0 || b.positions[n] >= max_pos)
      bad_id("positions", n, b.cols, b.positions[n],
             "is outside [0, max_position_embeddings = " + std::to_string(max_pos) + ")");
    if (b.segment_ids[n] < 0) bad_id("segment_ids", n, b.cols, b.segment_ids[n], "is negative");
    max_seen = std::max<int64_t>(max_seen, b.positions[n]);
  }
  return max_seen;
}

int64_t check_generate_request(const LlamaConfig& config, const SamplingOptions& sampling,
                               const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows,
                               int64_t prompt_cols, int32_t max_new_tokens,
                               const int32_t* out_tokens, const int32_t* out_lengths) {
  validate_sampling(sampling);
  plugin::require(rows >= 1 && prompt_cols >= 1,
                  "generate: prompt must be [B, Tp] with B, Tp >= 1, got [" + std::to_string(rows) +
                      "," + std::to_string(prompt_cols) + "]");
  plugin::require(max_new_tokens >= 0,
                  "generate: max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
  plugin::require(prompt && prompt_lengths && out_tokens && out_lengths,
                  "generate: a tensor is NULL");
  const int64_t V = config.vocab_size, max_pos = config.max_position_embeddings;
  int64_t longest = 0;
  for (int64_t b = 0; b < rows; ++b) {
    const int64_t len = prompt_lengths[b];
    plugin::require(len >= 1 && len <= prompt_cols,
                    "generate: prompt_lengths[" + std::to_string(b) + "] = " + std::to_string(len) +
                        " is outside [1, " + std::to_string(prompt_cols) + "]");
    for (int64_t t = 0; t < len; ++t) {
      const int32_t id = prompt[b * prompt_cols + t];
      plugin::require(id >= 0 && id < V, "generate: prompt token " + std::to_string(id) +
                                             " at row " + std::to_string(b) + ", col " +
                                             std::to_string(t) + " is outside the vocabulary [0, " +
                                             std::to_string(V) + ")");
    }
    // The last generated token is never fed back: positions reach len + max_new - 2.
    plugin::require(len + max_new_tokens - 1 <= max_pos,
                    "generate: row " + std::to_string(b) + ": prompt length " +
                        std::to_string(len) + " + max_new_tokens " +
                        std::to_string(max_new_tokens) + " - 1 exceeds max_position_embeddings " +
                        std::to_string(max_pos));
    longest = std::max(longest, len);
  }
  return longest;
}

PrefillIds prefill_ids(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows,
                       int64_t cols) {
  const size_t N = static_cast<size_t>(rows * cols);
  PrefillIds ids{std::vector<int32_t>(N), std::vector<int32_t>(N), std::vector<int32_t>(N)};
  for (int64_t b = 0; b < rows; ++b)
    for (int64_t t = 0; t < cols; ++t) {
      const bool real = t < prompt_lengths[b];
      ids.tokens[b * cols + t] = real ? prompt[b * cols + t] : 0;
      ids.positions[b * cols + t] = real ? static_cast<int32_t>(t) : 0;
      ids.segment_ids[b * cols + t] = real ? 1 : 0;
    }
  return ids;
}

}  // namespace lyre::cpu
