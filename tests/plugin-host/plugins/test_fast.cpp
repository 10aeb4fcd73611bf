// A second sound backend with a higher score (80) and a "backend-" name, whose model cannot
// generate.
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

LyreError* score(LyreBackend_Score_Args* a) {
  a->score = 80;
  a->reason = "faster fake backend";
  return nullptr;
}

const LyreBackendApi backend = {sizeof(LyreBackendApi), &score, &fake::device_info, &fake::synchronize, nullptr};

int initialize_calls = 0;
LyreError* initialize(LyreInitialize_Args*) {
  ++initialize_calls;
  if (initialize_calls > 1) {
    return lyre::plugin::make_error(LYRE_ERROR_FAILED_PRECONDITION, "initialize called twice");
  }
  return nullptr;
}

void shutdown() { fake::log_shutdown("backend-test-fast"); }

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "backend-test-fast", "0.0.1", "a faster fake backend",
    LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER,
    &initialize, &shutdown, &backend, &fake::model_api_no_generate, &fake::optimizer_api, nullptr, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
