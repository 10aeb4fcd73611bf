// Golden files: the reference side of every parity case written to a folder, so that a machine
// without the reference backend (a GPU machine that cannot build backend-torch) can still judge
// a backend. The folder holds
//
//   golden.json              the index: format and version, the reference's label, and per case
//                            its description, config.json text, optimizer JSON and learning
//                            rate, parameter list (name, kind, trainable, shape), each batch's
//                            num_samples, the optimizer state names in order, and its file
//   case-<i>.safetensors     the case's tensors:
//     input.weight/<parameter>                  F32  the initial weights
//     input.batch.<s>.<field>                   I32  [B, T] tokens, targets, positions,
//                                                    segment_ids, loss_mask of batch s
//     input.dlogp                               F32  [B, T] the forward/backward's d(loss)/d(logp)
//     input.batch.<s>.dlogp                     F32  [B, T] AdamW step s's
//     reference.logp                            F32  [B, T] the train forward of batch 0
//     reference.gradient/<parameter>            F32  every trainable parameter's gradient
//     reference.parameter_after_steps/<param.>  F32  every parameter after the AdamW steps
//     reference.optimizer_state/<state>         F32 or I64, as the optimizer gives it
//
// Values are float32, as the plugin ABI hands them out: a reference computing in fp64 is
// rounded once (relative 6e-8, 160x below the tightest tolerance) when read.
#pragma once

#include <string>
#include <vector>

#include "backend_comparison.hpp"

namespace lyre::parity {

// The environment variable that names a golden folder for the backend-cuda tests.
constexpr const char* kGoldenEnv = "LYRE_PARITY_GOLDEN";

// Writes `reference` into `dir` (created if missing; files of the same names are replaced) and
// returns the paths it wrote. golden.json is written last, so a folder with an index is complete.
std::vector<std::string> write_golden(const std::string& dir, const Reference& reference);

// Reads a folder write_golden wrote. A missing or malformed file throws std::runtime_error whose
// text starts with that file's path and names what is wrong (the key, the tensor, its dtype or
// shape against the expected).
Reference read_golden(const std::string& dir);

}  // namespace lyre::parity
