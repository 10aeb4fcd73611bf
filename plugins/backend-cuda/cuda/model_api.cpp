// The Model slot: a LlamaModel behind the ABI, every argument checked here and every exception
// turned into a LyreError by guard(). Mirrors backend-cpu's model_api.cpp; tensors cross as host
// DLTensors and are copied to and from the device here.
//
// Test hook: with the environment variable LYRE_CUDA_TEST_WRONG_GRAD="<parameter name>[:<factor>]",
// every backward ends by multiplying that parameter's gradient by factor (default 1.001, a 0.1%
// wrong gradient): the deliberate error tests/parity must catch. It is read at each backward, so
// a test can set and unset it; a name the model does not have fails the backward.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "glue.hpp"
#include "llama_model.hpp"
#include "model/llama_config.hpp"
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
  if (index >= ps.size())
    throw Error(LYRE_ERROR_NOT_FOUND, "parameter index " + std::to_string(index) + " is out of range (the model has " +
                                          std::to_string(ps.size()) + ")");
  return ps.info(index);
}

void check_which(int32_t which) {
  if (which != LYRE_TENSOR_VALUE && which != LYRE_TENSOR_GRAD)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, "which = " + std::to_string(which) + " (expected 0 = value or 1 = grad)");
}

std::string shape_string(const int64_t* shape, int ndim) {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// A host, contiguous tensor whose shape is the parameter's.
void check_param_tensor(const DLTensor* t, const ParameterInfo& p, const char* what) {
  require(t != nullptr, std::string(what) + " for " + p.name + " is NULL");
  require(t->device.device_type == kDLCPU, std::string(what) + " for " + p.name + ": expected a host tensor");
  require(plugin::is_contiguous(*t), std::string(what) + " for " + p.name + ": expected a contiguous tensor");
  bool same = static_cast<size_t>(t->ndim) == p.shape.size();
  for (size_t i = 0; same && i < p.shape.size(); ++i) same = t->shape[i] == p.shape[i];
  require(same, std::string(what) + " for " + p.name + ": shape " + shape_string(t->shape, t->ndim) + ", expected " +
                    shape_string(p.shape.data(), static_cast<int>(p.shape.size())));
  require(t->data != nullptr || p.numel == 0, std::string(what) + " for " + p.name + ": data is NULL");
}

float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: shift the mantissa up until its leading one becomes the implicit bit.
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

const char* const kDtypeHint = "(accepted: float32, bfloat16, float16)";

constexpr const char* kWrongGradHook = "LYRE_CUDA_TEST_WRONG_GRAD";

struct WrongGrad {
  size_t index = 0;
  float factor = 1.001f;
};

// What LYRE_CUDA_TEST_WRONG_GRAD asks for, or nothing when it is unset or empty.
std::optional<WrongGrad> wrong_grad_hook(const ParameterStore& params) {
  const char* value = std::getenv(kWrongGradHook);
  if (value == nullptr || *value == '\0') return std::nullopt;
  const std::string spec = value;
  const std::string where = std::string(kWrongGradHook) + "=\"" + spec + "\"";
  const size_t colon = spec.rfind(':');  // parameter names hold no ':'
  const std::string name = spec.substr(0, colon);
  WrongGrad hook;
  if (colon != std::string::npos) {
    const std::string text = spec.substr(colon + 1);
    char* end = nullptr;
    errno = 0;
    const double factor = std::strtod(text.c_str(), &end);
    if (text.empty() || errno != 0 || *end != '\0' || !std::isfinite(factor))
      throw Error(LYRE_ERROR_INVALID_ARGUMENT, where + ": factor \"" + text + "\" is not a finite number");
    hook.factor = static_cast<float>(factor);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (params.info(i).name == name) {
      hook.index = i;
      return hook;
    }
  }
  throw Error(LYRE_ERROR_INVALID_ARGUMENT,
              where + ": the model has no parameter named \"" + name +
                  "\" (expected <parameter name>[:<factor>], e.g. model.norm.weight:1.001)");
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
    args->name = p.name.c_str();
    args->kind = p.kind;
    args->trainable = p.trainable ? 1 : 0;
    args->ndim = static_cast<int32_t>(p.shape.size());
    for (int i = 0; i < 4; ++i) args->shape[i] = i < args->ndim ? p.shape[i] : 0;
    args->dtype = plugin::DType<float>::value;
  });
}

