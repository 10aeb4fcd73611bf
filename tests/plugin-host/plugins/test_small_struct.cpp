// A LyrePluginApi whose struct_size covers only the version prefix.
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

const LyrePluginApi api = {
    16, LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "test-small-struct", "0.0.1", "struct_size too small",
    LYRE_SLOT_OBJECTIVE,
    nullptr, nullptr, nullptr, nullptr, nullptr, &fake::objective_api, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
