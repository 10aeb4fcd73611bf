// Which backends the parity suite compares, and the model options it gives each: the plugins of
// this build tree, backend-torch as the reference.
#pragma once

#include <string>
#include <vector>

#include "backend_comparison.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::parity {

// This build tree's plugins, discovered once per process.
PluginRegistry& registry();

// backend-torch at "fp32" or "fp64". Throws std::runtime_error naming backend-torch when it is
// not among the plugins or cannot run here: the suite never passes without its reference.
Side torch_side(const std::string& precision = "fp32");

// A backend by plugin name, with the suite's options for it (2 threads where it takes them).
Side side_of(const std::string& plugin_name);

// The plugin names of every backend discovery found that can run here (score > 0), except
// backend-torch (the reference) and backend-cuda (its own test, under the label gpu).
std::vector<std::string> backends_under_test();

}  // namespace lyre::parity
