// Packing several samples into a row, sharding packed rows over ranks, preference pairs, and
// resuming from a saved data position with exactly the batches an uninterrupted run sees.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "data/dataloader.hpp"

using lyre::Batch;
using lyre::Dataloader;
using lyre::DataloaderOptions;
using lyre::DataloaderState;
using lyre::Dataset;
using lyre::Sample;

namespace {

constexpr int32_t kPad = 0;

// Sample i holds ids 1000*i + 1, 1000*i + 2, ... (n ids) so every id names its sample; the
// first id is untrained, as a BOS would be.
Sample numbered_sample(int64_t i, int64_t n) {
  Sample s;
  for (int64_t k = 0; k < n; ++k) {
    s.ids.push_back(static_cast<int32_t>(1000 * i + k + 1));
    s.trained.push_back(k == 0 ? 0 : 1);
  }
  return s;
}

std::shared_ptr<const Dataset> varied(int64_t count, int64_t max_len, uint32_t seed = 3) {
  std::mt19937 rng(seed);
  std::vector<Sample> samples;
  for (int64_t i = 0; i < count; ++i) samples.push_back(numbered_sample(i, 2 + int64_t(rng() % uint32_t(max_len - 1))));
  return lyre::make_memory_dataset(std::move(samples));
}

DataloaderOptions packed(int64_t batch, int64_t seq_len, int32_t rank = 0, int32_t world = 1) {
  DataloaderOptions o;
  o.per_device_batch_size = batch;
  o.seq_len = seq_len;
  o.shuffle = true;
  o.drop_last = false;
  o.packing = true;
  o.seed = 11;
  o.rank = rank;
  o.world_size = world;
  o.pad_id = kPad;
  return o;
}

std::vector<Batch> all_batches(const Dataloader& loader, int64_t epoch) {
  std::vector<Batch> out;
  for (int64_t i = 0; i < loader.batches_in_epoch(epoch); ++i) out.push_back(loader.batch(epoch, i));
  return out;
}

bool same(const Batch& a, const Batch& b) {
  return a.tokens == b.tokens && a.targets == b.targets && a.positions == b.positions &&
         a.segment_ids == b.segment_ids && a.loss_mask == b.loss_mask && a.num_samples == b.num_samples;
}

}  // namespace

TEST_CASE("packing lays out each sample as its own segment with its own positions") {
  // Lengths 4, 3, 5 ids take 3, 2, 4 positions: rows of 6 hold [0 1] and [2], unshuffled.
  const auto ds = lyre::make_memory_dataset({numbered_sample(0, 4), numbered_sample(1, 3), numbered_sample(2, 5)});
  DataloaderOptions o = packed(2, 6);
  o.shuffle = false;
  const Dataloader loader(ds, o);
  REQUIRE(loader.batches_in_epoch(0) == 1);
  CHECK(loader.batch_rows(0, 0) == std::vector<std::vector<int64_t>>{{0, 1}, {2}});
  const Batch b = loader.batch(0, 0);
  CHECK(b.num_samples == 3);
  CHECK(b.tokens == std::vector<int32_t>{1, 2, 3, 1001, 1002, kPad, 2001, 2002, 2003, 2004, kPad, kPad});
  CHECK(b.targets == std::vector<int32_t>{2, 3, 4, 1002, 1003, -1, 2002, 2003, 2004, 2005, -1, -1});
  CHECK(b.positions == std::vector<int32_t>{0, 1, 2, 0, 1, 0, 0, 1, 2, 3, 0, 0});
  CHECK(b.segment_ids == std::vector<int32_t>{1, 1, 1, 2, 2, 0, 1, 1, 1, 1, 0, 0});
  CHECK(b.loss_mask == std::vector<int32_t>{1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0});
}

