// Packing checked against the model: the CPU backend's log-probs of a row packed by the
// Dataloader equal those of each of its samples run alone, and training on packed rows works
// with less padding.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "fixture.hpp"

using namespace lyre;

namespace {

std::vector<float> logp_of(Model& model, const Batch& batch) {
  std::vector<float> logp;
  model.forward(batch, LYRE_FORWARD_NO_GRAD, logp);
  return logp;
}

}  // namespace

TEST_CASE("log-probs of a packed row equal those of each sample run alone (CPU backend)") {
  const std::string dir = test::temp_dir("packing");
  PluginRegistry registry = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  Model model(registry.backend("cpu"), test::kTinyLlama, R"({"threads": 2})");
  init_weights(model, 5, 0.1);  // larger than usual, so activations are far from zero
  const int64_t T = 48;
  auto data = test::open_jsonl(test::write_reversal_jsonl(dir, "train.jsonl", 64, 3), T);
  DataloaderOptions o;
  o.per_device_batch_size = 4;
  o.seq_len = T;
  o.packing = true;
  o.seed = 9;
  Dataloader packed(data, o);

  double worst = 0;
  int64_t compared = 0, samples_seen = 0;
  for (int64_t index = 0; index < std::min<int64_t>(3, packed.batches_in_epoch(0)); ++index) {
    const Batch batch = packed.batch(0, index);
    const std::vector<float> all = logp_of(model, batch);
    const auto rows = packed.batch_rows(0, index);
    for (size_t r = 0; r < rows.size(); ++r) {
      CHECK(rows[r].size() >= 2);  // short records: several per row
      int64_t at = static_cast<int64_t>(r) * T;
      for (int64_t sample : rows[r]) {
        ++samples_seen;
        // The same sample alone: a loader over just it, unpacked, one row of the same length.
        DataloaderOptions alone_options = o;
        alone_options.packing = false;
        alone_options.per_device_batch_size = 1;
        Dataloader alone_loader(make_memory_dataset({data->sample(sample)}), alone_options);
        const Batch alone = alone_loader.batch(0, 0);
        const std::vector<float> one = logp_of(model, alone);
        const int64_t n = alone.num_tokens();
        for (int64_t t = 0; t < n; ++t) {
          REQUIRE(batch.tokens[size_t(at + t)] == alone.tokens[size_t(t)]);
          worst = std::max(worst, double(std::abs(all[size_t(at + t)] - one[size_t(t)])));
          ++compared;
        }
        at += n;
      }
    }
  }
  INFO(samples_seen << " samples, " << compared << " log-probs compared; largest difference " << worst);
  CHECK(samples_seen >= 24);
  CHECK(worst <= 1e-6);
}

TEST_CASE("training on packed rows reports less padding and still learns") {
  auto run = [](bool packing) {
    test::Setup setup(/*batch_size=*/4, /*train_records=*/96);
    DataloaderOptions o = setup.train->options();
    o.packing = packing;
    o.seq_len = 48;
    Dataloader loader(test::open_jsonl(test::write_reversal_jsonl(test::temp_dir("packing-train"), "t.jsonl", 96, 1), 48), o);
    TrainerOptions options;
    options.epochs = 3;
    options.schedule.learning_rate = 3e-3;
    TrainResult result = Trainer(*setup.model, *setup.optimizer, *setup.objective, loader, nullptr, options).train();
    int64_t tokens = 0, positions = 0;
    for (const StepRecord& s : result.steps) {
      tokens += s.tokens;
      positions += s.positions;
    }
    return std::make_tuple(1.0 - double(tokens) / double(positions), result.steps.front().loss, result.steps.back().loss,
                           result.steps.size());
  };
  const auto [pad_packed, first_packed, last_packed, steps_packed] = run(true);
  const auto [pad_plain, first_plain, last_plain, steps_plain] = run(false);
  INFO("padding packed " << pad_packed << " (" << steps_packed << " steps), unpacked " << pad_plain << " ("
                         << steps_plain << " steps); packed loss " << first_packed << " -> " << last_packed);
  CHECK(pad_packed < 0.2);
  CHECK(pad_plain > 0.6);
  CHECK(steps_packed * 3 < steps_plain);
  CHECK(last_packed < first_packed - 1.0);
}
