// The Model slot: a LlamaModel behind the ABI, every argument checked here and every exception
// turned into a LyreError by guard(). Mirrors backend-cpu's model_api.cpp; tensors cross as host
// DLTensors and are copied to and from the device here.
//
// Test hook: with the environment variable LYRE_CUDA_TEST_WRONG_GRAD="<parameter name>[:<factor>]",
// every backward ends by multiplying that parameter's gradient by factor (default 1.001, a 0.1%
// wrong gradient): the deliberate error tests/parity must catch. It is read at each backward, so
// a test can set and unset it; a name the model does not have fails the backward.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "glue.hpp"
#include "llama_model.hpp"
#include "model/llama_config.hpp"
#include "model/test_hooks.hpp"
#include "options.hpp"

struct LyreModel {
  std::unique_ptr<lyre::cuda::LlamaModel> model;
  int64_t train_rows = 0, train_cols = 0;  // shape of the latest train forward, for backward
};

namespace lyre::cuda {

using plugin::Error;
using plugin::require;
using plugin::TensorView;

LlamaModel& cuda_model(LyreModel* model) {
  if (model == nullptr || model->model == nullptr)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda: model is NULL");
  return *model->model;
}

namespace {

// The model, with its device made current for this thread (the host may call from any thread).
LlamaModel& bound_model(LyreModel* model) {
  LlamaModel& m = cuda_model(model);
  LYRE_CUDA_CHECK(cudaSetDevice(m.device()));
  return m;
}

}  // namespace

LyreError* all_reduce_gradients(LyreModel* model) {
  LyreError* host_error = nullptr;
  LyreError* error = plugin::guard([&] {
    LlamaModel& m = bound_model(model);
    const LyreHostApi* host = plugin::host();
    if (host == nullptr || host->world_size <= 1) return;
    ParameterStore& params = m.params();
    std::vector<float> wire;
    for (size_t i = 0; i < params.size(); ++i) {
      const ParameterInfo& p = params.info(i);
      if (!p.trainable || p.numel == 0) continue;
      wire.resize(p.numel);
      params.read_grad(i, wire.data(), m.stream());
      host_error = host->all_reduce_f32(wire.data(), wire.size(), LYRE_REDUCE_SUM);
      if (host_error != nullptr) return;
      params.write_grad(i, wire.data(), m.stream());
    }
  });
  return error != nullptr ? error : host_error;
}

namespace {

const ParameterInfo& param_at(LyreModel* m, size_t index) {
  const ParameterStore& ps = cuda_model(m).params();
  plugin::require_parameter_index(index, ps.size());
  return ps.info(index);
}

void check_which(int32_t which) {
  if (which != LYRE_TENSOR_VALUE && which != LYRE_TENSOR_GRAD)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, "which = " + std::to_string(which) + " (expected 0 = value or 1 = grad)");
}

// ---- entries ----

LyreError* create(LyreModel_Create_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-cuda create model");
    args->model = nullptr;
    require(args->config_json != nullptr, "create model: config_json is NULL");
    if (args->lora_json != nullptr)
      throw Error(LYRE_ERROR_UNIMPLEMENTED,
                  "backend-cuda has no LoRA yet: full-parameter training only (lora_json must be NULL)");
    const int device = current_device();
    if (args->device_index != device)
      throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                  "backend-cuda runs on CUDA device " + std::to_string(device) + " (plugin option \"device\"), "
                  "a model was asked for on device " + std::to_string(args->device_index));
    const ModelOptions options = parse_model_options(args->options_json);
    const cpu::LlamaConfig config = cpu::parse_llama_config(args->config_json);
    LYRE_CUDA_CHECK(cudaSetDevice(device));
    auto holder = std::make_unique<LyreModel>();
    holder->model = std::make_unique<LlamaModel>(config, options);
    args->model = holder.release();
  });
}

LyreError* destroy(LyreModel_Destroy_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-cuda destroy model");
    if (args->model != nullptr && args->model->model != nullptr) cudaSetDevice(args->model->model->device());
    delete args->model;
  });
}

LyreError* num_parameters(LyreModel_NumParameters_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_parameters, "backend-cuda num_parameters");
    args->num_parameters = cuda_model(args->model).params().size();
  });
}

LyreError* parameter(LyreModel_Parameter_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dtype, "backend-cuda parameter");
    const ParameterInfo& p = param_at(args->model, args->index);
    plugin::describe_parameter(*args, p.name, p.kind, p.trainable, p.shape);
  });
}

