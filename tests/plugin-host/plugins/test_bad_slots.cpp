// Says it is a backend in `slots` but has no backend table.
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "test-bad-slots", "0.0.1", "slots lie",
    LYRE_SLOT_BACKEND | LYRE_SLOT_OBJECTIVE,
    nullptr, nullptr, nullptr, nullptr, nullptr, &fake::objective_api, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
