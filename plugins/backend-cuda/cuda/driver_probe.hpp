// "Can backend-cuda run here", asked of the NVIDIA driver alone: libcuda.so.1 through dlopen and
// the driver API through dlsym. Nothing of the CUDA runtime is loaded, no context is made, no
// memory allocated, so the light loader (loader.cpp) and the implementation (plugin.cpp) both
// call it and always agree.
#pragma once

#include <cstdint>
#include <string>

namespace lyre::cuda {

// The score of a usable device: above backend-cpu's 100, so "auto" picks the GPU where one runs.
inline constexpr int32_t kUsableScore = 1000;

struct DriverProbe {
  // A driver for this build's CUDA major version, and device 0 (after CUDA_VISIBLE_DEVICES) of
  // compute capability >= 8.0 that this build has code for.
  bool usable = false;
  // Why not, naming the failing call, version or device; or what was found:
  // "NVIDIA H100 80GB HBM3 (sm_90, 79.2 GiB), driver 13.0, CUDA 13.0".
  std::string reason;
};

// Asks once per process (cuInit and a few attribute queries); later calls return that answer.
const DriverProbe& probe_driver();

// ' (CUDA_VISIBLE_DEVICES="...")' when it is set, else "": for messages about missing devices.
std::string visible_devices_note();

}  // namespace lyre::cuda
