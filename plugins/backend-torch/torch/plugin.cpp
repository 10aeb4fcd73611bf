// backend-torch's plugin table, entry point, score and plugin-wide options.
#include <torch/version.h>

#include <string>

#include "counting_allocator.hpp"
#include "glue.hpp"
#include "options.hpp"

namespace lyre::libtorch {

// Below backend-cpu's 100: "auto" never picks the reference; a run asks for it by name.
LyreError* score(LyreBackend_Score_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, reason, "backend-torch score");
    args->score = 10;
    args->reason = "LibTorch " TORCH_VERSION
                   " on CPU: the numerical reference (autograd), fp32 or fp64; chosen only when asked for";
  });
}

namespace {

// {"precision": "fp32" | "fp64", "threads": n}: the default precision of models whose own
// options do not say, and LibTorch's intra-op threads. Installs the counting allocator.
LyreError* initialize(LyreInitialize_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, options_json, "backend-torch initialize");
    const Options options = parse_options(args->options_json, "backend-torch options", /*model_keys=*/false);
    if (options.precision) set_default_precision(*options.precision);
    if (options.threads) apply_threads(options);
    else apply_default_threads();
    if (!install_counting_allocator())
      plugin::log(LYRE_LOG_WARNING, "backend-torch",
                  "another CPU allocator is installed with a higher priority: device_info reports no memory use");
  });
}

const LyrePluginApi kPluginApi = {
    sizeof(LyrePluginApi),
    LYRE_ABI_MAJOR,
    LYRE_ABI_MINOR,
    "backend-torch",
    "0.1.0",
    "LibTorch reference backend: the Llama with autograd in fp32 or fp64, AdamW and SGD from torch::optim",
    LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER,
    initialize,
    nullptr,
    &kBackendApi,
    &kModelApi,
    &kOptimizerApi,
    nullptr,
    nullptr,
};

}  // namespace
}  // namespace lyre::libtorch

LYRE_PLUGIN_ENTRY(lyre::libtorch::kPluginApi)
