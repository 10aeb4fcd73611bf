// backend-cuda's options: plugin-wide (LyreInitialize_Args.options_json) and per model
// (LyreModel_Create_Args.options_json). Unknown keys and bad values are INVALID_ARGUMENT errors
// naming the key.
#pragma once

#include <cstdint>
#include <string>

#include "common.hpp"

namespace lyre::cuda {

// Per model: {"precision": "bf16" | "fp32", "logprob_chunk_rows": n}
//   precision           bf16 (default): bf16 compute, fp32 master weights, gradients, optimizer
//                       state (mixed_bfloat16); fp32: fp32 throughout, no TF32.
//   logprob_chunk_rows  rows of (rows, vocab) logits the fused head holds at once; 0 (default)
//                       = as many as a 256 MiB float buffer holds (logprob_head_chunk_rows).
struct ModelOptions {
  Precision precision = Precision::bf16;
  int64_t logprob_chunk_rows = 0;
};
// nullptr or "" = defaults.
ModelOptions parse_model_options(const char* json_text);

// Plugin-wide: {"device": n} (default 0, the CUDA device this process uses).
struct PluginOptions {
  int device = 0;
};
PluginOptions parse_plugin_options(const char* json_text);

}  // namespace lyre::cuda
