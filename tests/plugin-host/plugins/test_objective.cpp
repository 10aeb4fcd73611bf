// An objective-only plugin ("objective-test", objective "test-objective-mean").
#include "fake_parts.hpp"
#include "lyre/plugin.hpp"

namespace {

const LyreObjectiveApi objective = [] {
  LyreObjectiveApi t = fake::objective_api;
  t.name = "test-objective-mean";
  return t;
}();

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "objective-test", "0.0.1", "an objective only",
    LYRE_SLOT_OBJECTIVE,
    nullptr, nullptr, nullptr, nullptr, nullptr, &objective, nullptr,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
