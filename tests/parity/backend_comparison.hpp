// Runs one parity case on two backends (the one under test and the reference) and compares what
// they compute. Every comparison makes fresh models on both sides from the case's config, checks
// that their parameter lists agree, and writes the same random floats into both.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "error_measures.hpp"
#include "parity_cases.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::parity {

// One side of a comparison: a backend and the model options it is created with.
struct Side {
  std::shared_ptr<LoadedPlugin> plugin;
  std::string options_json;  // "" = the backend's defaults
  std::string label() const;  // "backend-torch {"precision": "fp64", ...}"
};

struct ForwardBackward {
  Comparison logp;       // a train forward of batch 0
  Comparison gradients;  // every parameter's gradient after backward with random dlogp
};

// zero_grad, train forward of the case's batch 0, backward with random dlogp (0 where the target
// is < 0), on both sides.
ForwardBackward compare_forward_backward(const Side& test, const Side& reference, const ParityCase& c,
                                         const Tolerances& tol);

struct AdamwSteps {
  // "" when both optimizers hold the same states (names, dtypes, shapes), else what differs:
  // a checkpoint's optimizer state must load into either backend.
  std::string layout_difference;
  Comparison parameters;  // every parameter after the steps
  // Every optimizer state after the steps: float states with the gradient tolerance (exp_avg is
  // linear in the gradients, exp_avg_sq quadratic), integer ones (the step count) exactly.
  // Empty when the layouts differ.
  Comparison states;
};

// eps 1e-6, not the usual 1e-8: where a gradient entry is within a few eps of zero, AdamW's
// update lr * m / (sqrt(v) + eps) stops being normalised and becomes linear in the gradient, and
// fp32's absolute gradient noise (~1e-6 of a tensor's typical entry, 1e-9..3e-9 here) is then
// ~10% of such an entry: two correct fp32 runs move that one weight differently by ~1e-5. With
// eps 1e-8 such entries occur in about half of random case lists, putting the parameters after
// three steps up to 3e-5 apart, backend-torch fp32 against its own fp64 run as much as
// backend-cpu against backend-torch (case 1's layers.2.mlp.down_proj: entries of 2e-8..4e-8
// against a typical 2e-3). The error grows like 1/sqrt(eps); at 1e-6 the worst over nine
// random case lists was 4e-6, so the 1e-5 tolerance tests the backends, not fp32's luck.
constexpr const char* kAdamwJson =
    R"({"type": "adamw", "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01})";
constexpr double kLearningRate = 1e-3;

// `steps` AdamW steps (zero_grad, train forward, backward, step(lr, grad_scale 1)), step s on the
// case's batch s with its own random dlogp.
AdamwSteps compare_adamw_steps(const Side& test, const Side& reference, const ParityCase& c,
                               const Tolerances& tol, int steps = 3);

}  // namespace lyre::parity
