#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "data/byte_tokenizer.hpp"
#include "data/dataloader.hpp"
#include "temp_files.hpp"

using lyre::Batch;
using lyre::ByteTokenizer;
using lyre::Dataloader;
using lyre::DataloaderOptions;
using lyre::Dataset;
using lyre::test::TempDir;

// Unpacked loaders put one sample in a row: the sample index per row, -1 for padding.
std::vector<int64_t> batch_indices(const Dataloader& loader, int64_t epoch, int64_t index) {
  std::vector<int64_t> out;
  for (const auto& row : loader.batch_rows(epoch, index)) {
    REQUIRE(row.size() <= 1);
    out.push_back(row.empty() ? -1 : row[0]);
  }
  return out;
}

namespace {

constexpr int32_t kBos = ByteTokenizer::kBos;
constexpr int32_t kEos = ByteTokenizer::kEos;
constexpr int32_t kPad = ByteTokenizer::kPad;

std::shared_ptr<const Dataset> load(const std::string& jsonl) {
  TempDir dir;
  lyre::DatasetOptions o;
  o.source.path = dir.write("d.jsonl", jsonl);
  return lyre::open_dataset(o, std::make_shared<ByteTokenizer>(), nullptr);
}

// n text records; record i is "s<i>".
std::shared_ptr<const Dataset> numbered(int64_t n) {
  std::string jsonl;
  for (int64_t i = 0; i < n; ++i) jsonl += "{\"text\": \"s" + std::to_string(i) + "\"}\n";
  return load(jsonl);
}

DataloaderOptions options(int64_t batch, int32_t rank, int32_t world, bool shuffle, bool drop_last,
                          uint64_t seed = 7) {
  DataloaderOptions o;
  o.per_device_batch_size = batch;
  o.seq_len = 8;
  o.shuffle = shuffle;
  o.drop_last = drop_last;
  o.seed = seed;
  o.rank = rank;
  o.world_size = world;
  o.pad_id = kPad;
  return o;
}

// The epoch's whole sample order, read through a one-rank loader that takes every sample.
std::vector<int64_t> epoch_order(const std::shared_ptr<const Dataset>& ds, bool shuffle, uint64_t seed,
                                 int64_t epoch) {
  const Dataloader all(ds, options(ds->size(), 0, 1, shuffle, false, seed));
  return batch_indices(all, epoch, 0);
}

}  // namespace

