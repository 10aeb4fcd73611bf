// Fixed static partitions of an index range over the threads of a parallel region (private to
// layers/). A thread's share depends only on (n, thread, threads), which is what keeps the
// per-thread partial sums of the backward passes deterministic.
#pragma once

#include <algorithm>
#include <cstdint>

namespace lyre::cpu::detail {

struct Range {
  int64_t begin, end;
};

// Contiguous share `t` of [0, n) split over `nt` threads, in blocks of `align` (so column slices
// start on whole vectors).
inline Range static_share(int64_t n, int t, int nt, int64_t align = 1) {
  const int64_t blocks = (n + align - 1) / align;
  const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
  return {std::min(n, b0 * align), std::min(n, b1 * align)};
}

}  // namespace lyre::cpu::detail
