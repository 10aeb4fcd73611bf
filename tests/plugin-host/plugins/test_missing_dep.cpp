// A sound plugin that needs a shared library the loader cannot find at run time.
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

int lyre_test_dep_value();  // in liblyre_test_dep.so, built into a folder off the search path

namespace {

LyreError* initialize(LyreInitialize_Args*) {
  return lyre_test_dep_value() == 42 ? nullptr : lyre::plugin::make_error(LYRE_ERROR_INTERNAL, "wrong dep");
}

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "test-missing-dep", "0.0.1", "needs a missing library",
    LYRE_SLOT_OBJECTIVE,
    &initialize, nullptr, nullptr, nullptr, nullptr, &fake::objective_api, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
