// The optimizer's JSON config, shared by backend-cpu and backend-cuda (lyre_llama_common): both
// accept the same keys with the same checks, so a run config moves between them unchanged.
#pragma once

#include <string>
#include <vector>

#include "lyre/abi.h"

namespace lyre::cpu {

struct OptimizerConfig {
  enum class Type { adamw, sgd } type = Type::adamw;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adamw
  double weight_decay = 0.01;  // PyTorch's defaults: 0.01 for adamw, 0 for sgd
  double momentum = 0.0, dampening = 0.0;  // sgd
  bool nesterov = false;                   // sgd
  std::vector<LyreParamKind> no_decay_kinds{LYRE_PARAM_NORM, LYRE_PARAM_BIAS};

  bool decays(LyreParamKind kind) const;
};

// {"type": "adamw" | "sgd", "betas": [b1, b2], "eps": .., "weight_decay": .., "no_decay_kinds":
// ["norm", "bias", ...], "momentum": .., "dampening": .., "nesterov": ..}; empty text = adamw
// defaults. An unknown key, a key of the other type, or a bad value throws
// Error(INVALID_ARGUMENT) naming it.
OptimizerConfig parse_optimizer_config(const std::string& json_text);

}  // namespace lyre::cpu
