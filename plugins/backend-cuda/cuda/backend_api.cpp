// The Backend slot: can we run here (score, from the driver alone), which device this process
// uses (chosen at initialize), what it is (device_info), waiting for it (synchronize), and the
// gradient all-reduce over the host's transport.
#include <string>

#include "device_memory.hpp"
#include "driver_probe.hpp"
#include "glue.hpp"
#include "options.hpp"

namespace lyre::cuda {
namespace {

using plugin::Error;

// What initialize found; read by every later entry.
struct DeviceState {
  bool initialized = false;
  int index = 0;  // the CUDA device ordinal (after CUDA_VISIBLE_DEVICES)
  double peak_flops = 0;
  std::string name;  // "cuda:0 NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)"
};

DeviceState& device_state() {
  static DeviceState state;
  return state;
}

// Dense bf16 tensor-core peak in FLOP/s: the MFU denominator. A model in "fp32" precision trains
// without tensor cores and reaches a fraction of it, but device_info knows no model: it states
// the peak of bf16, backend-cuda's default precision. 0 for an architecture not listed.
double bf16_peak_flops(int major, int minor, int sms, int clock_khz) {
  const int cc = major * 10 + minor;
  // Datasheet figures where capability and SM count name the part: they are quoted at a
  // sustained boost clock below the peak clock the driver reports (H100 SXM: 1.83 vs 1.98 GHz).
  struct Datasheet {
    int cc, sms;
    double flops;
  };
  static constexpr Datasheet kDatasheets[] = {
      {80, 108, 312e12},    // A100 (SXM4, PCIe), A800: 108 SMs x 1.41 GHz x 2048
      {90, 132, 989.4e12},  // H100 SXM, H200, GH200, H800: 132 SMs x 1.83 GHz x 4096 (the H100 NVL,
                            // also 132 SMs, is rated lower: 835e12)
      {90, 114, 756.4e12},  // H100 PCIe: 114 SMs x 1.62 GHz x 4096
      {90, 78, 148e12},     // H20: tensor throughput capped far below its SMs x clock
  };
  for (const Datasheet& d : kDatasheets)
    if (d.cc == cc && d.sms == sms) return d.flops;
  // Otherwise SMs x clock x dense bf16 FLOP per clock per SM (fp32 accumulation; 2 per FMA):
  // Ampere GA100 1024 FMA, GA10x and Ada 512 FMA (the data-center parts; GeForce halves it with
  // fp32 accumulation), Hopper 2048 FMA, Blackwell B200/B300 4096 FMA.
  double per_sm_clock = 0;
  switch (cc) {
    case 80: per_sm_clock = 2048; break;
    case 86: case 89: per_sm_clock = 1024; break;
    case 90: per_sm_clock = 4096; break;
    case 100: case 103: per_sm_clock = 8192; break;
    default: return 0;
  }
  return static_cast<double>(sms) * clock_khz * 1e3 * per_sm_clock;
}

void require_initialized(const char* what) {
  if (!device_state().initialized)
    throw Error(LYRE_ERROR_FAILED_PRECONDITION, std::string("backend-cuda: ") + what + " called before initialize");
}

// The ABI's device_index 0 is the one device this process uses (initialize's "device").
void require_device_zero(int32_t index) {
  if (index != 0)
    throw Error(LYRE_ERROR_NOT_FOUND, "backend-cuda uses one device per process (index 0, CUDA device " +
                                          std::to_string(device_state().index) + "), asked for " +
                                          std::to_string(index));
}

LyreError* device_info(LyreBackend_DeviceInfo_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, peak_flops, "backend-cuda device_info");
    require_initialized("device_info");
    require_device_zero(args->device_index);
    const DeviceState& d = device_state();
    LYRE_CUDA_CHECK(cudaSetDevice(d.index));
    size_t free_bytes = 0, total_bytes = 0;
    LYRE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const MemoryUsage used = memory_usage();
    args->name = d.name.c_str();
    args->memory_total_bytes = total_bytes;
    args->memory_used_bytes = static_cast<uint64_t>(used.current);
    args->memory_peak_bytes = static_cast<uint64_t>(used.peak);
    args->peak_flops = d.peak_flops;
  });
}

