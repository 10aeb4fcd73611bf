// What the CPU backend holds, by kind, now and at its peak: the numbers device_info reports.
// Every large allocation of the backend goes through Buffer (or a MemoryCharge), so the total
// is exact for what the backend owns; oneDNN's internal scratch is not counted.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lyre::cpu {

enum class MemoryKind : int { parameters = 0, gradients, optimizer_state, activations, workspace };
constexpr int kNumMemoryKinds = 5;
const char* memory_kind_name(MemoryKind kind);

struct MemoryUsage {
  int64_t current = 0;  // bytes held now, all kinds
  int64_t peak = 0;     // the most held at once since start (or reset_memory_peak)
  int64_t by_kind[kNumMemoryKinds] = {};
};

// Process-wide (device_info has no model argument). Thread-safe.
MemoryUsage memory_usage();
void reset_memory_peak();
void memory_add(MemoryKind kind, int64_t bytes);  // negative to release

// Accounts for memory held elsewhere (a std::vector): set() moves the charge to `bytes`.
class MemoryCharge {
 public:
  explicit MemoryCharge(MemoryKind kind) : kind_(kind) {}
  ~MemoryCharge() { set(0); }
  MemoryCharge(const MemoryCharge&) = delete;
  MemoryCharge& operator=(const MemoryCharge&) = delete;
  void set(int64_t bytes) {
    memory_add(kind_, bytes - bytes_);
    bytes_ = bytes;
  }

 private:
  MemoryKind kind_;
  int64_t bytes_ = 0;
};

// A 64-byte aligned array of T, counted under its kind. reserve() only ever grows, so a
// steady-state step that asks for the same size allocates nothing.
template <typename T>
class Buffer {
 public:
  explicit Buffer(MemoryKind kind) : kind_(kind) {}
  ~Buffer() { release(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : kind_(o.kind_), data_(o.data_), capacity_(o.capacity_) {
    o.data_ = nullptr;
    o.capacity_ = 0;
  }

  // Makes room for n elements; contents are undefined after a growth.
  void reserve(size_t n);
  // Makes room for n elements and sets the first n to zero.
  void assign_zero(size_t n);
  void release();

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t capacity() const { return capacity_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  MemoryKind kind_;
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace lyre::cpu
