// One micro-batch in host memory, as the data loader made it and the ABI carries it.
#pragma once

#include <cstdint>
#include <vector>

namespace lyre {

// All fields are int32 [batch_size, seq_len], row-major. See LyreBatch in abi.h for meanings:
// targets < 0 where nothing is predicted, segment_ids 0 on padding, loss_mask 1 on the tokens an
// objective trains on.
struct Batch {
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  int64_t num_samples = 0;  // rows holding data (a last partial batch has padding-only rows)
  std::vector<int32_t> tokens, targets, positions, segment_ids, loss_mask;

  Batch() = default;
  Batch(int64_t b, int64_t t);  // all padding: tokens = pad_id 0, targets -1, segment 0

  int64_t size() const { return batch_size * seq_len; }
  int64_t num_tokens() const;       // non-padding tokens (segment_ids != 0)
  int64_t num_target_tokens() const;  // positions with targets >= 0
};

}  // namespace lyre
