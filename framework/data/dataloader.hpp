// Batches of a Dataset for one rank: seeded shuffling per epoch, per-rank sharding, right
// padding to a fixed row length.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "data/batch.hpp"
#include "data/dataset.hpp"

namespace lyre {

struct DataloaderOptions {
  int64_t per_device_batch_size = 8;
  int64_t seq_len = 0;     // row length T: a record of n ids needs T >= n - 1 to fit whole
  bool shuffle = true;
  bool drop_last = true;   // drop the epoch's last incomplete global batch
  uint64_t seed = 0;
  int32_t rank = 0;
  int32_t world_size = 1;
  int32_t pad_id = 0;
};

// Sharding rule: each epoch orders the samples (a seeded permutation of epoch and seed when
// shuffling, identity otherwise) and cuts that order into global batches of
// per_device_batch_size * world_size samples; rank r takes the r-th contiguous slice of
// per_device_batch_size samples of each global batch. Every rank gets the same number of
// batches, and no sample goes to two ranks in one epoch. Without drop_last the last global batch
// is spread the same way and rows without a sample are all padding (num_samples says how many
// rows are real).
// The shuffled order is the same with every compiler and standard library: a Fisher-Yates
// shuffle over std::mt19937_64 seeded with a mix of seed and epoch (dataloader.cpp).
class Dataloader {
 public:
  Dataloader(std::shared_ptr<const Dataset> dataset, DataloaderOptions options);

  int64_t batches_per_epoch() const;
  // Sample indices (into the dataset) of batch `index` of `epoch` for this rank; -1 for a
  // padding-only row. Pure function of (options, epoch, index).
  std::vector<int64_t> batch_indices(int64_t epoch, int64_t index) const;
  // Builds that batch: row b holds a sample of n ids as tokens ids[0..min(n-1, T)) and targets
  // ids[1..]: every real position predicts something (the final EOS is a target, never an
  // input). positions 0.., segment_ids 1 on real tokens and 0 on padding (targets -1 there),
  // loss_mask from Sample::trained of the target token.
  Batch batch(int64_t epoch, int64_t index) const;

  // Iteration: start_epoch(e) then next() until it returns nullopt.
  void start_epoch(int64_t epoch);
  // Resumes iteration at batch `position` of `epoch` (what epoch() and position() said when a
  // checkpoint was taken) without building the batches before it.
  void seek(int64_t epoch, int64_t position);
  std::optional<Batch> next();
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return next_index_; }

  const Dataset& dataset() const { return *dataset_; }
  const DataloaderOptions& options() const { return options_; }

 private:
  // The sample order of one epoch, kept for the latest epoch asked for: batch() would otherwise
  // redo an O(dataset) permutation per batch. Shared by copies (the order depends only on the
  // options they share); the mutex makes const calls from several threads safe.
  struct OrderCache {
    std::mutex mutex;
    int64_t epoch = -1;
    std::shared_ptr<const std::vector<int64_t>> order;
  };
  std::shared_ptr<const std::vector<int64_t>> order(int64_t epoch) const;

  std::shared_ptr<const Dataset> dataset_;
  DataloaderOptions options_;
  std::shared_ptr<OrderCache> cache_ = std::make_shared<OrderCache>();
  int64_t epoch_ = 0;
  int64_t next_index_ = 0;
};

}  // namespace lyre
