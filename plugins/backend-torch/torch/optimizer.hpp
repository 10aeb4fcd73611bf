// The Optimizer slot's object: torch::optim::AdamW or torch::optim::SGD over the model's
// parameters in two groups (weight decay / none), with the learning rate set per step, and
// their state exposed under backend-cpu's names, dtypes and shapes so checkpoints move between
// the backends: "<param>.exp_avg", "<param>.exp_avg_sq" (adamw) or "<param>.momentum_buffer"
// (sgd with momentum) per parameter in parameter order, then "step" int64 [1].
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lyre/abi.h"

namespace torch::optim {
class Optimizer;
}

namespace lyre::libtorch {

class LlamaModel;

struct OptimizerConfig {
  enum class Type { adamw, sgd } type = Type::adamw;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adamw
  double weight_decay = 0.01;                     // PyTorch's defaults: 0.01 adamw, 0 sgd
  double momentum = 0.0, dampening = 0.0;         // sgd
  bool nesterov = false;                          // sgd
  std::vector<LyreParamKind> no_decay_kinds{LYRE_PARAM_NORM, LYRE_PARAM_BIAS};

  bool decays(LyreParamKind kind) const;
};

// {"type": "adamw" | "sgd", "betas", "eps", "weight_decay", "no_decay_kinds", "momentum",
// "dampening", "nesterov"}; empty text = adamw defaults. An unknown key, a key of the other
// type or a bad value throws plugin::Error(INVALID_ARGUMENT, "optimizer config: ...") naming it.
OptimizerConfig parse_optimizer_config(const std::string& json_text);

class Optimizer {
 public:
  struct State {
    enum class Kind { exp_avg, exp_avg_sq, momentum_buffer, step };
    std::string name;
    std::vector<int64_t> shape;
    Kind kind = Kind::step;  // step: the update counter, int64 [1]; else float32 of the parameter
    size_t param = 0;        // index into the model's parameters (not for step)
  };

  Optimizer(LlamaModel& model, const OptimizerConfig& config);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  const OptimizerConfig& config() const { return config_; }
  // Sum of squares of every gradient, accumulated in double.
  double grad_squared_norm() const;
  // One update with the gradients taken as grad * grad_scale; the stored gradients are left
  // bit for bit as they were.
  void step(double lr, double grad_scale);

  const std::vector<State>& states() const { return states_; }
  // The live tensor of a non-step state (the model's dtype): reads and copy_ into it are the
  // optimizer's own state.
  at::Tensor state_tensor(const State& state) const;
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step);

 private:
  std::string key(size_t param) const;  // torch::optim's state key of parameter `param`
  // Zero state for every parameter that has none yet, as torch::optim would make it.
  void fill_missing_state();

  LlamaModel& model_;
  OptimizerConfig config_;
  std::unique_ptr<torch::optim::Optimizer> torch_;
  std::vector<State> states_;
  int64_t step_ = 0;
};

}  // namespace lyre::libtorch
