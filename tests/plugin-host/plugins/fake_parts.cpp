#include "fake_parts.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace fake {
namespace {

using lyre::plugin::Error;
using lyre::plugin::guard;
using lyre::plugin::require;
using lyre::plugin::TensorView;

std::atomic<int> live{0};

nlohmann::json parse_config(const char* text, const char* what) {
  if (text == nullptr) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  require(!j.is_discarded() && j.is_object(), std::string(what) + ": not a JSON object");
  return j;
}

void only_keys(const nlohmann::json& j, std::initializer_list<const char*> allowed) {
  for (const auto& item : j.items()) {
    bool known = false;
    for (const char* k : allowed) known = known || item.key() == k;
    require(known, "unknown key '" + item.key() + "'");
  }
}

// ---- Model: logp[b,t] = log_softmax(scale * bias)[targets[b,t]] ----

struct Model {
  int64_t vocab = 0;
  std::vector<float> bias, grad;
  float scale = 1.0f;  // a frozen parameter, so that enumeration shows a non-trainable one
  bool saved = false;  // a train forward waits for its backward
  std::vector<int32_t> saved_targets;
  int64_t saved_rows = 0, saved_cols = 0;

  std::vector<double> softmax() const {
    double mx = -INFINITY;
    for (float b : bias) mx = std::max<double>(mx, scale * b);
    std::vector<double> p(bias.size());
    double sum = 0;
    for (size_t v = 0; v < bias.size(); ++v) sum += p[v] = std::exp(scale * bias[v] - mx);
    for (double& x : p) x /= sum;
    return p;
  }
};

Model* as_model(LyreModel* m) {
  require(m != nullptr, "model is NULL");
  return reinterpret_cast<Model*>(m);
}

LyreError* model_create(LyreModel_Create_Args* a) {
  return guard([&] {
    lyre::plugin::require_struct(a, sizeof(LyreModel_Create_Args), "create");
    require(a->config_json != nullptr, "config_json is NULL");
    nlohmann::json config = parse_config(a->config_json, "config.json");
    require(config.contains("vocab_size") && config["vocab_size"].is_number_integer() &&
                config["vocab_size"].get<int64_t>() > 0,
            "config.json: vocab_size must be a positive integer");
    only_keys(parse_config(a->options_json, "options"), {});
    if (a->lora_json != nullptr) throw Error(LYRE_ERROR_UNIMPLEMENTED, "no LoRA in the fake model");
    auto* m = new Model();
    m->vocab = config["vocab_size"].get<int64_t>();
    m->bias.assign(m->vocab, 0.0f);
    m->grad.assign(m->vocab, 0.0f);
    a->model = reinterpret_cast<LyreModel*>(m);
    ++live;
  });
}

LyreError* model_destroy(LyreModel_Destroy_Args* a) {
  return guard([&] {
    delete as_model(a->model);
    --live;
  });
}

LyreError* model_num_parameters(LyreModel_NumParameters_Args* a) {
  return guard([&] {
    as_model(a->model);
    a->num_parameters = 2;
  });
}

LyreError* model_parameter(LyreModel_Parameter_Args* a) {
  return guard([&] {
    Model* m = as_model(a->model);
    if (a->index == 0) {
      a->name = "lm_head.bias";
      a->kind = LYRE_PARAM_BIAS;
      a->trainable = 1;
      a->ndim = 1;
      a->shape[0] = m->vocab;
    } else if (a->index == 1) {
      a->name = "model.norm.weight";
      a->kind = LYRE_PARAM_NORM;
      a->trainable = 0;
      a->ndim = 1;
      a->shape[0] = 1;
    } else {
      throw Error(LYRE_ERROR_NOT_FOUND, "parameter " + std::to_string(a->index) + " outside [0, 2)");
    }
    a->dtype = DLDataType{kDLFloat, 32, 1};
  });
}

float* parameter_data(Model* m, size_t index, int32_t which, int64_t& n) {
  if (index == 0) {
    n = m->vocab;
    return which == LYRE_TENSOR_GRAD ? m->grad.data() : m->bias.data();
  }
  if (index == 1) {
    require(which == LYRE_TENSOR_VALUE, "model.norm.weight is frozen: it has no gradient");
    n = 1;
    return &m->scale;
  }
  throw Error(LYRE_ERROR_NOT_FOUND, "parameter " + std::to_string(index) + " outside [0, 2)");
}

LyreError* model_read_tensor(LyreModel_ReadTensor_Args* a) {
  return guard([&] {
    int64_t n = 0;
    const float* src = parameter_data(as_model(a->model), a->index, a->which, n);
    TensorView<float> dst(a->dst, "dst");
    require(dst.size() == n, "dst: expected " + std::to_string(n) + " values");
    std::copy(src, src + n, dst.data());
  });
}

LyreError* model_write_tensor(LyreModel_WriteTensor_Args* a) {
  return guard([&] {
    int64_t n = 0;
    float* dst = parameter_data(as_model(a->model), a->index, a->which, n);
    TensorView<float> src(a->src, "src");
    require(src.size() == n, "src: expected " + std::to_string(n) + " values");
    std::copy(src.data(), src.data() + n, dst);
  });
}

LyreError* model_forward(LyreModel_Forward_Args* a) {
  return guard([&] {
    Model* m = as_model(a->model);
    require(a->batch != nullptr, "batch is NULL");
    TensorView<int32_t> tokens(a->batch->tokens, "tokens");
    require(tokens.ndim() == 2, "tokens: expected [B,T]");
    const int64_t rows = tokens.dim(0), cols = tokens.dim(1);
    TensorView<int32_t> targets(a->batch->targets, "targets");
    targets.expect_shape({rows, cols});
    TensorView<float> logp(a->logp, "logp");
    logp.expect_shape({rows, cols});
    const std::vector<double> p = m->softmax();
    for (int64_t i = 0; i < rows * cols; ++i) {
      const int32_t tok = tokens.data()[i], target = targets.data()[i];
      require(tok >= 0 && tok < m->vocab,
              "token " + std::to_string(tok) + " outside vocabulary [0, " + std::to_string(m->vocab) + ")");
      require(target < m->vocab,
              "target " + std::to_string(target) + " outside vocabulary [0, " + std::to_string(m->vocab) + ")");
      logp.data()[i] = target < 0 ? 0.0f : static_cast<float>(std::log(p[target]));
    }
    m->saved = a->mode == LYRE_FORWARD_TRAIN;
    if (m->saved) {
      m->saved_targets.assign(targets.data(), targets.data() + rows * cols);
      m->saved_rows = rows;
      m->saved_cols = cols;
    }
  });
}

LyreError* model_backward(LyreModel_Backward_Args* a) {
  return guard([&] {
    Model* m = as_model(a->model);
    if (!m->saved) throw Error(LYRE_ERROR_FAILED_PRECONDITION, "backward without a train forward");
    TensorView<float> dlogp(a->dlogp, "dlogp");
    dlogp.expect_shape({m->saved_rows, m->saved_cols});
    const std::vector<double> p = m->softmax();
    for (size_t i = 0; i < m->saved_targets.size(); ++i) {
      const int32_t target = m->saved_targets[i];
      if (target < 0) continue;
      for (int64_t v = 0; v < m->vocab; ++v) {
        m->grad[v] += static_cast<float>(dlogp.data()[i] * m->scale * ((v == target ? 1.0 : 0.0) - p[v]));
      }
    }
    m->saved = false;
  });
}

LyreError* model_zero_grad(LyreModel_ZeroGrad_Args* a) {
  return guard([&] {
    Model* m = as_model(a->model);
    std::fill(m->grad.begin(), m->grad.end(), 0.0f);
  });
}

LyreError* model_stats(LyreModel_Stats_Args* a) {
  return guard([&] {
    Model* m = as_model(a->model);
    a->train_flops_per_token = 6.0 * m->vocab;
    a->num_parameters_total = m->vocab + 1;
    a->num_parameters_trainable = m->vocab;
  });
}

// Greedy: every new token is the argmax of the bias; a row stops at eos.
LyreError* model_generate(LyreModel_Generate_Args* a) {
  return guard([&] {
    Model* m = as_model(a->model);
    TensorView<int32_t> prompt(a->prompt, "prompt");
    require(prompt.ndim() == 2, "prompt: expected [B,Tp]");
    const int64_t rows = prompt.dim(0);
    TensorView<int32_t> lengths(a->prompt_lengths, "prompt_lengths");
    lengths.expect_shape({rows});
    TensorView<int32_t> out(a->out_tokens, "out_tokens");
    out.expect_shape({rows, a->max_new_tokens});
    TensorView<int32_t> out_lengths(a->out_lengths, "out_lengths");
    out_lengths.expect_shape({rows});
    const int32_t best = static_cast<int32_t>(std::max_element(m->bias.begin(), m->bias.end()) - m->bias.begin());
    for (int64_t b = 0; b < rows; ++b) {
      require(lengths.data()[b] >= 1 && lengths.data()[b] <= prompt.dim(1), "prompt_lengths out of range");
      int32_t n = 0;
      while (n < a->max_new_tokens) {
        out.data()[b * a->max_new_tokens + n++] = best;
        if (best == a->eos_token_id) break;
      }
      out_lengths.data()[b] = n;
    }
  });
}

// ---- Optimizer: plain SGD on the bias ----

struct Sgd {
  Model* model;
};

Sgd* as_sgd(LyreOptimizer* o) {
  require(o != nullptr, "optimizer is NULL");
  return reinterpret_cast<Sgd*>(o);
}

LyreError* optimizer_create(LyreOptimizer_Create_Args* a) {
  return guard([&] {
    nlohmann::json config = parse_config(a->config_json, "optimizer");
    only_keys(config, {"type"});
    require(config.value("type", std::string("sgd")) == "sgd", "type: the fake backend has only \"sgd\"");
    a->optimizer = reinterpret_cast<LyreOptimizer*>(new Sgd{as_model(a->model)});
    ++live;
  });
}

LyreError* optimizer_destroy(LyreOptimizer_Destroy_Args* a) {
  return guard([&] {
    delete as_sgd(a->optimizer);
    --live;
  });
}

LyreError* optimizer_grad_squared_norm(LyreOptimizer_GradSquaredNorm_Args* a) {
  return guard([&] {
    double s = 0;
    for (float g : as_sgd(a->optimizer)->model->grad) s += double(g) * g;
    a->squared_norm = s;
  });
}

LyreError* optimizer_step(LyreOptimizer_Step_Args* a) {
  return guard([&] {
    Model* m = as_sgd(a->optimizer)->model;
    for (int64_t v = 0; v < m->vocab; ++v) m->bias[v] -= static_cast<float>(a->lr * a->grad_scale * m->grad[v]);
  });
}

// ---- Objective "test-mean": mean negative log-likelihood over loss-mask tokens ----

struct Mean {
  bool reference = false;
  LyreMetric metrics[2];
};

Mean* as_mean(LyreObjective* o) {
  require(o != nullptr, "objective is NULL");
  return reinterpret_cast<Mean*>(o);
}

LyreError* objective_create(LyreObjective_Create_Args* a) {
  return guard([&] {
    nlohmann::json config = parse_config(a->config_json, "objective");
    only_keys(config, {"reference"});
    auto* o = new Mean();
    o->reference = config.value("reference", false);
    a->objective = reinterpret_cast<LyreObjective*>(o);
    a->needs_reference_logp = o->reference ? 1 : 0;
    a->needs_paired_rows = 0;
    ++live;
  });
}

LyreError* objective_destroy(LyreObjective_Destroy_Args* a) {
  return guard([&] {
    delete as_mean(a->objective);
    --live;
  });
}

int64_t count_loss_tokens(const LyreBatch* batch) {
  require(batch != nullptr, "batch is NULL");
  TensorView<int32_t> targets(batch->targets, "targets");
  TensorView<int32_t> mask(batch->loss_mask, "loss_mask");
  require(mask.size() == targets.size(), "loss_mask and targets differ in size");
  int64_t n = 0;
  for (int64_t i = 0; i < targets.size(); ++i) n += targets.data()[i] >= 0 && mask.data()[i] != 0;
  return n;
}

LyreError* objective_normalizer(LyreObjective_Normalizer_Args* a) {
  return guard([&] {
    as_mean(a->objective);
    a->normalizer = static_cast<double>(count_loss_tokens(a->batch));
  });
}

LyreError* objective_compute(LyreObjective_Compute_Args* a) {
  return guard([&] {
    Mean* o = as_mean(a->objective);
    require(a->normalizer > 0, "normalizer must be > 0");
    TensorView<int32_t> targets(a->batch->targets, "targets");
    TensorView<int32_t> mask(a->batch->loss_mask, "loss_mask");
    TensorView<float> logp(a->policy_logp, "policy_logp");
    TensorView<float> dlogp(a->dlogp, "dlogp");
    require(logp.size() == targets.size() && dlogp.size() == targets.size(), "logp/dlogp size differs from batch");
    double loss = 0, tokens = 0, reference_sum = 0;
    for (int64_t i = 0; i < targets.size(); ++i) {
      const bool used = targets.data()[i] >= 0 && mask.data()[i] != 0;
      dlogp.data()[i] = used ? static_cast<float>(-1.0 / a->normalizer) : 0.0f;
      if (used) {
        loss -= logp.data()[i];
        tokens += 1;
      }
    }
    if (o->reference) {
      require(a->reference_logp != nullptr, "reference_logp is NULL but this objective needs it");
      TensorView<float> ref(a->reference_logp, "reference_logp");
      for (int64_t i = 0; i < ref.size(); ++i) reference_sum += ref.data()[i];
    }
    a->loss = loss / a->normalizer;
    o->metrics[0] = LyreMetric{sizeof(LyreMetric), "tokens", tokens};
    o->metrics[1] = LyreMetric{sizeof(LyreMetric), "reference_sum", reference_sum};
    a->metrics = o->metrics;
    a->num_metrics = o->reference ? 2 : 1;
  });
}

}  // namespace

