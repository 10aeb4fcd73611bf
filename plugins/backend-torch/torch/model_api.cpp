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
  if (index >= ps.size())
    throw Error(LYRE_ERROR_NOT_FOUND, "parameter index " + std::to_string(index) + " is out of range (the model has " +
                                          std::to_string(ps.size()) + ")");
  return ps[index];
}

at::Tensor param_tensor(const Parameter& p, int32_t which) {
  if (which == LYRE_TENSOR_VALUE) return p.value;
  if (which == LYRE_TENSOR_GRAD) return p.value.grad();
  throw Error(LYRE_ERROR_INVALID_ARGUMENT, "which = " + std::to_string(which) + " (expected 0 = value or 1 = grad)");
}

std::string shape_string(const int64_t* shape, size_t ndim) {
  std::string s = "[";
  for (size_t i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// A host, contiguous tensor of the parameter's shape and of a dtype in `accepted`, as a LibTorch
// tensor over its memory. `accepted_text` lists them for the error.
at::Tensor host_view(const DLTensor* t, const Parameter& p, const char* what, std::initializer_list<at::ScalarType> accepted,
                     const char* accepted_text) {
  require(t != nullptr, std::string(what) + " for " + p.name + " is NULL");
  require(t->device.device_type == kDLCPU, std::string(what) + " for " + p.name + ": expected a host tensor");
  require(plugin::is_contiguous(*t), std::string(what) + " for " + p.name + ": expected a contiguous tensor");
  bool same = static_cast<size_t>(t->ndim) == p.shape.size();
  for (size_t i = 0; same && i < p.shape.size(); ++i) same = t->shape[i] == p.shape[i];
  require(same, std::string(what) + " for " + p.name + ": shape " + shape_string(t->shape, static_cast<size_t>(t->ndim)) +
                    ", expected " + shape_string(p.shape.data(), p.shape.size()));
  const DLDataType dt = t->dtype;
  at::ScalarType type = at::ScalarType::Undefined;
  if (dt.lanes == 1 && dt.code == kDLFloat && dt.bits == 32) type = at::kFloat;
  else if (dt.lanes == 1 && dt.code == kDLFloat && dt.bits == 64) type = at::kDouble;
  else if (dt.lanes == 1 && dt.code == kDLFloat && dt.bits == 16) type = at::kHalf;
  else if (dt.lanes == 1 && dt.code == kDLBfloat && dt.bits == 16) type = at::kBFloat16;
  if (std::find(accepted.begin(), accepted.end(), type) == accepted.end())
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(what) + " for " + p.name + ": dtype " + plugin::dtype_name(dt) +
                                                 " (accepted: " + accepted_text + ")");
  require(t->data != nullptr || p.value.numel() == 0, std::string(what) + " for " + p.name + ": data is NULL");
  return at::from_blob(static_cast<char*>(t->data) + t->byte_offset, p.shape, at::TensorOptions().dtype(type));
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
    args->name = p.name.c_str();
    args->kind = p.kind;
    args->trainable = 1;
    args->ndim = static_cast<int32_t>(p.shape.size());
    for (int i = 0; i < 4; ++i) args->shape[i] = i < args->ndim ? p.shape[i] : 0;
    args->dtype = plugin::DType<float>::value;  // what crosses; fp64 keeps double inside
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
    const LyreBatch* b = args->batch;
    require(b != nullptr, "forward: batch is NULL");
    LYRE_REQUIRE_ARGS(b, segment_ids, "backend-torch forward batch");
    TensorView<int32_t> tokens(b->tokens, "batch.tokens");
    require(tokens.ndim() == 2, "batch.tokens: expected [B,T], got " + tokens.shape_string());
    const int64_t B = tokens.dim(0), T = tokens.dim(1);
    TensorView<int32_t> targets(b->targets, "batch.targets");
    TensorView<int32_t> positions(b->positions, "batch.positions");
    TensorView<int32_t> segments(b->segment_ids, "batch.segment_ids");
    targets.expect_shape({B, T});
    positions.expect_shape({B, T});
    segments.expect_shape({B, T});
    // loss_mask is the objective's business; when present it must still be well formed.
    if (b->struct_size >= offsetof(LyreBatch, loss_mask) + sizeof(void*) && b->loss_mask != nullptr)
      TensorView<int32_t>(b->loss_mask, "batch.loss_mask").expect_shape({B, T});
    TensorView<float> logp(args->logp, "logp");
    logp.expect_shape({B, T});

    bool train;
    switch (args->mode) {
      case LYRE_FORWARD_TRAIN: train = true; break;
      case LYRE_FORWARD_NO_GRAD:
      case LYRE_FORWARD_ADAPTERS_OFF: train = false; break;  // no adapters: the same pass
      default:
        throw Error(LYRE_ERROR_INVALID_ARGUMENT, "forward: mode " + std::to_string(args->mode) +
                                                     " (expected 0 = train, 1 = no_grad, 2 = adapters_off)");
    }
    TokenBatch batch;
    batch.tokens = tokens.data();
    batch.targets = targets.data();
    batch.positions = positions.data();
    batch.segment_ids = segments.data();
    batch.rows = B;
    batch.cols = T;
    model.forward(batch, train, logp.data());
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
    TensorView<int32_t> prompt(args->prompt, "prompt");
    require(prompt.ndim() == 2, "prompt: expected [B,Tp], got " + prompt.shape_string());
    const int64_t B = prompt.dim(0), Tp = prompt.dim(1);
    require(args->max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got " + std::to_string(args->max_new_tokens));
    TensorView<int32_t> lengths(args->prompt_lengths, "prompt_lengths");
    lengths.expect_shape({B});
    TensorView<int32_t> out_tokens(args->out_tokens, "out_tokens");
    out_tokens.expect_shape({B, args->max_new_tokens});
    TensorView<int32_t> out_lengths(args->out_lengths, "out_lengths");
    out_lengths.expect_shape({B});
    SamplingOptions sampling;  // NULL = greedy
    if (args->sampling != nullptr) {
      LYRE_REQUIRE_ARGS(args->sampling, seed, "backend-torch generate sampling");
      sampling.temperature = args->sampling->temperature;
      sampling.top_k = args->sampling->top_k;
      sampling.top_p = args->sampling->top_p;
      sampling.seed = args->sampling->seed;
    }
    model.generate(prompt.data(), lengths.data(), B, Tp, args->max_new_tokens, args->eos_token_id, sampling,
                   out_tokens.data(), out_lengths.data());
  });
}

}  // namespace

extern const LyreModelApi kModelApi = {
    sizeof(LyreModelApi), create, destroy, num_parameters, parameter, read_tensor, write_tensor,
    forward,              backward, zero_grad, stats,       generate,
};

}  // namespace lyre::libtorch
