// The "sft" objective: mean negative log-likelihood over the loss tokens of the optimizer step.
//   causal_lm   every position with a target (targets >= 0) is a loss token
//   completion  only those whose target lies in the trained part (loss_mask == 1): the
//               completion of a prompt/completion record
// loss = -sum(logp over loss tokens) / normalizer, where the host sums normalizer() over the
// step's micro-batches and ranks, so the step's gradient does not depend on how it was split.
#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace {

using lyre::plugin::Error;
using lyre::plugin::require;
using lyre::plugin::TensorView;

enum class Mode { kCompletion, kCausalLm };

}  // namespace

struct LyreObjective {
  Mode mode = Mode::kCompletion;
  std::vector<LyreMetric> metrics;  // handed out by compute, valid until the next call
};

namespace {

constexpr const char* kName = "objective-sft";

Mode parse_config(const char* config_json) {
  if (config_json == nullptr || *config_json == '\0') return Mode::kCompletion;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(config_json);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, std::string("sft: config is not valid JSON: ") + e.what());
  }
  if (config.is_null()) return Mode::kCompletion;
  require(config.is_object(), std::string("sft: config must be a JSON object, got ") + config.type_name());
  Mode mode = Mode::kCompletion;
  for (const auto& [key, value] : config.items()) {
    if (key != "mode")
      throw Error(LYRE_ERROR_INVALID_ARGUMENT, "sft: unknown config key \"" + key + "\" (known: \"mode\")");
    require(value.is_string(), "sft: \"mode\" must be a string, got " + std::string(value.type_name()));
    const std::string& name = value.get_ref<const std::string&>();
    if (name == "completion") {
      mode = Mode::kCompletion;
    } else if (name == "causal_lm") {
      mode = Mode::kCausalLm;
    } else {
      throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                  "sft: unknown mode \"" + name + "\" (expected \"completion\" or \"causal_lm\")");
    }
  }
  return mode;
}

LyreObjective* checked_objective(LyreObjective* objective) {
  require(objective != nullptr, "sft: objective is NULL");
  return objective;
}

// The batch tensors this objective reads, checked: targets int32 [B,T], and loss_mask int32 [B,T]
// holding only 0 and 1 in completion mode.
struct LossTokens {
  int64_t rows = 0, cols = 0;
  const int32_t* targets = nullptr;
  const int32_t* loss_mask = nullptr;  // NULL in causal_lm mode

  LossTokens(const LyreObjective& objective, const LyreBatch* batch) {
    require(batch != nullptr, "sft: batch is NULL");
    lyre::plugin::require_struct(batch, offsetof(LyreBatch, loss_mask) + sizeof(batch->loss_mask), "sft: batch");
    TensorView<int32_t> t(batch->targets, "batch.targets");
    require(t.ndim() == 2, "batch.targets: expected a 2-d [B,T] tensor, got " + t.shape_string());
    rows = t.dim(0);
    cols = t.dim(1);
    targets = t.data();
    if (objective.mode == Mode::kCompletion) {
      TensorView<int32_t> m(batch->loss_mask, "batch.loss_mask");
      m.expect_shape({rows, cols});
      loss_mask = m.data();
      for (int64_t i = 0; i < rows * cols; ++i)
        require(loss_mask[i] == 0 || loss_mask[i] == 1,
                "batch.loss_mask: value " + std::to_string(loss_mask[i]) + " at [" + std::to_string(i / cols) +
                    "," + std::to_string(i % cols) + "], expected 0 or 1");
    }
  }

  int64_t size() const { return rows * cols; }
  bool is_loss_token(int64_t i) const { return targets[i] >= 0 && (loss_mask == nullptr || loss_mask[i] == 1); }
  int64_t count() const {
    int64_t n = 0;
    for (int64_t i = 0; i < size(); ++i) n += is_loss_token(i) ? 1 : 0;
    return n;
  }
};

LyreError* sft_create(LyreObjective_Create_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreObjective_Create_Args), "sft create");
    auto objective = std::make_unique<LyreObjective>();
    objective->mode = parse_config(args->config_json);
    args->needs_reference_logp = 0;
    args->needs_paired_rows = 0;
    args->objective = objective.release();
  });
}

LyreError* sft_destroy(LyreObjective_Destroy_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreObjective_Destroy_Args), "sft destroy");
    delete args->objective;
    args->objective = nullptr;
  });
}

LyreError* sft_normalizer(LyreObjective_Normalizer_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreObjective_Normalizer_Args), "sft normalizer");
    const LossTokens tokens(*checked_objective(args->objective), args->batch);
    args->normalizer = static_cast<double>(tokens.count());
  });
}

LyreError* sft_compute(LyreObjective_Compute_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreObjective_Compute_Args), "sft compute");
    LyreObjective& objective = *checked_objective(args->objective);
    const LossTokens tokens(objective, args->batch);
    TensorView<float> logp(args->policy_logp, "policy_logp");
    logp.expect_shape({tokens.rows, tokens.cols});
    TensorView<float> dlogp(args->dlogp, "dlogp");
    dlogp.expect_shape({tokens.rows, tokens.cols});
    const double normalizer = args->normalizer;
    require(std::isfinite(normalizer) && normalizer > 0,
            "sft: normalizer must be > 0 (the step's loss-token count), got " + std::to_string(normalizer));

    // Sum first, write after: the caller may hand the same buffer as logp and dlogp.
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < tokens.size(); ++i) {
      if (!tokens.is_loss_token(i)) continue;
      sum += logp.data()[i];
      ++count;
    }
    const float grad = static_cast<float>(-1.0 / normalizer);
    for (int64_t i = 0; i < tokens.size(); ++i) dlogp.data()[i] = tokens.is_loss_token(i) ? grad : 0.0f;

    args->loss = -sum / normalizer;
    objective.metrics.assign(1, LyreMetric{sizeof(LyreMetric), "loss_tokens", static_cast<double>(count)});
    args->metrics = objective.metrics.data();
    args->num_metrics = objective.metrics.size();
  });
}

const LyreObjectiveApi kObjectiveApi = {
    sizeof(LyreObjectiveApi), "sft", sft_create, sft_destroy, sft_normalizer, sft_compute,
};

const LyrePluginApi kPluginApi = {
    sizeof(LyrePluginApi),
    LYRE_ABI_MAJOR,
    LYRE_ABI_MINOR,
    kName,
    "0.1.0",
    "token-mean NLL objective: causal LM (continued pretraining) and SFT on completions",
    LYRE_SLOT_OBJECTIVE,
    nullptr,  // initialize: nothing to set up
    nullptr,  // shutdown
    nullptr,  // backend
    nullptr,  // model
    nullptr,  // optimizer
    &kObjectiveApi,
    nullptr,  // checkpointer
};

}  // namespace

LYRE_PLUGIN_ENTRY(kPluginApi)
