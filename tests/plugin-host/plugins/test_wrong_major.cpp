// Claims ABI 2.0: the host must refuse it naming both versions.
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

const LyrePluginApi api = {
    sizeof(LyrePluginApi), 2, 0, "test-wrong-major", "0.0.1", "built for another major",
    LYRE_SLOT_OBJECTIVE,
    nullptr, nullptr, nullptr, nullptr, nullptr, &fake::objective_api, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
