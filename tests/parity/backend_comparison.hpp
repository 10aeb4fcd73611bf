// Runs one parity case on a backend and compares what it computes with what the reference
// computed. The reference side is a CaseRun: the inputs both sides start from and the reference's
// results, computed by a live backend (run_reference) or read from golden files
// (golden_files.hpp). Every run makes fresh models from the case's config, checks that the
// model's parameter list is the reference's, and writes the inputs' weights into it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/batch.hpp"
#include "error_measures.hpp"
#include "parity_cases.hpp"
#include "plugin/handles.hpp"
#include "plugin/host_tensor.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::parity {

// One side of a comparison: a backend and the model options it is created with.
struct Side {
  std::shared_ptr<LoadedPlugin> plugin;
  std::string options_json;  // "" = the backend's defaults
  std::string label() const;  // "backend-torch {"precision": "fp64", ...}"
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
constexpr int kAdamwSteps = 3;

// What both sides of a case start from.
struct CaseInputs {
  std::string description;  // ParityCase::describe() of the case they were made for
  std::string config_json;  // the model's Hugging Face config.json
  std::vector<ParameterInfo> parameters;    // as the reference's model lists them
  std::vector<std::vector<float>> weights;  // the initial weights, one per parameter
  // Step s of the AdamW run trains on batches[s] with step_dlogp[s]; the forward/backward
  // comparison runs batches[0] with dlogp.
  std::vector<Batch> batches;
  std::vector<float> dlogp;
  std::vector<std::vector<float>> step_dlogp;
  std::string optimizer_json = kAdamwJson;
  double learning_rate = kLearningRate;
};

// A case's inputs as make_batch, make_dlogp and make_weights draw them for `parameters`.
CaseInputs make_inputs(const ParityCase& c, const std::vector<ParameterInfo>& parameters,
                       int steps = kAdamwSteps);

// A zero_grad, train forward of batches[0] and backward with dlogp.
struct ForwardBackwardResult {
  std::vector<float> logp;                    // [B*T]
  std::vector<std::vector<float>> gradients;  // one per parameter; empty where frozen
};

// One zero_grad, train forward, backward and step(learning_rate, grad_scale 1) per batch.
struct AdamwResult {
  std::vector<std::vector<float>> parameters;  // every parameter after the steps
  std::vector<HostTensor> state;               // the optimizer's state after them, in its order
};

ForwardBackwardResult run_forward_backward(const Side& side, const CaseInputs& inputs);
AdamwResult run_adamw_steps(const Side& side, const CaseInputs& inputs);

// One case as the reference side computed it.
struct CaseRun {
  CaseInputs inputs;
  ForwardBackwardResult forward_backward;
  AdamwResult adamw;
};

// The case's inputs (weights drawn for the parameters `reference`'s model lists) and both runs.
CaseRun run_reference(const Side& reference, const ParityCase& c);

// Where a comparison's reference numbers come from, and those numbers, one run per case.
struct Reference {
  std::string label;  // "backend-torch {...}" or "golden files <dir> (backend-torch {...})"
  std::vector<CaseRun> runs;
};

// run_reference over every case of parity_cases().
Reference live_reference(const Side& reference);

struct ForwardBackward {
  Comparison logp;       // the train forward of batch 0
  Comparison gradients;  // every trainable parameter's gradient after backward
};

// The test side's logp and gradients against the reference's; the Side overload runs `test` on
// the reference's inputs first.
ForwardBackward compare_forward_backward(const ForwardBackwardResult& test, const CaseRun& reference,
                                         const Tolerances& tol);
ForwardBackward compare_forward_backward(const Side& test, const CaseRun& reference, const Tolerances& tol);

struct AdamwSteps {
  // "" when both optimizers hold the same states (names, dtypes, shapes), else what differs:
  // a checkpoint's optimizer state must load into either backend.
  std::string layout_difference;
  Comparison parameters;  // every parameter after the steps
  // Every optimizer state after the steps: float states with the state tolerance, integer ones
  // (the step count) exactly. Empty when the layouts differ.
  Comparison states;
};

// The test side's parameters and optimizer state after the AdamW steps against the reference's;
// the Side overload runs `test` on the reference's inputs first.
AdamwSteps compare_adamw_steps(const AdamwResult& test, const CaseRun& reference, const Tolerances& tol);
AdamwSteps compare_adamw_steps(const Side& test, const CaseRun& reference, const Tolerances& tol);

}  // namespace lyre::parity
