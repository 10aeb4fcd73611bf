#include "model/memory_tracker.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

namespace lyre::cpu {
namespace {

// Constant-initialised: no dynamic initialiser runs in this AVX-compiled object at load time.
std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_by_kind[kNumMemoryKinds] = {};

}  // namespace

const char* memory_kind_name(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::parameters: return "parameters";
    case MemoryKind::gradients: return "gradients";
    case MemoryKind::optimizer_state: return "optimizer_state";
    case MemoryKind::activations: return "activations";
    case MemoryKind::workspace: return "workspace";
  }
  return "unknown";
}

MemoryUsage memory_usage() {
  MemoryUsage u;
  u.current = g_current.load();
  u.peak = g_peak.load();
  for (int k = 0; k < kNumMemoryKinds; ++k) u.by_kind[k] = g_by_kind[k].load();
  return u;
}

void reset_memory_peak() { g_peak.store(g_current.load()); }

void memory_add(MemoryKind kind, int64_t bytes) {
  if (bytes == 0) return;
  g_by_kind[static_cast<int>(kind)].fetch_add(bytes);
  const int64_t now = g_current.fetch_add(bytes) + bytes;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

template <typename T>
void Buffer<T>::reserve(size_t n) {
  if (n <= capacity_) return;
  release();
  const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  data_ = static_cast<T*>(p);
  capacity_ = n;
  memory_add(kind_, static_cast<int64_t>(n * sizeof(T)));
}

template <typename T>
void Buffer<T>::assign_zero(size_t n) {
  reserve(n);
  if (n > 0) std::memset(static_cast<void*>(data_), 0, n * sizeof(T));
}

template <typename T>
void Buffer<T>::release() {
  if (data_ == nullptr) return;
  std::free(data_);
  memory_add(kind_, -static_cast<int64_t>(capacity_ * sizeof(T)));
  data_ = nullptr;
  capacity_ = 0;
}

template class Buffer<float>;
template class Buffer<double>;
template class Buffer<int32_t>;

}  // namespace lyre::cpu
