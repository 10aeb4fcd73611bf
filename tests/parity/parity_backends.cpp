#include "parity_backends.hpp"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "golden_files.hpp"

namespace lyre::parity {

PluginRegistry& registry() {
  static PluginRegistry r = [] {
    std::vector<std::string> dirs{LYRE_TEST_PLUGIN_DIR};
    // First on the path, its liblyre-backend-cuda.so shadows the build tree's (the CPU emulation's).
    if (const char* cuda_dir = std::getenv(kCudaPluginDirEnv); cuda_dir != nullptr && *cuda_dir != '\0')
      dirs.insert(dirs.begin(), cuda_dir);
    return PluginRegistry::discover(dirs);
  }();
  return r;
}

Side torch_side(const std::string& precision) {
  std::shared_ptr<LoadedPlugin> plugin;
  try {
    plugin = registry().backend("backend-torch");
  } catch (const std::exception& e) {
    throw std::runtime_error(
        "backend-torch, the parity suite's reference, cannot be used: " + std::string(e.what()) +
        "\nBuild the target lyre-backend-torch (it needs LibTorch) into " LYRE_TEST_PLUGIN_DIR
        ", or (backend-cuda's tests) name a folder of golden files that parity_golden_writer wrote "
        "in the environment variable " + std::string(kGoldenEnv));
  }
  return {plugin, R"({"precision": ")" + precision + R"(", "threads": 2})"};
}

Side side_of(const std::string& plugin_name) {
  const std::string options = plugin_name == "backend-cpu" ? R"({"threads": 2})" : "";
  return {registry().backend(plugin_name), options};
}

Side cuda_side(const std::string& precision) {
  return {registry().backend("backend-cuda"), R"({"precision": ")" + precision + R"("})"};
}

std::vector<std::string> backends_under_test() {
  std::vector<std::string> names;
  for (const PluginReport& r : registry().reports()) {
    if (r.loaded && r.is_backend && r.score > 0 && r.name != "backend-torch" && r.name != "backend-cuda")
      names.push_back(r.name);
  }
  return names;
}

void skip_unless_backend_cuda_runs() {
  const PluginReport* cuda = nullptr;
  for (const PluginReport& r : registry().reports())
    if (r.loaded && r.name == "backend-cuda") cuda = &r;
  if (cuda != nullptr && cuda->score > 0) return;
  std::printf("skipped: %s\n", cuda == nullptr
                                   ? "backend-cuda is not among this build's plugins (" LYRE_TEST_PLUGIN_DIR
                                     ", or the folder $LYRE_PARITY_CUDA_PLUGIN_DIR names)"
                                   : ("backend-cuda cannot run here: " + cuda->score_reason).c_str());
  std::fflush(stdout);
  std::exit(77);
}

const Reference& gpu_reference() {
  static const Reference reference = [] {
    const char* dir = std::getenv(kGoldenEnv);
    return dir != nullptr && *dir != '\0' ? read_golden(dir) : live_reference(torch_side("fp64"));
  }();
  return reference;
}

}  // namespace lyre::parity
