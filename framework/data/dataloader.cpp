#include "data/dataloader.hpp"

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>

namespace lyre {
namespace {

// SplitMix64's finaliser: spreads nearby seeds (0, 1, 2...) over the whole 64-bit range.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) by rejection. std::uniform_int_distribution would do, but its output is
// not specified by the standard and differs between libstdc++ and libc++.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound: the biased low values
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

std::vector<int64_t> sample_order(int64_t size, bool shuffle, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(size));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  std::mt19937_64 rng(mix64(seed ^ mix64(static_cast<uint64_t>(epoch))));
  for (size_t i = order.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

}  // namespace

Dataloader::Dataloader(std::shared_ptr<const Dataset> dataset, DataloaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (!dataset_) throw std::invalid_argument("Dataloader: dataset is null");
  if (options_.per_device_batch_size < 1)
    throw std::invalid_argument("Dataloader: per_device_batch_size must be >= 1, got " +
                                std::to_string(options_.per_device_batch_size));
  if (options_.seq_len < 1)
    throw std::invalid_argument("Dataloader: seq_len must be >= 1, got " + std::to_string(options_.seq_len));
  if (options_.world_size < 1)
    throw std::invalid_argument("Dataloader: world_size must be >= 1, got " +
                                std::to_string(options_.world_size));
  if (options_.rank < 0 || options_.rank >= options_.world_size)
    throw std::invalid_argument("Dataloader: rank " + std::to_string(options_.rank) + " is outside [0, " +
                                std::to_string(options_.world_size) + ")");
}

int64_t Dataloader::batches_per_epoch() const {
  const int64_t global = options_.per_device_batch_size * options_.world_size;
  const int64_t n = dataset_->size();
  return options_.drop_last ? n / global : (n + global - 1) / global;
}

std::shared_ptr<const std::vector<int64_t>> Dataloader::order(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  if (cache_->epoch != epoch || !cache_->order) {
    cache_->order = std::make_shared<const std::vector<int64_t>>(
        sample_order(dataset_->size(), options_.shuffle, options_.seed, epoch));
    cache_->epoch = epoch;
  }
  return cache_->order;
}

std::vector<int64_t> Dataloader::batch_indices(int64_t epoch, int64_t index) const {
  if (epoch < 0) throw std::invalid_argument("Dataloader: epoch must be >= 0, got " + std::to_string(epoch));
  const int64_t batches = batches_per_epoch();
  if (index < 0 || index >= batches)
    throw std::out_of_range("Dataloader: batch " + std::to_string(index) + " is outside [0, " +
                            std::to_string(batches) + ") of epoch " + std::to_string(epoch));
  const auto samples = order(epoch);
  const int64_t b = options_.per_device_batch_size;
  const int64_t first = (index * options_.world_size + options_.rank) * b;
  std::vector<int64_t> indices(static_cast<size_t>(b), -1);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t at = first + i;
    if (at < static_cast<int64_t>(samples->size())) indices[static_cast<size_t>(i)] = (*samples)[static_cast<size_t>(at)];
  }
  return indices;
}

Batch Dataloader::batch(int64_t epoch, int64_t index) const {
  const std::vector<int64_t> indices = batch_indices(epoch, index);
  const int64_t T = options_.seq_len;
  Batch out(options_.per_device_batch_size, T);
  std::fill(out.tokens.begin(), out.tokens.end(), options_.pad_id);
  for (size_t row = 0; row < indices.size(); ++row) {
    if (indices[row] < 0) continue;
    ++out.num_samples;
    const Sample& sample = (*dataset_)[indices[row]];
    const int64_t length = static_cast<int64_t>(sample.ids.size());
    const size_t base = row * static_cast<size_t>(T);
    // The last id (EOS) is only ever a target: as an input it would predict nothing and cost a
    // row position, so a record of n ids fills n - 1 positions.
    for (int64_t t = 0; t < T && t + 1 < length; ++t) {
      const size_t at = base + static_cast<size_t>(t);
      out.tokens[at] = sample.ids[static_cast<size_t>(t)];
      out.positions[at] = static_cast<int32_t>(t);
      out.segment_ids[at] = 1;
      out.targets[at] = sample.ids[static_cast<size_t>(t + 1)];
      out.loss_mask[at] = sample.trained[static_cast<size_t>(t + 1)];
    }
  }
  return out;
}

void Dataloader::start_epoch(int64_t epoch) { seek(epoch, 0); }

void Dataloader::seek(int64_t epoch, int64_t position) {
  if (epoch < 0) throw std::invalid_argument("Dataloader: epoch must be >= 0, got " + std::to_string(epoch));
  if (position < 0 || position > batches_per_epoch())
    throw std::out_of_range("Dataloader: position " + std::to_string(position) + " is outside [0, " +
                            std::to_string(batches_per_epoch()) + "]");
  epoch_ = epoch;
  next_index_ = position;
}

std::optional<Batch> Dataloader::next() {
  if (next_index_ >= batches_per_epoch()) return std::nullopt;
  Batch out = batch(epoch_, next_index_);
  ++next_index_;
  return out;
}

}  // namespace lyre
