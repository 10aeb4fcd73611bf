// The backend's options, from LyreModel_Create_Args.options_json ("model options") and from
// LyreInitialize_Args.options_json ("backend-torch options"): {"precision": "fp32" | "fp64",
// "threads": n} in both, and "logprob_chunk_rows" for a model.
#pragma once

#include <cstdint>
#include <optional>

namespace lyre::libtorch {

// fp64 computes everything (parameters, gradients, optimizer state) in double: the judge that
// measures fp32 error. The ABI's tensors stay float32 either way.
enum class Precision { fp32, fp64 };

struct Options {
  std::optional<Precision> precision;
  std::optional<int64_t> threads;
  // Rows of [rows, vocab] logits the log-prob head holds at once; unset = a memory budget.
  std::optional<int64_t> logprob_chunk_rows;
};

// Parses and checks `text` (NULL = no options). `what` starts every error ("model options");
// model_keys admits "logprob_chunk_rows". An unknown key or a bad value throws
// plugin::Error(INVALID_ARGUMENT) naming it.
Options parse_options(const char* text, const char* what, bool model_keys);

// Applies "threads" to LibTorch's intra-op pool (at::set_num_threads); unset leaves it as it is.
void apply_threads(const Options& options);
// The pool's size when no option says: OMP_NUM_THREADS when set (LibTorch follows it), else every
// CPU this process may run on, as backend-cpu's OpenMP does. (LibTorch 1.13's own default was 1
// thread on the 2-vCPU machine we measured on.)
void apply_default_threads();

// The plugin-wide precision that initialize set, for models whose options do not say.
Precision default_precision();
void set_default_precision(Precision precision);

}  // namespace lyre::libtorch