LyreError* read_tensor(LyreModel_ReadTensor_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, dst, "backend-cuda read_tensor");
    LlamaModel& model = bound_model(args->model);
    const ParameterInfo& p = param_at(args->model, args->index);
    check_which(args->which);
    check_param_tensor(args->dst, p, "read_tensor dst");
    require(plugin::same_dtype(args->dst->dtype, plugin::DType<float>::value),
            "read_tensor dst for " + p.name + ": dtype " + plugin::dtype_name(args->dst->dtype) +
                " (backend-cuda reads out float32 only)");
    float* dst = reinterpret_cast<float*>(static_cast<char*>(args->dst->data) + args->dst->byte_offset);
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
    check_param_tensor(args->src, p, "write_tensor src");
    const DLDataType t = args->src->dtype;
    const char* base = static_cast<const char*>(args->src->data) + args->src->byte_offset;
    // float32 goes straight from the caller's memory; 16-bit sources widen on the host first.
    const float* values = nullptr;
    std::vector<float> widened;
    if (plugin::same_dtype(t, plugin::DType<float>::value)) {
      values = reinterpret_cast<const float*>(base);
    } else if (t.code == kDLBfloat && t.bits == 16 && t.lanes == 1) {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(base);
      widened.resize(p.numel);
      for (size_t i = 0; i < p.numel; ++i) widened[i] = bf16_to_float(h[i]);
      values = widened.data();
    } else if (t.code == kDLFloat && t.bits == 16 && t.lanes == 1) {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(base);
      widened.resize(p.numel);
      for (size_t i = 0; i < p.numel; ++i) widened[i] = fp16_to_float(h[i]);
      values = widened.data();
    } else {
      throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                  "write_tensor src for " + p.name + ": dtype " + plugin::dtype_name(t) + " " + kDtypeHint);
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
    const LyreBatch* b = args->batch;
    require(b != nullptr, "forward: batch is NULL");
    LYRE_REQUIRE_ARGS(b, segment_ids, "backend-cuda forward batch");
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

    ForwardMode mode;
    switch (args->mode) {
      case LYRE_FORWARD_TRAIN: mode = ForwardMode::train; break;
      case LYRE_FORWARD_NO_GRAD:
      case LYRE_FORWARD_ADAPTERS_OFF: mode = ForwardMode::no_grad; break;  // no adapters here
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
    model.forward(batch, mode, logp.data());
    if (mode == ForwardMode::train) {
      args->model->train_rows = B;
      args->model->train_cols = T;
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
    const std::optional<WrongGrad> wrong = wrong_grad_hook(model.params());  // before any work
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
    int64_t trainable = 0;
    for (const ParameterInfo& p : model.params().infos())
      if (p.trainable) trainable += static_cast<int64_t>(p.numel);
    args->num_parameters_trainable = trainable;
  });
}

LyreError* generate(LyreModel_Generate_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, out_lengths, "backend-cuda generate");
    LlamaModel& model = bound_model(args->model);
    TensorView<int32_t> prompt(args->prompt, "prompt");
    require(prompt.ndim() == 2, "prompt: expected [B,Tp], got " + prompt.shape_string());
    const int64_t B = prompt.dim(0), Tp = prompt.dim(1);
    require(args->max_new_tokens >= 0,
            "generate: max_new_tokens must be >= 0, got " + std::to_string(args->max_new_tokens));
    TensorView<int32_t> lengths(args->prompt_lengths, "prompt_lengths");
    lengths.expect_shape({B});
    TensorView<int32_t> out_tokens(args->out_tokens, "out_tokens");
    out_tokens.expect_shape({B, args->max_new_tokens});
    TensorView<int32_t> out_lengths(args->out_lengths, "out_lengths");
    out_lengths.expect_shape({B});
    cpu::SamplingOptions sampling;  // NULL = greedy
    if (args->sampling != nullptr) {
      LYRE_REQUIRE_ARGS(args->sampling, seed, "backend-cuda generate sampling");
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

}  // namespace lyre::cuda
