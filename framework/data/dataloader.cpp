#include "data/dataloader.hpp"

#include <algorithm>
#include <cstdio>
#include <deque>
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

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

nlohmann::json DataloaderState::to_json() const {
  // The 64-bit values as hex strings: JSON readers in other languages lose bits above 2^53.
  return {{"epoch", epoch}, {"position", position}, {"seed", hex(seed)}, {"fingerprint", hex(fingerprint)}};
}

DataloaderState DataloaderState::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) -> void { throw std::runtime_error(where + ": data loader state: " + what); };
  if (!j.is_object()) fail("expected an object");
  DataloaderState s;
  for (const char* key : {"epoch", "position"}) {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 0)
      fail(std::string("\"") + key + "\" must be a non-negative integer");
  }
  s.epoch = j["epoch"].get<int64_t>();
  s.position = j["position"].get<int64_t>();
  for (const char* key : {"seed", "fingerprint"}) {
    if (!j.contains(key) || !j[key].is_string() || j[key].get<std::string>().size() != 16 ||
        j[key].get<std::string>().find_first_not_of("0123456789abcdef") != std::string::npos)
      fail(std::string("\"") + key + "\" must be 16 lowercase hex digits");
    const uint64_t v = std::stoull(j[key].get<std::string>(), nullptr, 16);
    (std::string(key) == "seed" ? s.seed : s.fingerprint) = v;
  }
  return s;
}

Dataloader::Dataloader(std::shared_ptr<const Dataset> dataset, DataloaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (!dataset_) throw std::invalid_argument("Dataloader: dataset is null");
  auto bad = [](const std::string& what) { throw std::invalid_argument("Dataloader: " + what); };
  if (options_.per_device_batch_size < 1)
    bad("per_device_batch_size must be >= 1, got " + std::to_string(options_.per_device_batch_size));
  if (options_.seq_len < 1) bad("seq_len must be >= 1, got " + std::to_string(options_.seq_len));
  if (options_.world_size < 1) bad("world_size must be >= 1, got " + std::to_string(options_.world_size));
  if (options_.rank < 0 || options_.rank >= options_.world_size)
    bad("rank " + std::to_string(options_.rank) + " is outside [0, " + std::to_string(options_.world_size) + ")");
  if (options_.pack_window < 1) bad("pack_window must be >= 1, got " + std::to_string(options_.pack_window));
  if (paired()) {
    if (options_.packing) bad("preference pairs are not packed (each pair takes two rows); set packing to false");
    if (options_.per_device_batch_size % 2 != 0)
      bad("preference data needs an even per_device_batch_size (a chosen and a rejected row per pair), got " +
          std::to_string(options_.per_device_batch_size));
  }
}

Dataloader::Plan Dataloader::make_plan(int64_t epoch) const {
  const std::vector<int64_t> order = sample_order(dataset_->size(), options_.shuffle, options_.seed, epoch);
  Plan plan;
  plan.row_begin.push_back(0);
  if (!options_.packing) {
    plan.samples = order;
    for (size_t i = 0; i < order.size(); ++i) plan.row_begin.push_back(static_cast<int64_t>(i + 1));
    return plan;
  }
  // A sample of n ids takes n - 1 positions (its last id is only a target), at most T.
  const int64_t T = options_.seq_len;
  auto cost = [&](int64_t sample) { return std::min(T, std::max<int64_t>(1, dataset_->length(sample) - 1)); };
  plan.samples.reserve(order.size());
  std::deque<int64_t> waiting;  // samples set aside, in order, at most pack_window
  size_t next = 0;
  while (next < order.size() || !waiting.empty()) {
    while (static_cast<int64_t>(waiting.size()) < options_.pack_window && next < order.size())
      waiting.push_back(order[next++]);
    int64_t room = T;
    for (auto it = waiting.begin(); it != waiting.end() && room > 0;) {
      const int64_t c = cost(*it);
      if (c > room) {
        ++it;
        continue;
      }
      plan.samples.push_back(*it);
      room -= c;
      it = waiting.erase(it);
    }
    plan.row_begin.push_back(static_cast<int64_t>(plan.samples.size()));
  }
  return plan;
}

std::shared_ptr<const Dataloader::Plan> Dataloader::plan(int64_t epoch) const {
  if (epoch < 0) throw std::invalid_argument("Dataloader: epoch must be >= 0, got " + std::to_string(epoch));
  std::lock_guard<std::mutex> lock(cache_->mutex);
  if (cache_->epoch != epoch || !cache_->plan) {
    cache_->plan = std::make_shared<const Plan>(make_plan(epoch));
    cache_->epoch = epoch;
  }
  return cache_->plan;
}

int64_t Dataloader::batches_in_epoch(int64_t epoch) const {
  const int64_t rows_per_sample = paired() ? 2 : 1;
  const int64_t global = options_.per_device_batch_size * options_.world_size;
  const int64_t rows = plan(epoch)->rows() * rows_per_sample;
  return options_.drop_last ? rows / global : (rows + global - 1) / global;
}

