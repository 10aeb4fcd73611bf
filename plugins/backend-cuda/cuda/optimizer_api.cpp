// The Optimizer slot: AdamW or SGD over a backend-cuda model's parameters, on its device and its
// stream. States cross as host tensors, named and shaped as backend-cpu's.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "glue.hpp"
#include "llama_model.hpp"
#include "lyre/plugin.hpp"
#include "optimizer.hpp"

struct LyreOptimizer {
  std::unique_ptr<lyre::cuda::Optimizer> optimizer;
};

namespace lyre::cuda {
namespace {

using plugin::Error;
using plugin::require;

constexpr DLDataType kInt64{kDLInt, 64, 1};

bool is_step(const OptimizerPlan::State& s) { return s.buffer == OptimizerPlan::Buffer::step; }

// The runtime's current device is per host thread: the caller's thread may not be the one that
// ran initialize.
void use_device() { LYRE_CUDA_CHECK(cudaSetDevice(current_device())); }

Optimizer& cuda_optimizer(LyreOptimizer* o) {
  if (o == nullptr || o->optimizer == nullptr)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda: optimizer is NULL");
  return *o->optimizer;
}

const OptimizerPlan::State& state_at(LyreOptimizer* o, size_t index) {
  const auto& states = cuda_optimizer(o).states();
  if (index >= states.size())
    throw Error(LYRE_ERROR_NOT_FOUND, "optimizer state index " + std::to_string(index) +
                                          " is out of range (there are " + std::to_string(states.size()) + ")");
  return states[index];
}

// Checks a state tensor against the state's dtype and shape; returns its data.
void* state_data(const DLTensor* t, const OptimizerPlan::State& s) {
  require(t != nullptr, "optimizer state " + s.name + ": tensor is NULL");
  require(t->device.device_type == kDLCPU, "optimizer state " + s.name + ": expected a host tensor");
  require(plugin::is_contiguous(*t), "optimizer state " + s.name + ": expected a contiguous tensor");
  const DLDataType want = is_step(s) ? kInt64 : plugin::DType<float>::value;
  require(plugin::same_dtype(t->dtype, want), "optimizer state " + s.name + ": dtype " +
                                                  plugin::dtype_name(t->dtype) + ", expected " +
                                                  plugin::dtype_name(want));
  bool same = static_cast<size_t>(t->ndim) == s.shape.size();
  for (size_t i = 0; same && i < s.shape.size(); ++i) same = t->shape[i] == s.shape[i];
  require(same, "optimizer state " + s.name + ": shape does not match the state's");
  require(t->data != nullptr || s.numel == 0, "optimizer state " + s.name + ": data is NULL");
  return static_cast<char*>(t->data) + t->byte_offset;
}

LyreError* create(LyreOptimizer_Create_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, optimizer, "backend-cuda create optimizer");
    args->optimizer = nullptr;
    LlamaModel& model = cuda_model(args->model);
    use_device();
    auto holder = std::make_unique<LyreOptimizer>();
    holder->optimizer = make_optimizer(model.params(), model.stream(), args->config_json ? args->config_json : "");
    args->optimizer = holder.release();
  });
}

LyreError* destroy(LyreOptimizer_Destroy_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, optimizer, "backend-cuda destroy optimizer");
    if (args->optimizer == nullptr) return;
    use_device();
    delete args->optimizer;
  });
}

LyreError* grad_squared_norm(LyreOptimizer_GradSquaredNorm_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, squared_norm, "backend-cuda grad_squared_norm");
    Optimizer& o = cuda_optimizer(args->optimizer);
    use_device();
    plugin::TraceSpan span("optimizer", "grad squared norm");
    args->squared_norm = o.grad_squared_norm();
  });
}

LyreError* step(LyreOptimizer_Step_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, grad_scale, "backend-cuda optimizer step");
    Optimizer& o = cuda_optimizer(args->optimizer);
    require(std::isfinite(args->lr) && args->lr >= 0,
            "optimizer step: lr must be finite and >= 0, got " + std::to_string(args->lr));
    require(std::isfinite(args->grad_scale),
            "optimizer step: grad_scale must be finite, got " + std::to_string(args->grad_scale));
    use_device();
    // Times the launch only: the update runs on the model's stream after it.
    plugin::TraceSpan span("optimizer",
                           o.config().type == OptimizerConfig::Type::adamw ? "adamw step" : "sgd step");
    o.step(args->lr, args->grad_scale);
  });
}

LyreError* num_states(LyreOptimizer_NumStates_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_states, "backend-cuda num_states");
    args->num_states = cuda_optimizer(args->optimizer).states().size();
  });
}

LyreError* state(LyreOptimizer_State_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dtype, "backend-cuda optimizer state");
    const OptimizerPlan::State& s = state_at(args->optimizer, args->index);
    require(s.shape.size() <= 4, "optimizer state " + s.name + " has more than 4 dimensions");
    args->name = s.name.c_str();
    args->ndim = static_cast<int32_t>(s.shape.size());
    for (int i = 0; i < 4; ++i) args->shape[i] = i < args->ndim ? s.shape[i] : 0;
    args->dtype = is_step(s) ? kInt64 : plugin::DType<float>::value;
  });
}

LyreError* read_state(LyreOptimizer_StateTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, tensor, "backend-cuda read_state");
    const OptimizerPlan::State& s = state_at(args->optimizer, args->index);
    void* dst = state_data(args->tensor, s);
    use_device();
    cuda_optimizer(args->optimizer).read_state(args->index, dst);
  });
}

LyreError* write_state(LyreOptimizer_StateTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, tensor, "backend-cuda write_state");
    const OptimizerPlan::State& s = state_at(args->optimizer, args->index);
    const void* src = state_data(args->tensor, s);
    if (is_step(s)) {
      int64_t count = 0;
      std::memcpy(&count, src, sizeof count);
      require(count >= 0, "optimizer state step: must be >= 0, got " + std::to_string(count));
    }
    use_device();
    cuda_optimizer(args->optimizer).write_state(args->index, src);
  });
}

}  // namespace

extern const LyreOptimizerApi kOptimizerApi = {
    sizeof(LyreOptimizerApi), create, destroy, grad_squared_norm, step, num_states, state, read_state, write_state,
};

}  // namespace lyre::cuda
