// Which backends the parity suite compares, and the model options it gives each: the plugins of
// this build tree, backend-torch as the reference (live, or from golden files for backend-cuda).
#pragma once

#include <string>
#include <vector>

#include "backend_comparison.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::parity {

// Names a folder searched before the build tree's plugins, whose liblyre-backend-cuda.so then
// stands in for backend-cuda: tests/backend-cuda-emulated's CPU emulation, in CI.
constexpr const char* kCudaPluginDirEnv = "LYRE_PARITY_CUDA_PLUGIN_DIR";

// This build tree's plugins (and $LYRE_PARITY_CUDA_PLUGIN_DIR's first), discovered once per process.
PluginRegistry& registry();

// backend-torch at "fp32" or "fp64". Throws std::runtime_error naming backend-torch when it is
// not among the plugins or cannot run here: the suite never passes without its reference.
Side torch_side(const std::string& precision = "fp32");

// A backend by plugin name, with the suite's options for it (2 threads where it takes them).
Side side_of(const std::string& plugin_name);

// backend-cuda with {"precision": "bf16" | "fp32"}.
Side cuda_side(const std::string& precision);

// The plugin names of every backend discovery found that can run here (score > 0), except
// backend-torch (the reference) and backend-cuda (its own tests, under the label gpu).
std::vector<std::string> backends_under_test();

// Ends the process with exit code 77 (CTest's "skipped" for the gpu tests) and a line saying why
// when backend-cuda is not among this build's plugins or scores 0 here (no usable GPU).
void skip_unless_backend_cuda_runs();

// The backend-cuda tests' reference, computed once per process: the golden folder that
// $LYRE_PARITY_GOLDEN names when it is set (read_golden; a missing or malformed file throws,
// naming it), else live backend-torch at fp64 (what parity_golden_writer writes; throws naming
// backend-torch when it cannot run).
const Reference& gpu_reference();

}  // namespace lyre::parity
