// backend-torch's plugin file: a light table the host can discover and score without loading
// LibTorch. Loading LibTorch costs every process that does it about 0.3 s and 150 MB resident
// (measured: dlopen of libtorch.so, RSS 3 MB -> 155 MB), and the host opens every plugin it
// finds, also in runs that train on another backend.
//
// initialize() opens the implementation, torch/liblyre-backend-torch-impl.so beside this file
// (a plugin in its own right, torch/plugin.cpp, built into a folder discovery does not look
// into), with RTLD_LOCAL, and from then on every entry forwards to it (lyre/lazy_backend.hpp).
// Neither library is ever unloaded (-z nodelete): LibTorch keeps thread pools and the CPU
// allocator backend-torch installs.
#include <sys/stat.h>
#include <torch/version.h>

#include <string>

#include "lyre/lazy_backend.hpp"

namespace lyre::torch_backend::loader {

namespace {

// Score without LibTorch: the implementation must be there to be loaded later.
LyreError* score(LyreBackend_Score_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, reason, "backend-torch score");
    struct stat st {};
    static const std::string path = plugin::lazy::implementation_path();
    const bool present = ::stat(path.c_str(), &st) == 0;
    args->score = present ? 10 : 0;
    args->reason = present ? "LibTorch " TORCH_VERSION
                             " on CPU: the numerical reference (autograd), fp32 or fp64; chosen only when asked for"
                           : "its LibTorch implementation (torch/liblyre-backend-torch-impl.so) is missing";
  });
}

const LyrePluginApi kPluginApi = plugin::lazy::plugin_table<score>(
    "backend-torch", "0.1.0",
    "LibTorch reference backend: the same Llama with autograd, AdamW and SGD (loads LibTorch when chosen)",
    "torch/liblyre-backend-torch-impl.so");

}  // namespace

}  // namespace lyre::torch_backend::loader

LYRE_PLUGIN_ENTRY(lyre::torch_backend::loader::kPluginApi)
