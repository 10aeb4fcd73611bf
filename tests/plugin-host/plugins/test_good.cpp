// A sound plugin with every slot the host handles: backend (score 50), model, optimizer and the
// "test-mean" objective. Logs its live objects at shutdown.
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

LyreError* score(LyreBackend_Score_Args* a) {
  a->score = 50;
  a->reason = "fake backend for tests";
  return nullptr;
}

const LyreBackendApi backend = {sizeof(LyreBackendApi), &score, &fake::device_info, &fake::synchronize, nullptr};

void shutdown() { fake::log_shutdown("test-good"); }

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "test-good", "1.2.3", "the sound test plugin",
    LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER | LYRE_SLOT_OBJECTIVE,
    nullptr, &shutdown, &backend, &fake::model_api, &fake::optimizer_api, &fake::objective_api, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
