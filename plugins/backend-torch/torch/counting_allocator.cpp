#include "counting_allocator.hpp"

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace lyre::libtorch {
namespace {

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};

void count(int64_t bytes) {
  const int64_t now = g_current.fetch_add(bytes) + bytes;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

// Hands out the inner allocator's memory with data == context and a deleter of its own, so
// that raw_allocate / raw_deallocate, which parts of LibTorch call on the CPU allocator, keep
// working. The sizes live in a map: a header in front of the block would break data == context.
class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) const override {
    void* data = inner_->raw_allocate(n);
    if (data != nullptr) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        sizes_[data] = n;
      }
      count(static_cast<int64_t>(n));
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

 private:
  static void release(void* data);

  c10::Allocator* inner_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<void*, size_t> sizes_;
};

// Static storage, never destroyed: c10 may free tensors through it at process exit, after
// this library's static destructors would have run.
CountingAllocator* g_allocator = nullptr;

void CountingAllocator::release(void* data) {
  if (data == nullptr) return;
  size_t n = 0;
  {
    std::lock_guard<std::mutex> lock(g_allocator->mutex_);
    auto it = g_allocator->sizes_.find(data);
    if (it != g_allocator->sizes_.end()) {
      n = it->second;
      g_allocator->sizes_.erase(it);
    }
  }
  count(-static_cast<int64_t>(n));
  g_allocator->inner_->raw_deallocate(data);
}

}  // namespace

bool install_counting_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::Allocator* inner = c10::GetCPUAllocator();
    if (inner->raw_deleter() == nullptr) return;  // cannot wrap raw_allocate: count nothing
    g_allocator = new CountingAllocator(inner);
    // Priority above the default (0), so a later default registration cannot displace it.
    c10::SetCPUAllocator(g_allocator, /*priority=*/1);
  });
  return g_allocator != nullptr && c10::GetCPUAllocator() == g_allocator;
}

MemoryCount memory_count() { return {g_current.load(), g_peak.load()}; }

}  // namespace lyre::libtorch
