// A backend that cannot run anywhere: score 0 with a reason.
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

LyreError* score(LyreBackend_Score_Args* a) {
  a->score = 0;
  a->reason = "no test accelerator present";
  return nullptr;
}

const LyreBackendApi backend = {sizeof(LyreBackendApi), &score, &fake::device_info, &fake::synchronize, nullptr};

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "test-zero-score", "0.0.1", "cannot run here",
    LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL,
    nullptr, nullptr, &backend, &fake::model_api, nullptr, nullptr, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
