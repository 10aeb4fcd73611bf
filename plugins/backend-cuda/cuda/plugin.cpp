// backend-cuda's plugin table and entry point: the implementation the light loader
// (../loader.cpp) opens when backend-cuda is chosen. Discovery never looks into this folder.
#include <string>

#include "glue.hpp"

namespace lyre::cuda {

void initialize_device(const char* options_json);  // backend_api.cpp
void release_device();                              // backend_api.cpp

namespace {

// Plugin-wide options {"device": n}: the CUDA device this process uses (cudaSetDevice).
LyreError* initialize(LyreInitialize_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, options_json, "backend-cuda initialize");
    initialize_device(args->options_json);
  });
}

void shutdown() {
  try {
    release_device();
  } catch (...) {  // nothing crosses the C boundary; at exit there is nothing left to free
  }
}

const LyrePluginApi kPluginApi = {
    sizeof(LyrePluginApi),
    LYRE_ABI_MAJOR,
    LYRE_ABI_MINOR,
    "backend-cuda",
    "0.1.0",
    "CUDA backend: Llama in bf16 (fp32 master weights) or fp32 on NVIDIA GPUs, cuBLASLt matmuls, AdamW and SGD",
    LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER,
    initialize,
    shutdown,
    &kBackendApi,
    &kModelApi,
    &kOptimizerApi,
    nullptr,
    nullptr,
};

}  // namespace
}  // namespace lyre::cuda

LYRE_PLUGIN_ENTRY(lyre::cuda::kPluginApi)
