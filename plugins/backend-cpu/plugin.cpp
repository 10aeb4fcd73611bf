// backend-cpu's plugin table and entry point.
//
// This file and the other top-level *.cpp are compiled WITHOUT AVX flags: lyre_plugin_init and
// score() must run on any x86-64 and say "cannot run here" rather than fault. Everything that
// uses AVX2/FMA lives in model/ and layers/ and is reached only after score() said yes.
#include <omp.h>

#include <string>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace lyre::cpu::glue {

extern const LyreBackendApi kBackendApi;  // backend_api.cpp
extern const LyreModelApi kModelApi;      // model_api.cpp
extern const LyreOptimizerApi kOptimizerApi;  // optimizer_api.cpp

namespace {

// Plugin-wide options: {"threads": n} sets the OpenMP thread count (as the model option does).
LyreError* initialize(LyreInitialize_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, offsetof(LyreInitialize_Args, options_json) + sizeof(const char*),
                           "backend-cpu initialize");
    if (args->options_json == nullptr) return;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(args->options_json);
    } catch (const nlohmann::json::parse_error& e) {
      throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                          std::string("backend-cpu options: not valid JSON: ") + e.what());
    }
    if (j.is_null()) return;
    plugin::require(j.is_object(), "backend-cpu options: expected a JSON object, got " + j.dump());
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() != "threads")
        throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                            "backend-cpu options: unknown key \"" + it.key() + "\" (known: threads)");
      plugin::require(it->is_number_integer() && it->get<int64_t>() >= 1,
                      "backend-cpu options: \"threads\" must be an integer >= 1, got " + it->dump());
      omp_set_num_threads(static_cast<int>(it->get<int64_t>()));
    }
  });
}

const LyrePluginApi kPluginApi = {
    sizeof(LyrePluginApi),
    LYRE_ABI_MAJOR,
    LYRE_ABI_MINOR,
    "backend-cpu",
    "0.1.0",
    "CPU backend: Llama in fp32 with oneDNN matmuls and AVX2/OpenMP kernels, AdamW and SGD",
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
}  // namespace lyre::cpu::glue

LYRE_PLUGIN_ENTRY(lyre::cpu::glue::kPluginApi)
