// The Model slot: a LlamaModel behind the ABI, every argument checked here and every exception
// (c10::Error included) turned into a LyreError by guard().
#include <ATen/ATen.h>

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "glue.hpp"
#include "model.hpp"
#include "options.hpp"

struct LyreModel {
  std::unique_ptr<lyre::libtorch::LlamaModel> model;
};

namespace lyre::libtorch {

using plugin::Error;
using plugin::require;
using plugin::TensorView;

LlamaModel& torch_model(LyreModel* model) {
  if (model == nullptr || model->model == nullptr) throw Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-torch: model is NULL");
  return *model->model;
}

LyreError* all_reduce_gradients(LyreModel* model) {
  const LyreHostApi* host = plugin::host();
  LlamaModel& m = torch_model(model);
  if (host == nullptr || host->world_size <= 1) return nullptr;
  at::NoGradGuard no_grad;
  for (const Parameter& p : m.params()) {
    at::Tensor grad = p.value.grad();
    // float32 crosses; an fp64 model reduces a float32 copy and takes the sum back.
    const bool direct = grad.scalar_type() == at::kFloat && grad.is_contiguous();
    at::Tensor wire = direct ? grad : grad.to(at::kFloat).contiguous();
    if (LyreError* err = host->all_reduce_f32(wire.data_ptr<float>(), static_cast<size_t>(wire.numel()), LYRE_REDUCE_SUM))
      return err;
    if (!direct) grad.copy_(wire);
  }
  return nullptr;
}

namespace {

const Parameter& param_at(LyreModel* m, size_t index) {
  const std::vector<Parameter>& ps = torch_model(m).params();
  plugin::require_parameter_index(index, ps.size());
  return ps[index];
}

at::Tensor param_tensor(const Parameter& p, int32_t which) {
  if (which == LYRE_TENSOR_VALUE) return p.value;
  if (which == LYRE_TENSOR_GRAD) return p.value.grad();
  throw Error(LYRE_ERROR_INVALID_ARGUMENT, "which = " + std::to_string(which) + " (expected 0 = value or 1 = grad)");
}

// A host, contiguous tensor of the parameter's shape and of a dtype in `accepted`, as a LibTorch
// tensor over its memory. `accepted_text` lists them for the error.
at::Tensor host_view(const DLTensor* t, const Parameter& p, const char* what, std::initializer_list<at::ScalarType> accepted,
                     const char* accepted_text) {
  void* data = plugin::require_host_tensor(t, p.shape, std::string(what) + " for " + p.name);
  const DLDataType dt = t->dtype;
  at::ScalarType type = at::ScalarType::Undefined;
  if (dt.lanes == 1 && dt.code == kDLFloat && dt.bits == 32) type = at::kFloat;
  else if (dt.lanes == 1 && dt.code == kDLFloat && dt.bits == 64) type = at::kDouble;
  else if (dt.lanes == 1 && dt.code == kDLFloat && dt.bits == 16) type = at::kHalf;
  else if (dt.lanes == 1 && dt.code == kDLBfloat && dt.bits == 16) type = at::kBFloat16;
  if (std::find(accepted.begin(), accepted.end(), type) == accepted.end())
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(what) + " for " + p.name + ": dtype " + plugin::dtype_name(dt) +
                                                 " (accepted: " + accepted_text + ")");
  return at::from_blob(data, p.shape, at::TensorOptions().dtype(type));
}

// ---- entries ----

LyreError* create(LyreModel_Create_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-torch create model");
    args->model = nullptr;
    require(args->config_json != nullptr, "create model: config_json is NULL");
    if (args->lora_json != nullptr)
      throw Error(LYRE_ERROR_UNIMPLEMENTED, "backend-torch has no LoRA: full-parameter training only (lora_json must be NULL)");
    if (args->device_index != 0)
      throw Error(LYRE_ERROR_NOT_FOUND, "backend-torch has one device (0), asked for " + std::to_string(args->device_index));
    const Options options = parse_options(args->options_json, "model options", /*model_keys=*/true);
    const LlamaConfig config = parse_llama_config(args->config_json);
    apply_threads(options);
    auto holder = std::make_unique<LyreModel>();
    holder->model = std::make_unique<LlamaModel>(config, options.precision.value_or(default_precision()),
                                                 options.logprob_chunk_rows.value_or(0));
    args->model = holder.release();
  });
}

