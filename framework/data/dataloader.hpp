// Batches of a Dataset for one rank: seeded shuffling per epoch, packing of several samples into
// a row, per-rank sharding, right padding to a fixed row length, and a small position state that
// a checkpoint saves to resume with exactly the batches an uninterrupted run would see.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/batch.hpp"
#include "data/dataset.hpp"

namespace lyre {

struct DataloaderOptions {
  int64_t per_device_batch_size = 8;  // rows per batch (preference data: 2 rows per pair)
  int64_t seq_len = 0;     // row length T: a sample of n ids fills n - 1 positions
  bool shuffle = true;
  bool drop_last = true;   // drop the epoch's last incomplete global batch
  bool packing = false;    // several samples per row, each its own segment
  int64_t pack_window = 64;  // packing looks this many samples ahead for one that fits
  uint64_t seed = 0;
  int32_t rank = 0;
  int32_t world_size = 1;
  int32_t pad_id = 0;
};

// Where a data loader stands: enough to rebuild every later batch. A checkpoint stores it as
// JSON; restoring checks it was taken on the same data and options.
struct DataloaderState {
  int64_t epoch = 0;
  int64_t position = 0;  // the next batch of the epoch
  uint64_t seed = 0;     // the shuffle's RNG is a pure function of (seed, epoch)
  uint64_t fingerprint = 0;  // of the dataset and the options that shape batches
  nlohmann::json to_json() const;
  // Throws std::runtime_error naming `where` and the bad or missing key.
  static DataloaderState from_json(const nlohmann::json& j, const std::string& where);
};

// Order of one epoch: a seeded permutation of the samples (Fisher-Yates over std::mt19937_64
// seeded with a mix of seed and epoch; identity without shuffling), the same with every compiler
// and standard library.
// Rows: without packing, one sample per row in that order. With packing, rows are filled in
// order; a sample that does not fit the rest of the row is set aside while the next pack_window
// samples are tried, and starts the next row if none fits (first fit within a window: little
// padding, and the order stays close to the shuffle). A sample keeps its own positions (0..) and
// segment id (1, 2, ... within the row), so attention never crosses samples. Preference data
// makes two rows per sample (chosen, then rejected) and is never packed.
// Sharding: each epoch's rows are cut into global batches of per_device_batch_size * world_size
// rows; rank r takes the r-th contiguous slice of each. Every rank computes the same plan, so
// all get the same number of batches and no sample goes to two ranks in one epoch. Without
// drop_last, rows missing from the last global batch are all padding.
class Dataloader {
 public:
  Dataloader(std::shared_ptr<const Dataset> dataset, DataloaderOptions options);

  int64_t batches_in_epoch(int64_t epoch) const;
  int64_t batches_per_epoch() const { return batches_in_epoch(0); }
  // Sample indices (into the dataset) in each row of batch `index` of `epoch` for this rank;
  // an empty row is padding. Pure function of (options, dataset, epoch, index).
  std::vector<std::vector<int64_t>> batch_rows(int64_t epoch, int64_t index) const;
  Batch batch(int64_t epoch, int64_t index) const;

  // Iteration: start_epoch(e) then next() until it returns nullopt.
  void start_epoch(int64_t epoch);
  void seek(int64_t epoch, int64_t position);
  std::optional<Batch> next();
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return next_index_; }

  DataloaderState state() const;
  // Continues from a saved state. Refused, naming what differs, when the data set or the
  // options are not those the state was taken with.
  void restore(const DataloaderState& state);

  const Dataset& dataset() const { return *dataset_; }
  const DataloaderOptions& options() const { return options_; }

 private:
  struct Plan {
    std::vector<int64_t> samples;    // sample indices, row after row
    std::vector<int64_t> row_begin;  // row r holds samples[row_begin[r] .. row_begin[r + 1])
    int64_t rows() const { return static_cast<int64_t>(row_begin.size()) - 1; }
  };
  // The plan of the latest epoch asked for, shared by copies; the mutex makes const calls from
  // several threads safe.
  struct PlanCache {
    std::mutex mutex;
    int64_t epoch = -1;
    std::shared_ptr<const Plan> plan;
  };
  std::shared_ptr<const Plan> plan(int64_t epoch) const;
  Plan make_plan(int64_t epoch) const;
  uint64_t fingerprint() const;
  bool paired() const { return dataset_->kind() == RecordKind::preference; }

  std::shared_ptr<const Dataset> dataset_;
  DataloaderOptions options_;
  std::shared_ptr<PlanCache> cache_ = std::make_shared<PlanCache>();
  int64_t epoch_ = 0;
  int64_t next_index_ = 0;
};

}  // namespace lyre