const LyreModelApi model_api = {
    sizeof(LyreModelApi), &model_create,  &model_destroy,  &model_num_parameters, &model_parameter,
    &model_read_tensor,   &model_write_tensor, &model_forward, &model_backward, &model_zero_grad,
    &model_stats,         &model_generate,
};

const LyreModelApi model_api_no_generate = {
    sizeof(LyreModelApi), &model_create,  &model_destroy,  &model_num_parameters, &model_parameter,
    &model_read_tensor,   &model_write_tensor, &model_forward, &model_backward, &model_zero_grad,
    &model_stats,         nullptr,
};

const LyreOptimizerApi optimizer_api = {
    sizeof(LyreOptimizerApi), &optimizer_create, &optimizer_destroy, &optimizer_grad_squared_norm, &optimizer_step,
    nullptr, nullptr, nullptr, nullptr,
};

const LyreObjectiveApi objective_api = {
    sizeof(LyreObjectiveApi), "test-mean", &objective_create, &objective_destroy, &objective_normalizer,
    &objective_compute,
};

LyreError* device_info(LyreBackend_DeviceInfo_Args* a) {
  return guard([&] {
    require(a->device_index == 0, "device " + std::to_string(a->device_index) + " does not exist");
    a->name = "fake test device";
    a->memory_total_bytes = 0;
    a->memory_used_bytes = 0;
    a->memory_peak_bytes = 0;
    a->peak_flops = 0;
  });
}

LyreError* synchronize(LyreBackend_Synchronize_Args*) { return nullptr; }

int live_objects() { return live.load(); }

void log_shutdown(const char* plugin_name) {
  lyre::plugin::log(LYRE_LOG_INFO, plugin_name,
                    "shutdown with " + std::to_string(live_objects()) + " live objects");
}

}  // namespace fake
