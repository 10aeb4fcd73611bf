// What device_info reports as used and peak memory: every CPU tensor LibTorch allocates after
// install_counting_allocator() goes through an allocator that counts the live bytes and
// remembers the most held at once. Process-wide, like device_info itself.
#pragma once

#include <cstdint>

namespace lyre::libtorch {

struct MemoryCount {
  int64_t current = 0;  // bytes of live CPU tensors allocated since the install
  int64_t peak = 0;     // the most of them alive at once
};

// Wraps the CPU allocator in effect (c10::GetCPUAllocator) in a counting one and makes it
// c10's CPU allocator. Idempotent. Returns false when c10 kept another allocator (one
// registered with a higher priority): then nothing is counted.
bool install_counting_allocator();
MemoryCount memory_count();

}  // namespace lyre::libtorch
