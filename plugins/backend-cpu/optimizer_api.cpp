// The Optimizer slot: AdamW or SGD over a backend-cpu model's parameters, where they live.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "lyre/plugin.hpp"
#include "model/llama_model.hpp"
#include "model/optimizer.hpp"

struct LyreOptimizer {
  std::unique_ptr<lyre::cpu::Optimizer<float>> optimizer;
};

namespace lyre::cpu::glue {

LlamaModel<float>& cpu_model(LyreModel* model);  // model_api.cpp

namespace {

using plugin::Error;
using plugin::require;

#define LYRE_CPU_FIELD_END(Type, field) (offsetof(Type, field) + sizeof(Type::field))

Optimizer<float>& cpu_optimizer(LyreOptimizer* o) {
  if (o == nullptr || o->optimizer == nullptr)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cpu: optimizer is NULL");
  return *o->optimizer;
}

const Optimizer<float>::State& state_at(LyreOptimizer* o, size_t index) {
  const auto& states = cpu_optimizer(o).states();
  if (index >= states.size())
    throw Error(LYRE_ERROR_NOT_FOUND, "optimizer state index " + std::to_string(index) +
                                          " is out of range (there are " +
                                          std::to_string(states.size()) + ")");
  return states[index];
}

constexpr DLDataType kInt64{kDLInt, 64, 1};

// Checks a state tensor against the state's dtype and shape; returns its data.
void* state_data(const DLTensor* t, const Optimizer<float>::State& s) {
  require(t != nullptr, "optimizer state " + s.name + ": tensor is NULL");
  require(t->device.device_type == kDLCPU, "optimizer state " + s.name + ": expected a host tensor");
  require(plugin::is_contiguous(*t), "optimizer state " + s.name + ": expected a contiguous tensor");
  const DLDataType want = s.data ? plugin::DType<float>::value : kInt64;
  require(plugin::same_dtype(t->dtype, want), "optimizer state " + s.name + ": dtype " +
                                                  plugin::dtype_name(t->dtype) + ", expected " +
                                                  plugin::dtype_name(want));
  bool same = static_cast<size_t>(t->ndim) == s.shape.size();
  for (size_t i = 0; same && i < s.shape.size(); ++i) same = t->shape[i] == s.shape[i];
  require(same, "optimizer state " + s.name + ": shape does not match the state's");
  require(t->data != nullptr, "optimizer state " + s.name + ": data is NULL");
  return static_cast<char*>(t->data) + t->byte_offset;
}

size_t numel(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

LyreError* create(LyreOptimizer_Create_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_Create_Args, optimizer),
                           "backend-cpu create optimizer");
    args->optimizer = nullptr;
    LlamaModel<float>& model = cpu_model(args->model);
    auto holder = std::make_unique<LyreOptimizer>();
    holder->optimizer = make_optimizer(model.params(), args->config_json ? args->config_json : "");
    args->optimizer = holder.release();
  });
}

LyreError* destroy(LyreOptimizer_Destroy_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_Destroy_Args, optimizer),
                           "backend-cpu destroy optimizer");
    delete args->optimizer;
  });
}

LyreError* grad_squared_norm(LyreOptimizer_GradSquaredNorm_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_GradSquaredNorm_Args, squared_norm),
                           "backend-cpu grad_squared_norm");
    plugin::TraceSpan span("optimizer", "grad squared norm");
    args->squared_norm = cpu_optimizer(args->optimizer).grad_squared_norm();
  });
}

LyreError* step(LyreOptimizer_Step_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_Step_Args, grad_scale),
                           "backend-cpu optimizer step");
    Optimizer<float>& o = cpu_optimizer(args->optimizer);
    require(std::isfinite(args->lr) && args->lr >= 0,
            "optimizer step: lr must be finite and >= 0, got " + std::to_string(args->lr));
    require(std::isfinite(args->grad_scale),
            "optimizer step: grad_scale must be finite, got " + std::to_string(args->grad_scale));
    plugin::TraceSpan span("optimizer",
                           o.config().type == OptimizerConfig::Type::adamw ? "adamw step" : "sgd step");
    o.step(args->lr, args->grad_scale);
  });
}

LyreError* num_states(LyreOptimizer_NumStates_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_NumStates_Args, num_states),
                           "backend-cpu num_states");
    args->num_states = cpu_optimizer(args->optimizer).states().size();
  });
}

LyreError* state(LyreOptimizer_State_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_State_Args, dtype),
                           "backend-cpu optimizer state");
    const Optimizer<float>::State& s = state_at(args->optimizer, args->index);
    args->name = s.name.c_str();
    args->ndim = static_cast<int32_t>(s.shape.size());
    for (int i = 0; i < 4; ++i) args->shape[i] = i < args->ndim ? s.shape[i] : 0;
    args->dtype = s.data ? plugin::DType<float>::value : kInt64;
  });
}

LyreError* read_state(LyreOptimizer_StateTensor_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_StateTensor_Args, tensor),
                           "backend-cpu read_state");
    const Optimizer<float>::State& s = state_at(args->optimizer, args->index);
    void* dst = state_data(args->tensor, s);
    if (s.data) {
      std::memcpy(dst, s.data, numel(s.shape) * sizeof(float));
    } else {
      const int64_t count = cpu_optimizer(args->optimizer).step_count();
      std::memcpy(dst, &count, sizeof count);
    }
  });
}

LyreError* write_state(LyreOptimizer_StateTensor_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, LYRE_CPU_FIELD_END(LyreOptimizer_StateTensor_Args, tensor),
                           "backend-cpu write_state");
    const Optimizer<float>::State& s = state_at(args->optimizer, args->index);
    const void* src = state_data(args->tensor, s);
    if (s.data) {
      std::memcpy(s.data, src, numel(s.shape) * sizeof(float));
    } else {
      int64_t count = 0;
      std::memcpy(&count, src, sizeof count);
      require(count >= 0, "optimizer state step: must be >= 0, got " + std::to_string(count));
      cpu_optimizer(args->optimizer).set_step_count(count);
    }
  });
}

}  // namespace

extern const LyreOptimizerApi kOptimizerApi = {
    sizeof(LyreOptimizerApi), create, destroy, grad_squared_norm, step,
    num_states,               state,  read_state, write_state,
};

}  // namespace lyre::cpu::glue
