#include "device_memory.hpp"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.hpp"

namespace lyre::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  std::string where = file;
  const size_t slash = where.rfind('/');
  if (slash != std::string::npos) where = where.substr(slash + 1);
  const LyreErrorCode code = status == cudaErrorMemoryAllocation ? LYRE_ERROR_OUT_OF_MEMORY : LYRE_ERROR_INTERNAL;
  throw plugin::Error(code, std::string("backend-cuda: ") + call + " failed at " + where + ":" +
                                std::to_string(line) + ": " + cudaGetErrorName(status) + " (" +
                                cudaGetErrorString(status) + ")");
}

[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  std::string where = file;
  const size_t slash = where.rfind('/');
  if (slash != std::string::npos) where = where.substr(slash + 1);
  const LyreErrorCode code = status == CUBLAS_STATUS_ALLOC_FAILED ? LYRE_ERROR_OUT_OF_MEMORY : LYRE_ERROR_INTERNAL;
  throw plugin::Error(code, std::string("backend-cuda: ") + call + " failed at " + where + ":" +
                                std::to_string(line) + ": cuBLAS status " + std::to_string(int(status)));
}

const char* memory_kind_name(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::parameters: return "parameters";
    case MemoryKind::gradients: return "gradients";
    case MemoryKind::optimizer_state: return "optimizer state";
    case MemoryKind::activations: return "activations";
    case MemoryKind::workspace: return "workspace";
  }
  return "?";
}

namespace {

struct Block {
  size_t size;  // rounded
  MemoryKind kind;
};

struct Allocator {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;     // rounded size -> cached block
  std::unordered_map<void*, Block> live;         // handed out
  MemoryUsage usage;
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed: blocks may be freed at exit
  return *a;
}

size_t rounded(size_t bytes) {
  constexpr size_t kSmall = size_t(1) << 20, kSmallStep = 512, kStep = size_t(2) << 20;
  const size_t step = bytes < kSmall ? kSmallStep : kStep;
  return (bytes + step - 1) / step * step;
}

std::string mib(int64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

void release_cached_locked(Allocator& a) {
  for (auto& [size, ptr] : a.free_blocks) {
    cudaFree(ptr);
    a.usage.reserved -= int64_t(size);
  }
  a.free_blocks.clear();
}

}  // namespace

MemoryUsage memory_usage() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  return a.usage;
}

void reset_memory_peak() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  a.usage.peak = a.usage.current;
}

void* device_allocate(size_t bytes, MemoryKind kind) {
  if (bytes == 0) return nullptr;
  const size_t size = rounded(bytes);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  void* ptr = nullptr;
  auto it = a.free_blocks.find(size);
  if (it != a.free_blocks.end()) {
    ptr = it->second;
    a.free_blocks.erase(it);
  } else {
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation && !a.free_blocks.empty()) {
      cudaGetLastError();  // clear the sticky-free error state of the failed call
      cudaDeviceSynchronize();
      release_cached_locked(a);
      status = cudaMalloc(&ptr, size);
    }
    if (status != cudaSuccess) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      throw plugin::Error(status == cudaErrorMemoryAllocation ? LYRE_ERROR_OUT_OF_MEMORY : LYRE_ERROR_INTERNAL,
                          "backend-cuda: cannot allocate " + mib(int64_t(size)) + " of device memory for " +
                              memory_kind_name(kind) + " (" + cudaGetErrorString(status) + "); the backend holds " +
                              mib(a.usage.current) + ", the device has " + mib(int64_t(free_bytes)) + " free of " +
                              mib(int64_t(total_bytes)));
    }
    a.usage.reserved += int64_t(size);
  }
  a.live[ptr] = Block{size, kind};
  a.usage.current += int64_t(size);
  a.usage.by_kind[int(kind)] += int64_t(size);
  if (a.usage.current > a.usage.peak) a.usage.peak = a.usage.current;
  return ptr;
}

void device_free(void* ptr) {
  if (ptr == nullptr) return;
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  auto it = a.live.find(ptr);
  if (it == a.live.end()) return;  // not ours: ignore rather than corrupt the tally
  const Block b = it->second;
  a.live.erase(it);
  a.usage.current -= int64_t(b.size);
  a.usage.by_kind[int(b.kind)] -= int64_t(b.size);
  a.free_blocks.emplace(b.size, ptr);
}

void device_release_cached() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  cudaDeviceSynchronize();
  release_cached_locked(a);
}

template <typename T>
PinnedBuffer<T>::~PinnedBuffer() {
  if (data_ != nullptr) cudaFreeHost(data_);
}

template <typename T>
void PinnedBuffer<T>::reserve(size_t n) {
  if (n <= capacity_) return;
  if (data_ != nullptr) LYRE_CUDA_CHECK(cudaFreeHost(data_));
  data_ = nullptr;
  capacity_ = 0;
  void* p = nullptr;
  LYRE_CUDA_CHECK(cudaMallocHost(&p, n * sizeof(T)));
  data_ = static_cast<T*>(p);
  capacity_ = n;
}

template class PinnedBuffer<int32_t>;
template class PinnedBuffer<float>;

}  // namespace lyre::cuda
