// backend-cuda's plugin file: a light table the host can discover and score on any machine,
// with or without an NVIDIA driver. The host opens every plugin it finds, also in runs that train
// on another backend; this one links nothing of CUDA, and score() asks the driver itself
// (cuda/driver_probe.cpp: dlopen of libcuda.so.1, a few driver API calls, no context).
//
// initialize() opens the implementation, cuda/liblyre-backend-cuda-impl.so beside this file (a
// plugin in its own right, cuda/plugin.cpp, in a folder discovery does not look into), with
// RTLD_LOCAL, and from then on every entry forwards to it (lyre/lazy_backend.hpp). Neither
// library is ever unloaded (-z nodelete): the CUDA runtime and cuBLASLt keep process-wide state.
#include <sys/stat.h>

#include <string>

#include "cuda/driver_probe.hpp"
#include "lyre/lazy_backend.hpp"

namespace lyre::cuda::loader {

namespace {

constexpr const char* kImplFile = "cuda/liblyre-backend-cuda-impl.so";

struct Score {
  int32_t score = 0;
  std::string reason;
};

// The driver's answer, then the implementation file this table would load. Asked once: the
// reason handed out must stay valid, and the answer does not change within a process.
const Score& score_here() {
  static const Score answer = [] {
    const DriverProbe& driver = probe_driver();
    if (!driver.usable) return Score{0, driver.reason};
    struct stat st {};
    const std::string path = plugin::lazy::implementation_path();
    if (::stat(path.c_str(), &st) != 0)
      return Score{0, std::string("its CUDA implementation (") + kImplFile + ") is missing: looked for " + path};
    return Score{kUsableScore, driver.reason};
  }();
  return answer;
}

LyreError* score(LyreBackend_Score_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, reason, "backend-cuda score");
    const Score& s = score_here();
    args->score = s.score;
    args->reason = s.reason.c_str();
  });
}

const LyrePluginApi kPluginApi = plugin::lazy::plugin_table<score>(
    "backend-cuda", "0.1.0",
    "CUDA backend: Llama in bf16 (fp32 master weights) or fp32 on NVIDIA GPUs, cuBLASLt matmuls, AdamW and SGD "
    "(loads CUDA when chosen)",
    kImplFile);

}  // namespace

}  // namespace lyre::cuda::loader

LYRE_PLUGIN_ENTRY(lyre::cuda::loader::kPluginApi)
