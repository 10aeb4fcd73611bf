// The Backend slot: can we run here (score), what the device is (device_info), and the
// gradient all-reduce over the host's transport.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "lyre/plugin.hpp"
#include "model/peak_flops.hpp"
#include "model/llama_model.hpp"
#include "model/memory_tracker.hpp"

namespace lyre::cpu::glue {

LlamaModel<float>& cpu_model(LyreModel* model);  // model_api.cpp

namespace {

// Nothing but CPUID here: this must run (and answer 0) on a CPU without AVX2.
LyreError* score(LyreBackend_Score_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, offsetof(LyreBackend_Score_Args, reason) + sizeof(const char*),
                           "backend-cpu score");
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    const bool ok = false;
#endif
    args->score = ok ? 100 : 0;
    args->reason = ok ? "x86-64 with AVX2+FMA: fp32, oneDNN matmuls, OpenMP kernels"
                      : "needs AVX2 and FMA";
  });
}

LyreError* device_info(LyreBackend_DeviceInfo_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, offsetof(LyreBackend_DeviceInfo_Args, peak_flops) + sizeof(double),
                           "backend-cpu device_info");
    if (args->device_index != 0)
      throw plugin::Error(LYRE_ERROR_NOT_FOUND, "backend-cpu has one device (0), asked for " +
                                                    std::to_string(args->device_index));
    const int threads = omp_get_max_threads();
    // oneDNN's GEMMs run on the widest vector unit the CPU has; the peak is measured on it.
    const bool avx512 = __builtin_cpu_supports("avx512f");
    static std::string name;  // "valid until the library is unloaded": the latest answer
    name = "cpu: " + std::to_string(threads) + (threads == 1 ? " thread" : " threads") +
           (avx512 ? ", avx512f (oneDNN GEMMs)" : ", avx2+fma");
    args->name = name.c_str();
    const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    args->memory_total_bytes =
        pages > 0 && page_size > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size) : 0;
    const MemoryUsage used = memory_usage();
    args->memory_used_bytes = static_cast<uint64_t>(used.current);
    args->memory_peak_bytes = static_cast<uint64_t>(used.peak);
    // fp32 dense peak, measured (model/peak_flops.hpp): the reported clock of a VM is its base
    // clock, so cores x FLOP/cycle x clock understates a boosting CPU and MFU would exceed 100%.
    args->peak_flops = measured_peak_flops(threads);
  });
}

LyreError* synchronize(LyreBackend_Synchronize_Args* args) {
  return plugin::guard([&] {
    plugin::require_struct(args, offsetof(LyreBackend_Synchronize_Args, device_index) + sizeof(int32_t),
                           "backend-cpu synchronize");
    if (args->device_index != 0)
      throw plugin::Error(LYRE_ERROR_NOT_FOUND, "backend-cpu has one device (0), asked for " +
                                                    std::to_string(args->device_index));
    // Every call returns with its work done: nothing is queued.
  });
}

// The gradients are one contiguous float32 buffer: one host all-reduce call sums them all.
LyreError* all_reduce_gradients(LyreBackend_AllReduceGradients_Args* args) {
  const LyreHostApi* host = plugin::host();
  if (host != nullptr && args != nullptr && args->model != nullptr &&
      args->struct_size >= offsetof(LyreBackend_AllReduceGradients_Args, model) + sizeof(void*)) {
    ParameterStore<float>* store = nullptr;
    LyreError* err = plugin::guard([&] { store = &cpu_model(args->model).params(); });
    if (err != nullptr) return err;
    if (host->world_size <= 1 || store->total_numel() == 0) return nullptr;
    return host->all_reduce_f32(store->grads(), store->total_numel(), LYRE_REDUCE_SUM);
  }
  return plugin::guard([&] {
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                        "backend-cpu all_reduce_gradients: needs a host, args and a model");
  });
}

}  // namespace

extern const LyreBackendApi kBackendApi = {
    sizeof(LyreBackendApi), score, device_info, synchronize, all_reduce_gradients,
};

}  // namespace lyre::cpu::glue
