// The Model slot: a LlamaModel<float> behind the ABI, with every argument checked here and
// every exception turned into a LyreError by guard().
//
// Test hook: with the environment variable LYRE_CPU_TEST_WRONG_GRAD="<parameter name>[:<factor>]",
// every backward ends by multiplying that parameter's gradient by factor (default 1.001, a 0.1%
// wrong gradient): the deliberate error tests/parity must catch. It is read at each backward, so
// a test can set and unset it; a name the model does not have fails the backward.
#include <omp.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"
#include "model/llama_config.hpp"
#include "model/llama_model.hpp"
#include "model/test_hooks.hpp"

struct LyreModel {
  std::unique_ptr<lyre::cpu::LlamaModel<float>> model;
  int64_t train_rows = 0, train_cols = 0;  // shape of the latest train forward, for backward
};

namespace lyre::cpu::glue {

using plugin::Error;
using plugin::require;
using plugin::TensorView;

LlamaModel<float>& cpu_model(LyreModel* model) {
  if (model == nullptr || model->model == nullptr)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cpu: model is NULL");
  return *model->model;
}

namespace {

ModelOptions parse_model_options(const char* text) {
  ModelOptions options;
  if (text == nullptr) return options;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, std::string("model options: not valid JSON: ") + e.what());
  }
  if (j.is_null()) return options;
  require(j.is_object(), "model options: expected a JSON object, got " + j.dump());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "precision") {
      require(v == "fp32", "model options: \"precision\" " + v.dump() +
                               " is not supported by backend-cpu (supported: \"fp32\")");
    } else if (key == "threads") {
      require(v.is_number_integer() && v.get<int64_t>() >= 1,
              "model options: \"threads\" must be an integer >= 1, got " + v.dump());
      omp_set_num_threads(static_cast<int>(v.get<int64_t>()));
    } else if (key == "logprob_chunk_rows") {
      require(v.is_number_integer() && v.get<int64_t>() >= 1,
              "model options: \"logprob_chunk_rows\" must be an integer >= 1, got " + v.dump());
      options.logprob_chunk_rows = v.get<int64_t>();
    } else {
      throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                  "model options: unknown key \"" + key +
                      "\" (known: precision, threads, logprob_chunk_rows)");
    }
  }
  return options;
}

const ParameterInfo& param_at(LyreModel* m, size_t index) {
  const ParameterStore<float>& ps = cpu_model(m).params();
  plugin::require_parameter_index(index, ps.size());
  return ps.info(index);
}

float* param_memory(LyreModel* m, size_t index, int32_t which) {
  if (which == LYRE_TENSOR_VALUE) return cpu_model(m).params().value(index);
  if (which == LYRE_TENSOR_GRAD) return cpu_model(m).params().grad(index);
  throw Error(LYRE_ERROR_INVALID_ARGUMENT,
              "which = " + std::to_string(which) + " (expected 0 = value or 1 = grad)");
}

// ---- entries ----

LyreError* create(LyreModel_Create_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-cpu create model");
    args->model = nullptr;
    require(args->config_json != nullptr, "create model: config_json is NULL");
    if (args->lora_json != nullptr)
      throw Error(LYRE_ERROR_UNIMPLEMENTED,
                  "backend-cpu has no LoRA: full-parameter training only (lora_json must be NULL)");
    if (args->device_index != 0)
      throw Error(LYRE_ERROR_NOT_FOUND, "backend-cpu has one device (0), asked for " +
                                            std::to_string(args->device_index));
    const ModelOptions options = parse_model_options(args->options_json);
    const LlamaConfig config = parse_llama_config(args->config_json);
    auto holder = std::make_unique<LyreModel>();
    holder->model = std::make_unique<LlamaModel<float>>(config, options);
    args->model = holder.release();
  });
}

LyreError* destroy(LyreModel_Destroy_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-cpu destroy model");
    delete args->model;
  });
}

LyreError* num_parameters(LyreModel_NumParameters_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_parameters, "backend-cpu num_parameters");
    args->num_parameters = cpu_model(args->model).params().size();
  });
}

