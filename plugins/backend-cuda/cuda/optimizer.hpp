// AdamW and SGD over backend-cuda's flat parameter buffers: one multi-tensor launch per step
// (kernels.hpp: adamw_step, sgd_step, squared_norm) over a chunk table built once, state buffers
// laid out like the parameters, and the states of backend-cpu by name, shape and order, so a
// checkpoint made on one backend resumes on the other:
//   adamw: "<param>.exp_avg", "<param>.exp_avg_sq" per trainable parameter, then "step"
//   sgd:   "<param>.momentum_buffer" per trainable parameter (momentum > 0 only), then "step"
// The JSON config is backend-cpu's (model/optimizer_config.hpp), parsed by the same code.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common.hpp"
#include "device_memory.hpp"
#include "kernels.hpp"
#include "model/optimizer_config.hpp"
#include "parameter_store.hpp"

namespace lyre::cuda {

using cpu::OptimizerConfig;

// The optimizer's plan, from the parameters and the config alone: what its launch covers and
// where each named state lives. Made on the host (no device), so tests without a GPU check it.
struct OptimizerPlan {
  // The flat buffers of the parameters' layout that states live in.
  enum class Buffer { exp_avg, exp_avg_sq, momentum_buffer, step };
  struct State {
    std::string name;
    std::vector<int64_t> shape;
    Buffer buffer;       // step: the counter, int64 [1], kept on the host
    size_t offset = 0;   // into the buffer (the parameter's offset)
    size_t numel = 0;
  };
  // Every trainable parameter cut into pieces of <= kOptimizerChunk, with its weight decay (0 for
  // the kinds in no_decay_kinds).
  std::vector<OptimizerChunk> chunks;
  std::vector<State> states;  // backend-cpu's order
  bool uses(Buffer b) const;
};
OptimizerPlan plan_optimizer(const std::vector<ParameterInfo>& params, const OptimizerConfig& config);

class Optimizer {
 public:
  // `params` is allocated and outlives the optimizer; every launch and copy runs on `stream`
  // (the model's). State starts at zero.
  Optimizer(ParameterStore& params, cudaStream_t stream, const OptimizerConfig& config);
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  const OptimizerConfig& config() const { return config_; }

  // Sum of squares of every trainable gradient, accumulated in double in a fixed order (the same
  // bits run to run). Waits for the stream.
  double grad_squared_norm();
  // One update with gradients taken as grad * grad_scale (the stored gradients are left as they
  // are). Queued on the stream; refreshes the bf16 working copy in the same pass.
  void step(double lr, double grad_scale);

  // The named states: float32 of their parameter's shape, or "step" (int64 [1]).
  const std::vector<OptimizerPlan::State>& states() const { return plan_.states; }
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step) { step_ = step; }
  // State `index` to / from host memory: numel floats, or one int64 for "step". Return with the
  // copy done.
  void read_state(size_t index, void* host);
  void write_state(size_t index, const void* host);

 private:
  DeviceBuffer<float>& buffer(OptimizerPlan::Buffer b);
  float* state_data(const OptimizerPlan::State& s) { return buffer(s.buffer).data() + s.offset; }

  ParameterStore& params_;
  cudaStream_t stream_;
  OptimizerConfig config_;
  OptimizerPlan plan_;
  int64_t step_ = 0;

  DeviceBuffer<OptimizerChunk> chunks_{MemoryKind::optimizer_state};  // plan_.chunks on the device
  int64_t num_chunks_ = 0;
  DeviceBuffer<float> exp_avg_{MemoryKind::optimizer_state};
  DeviceBuffer<float> exp_avg_sq_{MemoryKind::optimizer_state};
  DeviceBuffer<float> momentum_buffer_{MemoryKind::optimizer_state};
  DeviceBuffer<double> norm_scratch_{MemoryKind::workspace};  // a sum per chunk, then the total
};

// Parses `json_text` (parse_optimizer_config: "" = adamw defaults) and makes the optimizer.
std::unique_ptr<Optimizer> make_optimizer(ParameterStore& params, cudaStream_t stream, const std::string& json_text);

}  // namespace lyre::cuda
