// Continued pretraining: `text` records with the causal-LM objective train on every token.
#include <catch2/catch.hpp>

#include <fstream>

#include "fixture.hpp"

using namespace lyre;

TEST_CASE("continued pretraining on text records lowers the loss on every token") {
  const std::string dir = test::temp_dir("pretrain");
  const std::string path = dir + "/text.jsonl";
  {
    std::ofstream out(path);
    for (int i = 0; i < 24; ++i) out << "{\"text\": \"the cat sat on the mat " << (i % 4) << "\"}\n";
  }
  PluginRegistry registry = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  Model model(registry.backend("cpu"), test::kTinyLlama, R"({"threads": 2})");
  init_weights(model, 3, 0.02);
  Optimizer optimizer(model, R"({"type": "adamw"})");
  Objective objective(registry.objective("sft"), R"({"mode": "causal_lm"})");
  ByteTokenizer tokenizer;
  DataloaderOptions o;
  o.per_device_batch_size = 4;
  o.seq_len = 32;
  o.pad_id = tokenizer.pad_id();
  auto data = test::open_jsonl(path, o.seq_len);
  Dataloader loader(data, o);

  // Every real token but the last of a record is a loss token: the normaliser says so.
  Batch first = loader.batch(0, 0);
  CHECK(objective.normalizer(first) == first.num_target_tokens());
  CHECK(first.num_target_tokens() == first.num_tokens());  // the last input predicts EOS

  TrainerOptions options;
  options.epochs = 8;
  options.schedule.learning_rate = 3e-3;
  TrainResult result = Trainer(model, optimizer, objective, loader, nullptr, options).train();
  REQUIRE(result.steps.size() == 48);
  INFO("loss " << result.steps.front().loss << " -> " << result.steps.back().loss);
  CHECK(result.steps.front().loss > 5.0);  // ~log(259) at random init
  CHECK(result.steps.back().loss < 2.5);   // the repeated sentence is learnt
}