TEST_CASE("packing places every sample exactly once, whole, and wastes less than one per row") {
  const auto ds = varied(500, 40);
  const Dataloader loader(ds, packed(4, 64));
  const Dataloader unpacked(ds, [] {
    DataloaderOptions o = packed(4, 64);
    o.packing = false;
    return o;
  }());
  for (int64_t epoch : {0, 1}) {
    std::multiset<int64_t> seen;
    int64_t tokens = 0, positions = 0;
    for (const Batch& b : all_batches(loader, epoch)) {
      tokens += b.num_tokens();
      positions += b.size();
      // Every segment holds consecutive ids of one sample, starting at its first id.
      for (int64_t r = 0; r < b.batch_size; ++r)
        for (int64_t t = 0; t < b.seq_len; ++t) {
          const size_t k = size_t(r * b.seq_len + t);
          if (b.segment_ids[k] == 0) continue;
          if (b.positions[k] == 0) {
            CHECK(b.tokens[k] % 1000 == 1);
            seen.insert(b.tokens[k] / 1000);
          } else {
            CHECK(b.tokens[k] == b.tokens[k - 1] + 1);
            CHECK(b.segment_ids[k] == b.segment_ids[k - 1]);
          }
        }
    }
    CHECK(seen.size() == 500);
    CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 500);
    int64_t unpacked_positions = 0;
    for (const Batch& b : all_batches(unpacked, epoch)) unpacked_positions += b.size();
    const double padding = 1.0 - double(tokens) / double(positions);
    INFO("padding packed " << padding << ", unpacked " << 1.0 - double(tokens) / double(unpacked_positions));
    CHECK(padding < 0.05);
    CHECK(positions * 2 < unpacked_positions);
  }
  // Another epoch packs another order.
  CHECK_FALSE(same(loader.batch(0, 0), loader.batch(1, 0)));
}

TEST_CASE("packed rows are sharded: every rank gets the same count, no sample twice") {
  const auto ds = varied(203, 30);
  for (int32_t world : {1, 2, 3, 4}) {
    for (bool drop_last : {false, true}) {
      CAPTURE(world, drop_last);
      std::multiset<int64_t> seen;
      int64_t batches = -1;
      for (int32_t rank = 0; rank < world; ++rank) {
        DataloaderOptions o = packed(2, 48, rank, world);
        o.drop_last = drop_last;
        const Dataloader loader(ds, o);
        if (batches < 0) batches = loader.batches_in_epoch(0);
        CHECK(loader.batches_in_epoch(0) == batches);
        for (int64_t i = 0; i < batches; ++i)
          for (const auto& row : loader.batch_rows(0, i)) seen.insert(row.begin(), row.end());
      }
      CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == seen.size());
      if (!drop_last) CHECK(seen.size() == 203);
    }
  }
}

TEST_CASE("resuming from a saved state yields exactly the batches of an uninterrupted run") {
  const auto ds = varied(300, 50);
  for (bool packing : {false, true}) {
    CAPTURE(packing);
    DataloaderOptions o = packed(3, 64);
    o.packing = packing;
    // The uninterrupted run: two and a half epochs of next().
    Dataloader straight(ds, o);
    std::vector<Batch> expected;
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      straight.start_epoch(epoch);
      while (auto b = straight.next()) expected.push_back(*b);
    }
    // Interrupted after k batches; the state goes through JSON text, as a checkpoint keeps it.
    const int64_t per_epoch0 = Dataloader(ds, o).batches_in_epoch(0);
    for (int64_t k : {int64_t{0}, int64_t{1}, per_epoch0 / 2, per_epoch0 - 1, per_epoch0 + 2}) {
      Dataloader first(ds, o);
      int64_t done = 0;
      for (int64_t epoch = 0; done < k; ++epoch) {
        first.start_epoch(epoch);
        while (done < k && first.next()) ++done;
      }
      const std::string saved = first.state().to_json().dump();
      Dataloader resumed(ds, o);  // a new process: nothing carried over but the JSON
      resumed.restore(DataloaderState::from_json(nlohmann::json::parse(saved), "state.json"));
      size_t at = static_cast<size_t>(k);
      for (int64_t epoch = resumed.epoch(); epoch < 3; ++epoch) {
        if (epoch != resumed.epoch()) resumed.start_epoch(epoch);
        while (auto b = resumed.next()) {
          REQUIRE(at < expected.size());
          CHECK(same(*b, expected[at]));
          ++at;
        }
      }
      CHECK(at == expected.size());
    }
  }
}