std::vector<std::vector<int64_t>> Dataloader::batch_rows(int64_t epoch, int64_t index) const {
  const int64_t batches = batches_in_epoch(epoch);
  if (index < 0 || index >= batches)
    throw std::out_of_range("Dataloader: batch " + std::to_string(index) + " is outside [0, " +
                            std::to_string(batches) + ") of epoch " + std::to_string(epoch));
  const auto p = plan(epoch);
  const int64_t B = options_.per_device_batch_size;
  const int64_t rows_per_sample = paired() ? 2 : 1;
  const int64_t first = (index * options_.world_size + options_.rank) * B;
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    const int64_t row = (first + i) / rows_per_sample;  // paired: rows 2k and 2k+1 share sample k
    if (row >= p->rows()) continue;
    rows[static_cast<size_t>(i)].assign(p->samples.begin() + p->row_begin[static_cast<size_t>(row)],
                                        p->samples.begin() + p->row_begin[static_cast<size_t>(row) + 1]);
  }
  return rows;
}

Batch Dataloader::batch(int64_t epoch, int64_t index) const {
  const std::vector<std::vector<int64_t>> rows = batch_rows(epoch, index);
  const int64_t T = options_.seq_len;
  const int64_t first_row = (index * options_.world_size + options_.rank) * options_.per_device_batch_size;
  Batch out(options_.per_device_batch_size, T);
  std::fill(out.tokens.begin(), out.tokens.end(), options_.pad_id);
  for (size_t row = 0; row < rows.size(); ++row) {
    const size_t base = row * static_cast<size_t>(T);
    int64_t at = 0;        // next free position in the row
    int32_t segment = 0;   // segment ids 1, 2, ... within the row
    for (int64_t index_in_dataset : rows[row]) {
      const Sample sample = dataset_->sample(index_in_dataset);
      const bool rejected = paired() && (first_row + static_cast<int64_t>(row)) % 2 == 1;
      const std::vector<int32_t>& ids = rejected ? sample.rejected_ids : sample.ids;
      const std::vector<uint8_t>& trained = rejected ? sample.rejected_trained : sample.trained;
      if (!paired() || !rejected) ++out.num_samples;
      size_t next_doc = 0;
      int32_t position = 0;
      ++segment;
      // The last id is only ever a target: as an input it would predict nothing and cost a
      // row position, so a sample of n ids fills n - 1 positions.
      for (int64_t t = 0; at < T && t + 1 < static_cast<int64_t>(ids.size()); ++t, ++at) {
        if (next_doc < sample.doc_starts.size() && sample.doc_starts[next_doc] == t) {
          ++next_doc;
          ++segment;
          position = 0;
        }
        const size_t k = base + static_cast<size_t>(at);
        out.tokens[k] = ids[static_cast<size_t>(t)];
        out.positions[k] = position++;
        out.segment_ids[k] = segment;
        out.targets[k] = ids[static_cast<size_t>(t + 1)];
        out.loss_mask[k] = trained[static_cast<size_t>(t + 1)];
      }
    }
  }
  return out;
}

void Dataloader::start_epoch(int64_t epoch) { seek(epoch, 0); }

void Dataloader::seek(int64_t epoch, int64_t position) {
  if (epoch < 0) throw std::invalid_argument("Dataloader: epoch must be >= 0, got " + std::to_string(epoch));
  const int64_t batches = batches_in_epoch(epoch);
  if (position < 0 || position > batches)
    throw std::out_of_range("Dataloader: position " + std::to_string(position) + " is outside [0, " +
                            std::to_string(batches) + "] of epoch " + std::to_string(epoch));
  epoch_ = epoch;
  next_index_ = position;
}

std::optional<Batch> Dataloader::next() {
  if (next_index_ >= batches_in_epoch(epoch_)) return std::nullopt;
  Batch out = batch(epoch_, next_index_);
  ++next_index_;
  return out;
}

uint64_t Dataloader::fingerprint() const {
  uint64_t h = dataset_->fingerprint();
  for (uint64_t v : {uint64_t(options_.per_device_batch_size), uint64_t(options_.seq_len), uint64_t(options_.shuffle),
                     uint64_t(options_.drop_last), uint64_t(options_.packing), uint64_t(options_.pack_window),
                     uint64_t(options_.world_size), uint64_t(options_.rank)})
    h = mix64(h ^ v);
  return h;
}

DataloaderState Dataloader::state() const { return {epoch_, next_index_, options_.seed, fingerprint()}; }

void Dataloader::restore(const DataloaderState& state) {
  if (state.seed != options_.seed)
    throw std::runtime_error("Dataloader: the saved data position was taken with seed " + std::to_string(state.seed) +
                             ", this run has seed " + std::to_string(options_.seed));
  if (state.fingerprint != fingerprint())
    throw std::runtime_error("Dataloader: the saved data position was taken on other data or batch options (" +
                             dataset_->path() + ": fingerprint " + hex(state.fingerprint) + " saved, " +
                             hex(fingerprint()) + " now): the data file, seq_len, batch size, packing, "
                             "shuffle, drop_last or the number of ranks changed");
  seek(state.epoch, state.position);
}

}  // namespace lyre
