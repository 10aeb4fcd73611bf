// The CUDA runtime calls backend-cuda's host code makes, answered on the CPU: one fake device
// ("emulated (CPU)", sm_90, 132 SMs, 80 GiB) whose memory is host memory. Linked instead of
// libcudart into the emulated build (CMakeLists.txt beside this file); the signatures are
// cuda_runtime_api.h's, which this file includes, so the compiler checks them.
//
// Work is synchronous: every copy and memset has happened when its call returns, streams only
// exist (and are checked to). What the emulation adds over a real device is strictness, to catch
// the host code's mistakes that a GPU would let pass or turn into silent corruption:
//  - fresh device memory is poisoned (0xFF bytes: NaN as float and bf16, -1 as int32), so a
//    buffer read before anything wrote it shows up;
//  - copies check their direction: a cudaMemcpyHostToDevice must write into one live device
//    block and read from host memory, and so on; a memset must stay inside one device block;
//  - a stream must be live (created, not destroyed) wherever one is passed.
// A failing call sets the error cudaGetLastError returns, as the real runtime does, and says why
// on stderr (the error codes alone name no pointer).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "emulated_device.hpp"

namespace {

constexpr size_t kTotalMemory = size_t(80) << 30;
constexpr size_t kAlignment = 256;  // what cudaMalloc guarantees

enum class Memory { device, pinned };

struct Block {
  size_t size;
  Memory kind;
};

struct Runtime {
  std::mutex mutex;
  std::map<uintptr_t, Block> blocks;  // start -> block, device and pinned
  std::set<cudaStream_t> streams;
  size_t device_bytes = 0;
  size_t limit = 0;  // 0: kTotalMemory
  int current_device = 0;
};

Runtime& runtime() {
  static Runtime* r = new Runtime();  // never destroyed: memory may be freed during exit
  return *r;
}

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t status, const std::string& why) {
  std::fprintf(stderr, "emulated CUDA runtime: %s\n", why.c_str());
  last_error = status;
  return status;
}

std::string pointer_name(const void* p) {
  char text[32];
  std::snprintf(text, sizeof text, "%p", p);
  return text;
}

// The block holding p, or nullptr. Caller holds the mutex.
const std::pair<const uintptr_t, Block>* block_of(const Runtime& r, const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = r.blocks.upper_bound(a);
  if (it == r.blocks.begin()) return nullptr;
  --it;
  return a < it->first + it->second.size ? &*it : nullptr;
}

std::string range_problem_locked(const Runtime& r, const void* p, size_t bytes) {
  if (bytes == 0) return "";
  if (p == nullptr) return "NULL (" + std::to_string(bytes) + " bytes wanted)";
  const auto* b = block_of(r, p);
  if (b == nullptr) return pointer_name(p) + " is host memory, not device memory";
  if (b->second.kind == Memory::pinned) return pointer_name(p) + " is pinned host memory, not device memory";
  const size_t offset = reinterpret_cast<uintptr_t>(p) - b->first;
  if (offset + bytes > b->second.size)
    return pointer_name(p) + " + " + std::to_string(bytes) + " bytes runs past the end of its device block (" +
           std::to_string(b->second.size) + " bytes, this range starts at offset " + std::to_string(offset) + ")";
  return "";
}

bool is_device_locked(const Runtime& r, const void* p) {
  const auto* b = block_of(r, p);
  return b != nullptr && b->second.kind == Memory::device;
}

cudaError_t check_stream(const char* call, cudaStream_t stream) {
  if (lyre::cuda::emulated::stream_is_live(stream)) return cudaSuccess;
  return fail(cudaErrorInvalidResourceHandle,
              std::string(call) + ": stream " + pointer_name(stream) + " was never created or is destroyed");
}

cudaError_t copy(const char* call, void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (count == 0) return cudaSuccess;
  Runtime& r = runtime();
  std::unique_lock<std::mutex> lock(r.mutex);
  const bool to_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool from_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  // One side of the copy: inside one device block, or host memory (pageable or pinned).
  auto side_problem = [&](const char* side, const void* p, bool device) -> std::string {
    if (device) {
      const std::string q = range_problem_locked(r, p, count);
      return q.empty() ? q : std::string(side) + " " + q;
    }
    if (p == nullptr) return std::string(side) + " is NULL";
    if (is_device_locked(r, p))
      return std::string(side) + " " + pointer_name(p) + " is device memory, but the kind says host";
    return "";
  };
  std::string problem;
  if (kind == cudaMemcpyDefault) {
    if (dst == nullptr || src == nullptr) problem = "NULL pointer";
  } else if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDeviceToDevice) {
    problem = "kind " + std::to_string(int(kind)) + " is not a cudaMemcpyKind";
  } else {
    problem = side_problem("destination", dst, to_device);
    if (problem.empty()) problem = side_problem("source", src, from_device);
  }
  lock.unlock();
  if (!problem.empty())
    return fail(cudaErrorInvalidValue, std::string(call) + " of " + std::to_string(count) + " bytes (kind " +
                                           std::to_string(int(kind)) + "): " + problem);
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t set(const char* call, void* ptr, int value, size_t count) {
  if (count == 0) return cudaSuccess;
  Runtime& r = runtime();
  std::string problem;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    problem = range_problem_locked(r, ptr, count);
  }
  if (!problem.empty()) return fail(cudaErrorInvalidValue, std::string(call) + ": " + problem);
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t allocate(const char* call, void** ptr, size_t size, Memory kind) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue, std::string(call) + ": the pointer to write is NULL");
  *ptr = nullptr;
  if (size == 0) return cudaSuccess;
  Runtime& r = runtime();
  const size_t rounded = (size + kAlignment - 1) / kAlignment * kAlignment;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    const size_t limit = r.limit != 0 ? r.limit : kTotalMemory;
    if (kind == Memory::device && (rounded > limit || r.device_bytes > limit - rounded)) {
      last_error = cudaErrorMemoryAllocation;  // an expected answer: no message
      return cudaErrorMemoryAllocation;
    }
  }
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) return fail(cudaErrorMemoryAllocation, std::string(call) + ": the host is out of memory");
  // Poison: what nothing wrote reads as NaN (float, bf16) or -1 (int32).
  std::memset(p, 0xFF, rounded);
  std::lock_guard<std::mutex> lock(r.mutex);
  r.blocks[reinterpret_cast<uintptr_t>(p)] = Block{rounded, kind};
  if (kind == Memory::device) r.device_bytes += rounded;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(const char* call, void* ptr, Memory kind) {
  if (ptr == nullptr) return cudaSuccess;
  Runtime& r = runtime();
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.blocks.find(reinterpret_cast<uintptr_t>(ptr));
    if (it != r.blocks.end() && it->second.kind == kind) {
      if (kind == Memory::device) r.device_bytes -= it->second.size;
      r.blocks.erase(it);
      std::free(ptr);
      return cudaSuccess;
    }
  }
  return fail(cudaErrorInvalidValue, std::string(call) + ": " + pointer_name(ptr) + " is not the start of a live " +
                                         (kind == Memory::device ? "device" : "pinned host") + " block");
}

