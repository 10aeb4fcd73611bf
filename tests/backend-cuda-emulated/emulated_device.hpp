// What the CPU kernels (cpu_kernels.cpp) and the emulation's tests ask of the fake CUDA runtime
// (fake_cudart.cpp): which host memory stands for device memory, which streams exist, and a
// device memory limit to drive the allocator's out-of-memory path.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

namespace lyre::cuda::emulated {

// "" when [p, p + bytes) lies inside one live cudaMalloc block, else why not (NULL, pinned host
// memory, pageable host memory, past the end of a block of n bytes). bytes == 0 is always fine.
std::string device_range_problem(const void* p, size_t bytes);

// Whether `stream` was made by cudaStreamCreate* and not destroyed yet; 0 (the default stream)
// counts as live.
bool stream_is_live(cudaStream_t stream);

// The most bytes cudaMalloc hands out at once before it answers cudaErrorMemoryAllocation; the
// fake device's total memory (80 GiB) by default, 0 restores that.
void set_device_memory_limit(size_t bytes);
// Bytes cudaMalloc holds now (cudaFree gives them back).
size_t device_bytes_held();

}  // namespace lyre::cuda::emulated
