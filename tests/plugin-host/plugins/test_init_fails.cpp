// Scores highest (90) but its initialize fails, counting its attempts in the message. It also
// fills the objective slot ("init-fails").
#include <string>

#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

LyreError* score(LyreBackend_Score_Args* a) {
  a->score = 90;
  a->reason = "looks fast, fails to start";
  return nullptr;
}

const LyreBackendApi backend = {sizeof(LyreBackendApi), &score, &fake::device_info, &fake::synchronize, nullptr};

int attempts = 0;
LyreError* initialize(LyreInitialize_Args*) {
  ++attempts;
  return lyre::plugin::make_error(LYRE_ERROR_UNAVAILABLE,
                                  "test accelerator refused to start (attempt " + std::to_string(attempts) + ")");
}

const LyreObjectiveApi objective = [] {
  LyreObjectiveApi t = fake::objective_api;
  t.name = "init-fails";
  return t;
}();

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "test-init-fails", "0.0.1", "initialize always fails",
    LYRE_SLOT_BACKEND | LYRE_SLOT_OBJECTIVE,
    &initialize, nullptr, &backend, nullptr, nullptr, &objective, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