LyreError* parameter(LyreModel_Parameter_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dtype, "backend-cpu parameter");
    const ParameterInfo& p = param_at(args->model, args->index);
    plugin::describe_parameter(*args, p.name, p.kind, p.trainable, p.shape);
  });
}

LyreError* read_tensor(LyreModel_ReadTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dst, "backend-cpu read_tensor");
    const ParameterInfo& p = param_at(args->model, args->index);
    const float* src = param_memory(args->model, args->index, args->which);
    void* dst = plugin::require_host_tensor(args->dst, p.shape, "read_tensor dst for " + p.name);
    require(plugin::same_dtype(args->dst->dtype, plugin::DType<float>::value),
            "read_tensor dst for " + p.name + ": dtype " + plugin::dtype_name(args->dst->dtype) +
                " (backend-cpu reads out float32 only)");
    std::memcpy(dst, src, p.numel * sizeof(float));
  });
}

LyreError* write_tensor(LyreModel_WriteTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, src, "backend-cpu write_tensor");
    const ParameterInfo& p = param_at(args->model, args->index);
    float* dst = param_memory(args->model, args->index, args->which);
    const std::string what = "write_tensor src for " + p.name;
    plugin::require_host_tensor(args->src, p.shape, what);
    plugin::copy_to_float(*args->src, dst, p.numel, what);
  });
}

LyreError* forward(LyreModel_Forward_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, logp, "backend-cpu forward");
    LlamaModel<float>& model = cpu_model(args->model);
    const plugin::ForwardTensors t = plugin::forward_tensors(*args, "backend-cpu");
    const ForwardMode mode =
        plugin::is_train_forward(args->mode) ? ForwardMode::train : ForwardMode::no_grad;
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
    LYRE_REQUIRE_ARGS(args, dlogp, "backend-cpu backward");
    LlamaModel<float>& model = cpu_model(args->model);
    if (!model.backward_ready())
      throw Error(LYRE_ERROR_FAILED_PRECONDITION,
                  "backward without a preceding train forward (each train forward allows one "
                  "backward)");
    TensorView<float> dlogp(args->dlogp, "dlogp");
    dlogp.expect_shape({args->model->train_rows, args->model->train_cols});
    const std::optional<WrongGrad> wrong =
        wrong_grad_hook("LYRE_CPU_TEST_WRONG_GRAD", model.params().infos());  // before any work
    model.backward(dlogp.data());
    if (wrong) {
      float* g = model.params().grad(wrong->index);
      for (size_t i = 0; i < model.params().info(wrong->index).numel; ++i) g[i] *= wrong->factor;
    }
  });
}

LyreError* zero_grad(LyreModel_ZeroGrad_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-cpu zero_grad");
    cpu_model(args->model).zero_grad();
  });
}

LyreError* stats(LyreModel_Stats_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_parameters_trainable, "backend-cpu stats");
    LlamaModel<float>& model = cpu_model(args->model);
    require(args->seq_len >= 1, "stats: seq_len must be >= 1, got " + std::to_string(args->seq_len));
    args->train_flops_per_token = model.train_flops_per_token(args->seq_len);
    args->num_parameters_total = model.num_parameters();
    args->num_parameters_trainable = trainable_numel(model.params().infos());
  });
}

LyreError* generate(LyreModel_Generate_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, out_lengths, "backend-cpu generate");
    LlamaModel<float>& model = cpu_model(args->model);
    const plugin::GenerateTensors t = plugin::generate_tensors(*args, "backend-cpu");
    const SamplingOptions sampling{t.sampling.temperature, t.sampling.top_k, t.sampling.top_p,
                                   t.sampling.seed};
    model.generate(t.prompt, t.prompt_lengths, t.rows, t.prompt_cols, args->max_new_tokens,
                   args->eos_token_id, sampling, t.out_tokens, t.out_lengths);
  });
}

}  // namespace

extern const LyreModelApi kModelApi = {
    sizeof(LyreModelApi), create, destroy, num_parameters, parameter, read_tensor, write_tensor,
    forward,              backward, zero_grad, stats,       generate,
};

}  // namespace lyre::cpu::glue