TEST_CASE("a saved position is refused on other data or options, naming what changed") {
  const auto ds = varied(100, 20);
  Dataloader loader(ds, packed(2, 32));
  loader.seek(0, 3);
  const DataloaderState state = loader.state();

  DataloaderOptions other_len = packed(2, 33);
  Dataloader a(ds, other_len);
  CHECK_THROWS_WITH(a.restore(state), Catch::Contains("other data or batch options") && Catch::Contains("seq_len"));
  DataloaderOptions other_seed = packed(2, 32);
  other_seed.seed = 12;
  Dataloader b(ds, other_seed);
  CHECK_THROWS_WITH(b.restore(state), Catch::Contains("seed 11") && Catch::Contains("seed 12"));
  Dataloader c(varied(100, 20, /*seed=*/4), packed(2, 32));
  CHECK_THROWS_WITH(c.restore(state), Catch::Contains("fingerprint"));
  Dataloader d(ds, packed(2, 32));
  CHECK_NOTHROW(d.restore(state));
  CHECK(d.position() == 3);
}

TEST_CASE("a malformed saved state names the key") {
  auto error = [](const std::string& text) {
    try {
      DataloaderState::from_json(nlohmann::json::parse(text), "ckpt/trainer_state.json");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(error("[]") == "ckpt/trainer_state.json: data loader state: expected an object");
  CHECK(error(R"({"position": 1, "seed": "0000000000000000", "fingerprint": "0000000000000000"})") ==
        "ckpt/trainer_state.json: data loader state: \"epoch\" must be a non-negative integer");
  CHECK(error(R"({"epoch": 0, "position": -1, "seed": "0000000000000000", "fingerprint": "0000000000000000"})") ==
        "ckpt/trainer_state.json: data loader state: \"position\" must be a non-negative integer");
  CHECK(error(R"({"epoch": 0, "position": 1, "seed": 5, "fingerprint": "0000000000000000"})") ==
        "ckpt/trainer_state.json: data loader state: \"seed\" must be 16 lowercase hex digits");
  const DataloaderState s{2, 5, 0xDEADBEEFCAFEF00Dull, 42};
  const DataloaderState back = DataloaderState::from_json(s.to_json(), "x");
  CHECK(back.epoch == 2);
  CHECK(back.position == 5);
  CHECK(back.seed == 0xDEADBEEFCAFEF00Dull);
  CHECK(back.fingerprint == 42);
}

TEST_CASE("preference pairs take two rows: chosen, then rejected") {
  std::vector<Sample> pairs;
  for (int i = 0; i < 3; ++i) {
    Sample s = numbered_sample(i, 4);
    s.rejected_ids = {int32_t(1000 * i + 1), int32_t(1000 * i + 500), int32_t(1000 * i + 501)};
    s.rejected_trained = {0, 1, 1};
    pairs.push_back(s);
  }
  const auto ds = lyre::make_memory_dataset(pairs, lyre::RecordKind::preference);
  DataloaderOptions o = packed(4, 5);
  o.packing = false;
  o.shuffle = false;
  const Dataloader loader(ds, o);
  REQUIRE(loader.batches_in_epoch(0) == 2);  // 6 rows in batches of 4
  const Batch b = loader.batch(0, 0);
  CHECK(b.num_samples == 2);  // pairs
  CHECK(b.tokens == std::vector<int32_t>{1, 2, 3, kPad, kPad, 1, 500, kPad, kPad, kPad,  //
                                         1001, 1002, 1003, kPad, kPad, 1001, 1500, kPad, kPad, kPad});
  CHECK(b.targets[5] == 500);
  CHECK(b.targets[6] == 501);
  o.packing = true;
  CHECK_THROWS_WITH(Dataloader(ds, o), Catch::Contains("not packed"));
  o.packing = false;
  o.per_device_batch_size = 3;
  CHECK_THROWS_WITH(Dataloader(ds, o), Catch::Contains("even per_device_batch_size"));
}

TEST_CASE("documents inside a token window get their own segments and positions") {
  Sample s;
  s.ids = {5, 6, 9, 7, 8, 9};  // 9 ends a document
  s.trained.assign(6, 1);
  s.doc_starts = {3};
  DataloaderOptions o = packed(1, 5);
  o.packing = false;
  const Dataloader loader(lyre::make_memory_dataset({s}), o);
  const Batch b = loader.batch(0, 0);
  CHECK(b.tokens == std::vector<int32_t>{5, 6, 9, 7, 8});
  CHECK(b.positions == std::vector<int32_t>{0, 1, 2, 0, 1});
  CHECK(b.segment_ids == std::vector<int32_t>{1, 1, 1, 2, 2});
  CHECK(b.targets == std::vector<int32_t>{6, 9, 7, 8, 9});
}
