// The Optimizer slot: torch::optim's AdamW or SGD over a backend-torch model's parameters.
#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "glue.hpp"
#include "model.hpp"
#include "optimizer.hpp"

struct LyreOptimizer {
  std::unique_ptr<lyre::libtorch::Optimizer> optimizer;
};

namespace lyre::libtorch {
namespace {

using plugin::Error;
using plugin::require;

Optimizer& torch_optimizer(LyreOptimizer* o) {
  if (o == nullptr || o->optimizer == nullptr) throw Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-torch: optimizer is NULL");
  return *o->optimizer;
}

const Optimizer::State& state_at(LyreOptimizer* o, size_t index) {
  const auto& states = torch_optimizer(o).states();
  if (index >= states.size())
    throw Error(LYRE_ERROR_NOT_FOUND, "optimizer state index " + std::to_string(index) + " is out of range (there are " +
                                          std::to_string(states.size()) + ")");
  return states[index];
}

constexpr DLDataType kInt64{kDLInt, 64, 1};

// Checks a state tensor against the state's dtype (float32, or int64 for "step") and shape;
// returns its data.
void* state_data(const DLTensor* t, const Optimizer::State& s) {
  require(t != nullptr, "optimizer state " + s.name + ": tensor is NULL");
  require(t->device.device_type == kDLCPU, "optimizer state " + s.name + ": expected a host tensor");
  require(plugin::is_contiguous(*t), "optimizer state " + s.name + ": expected a contiguous tensor");
  const DLDataType want = s.kind == Optimizer::State::Kind::step ? kInt64 : plugin::DType<float>::value;
  require(plugin::same_dtype(t->dtype, want), "optimizer state " + s.name + ": dtype " + plugin::dtype_name(t->dtype) +
                                                  ", expected " + plugin::dtype_name(want));
  bool same = static_cast<size_t>(t->ndim) == s.shape.size();
  for (size_t i = 0; same && i < s.shape.size(); ++i) same = t->shape[i] == s.shape[i];
  require(same, "optimizer state " + s.name + ": shape does not match the state's");
  require(t->data != nullptr, "optimizer state " + s.name + ": data is NULL");
  return static_cast<char*>(t->data) + t->byte_offset;
}

at::Tensor float_view(void* data, const Optimizer::State& s) { return at::from_blob(data, s.shape, at::kFloat); }

LyreError* create(LyreOptimizer_Create_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, optimizer, "backend-torch create optimizer");
    args->optimizer = nullptr;
    LlamaModel& model = torch_model(args->model);
    const OptimizerConfig config = parse_optimizer_config(args->config_json ? args->config_json : "");
    auto holder = std::make_unique<LyreOptimizer>();
    holder->optimizer = std::make_unique<Optimizer>(model, config);
    args->optimizer = holder.release();
  });
}

LyreError* destroy(LyreOptimizer_Destroy_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, optimizer, "backend-torch destroy optimizer");
    delete args->optimizer;
  });
}

LyreError* grad_squared_norm(LyreOptimizer_GradSquaredNorm_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, squared_norm, "backend-torch grad_squared_norm");
    plugin::TraceSpan span("optimizer", "grad squared norm");
    args->squared_norm = torch_optimizer(args->optimizer).grad_squared_norm();
  });
}

LyreError* step(LyreOptimizer_Step_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, grad_scale, "backend-torch optimizer step");
    Optimizer& o = torch_optimizer(args->optimizer);
    require(std::isfinite(args->lr) && args->lr >= 0, "optimizer step: lr must be finite and >= 0, got " + std::to_string(args->lr));
    require(std::isfinite(args->grad_scale), "optimizer step: grad_scale must be finite, got " + std::to_string(args->grad_scale));
    plugin::TraceSpan span("optimizer", o.config().type == OptimizerConfig::Type::adamw ? "adamw step" : "sgd step");
    o.step(args->lr, args->grad_scale);
  });
}

LyreError* num_states(LyreOptimizer_NumStates_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_states, "backend-torch num_states");
    args->num_states = torch_optimizer(args->optimizer).states().size();
  });
}

LyreError* state(LyreOptimizer_State_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dtype, "backend-torch optimizer state");
    const Optimizer::State& s = state_at(args->optimizer, args->index);
    args->name = s.name.c_str();
    args->ndim = static_cast<int32_t>(s.shape.size());
    for (int i = 0; i < 4; ++i) args->shape[i] = i < args->ndim ? s.shape[i] : 0;
    args->dtype = s.kind == Optimizer::State::Kind::step ? kInt64 : plugin::DType<float>::value;
  });
}

LyreError* read_state(LyreOptimizer_StateTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, tensor, "backend-torch read_state");
    Optimizer& o = torch_optimizer(args->optimizer);
    const Optimizer::State& s = state_at(args->optimizer, args->index);
    void* dst = state_data(args->tensor, s);
    if (s.kind == Optimizer::State::Kind::step) {
      const int64_t count = o.step_count();
      std::memcpy(dst, &count, sizeof count);
      return;
    }
    at::NoGradGuard no_grad;
    float_view(dst, s).copy_(o.state_tensor(s));
  });
}

LyreError* write_state(LyreOptimizer_StateTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, tensor, "backend-torch write_state");
    Optimizer& o = torch_optimizer(args->optimizer);
    const Optimizer::State& s = state_at(args->optimizer, args->index);
    void* src = state_data(args->tensor, s);
    if (s.kind == Optimizer::State::Kind::step) {
      int64_t count = 0;
      std::memcpy(&count, src, sizeof count);
      require(count >= 0, "optimizer state step: must be >= 0, got " + std::to_string(count));
      o.set_step_count(count);
      return;
    }
    at::NoGradGuard no_grad;
    o.state_tensor(s).copy_(float_view(src, s));
  });
}

}  // namespace

extern const LyreOptimizerApi kOptimizerApi = {
    sizeof(LyreOptimizerApi), create, destroy, grad_squared_norm, step, num_states, state, read_state, write_state,
};

}  // namespace lyre::libtorch