LyreError* destroy(LyreModel_Destroy_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-torch destroy model");
    delete args->model;
  });
}

LyreError* num_parameters(LyreModel_NumParameters_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_parameters, "backend-torch num_parameters");
    args->num_parameters = torch_model(args->model).params().size();
  });
}

LyreError* parameter(LyreModel_Parameter_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dtype, "backend-torch parameter");
    const Parameter& p = param_at(args->model, args->index);
    plugin::describe_parameter(*args, p.name, p.kind, /*trainable=*/true, p.shape);  // fp64 keeps double inside
  });
}

LyreError* read_tensor(LyreModel_ReadTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dst, "backend-torch read_tensor");
    const Parameter& p = param_at(args->model, args->index);
    const at::Tensor src = param_tensor(p, args->which);
    at::Tensor dst = host_view(args->dst, p, "read_tensor dst", {at::kFloat, at::kDouble}, "float32, float64");
    at::NoGradGuard no_grad;
    dst.copy_(src);
  });
}

LyreError* write_tensor(LyreModel_WriteTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, src, "backend-torch write_tensor");
    const Parameter& p = param_at(args->model, args->index);
    at::Tensor dst = param_tensor(p, args->which);
    const at::Tensor src = host_view(args->src, p, "write_tensor src", {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf},
                                     "float32, float64, bfloat16, float16");
    at::NoGradGuard no_grad;
    dst.copy_(src);
  });
}

LyreError* forward(LyreModel_Forward_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, logp, "backend-torch forward");
    LlamaModel& model = torch_model(args->model);
    const plugin::ForwardTensors t = plugin::forward_tensors(*args, "backend-torch");
    const bool train = plugin::is_train_forward(args->mode);  // no adapters: adapters_off is the no_grad pass
    const TokenBatch batch{t.tokens, t.targets, t.positions, t.segment_ids, t.rows, t.cols};
    model.forward(batch, train, t.logp);
  });
}

LyreError* backward(LyreModel_Backward_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dlogp, "backend-torch backward");
    LlamaModel& model = torch_model(args->model);
    if (!model.backward_ready())
      throw Error(LYRE_ERROR_FAILED_PRECONDITION,
                  "backward without a preceding train forward (each train forward allows one backward)");
    TensorView<float> dlogp(args->dlogp, "dlogp");
    dlogp.expect_shape({model.pending_rows(), model.pending_cols()});
    model.backward(dlogp.data());
  });
}

LyreError* zero_grad(LyreModel_ZeroGrad_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-torch zero_grad");
    torch_model(args->model).zero_grad();
  });
}

LyreError* stats(LyreModel_Stats_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, num_parameters_trainable, "backend-torch stats");
    LlamaModel& model = torch_model(args->model);
    require(args->seq_len >= 1, "stats: seq_len must be >= 1, got " + std::to_string(args->seq_len));
    args->train_flops_per_token = model.train_flops_per_token(args->seq_len);
    args->num_parameters_total = model.num_parameters();
    args->num_parameters_trainable = model.num_parameters();  // every parameter trains
  });
}

LyreError* generate(LyreModel_Generate_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, out_lengths, "backend-torch generate");
    LlamaModel& model = torch_model(args->model);
    const plugin::GenerateTensors t = plugin::generate_tensors(*args, "backend-torch");
    const SamplingOptions sampling{t.sampling.temperature, t.sampling.top_k, t.sampling.top_p, t.sampling.seed};
    model.generate(t.prompt, t.prompt_lengths, t.rows, t.prompt_cols, args->max_new_tokens, args->eos_token_id,
                   sampling, t.out_tokens, t.out_lengths);
  });
}

}  // namespace

extern const LyreModelApi kModelApi = {
    sizeof(LyreModelApi), create, destroy, num_parameters, parameter, read_tensor, write_tensor,
    forward,              backward, zero_grad, stats,       generate,
};

}  // namespace lyre::libtorch
