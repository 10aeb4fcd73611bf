// What the CPU optimizers share: their JSON config (optimizer_config.hpp, shared with
// backend-cuda), the gradient norm, the step counter and the named state tensors a checkpoint
// saves. AdamW (adamw.hpp) and SGD (sgd.hpp) fill in the update rule.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lyre/abi.h"
#include "model/optimizer_config.hpp"
#include "model/parameter_store.hpp"

namespace lyre::cpu {

template <typename T>
class Optimizer {
 public:
  // A named state tensor of the parameter's shape, or the step counter (data == nullptr,
  // int64 [1]).
  struct State {
    std::string name;
    std::vector<int64_t> shape;
    T* data = nullptr;
  };

  Optimizer(ParameterStore<T>& params, const OptimizerConfig& config);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  const OptimizerConfig& config() const { return config_; }

  // Sum of squares of every trainable gradient, accumulated in double over fixed chunks in a
  // fixed order: the same bits for any thread count.
  double grad_squared_norm() const;
  // One update with gradients taken as grad * grad_scale (the stored gradients are not
  // changed, nor zeroed).
  virtual void step(double lr, double grad_scale) = 0;

  const std::vector<State>& states() const { return states_; }
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step) { step_ = step; }

 protected:
  // Adds "<param>.<suffix>" states over `buffer` (laid out like the parameters) for every
  // trainable parameter.
  void add_states(const std::string& suffix, Buffer<T>& buffer);
  void add_step_state();

  ParameterStore<T>& params_;
  OptimizerConfig config_;
  std::vector<State> states_;
  int64_t step_ = 0;

 private:
  struct Chunk {
    size_t offset, count;
  };
  std::vector<Chunk> chunks_;            // trainable gradients, cut into fixed pieces
  mutable std::vector<double> partials_;  // one sum per chunk
};

template <typename T>
std::unique_ptr<Optimizer<T>> make_optimizer(ParameterStore<T>& params, const std::string& json_text);

}  // namespace lyre::cpu