cudaError_t check_device(const char* call, int device) {
  if (device == 0) return cudaSuccess;
  return fail(cudaErrorInvalidDevice,
              std::string(call) + ": device " + std::to_string(device) + " (the emulation has device 0 only)");
}

}  // namespace

namespace lyre::cuda::emulated {

std::string device_range_problem(const void* p, size_t bytes) {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  return range_problem_locked(r, p, bytes);
}

bool stream_is_live(cudaStream_t stream) {
  if (stream == nullptr) return true;
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.streams.count(stream) != 0;
}

void set_device_memory_limit(size_t bytes) {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.limit = bytes;
}

size_t device_bytes_held() {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.device_bytes;
}

}  // namespace lyre::cuda::emulated

extern "C" {

// ---- Errors ----

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    default:
      return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    default:
      return "unknown error (the CUDA emulation does not make this one)";
  }
}

// ---- The device ----

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: count is NULL");
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (const cudaError_t e = check_device("cudaSetDevice", device); e != cudaSuccess) return e;
  runtime().current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue, "cudaGetDevice: device is NULL");
  *device = runtime().current_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return fail(cudaErrorInvalidValue, "cudaGetDeviceProperties: prop is NULL");
  if (const cudaError_t e = check_device("cudaGetDeviceProperties", device); e != cudaSuccess) return e;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "emulated (CPU)");
  prop->totalGlobalMem = kTotalMemory;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (value == nullptr) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: value is NULL");
  if (const cudaError_t e = check_device("cudaDeviceGetAttribute", device); e != cudaSuccess) return e;
  switch (attr) {
    case cudaDevAttrClockRate:
      *value = 1980000;
      return cudaSuccess;  // kHz, an H100 SXM's peak
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = 227 * 1024;
      return cudaSuccess;
    default:
      return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute " + std::to_string(int(attr)) +
                                             " is not emulated (add it to fake_cudart.cpp)");
  }
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (free == nullptr || total == nullptr) return fail(cudaErrorInvalidValue, "cudaMemGetInfo: NULL argument");
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  *total = r.limit != 0 ? r.limit : kTotalMemory;
  *free = *total > r.device_bytes ? *total - r.device_bytes : 0;
  return cudaSuccess;
}

// ---- Memory ----

cudaError_t cudaMalloc(void** devPtr, size_t size) { return allocate("cudaMalloc", devPtr, size, Memory::device); }
cudaError_t cudaFree(void* devPtr) { return release("cudaFree", devPtr, Memory::device); }
cudaError_t cudaMallocHost(void** ptr, size_t size) { return allocate("cudaMallocHost", ptr, size, Memory::pinned); }
cudaError_t cudaFreeHost(void* ptr) { return release("cudaFreeHost", ptr, Memory::pinned); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  return copy("cudaMemcpy", dst, src, count, kind);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
  if (const cudaError_t e = check_stream("cudaMemcpyAsync", stream); e != cudaSuccess) return e;
  return copy("cudaMemcpyAsync", dst, src, count, kind);
}

cudaError_t cudaMemset(void* devPtr, int value, size_t count) { return set("cudaMemset", devPtr, value, count); }

cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  if (const cudaError_t e = check_stream("cudaMemsetAsync", stream); e != cudaSuccess) return e;
  return set("cudaMemsetAsync", devPtr, value, count);
}

// ---- Streams: handles only; the work ran when it was issued ----

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  if (pStream == nullptr) return fail(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: pStream is NULL");
  if (flags != cudaStreamDefault && flags != cudaStreamNonBlocking)
    return fail(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: flags " + std::to_string(flags));
  // A distinct address per stream: one byte from the heap, never dereferenced.
  cudaStream_t s = reinterpret_cast<cudaStream_t>(new char);
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.streams.insert(s);
  *pStream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Runtime& r = runtime();
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    if (stream != nullptr && r.streams.erase(stream) == 1) {
      delete reinterpret_cast<char*>(stream);
      return cudaSuccess;
    }
  }
  return fail(cudaErrorInvalidResourceHandle,
              "cudaStreamDestroy: stream " + pointer_name(stream) + " was never created or is destroyed already");
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) { return check_stream("cudaStreamSynchronize", stream); }

}  // extern "C"