TEST_CASE("a batch lays out tokens, targets, positions, segments and loss mask") {
  const auto ds = load("{\"prompt\": \"ab\", \"completion\": \"c\"}\n{\"prompt\": \"h\", \"completion\": \"ello\"}\n");
  DataloaderOptions o = options(3, 0, 1, false, false);
  o.seq_len = 6;
  const Dataloader loader(ds, o);
  REQUIRE(loader.batches_per_epoch() == 1);
  const Batch b = loader.batch(0, 0);
  REQUIRE(b.batch_size == 3);
  REQUIRE(b.seq_len == 6);
  REQUIRE(b.size() == 18);
  CHECK(b.num_samples == 2);

  // Row 0: ids [BOS a b c EOS], only c and EOS trained; EOS is a target, never an input, so
  //        4 positions hold data and 2 are padding.
  // Row 1: ids [BOS h e l l o EOS] fills the row exactly: 6 inputs, 6 targets; "ello" and EOS
  //        trained.
  // Row 2: no sample, all padding.
  const std::vector<int32_t> tokens = {kBos, 'a', 'b', 'c', kPad, kPad,  //
                                       kBos, 'h', 'e', 'l', 'l', 'o',    //
                                       kPad, kPad, kPad, kPad, kPad, kPad};
  const std::vector<int32_t> targets = {'a', 'b', 'c', kEos, -1, -1,  //
                                        'h', 'e', 'l', 'l', 'o', kEos,  //
                                        -1, -1, -1, -1, -1, -1};
  const std::vector<int32_t> positions = {0, 1, 2, 3, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0};
  const std::vector<int32_t> segments = {1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  const std::vector<int32_t> loss_mask = {0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  CHECK(b.tokens == tokens);
  CHECK(b.targets == targets);
  CHECK(b.positions == positions);
  CHECK(b.segment_ids == segments);
  CHECK(b.loss_mask == loss_mask);
  CHECK(b.num_tokens() == 10);
  CHECK(b.num_target_tokens() == 10);  // every real input predicts something
}

TEST_CASE("a sample longer than the row shows its first T ids and the next T as targets") {
  const auto ds = load("{\"text\": \"abcdefgh\"}\n");
  DataloaderOptions o = options(1, 0, 1, false, true);
  o.seq_len = 4;
  const Batch b = Dataloader(ds, o).batch(0, 0);
  CHECK(b.tokens == std::vector<int32_t>{kBos, 'a', 'b', 'c'});
  CHECK(b.targets == std::vector<int32_t>{'a', 'b', 'c', 'd'});
  CHECK(b.loss_mask == std::vector<int32_t>{1, 1, 1, 1});
  CHECK(b.num_samples == 1);
}

TEST_CASE("an empty Batch is all padding") {
  const Batch b(2, 3);
  CHECK(b.size() == 6);
  CHECK(b.num_samples == 0);
  CHECK(b.tokens == std::vector<int32_t>(6, 0));
  CHECK(b.targets == std::vector<int32_t>(6, -1));
  CHECK(b.segment_ids == std::vector<int32_t>(6, 0));
  CHECK(b.loss_mask == std::vector<int32_t>(6, 0));
  CHECK(b.num_tokens() == 0);
  CHECK(b.num_target_tokens() == 0);
}

TEST_CASE("rank r of w takes the r-th slice of each global batch") {
  const int64_t batch = 2;
  for (int64_t n : {1, 5, 12, 13, 24, 31}) {
    const auto ds = numbered(n);
    for (bool shuffle : {false, true}) {
      for (bool drop_last : {false, true}) {
        for (int32_t world : {1, 2, 3, 4}) {
          CAPTURE(n, shuffle, drop_last, world);
          const int64_t global = batch * world;
          const int64_t expected_batches = drop_last ? n / global : (n + global - 1) / global;
          for (int64_t epoch : {0, 1}) {
            const std::vector<int64_t> order = epoch_order(ds, shuffle, 7, epoch);
            std::multiset<int64_t> seen;
            for (int32_t rank = 0; rank < world; ++rank) {
              const Dataloader loader(ds, options(batch, rank, world, shuffle, drop_last));
              REQUIRE(loader.batches_per_epoch() == expected_batches);
              for (int64_t i = 0; i < expected_batches; ++i) {
                const std::vector<int64_t> got = batch_indices(loader, epoch, i);
                REQUIRE(got.size() == static_cast<size_t>(batch));
                int64_t real = 0;
                for (int64_t j = 0; j < batch; ++j) {
                  // The documented formula: position (i*w + r)*B + j of the epoch's order.
                  const int64_t at = (i * world + rank) * batch + j;
                  const int64_t want = at < n ? order[static_cast<size_t>(at)] : -1;
                  CHECK(got[static_cast<size_t>(j)] == want);
                  if (want >= 0) {
                    seen.insert(want);
                    ++real;
                  }
                }
                CHECK(loader.batch(epoch, i).num_samples == real);
              }
            }
            // Disjoint within the epoch, and together they cover every global batch.
            const std::set<int64_t> distinct(seen.begin(), seen.end());
            CHECK(distinct.size() == seen.size());
            CHECK(static_cast<int64_t>(seen.size()) == std::min(n, expected_batches * global));
            if (!drop_last) CHECK(static_cast<int64_t>(distinct.size()) == n);
          }
        }
      }
    }
  }
}

TEST_CASE("without shuffling the order is the dataset's") {
  const auto ds = numbered(10);
  std::vector<int64_t> identity(10);
  std::iota(identity.begin(), identity.end(), int64_t{0});
  CHECK(epoch_order(ds, false, 7, 0) == identity);
  CHECK(epoch_order(ds, false, 7, 5) == identity);
  const Dataloader rank1(ds, options(2, 1, 2, false, true));
  CHECK(batch_indices(rank1, 0, 0) == std::vector<int64_t>{2, 3});
  CHECK(batch_indices(rank1, 0, 1) == std::vector<int64_t>{6, 7});
}

TEST_CASE("shuffling repeats per (seed, epoch) and changes across epochs and seeds") {
  const auto ds = numbered(50);
  const std::vector<int64_t> e0 = epoch_order(ds, true, 7, 0);
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(50);
  std::iota(identity.begin(), identity.end(), int64_t{0});
  CHECK(sorted == identity);  // a permutation
  CHECK(e0 != identity);

  CHECK(epoch_order(ds, true, 7, 0) == e0);  // a fresh loader, same answer
  CHECK(epoch_order(ds, true, 7, 1) != e0);
  CHECK(epoch_order(ds, true, 7, 2) != epoch_order(ds, true, 7, 1));
  CHECK(epoch_order(ds, true, 8, 0) != e0);

  // The cached order of another epoch does not leak into this one.
  const Dataloader loader(ds, options(50, 0, 1, true, false));
  const std::vector<int64_t> e1 = batch_indices(loader, 1, 0);
  CHECK(batch_indices(loader, 0, 0) == e0);
  CHECK(batch_indices(loader, 1, 0) == e1);
}

TEST_CASE("shuffled order is pinned across platforms") {
  // Fisher-Yates (i from n-1 down to 1, j uniform in [0, i] by rejection) over mt19937_64 seeded
  // with splitmix64(seed ^ splitmix64(epoch)); computed independently of this code.
  const auto ds = numbered(10);
  CHECK(epoch_order(ds, true, 42, 0) == std::vector<int64_t>({9, 6, 2, 0, 1, 4, 3, 8, 5, 7}));
  CHECK(epoch_order(ds, true, 42, 3) == std::vector<int64_t>({6, 5, 7, 9, 4, 2, 0, 8, 3, 1}));
}

TEST_CASE("drop_last drops the last incomplete global batch, else pads it") {
  const auto ds = numbered(10);
  SECTION("one rank") {
    const Dataloader dropped(ds, options(3, 0, 1, true, true));
    CHECK(dropped.batches_per_epoch() == 3);
    const Dataloader kept(ds, options(3, 0, 1, true, false));
    REQUIRE(kept.batches_per_epoch() == 4);
    const Batch last = kept.batch(0, 3);
    CHECK(last.num_samples == 1);
    CHECK(std::count(last.segment_ids.begin() + 8, last.segment_ids.end(), 0) == 16);  // rows 1, 2
  }
  SECTION("two ranks: the last global batch holds 2 of 4 samples, all on rank 0") {
    const Dataloader r0_dropped(ds, options(2, 0, 2, false, true));
    CHECK(r0_dropped.batches_per_epoch() == 2);
    const Dataloader r0(ds, options(2, 0, 2, false, false));
    const Dataloader r1(ds, options(2, 1, 2, false, false));
    REQUIRE(r0.batches_per_epoch() == 3);
    REQUIRE(r1.batches_per_epoch() == 3);
    CHECK(batch_indices(r0, 0, 2) == std::vector<int64_t>{8, 9});
    CHECK(batch_indices(r1, 0, 2) == std::vector<int64_t>{-1, -1});
    const Batch empty = r1.batch(0, 2);
    CHECK(empty.num_samples == 0);
    CHECK(empty.num_tokens() == 0);
    CHECK(empty.num_target_tokens() == 0);
    CHECK(empty.tokens == std::vector<int32_t>(16, kPad));
  }
  SECTION("fewer samples than one global batch") {
    CHECK(Dataloader(ds, options(8, 0, 2, true, true)).batches_per_epoch() == 0);
    CHECK(Dataloader(ds, options(8, 0, 2, true, false)).batches_per_epoch() == 1);
  }
}

TEST_CASE("iteration walks the epoch's batches and resumes where it left off") {
  const auto ds = numbered(7);
  Dataloader loader(ds, options(2, 0, 1, true, false));
  loader.start_epoch(2);
  std::vector<Batch> seen;
  while (auto b = loader.next()) seen.push_back(*b);
  REQUIRE(seen.size() == 4);
  CHECK(loader.position() == 4);
  CHECK(loader.epoch() == 2);
  for (size_t i = 0; i < seen.size(); ++i) CHECK(seen[i].tokens == loader.batch(2, static_cast<int64_t>(i)).tokens);
  CHECK_FALSE(loader.next().has_value());

  loader.seek(2, 3);
  const auto resumed = loader.next();
  REQUIRE(resumed.has_value());
  CHECK(resumed->tokens == seen[3].tokens);
  CHECK_THROWS_AS(loader.seek(2, 5), std::out_of_range);
  CHECK_THROWS_AS(loader.batch(0, 4), std::out_of_range);
}

TEST_CASE("bad options are refused") {
  const auto ds = numbered(3);
  CHECK_THROWS_AS(Dataloader(ds, options(0, 0, 1, true, true)), std::invalid_argument);
  CHECK_THROWS_AS(Dataloader(ds, options(1, 2, 2, true, true)), std::invalid_argument);
  CHECK_THROWS_AS(Dataloader(ds, options(1, 0, 0, true, true)), std::invalid_argument);
  CHECK_THROWS_AS(Dataloader(nullptr, options(1, 0, 1, true, true)), std::invalid_argument);
  DataloaderOptions o = options(1, 0, 1, true, true);
  o.seq_len = 0;
  CHECK_THROWS_AS(Dataloader(ds, o), std::invalid_argument);
}
