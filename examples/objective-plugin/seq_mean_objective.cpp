// "seq-mean": each sequence's mean token NLL, averaged over sequences, so that long completions
// do not outweigh short ones (the SFT objective averages over tokens instead).
//
// An example of a user's objective, built against the installed SDK only (lyre/plugin.hpp).
// loss = (1/S) * sum_s (1/n_s) * sum_{t in s} -logp[t], where the normaliser S counts the
// sequences of the whole optimizer step that have at least one loss token.
#include <cstring>
#include <new>
#include <string>

#include "lyre/plugin.hpp"

namespace {

using lyre::plugin::TensorView;

struct SeqMean {
  LyreMetric metric{sizeof(LyreMetric), "sequences", 0.0};
};

// Loss tokens: a target to predict, inside the trained part (loss_mask).
bool is_loss_token(const int32_t* targets, const int32_t* mask, int64_t i) {
  return targets[i] >= 0 && mask[i] == 1;
}

LyreError* create(LyreObjective_Create_Args* a) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(a, sizeof(LyreObjective_Create_Args), "seq-mean create");
    const char* config = a->config_json;
    if (config != nullptr && std::strcmp(config, "") != 0 && std::strcmp(config, "{}") != 0 &&
        std::strcmp(config, "null") != 0) {
      throw lyre::plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                                std::string("seq-mean takes no options, got ") + config);
    }
    a->objective = reinterpret_cast<LyreObjective*>(new SeqMean());
    a->needs_reference_logp = 0;
    a->needs_paired_rows = 0;
  });
}

LyreError* destroy(LyreObjective_Destroy_Args* a) {
  return lyre::plugin::guard([&] { delete reinterpret_cast<SeqMean*>(a->objective); });
}

LyreError* normalizer(LyreObjective_Normalizer_Args* a) {
  return lyre::plugin::guard([&] {
    TensorView<int32_t> targets(a->batch->targets, "targets"), mask(a->batch->loss_mask, "loss_mask");
    const int64_t B = targets.dim(0), T = targets.dim(1);
    double sequences = 0;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        if (is_loss_token(targets.data(), mask.data(), b * T + t)) {
          sequences += 1;
          break;
        }
      }
    }
    a->normalizer = sequences;
  });
}

LyreError* compute(LyreObjective_Compute_Args* a) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require(a->normalizer > 0, "seq-mean: normalizer must be positive");
    TensorView<int32_t> targets(a->batch->targets, "targets"), mask(a->batch->loss_mask, "loss_mask");
    const int64_t B = targets.dim(0), T = targets.dim(1);
    TensorView<float> logp(a->policy_logp, "policy_logp"), dlogp(a->dlogp, "dlogp");
    logp.expect_shape({B, T});
    dlogp.expect_shape({B, T});
    double loss = 0;
    int64_t sequences = 0;
    for (int64_t b = 0; b < B; ++b) {
      int64_t n = 0;
      double sum = 0;
      for (int64_t t = 0; t < T; ++t) {
        if (is_loss_token(targets.data(), mask.data(), b * T + t)) ++n, sum -= logp.data()[b * T + t];
      }
      const double scale = n > 0 ? 1.0 / (static_cast<double>(n) * a->normalizer) : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const bool counted = is_loss_token(targets.data(), mask.data(), b * T + t);
        dlogp.data()[b * T + t] = counted ? static_cast<float>(-scale) : 0.0f;
      }
      loss += sum * scale;
      sequences += n > 0;
    }
    a->loss = loss;
    SeqMean* self = reinterpret_cast<SeqMean*>(a->objective);
    self->metric.value = static_cast<double>(sequences);
    a->metrics = &self->metric;
    a->num_metrics = 1;
  });
}

const LyreObjectiveApi kObjective = {sizeof(LyreObjectiveApi), "seq-mean", create, destroy, normalizer, compute};

const LyrePluginApi kPlugin = {sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR,
                               "objective-seq-mean", "0.1.0",
                               "example: per-sequence mean NLL, averaged over sequences",
                               LYRE_SLOT_OBJECTIVE, nullptr, nullptr,
                               nullptr, nullptr, nullptr, &kObjective, nullptr};

}  // namespace

LYRE_PLUGIN_ENTRY(kPlugin)
