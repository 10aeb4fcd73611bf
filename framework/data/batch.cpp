#include "data/batch.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace lyre {

Batch::Batch(int64_t b, int64_t t) : batch_size(b), seq_len(t) {
  if (b < 0 || t < 0)
    throw std::invalid_argument("Batch: shape [" + std::to_string(b) + "," + std::to_string(t) +
                                "] has a negative dimension");
  const auto n = static_cast<size_t>(b * t);
  tokens.assign(n, 0);
  targets.assign(n, -1);
  positions.assign(n, 0);
  segment_ids.assign(n, 0);
  loss_mask.assign(n, 0);
}

int64_t Batch::num_tokens() const {
  return std::count_if(segment_ids.begin(), segment_ids.end(), [](int32_t s) { return s != 0; });
}

int64_t Batch::num_target_tokens() const {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; });
}

}  // namespace lyre