LyreError* read_tensor(LyreModel_ReadTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dst, "backend-cuda read_tensor");
    LlamaModel& model = bound_model(args->model);
    const ParameterInfo& p = param_at(args->model, args->index);
    check_which(args->which);
    float* dst =
        static_cast<float*>(plugin::require_host_tensor(args->dst, p.shape, "read_tensor dst for " + p.name));
    require(plugin::same_dtype(args->dst->dtype, plugin::DType<float>::value),
            "read_tensor dst for " + p.name + ": dtype " + plugin::dtype_name(args->dst->dtype) +
                " (backend-cuda reads out float32 only)");
    if (args->which == LYRE_TENSOR_VALUE)
      model.params().read_value(args->index, dst, model.stream());
    else
      model.params().read_grad(args->index, dst, model.stream());
  });
}

LyreError* write_tensor(LyreModel_WriteTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, src, "backend-cuda write_tensor");
    LlamaModel& model = bound_model(args->model);
    const ParameterInfo& p = param_at(args->model, args->index);
    check_which(args->which);
    const std::string what = "write_tensor src for " + p.name;
    // float32 goes straight from the caller's memory; 16-bit sources widen on the host first.
    const float* values = static_cast<const float*>(plugin::require_host_tensor(args->src, p.shape, what));
    std::vector<float> widened;
    if (!plugin::same_dtype(args->src->dtype, plugin::DType<float>::value)) {
      widened.resize(p.numel);
      plugin::copy_to_float(*args->src, widened.data(), p.numel, what);
      values = widened.data();
    }
    if (args->which == LYRE_TENSOR_VALUE)
      model.params().write_value(args->index, values, model.stream());
    else
      model.params().write_grad(args->index, values, model.stream());
  });
}

LyreError* forward(LyreModel_Forward_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, logp, "backend-cuda forward");
    LlamaModel& model = bound_model(args->model);
    const plugin::ForwardTensors t = plugin::forward_tensors(*args, "backend-cuda");
    const ForwardMode mode = plugin::is_train_forward(args->mode) ? ForwardMode::train : ForwardMode::no_grad;
    const TokenBatch batch{t.tokens, t.targets, t.positions, t.segment_ids, t.rows, t.cols};
    model.forward(batch, mode, t.logp);
    if (mode == ForwardMode::train) {
      args->model->train_rows = t.rows;
      args->model->train_cols = t.cols;
    }
  });
}

LyreError* backward(LyreModel_Backward_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dlogp, "backend-cuda backward");
    LlamaModel& model = bound_model(args->model);
    if (!model.backward_ready())
      throw Error(LYRE_ERROR_FAILED_PRECONDITION,
                  "backward without a preceding train forward (each train forward allows one backward)");
    TensorView<float> dlogp(args->dlogp, "dlogp");
    dlogp.expect_shape({args->model->train_rows, args->model->train_cols});
    const std::optional<cpu::WrongGrad> wrong =
        cpu::wrong_grad_hook("LYRE_CUDA_TEST_WRONG_GRAD", model.params().infos());  // before any work
    model.backward(dlogp.data());
    if (wrong) {
      // A test hook: through the host, no kernel of its own.
      std::vector<float> g(model.params().info(wrong->index).numel);
      model.params().read_grad(wrong->index, g.data(), model.stream());
      for (float& x : g) x *= wrong->factor;
      model.params().write_grad(wrong->index, g.data(), model.stream());
    }
  });
}

LyreError* zero_grad(LyreModel_ZeroGrad_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-cuda zero_grad");
    bound_model(args->model).zero_grad();
  });
}

LyreError* stats(LyreModel_Stats_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_parameters_trainable, "backend-cuda stats");
    LlamaModel& model = cuda_model(args->model);
    require(args->seq_len >= 1, "stats: seq_len must be >= 1, got " + std::to_string(args->seq_len));
    args->train_flops_per_token = model.train_flops_per_token(args->seq_len);
    args->num_parameters_total = model.num_parameters();
    args->num_parameters_trainable = cpu::trainable_numel(model.params().infos());
  });
}

LyreError* generate(LyreModel_Generate_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, out_lengths, "backend-cuda generate");
    LlamaModel& model = bound_model(args->model);
    const plugin::GenerateTensors t = plugin::generate_tensors(*args, "backend-cuda");
    const cpu::SamplingOptions sampling{t.sampling.temperature, t.sampling.top_k, t.sampling.top_p, t.sampling.seed};
    model.generate(t.prompt, t.prompt_lengths, t.rows, t.prompt_cols, args->max_new_tokens, args->eos_token_id,
                   sampling, t.out_tokens, t.out_lengths);
  });
}

}  // namespace

extern const LyreModelApi kModelApi = {
    sizeof(LyreModelApi), create, destroy, num_parameters, parameter, read_tensor, write_tensor,
    forward,              backward, zero_grad, stats,       generate,
};

}  // namespace lyre::cuda
