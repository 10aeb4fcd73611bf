#include "parity_backends.hpp"

#include <stdexcept>

namespace lyre::parity {

PluginRegistry& registry() {
  static PluginRegistry r = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  return r;
}

Side torch_side(const std::string& precision) {
  std::shared_ptr<LoadedPlugin> plugin;
  try {
    plugin = registry().backend("backend-torch");
  } catch (const std::exception& e) {
    throw std::runtime_error(
        "backend-torch, the parity suite's reference, cannot be used: " + std::string(e.what()) +
        "\nBuild the target lyre-backend-torch (it needs LibTorch) into " LYRE_TEST_PLUGIN_DIR);
  }
  return {plugin, R"({"precision": ")" + precision + R"(", "threads": 2})"};
}

Side side_of(const std::string& plugin_name) {
  const std::string options = plugin_name == "backend-cpu" ? R"({"threads": 2})" : "";
  return {registry().backend(plugin_name), options};
}

std::vector<std::string> backends_under_test() {
  std::vector<std::string> names;
  for (const PluginReport& r : registry().reports()) {
    if (r.loaded && r.is_backend && r.score > 0 && r.name != "backend-torch" && r.name != "backend-cuda")
      names.push_back(r.name);
  }
  return names;
}

}  // namespace lyre::parity
