// Device memory for backend-cuda: one caching allocator for everything the backend holds, and the
// tally device_info reports.
//
// Strategy: sizes are rounded up to a 2 MiB multiple (512 bytes under 1 MiB); a freed block goes
// to a free list of its rounded size and the next request of that size takes it back. cudaMalloc
// runs only on a miss, so a training step of a shape seen before allocates nothing from the
// driver. When cudaMalloc fails, every cached free block is returned to the driver and the call is
// tried once more before OUT_OF_MEMORY. Blocks are never split (no fragmentation bookkeeping):
// buffers are few and large (parameters, gradients, optimizer state, one activation arena per
// shape), and DeviceBuffer grows only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lyre::cuda {

enum class MemoryKind : int { parameters = 0, gradients, optimizer_state, activations, workspace };
constexpr int kNumMemoryKinds = 5;
const char* memory_kind_name(MemoryKind kind);

struct MemoryUsage {
  int64_t current = 0;  // bytes handed out now (rounded sizes), all kinds
  int64_t peak = 0;     // the most handed out at once since start (or reset_memory_peak)
  int64_t reserved = 0; // bytes taken from the driver (handed out + cached free blocks)
  int64_t by_kind[kNumMemoryKinds] = {};
};

// Process-wide. Thread-safe.
MemoryUsage memory_usage();
void reset_memory_peak();

// Never returns nullptr: throws Error(OUT_OF_MEMORY) naming the size, the kind and what is held.
// bytes == 0 gives nullptr.
void* device_allocate(size_t bytes, MemoryKind kind);
void device_free(void* ptr);
// Returns every cached free block to the driver (after a synchronize of the whole device).
void device_release_cached();

// A device array of T, counted under its kind. reserve() only ever grows (contents are lost when
// it does); release() gives the block back to the cache.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(MemoryKind kind) : kind_(kind) {}
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : kind_(o.kind_), data_(o.data_), capacity_(o.capacity_) {
    o.data_ = nullptr;
    o.capacity_ = 0;
  }

  void reserve(size_t n) {
    if (n <= capacity_) return;
    release();
    data_ = static_cast<T*>(device_allocate(n * sizeof(T), kind_));
    capacity_ = n;
  }
  void release() {
    if (data_ != nullptr) device_free(data_);
    data_ = nullptr;
    capacity_ = 0;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  MemoryKind kind_;
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

// Page-locked host memory for the batch's ids and the log-probs going back, so the copies are
// asynchronous. Grows only; not counted (host memory).
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void reserve(size_t n);
  T* data() { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace lyre::cuda
