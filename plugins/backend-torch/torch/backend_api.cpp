// The Backend slot: what the device is (device_info), that nothing is queued (synchronize), and
// the gradient all-reduce over the host's transport. score() lives in plugin.cpp.
#include <ATen/Parallel.h>
#include <torch/version.h>
#include <unistd.h>

#include <string>

#include "counting_allocator.hpp"
#include "glue.hpp"

namespace lyre::libtorch {

LyreError* score(LyreBackend_Score_Args* args);  // plugin.cpp

namespace {

void require_device_zero(int32_t index) {
  if (index != 0)
    throw plugin::Error(LYRE_ERROR_NOT_FOUND, "backend-torch has one device (0), asked for " + std::to_string(index));
}

LyreError* device_info(LyreBackend_DeviceInfo_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, peak_flops, "backend-torch device_info");
    require_device_zero(args->device_index);
    const int threads = at::get_num_threads();
    static std::string name;  // "valid until the library is unloaded": the latest answer
    name = "torch cpu: " + std::to_string(threads) + (threads == 1 ? " thread" : " threads") +
           " (LibTorch " TORCH_VERSION ")";
    args->name = name.c_str();
    const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    args->memory_total_bytes =
        pages > 0 && page_size > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size) : 0;
    const MemoryCount used = memory_count();
    args->memory_used_bytes = static_cast<uint64_t>(used.current);
    args->memory_peak_bytes = static_cast<uint64_t>(used.peak);
    args->peak_flops = 0;  // unknown: a reference backend states no MFU denominator
  });
}

LyreError* synchronize(LyreBackend_Synchronize_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, device_index, "backend-torch synchronize");
    require_device_zero(args->device_index);
    // LibTorch on the CPU returns from every op with its work done: nothing is queued.
  });
}

LyreError* all_reduce(LyreBackend_AllReduceGradients_Args* args) {
  LyreError* host_error = nullptr;
  LyreError* error = plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, model, "backend-torch all_reduce_gradients");
    host_error = all_reduce_gradients(args->model);
  });
  return error != nullptr ? error : host_error;
}

}  // namespace

extern const LyreBackendApi kBackendApi = {sizeof(LyreBackendApi), score, device_info, synchronize, all_reduce};

}  // namespace lyre::libtorch