LyreError* synchronize(LyreBackend_Synchronize_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, device_index, "backend-cuda synchronize");
    require_device_zero(args->device_index);
    if (!device_state().initialized) return;  // nothing can be queued yet
    LYRE_CUDA_CHECK(cudaSetDevice(device_state().index));
    LYRE_CUDA_CHECK(cudaDeviceSynchronize());
  });
}

LyreError* all_reduce(LyreBackend_AllReduceGradients_Args* args) {
  LyreError* host_error = nullptr;
  LyreError* error = plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-cuda all_reduce_gradients");
    host_error = all_reduce_gradients(args->model);
  });
  return error != nullptr ? error : host_error;
}

// The driver's answer (driver_probe.cpp), the same code the light loader scores with.
LyreError* score(LyreBackend_Score_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, reason, "backend-cuda score");
#ifdef LYRE_CUDA_EMULATED
    // tests/backend-cuda-emulated: no driver to ask. 1, below every real backend, so that "auto"
    // never prefers the emulation where it shares a search path with one.
    args->score = 1;
    args->reason = "emulated on the CPU for tests (no kernels of backend-cuda run)";
#else
    const DriverProbe& probe = probe_driver();
    args->score = probe.usable ? kUsableScore : 0;
    args->reason = probe.reason.c_str();
#endif
  });
}

}  // namespace

// Chooses the device of the plugin options and reads what device_info reports. A second call
// (the host initializes once; a test may call again) may not move to another device: models made
// before live on the first.
void initialize_device(const char* options_json) {
  const PluginOptions options = parse_plugin_options(options_json);
  DeviceState& d = device_state();
  if (d.initialized) {
    if (options.device != d.index)
      throw Error(LYRE_ERROR_FAILED_PRECONDITION, "backend-cuda options: \"device\" " +
                                                      std::to_string(options.device) + ", but backend-cuda runs on " +
                                                      "CUDA device " + std::to_string(d.index) + " already");
    return;
  }
  int count = 0;
  if (const cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    cudaGetLastError();
    throw Error(LYRE_ERROR_UNAVAILABLE, std::string("backend-cuda: no usable CUDA device: ") +
                                            cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")" +
                                            visible_devices_note());
  }
  if (options.device >= count)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda options: \"device\" " + std::to_string(options.device) +
                                                 " does not exist: " + std::to_string(count) + " CUDA device" +
                                                 (count == 1 ? " is" : "s are") + " visible" +
                                                 visible_devices_note());
  DeviceState next;
  next.index = options.device;
  cudaDeviceProp p{};
  LYRE_CUDA_CHECK(cudaGetDeviceProperties(&p, next.index));
  if (p.major < 8)
    throw Error(LYRE_ERROR_UNAVAILABLE, "backend-cuda: CUDA device " + std::to_string(next.index) + ", " + p.name +
                                            ", has compute capability " + std::to_string(p.major) + "." +
                                            std::to_string(p.minor) +
                                            ": needs 8.0 or newer (Ampere or later) for bf16");
  LYRE_CUDA_CHECK(cudaSetDevice(next.index));  // makes the primary context current
  int clock_khz = 0;  // the peak SM clock (cudaDeviceProp lost its clockRate in CUDA 13)
  LYRE_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, next.index));
  next.peak_flops = bf16_peak_flops(p.major, p.minor, p.multiProcessorCount, clock_khz);
  next.name = "cuda:" + std::to_string(next.index) + " " + p.name + " (sm_" + std::to_string(p.major) +
              std::to_string(p.minor) + ", " + std::to_string(p.multiProcessorCount) + " SMs)";
  next.initialized = true;
  d = next;
}

// After every object of the plugin is gone: the cached device blocks go back to the driver.
void release_device() {
  if (device_state().initialized) device_release_cached();
}

int current_device() { return device_state().index; }

extern const LyreBackendApi kBackendApi = {sizeof(LyreBackendApi), score, device_info, synchronize, all_reduce};

}  // namespace lyre::cuda
