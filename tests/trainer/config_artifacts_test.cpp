// The run config's artifact keys end to end: a run that writes TensorBoard events, a profiler trace
// and a Hugging Face export, and a second run that starts from that export (model.path).
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "fixture.hpp"
#include "io/hf_model.hpp"
#include "io/safetensors.hpp"
#include "io/tensorboard.hpp"
#include "train/run_config.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

TEST_CASE("a config with tensorboard_dir, profiler, checkpointer and export writes them all, and model.path trains on from the export") {
  const std::string dir = lyre::test::temp_dir("config-artifacts");
  for (const char* sub : {"tb", "trace", "exported", "tb2", "ckpt", "from-checkpoint"}) fs::remove_all(dir + "/" + sub);
  lyre::test::write_reversal_jsonl(dir, "train.jsonl", 64, 3);
  std::ofstream(dir + "/model.json") << lyre::test::kTinyLlama;
  json config = {
      {"seed", 2},
      {"backend", "cpu"},
      {"model", {{"config", "model.json"}}},
      {"optimizer", {{"learning_rate", 1e-3}}},
      {"train_dataloader", {{"path", "train.jsonl"}, {"per_device_batch_size", 8}, {"seq_len", 12}}},
      {"steps", 4},
      {"tensorboard_dir", "tb"},
      {"profiler", {{"output_path", "trace/"}, {"skip_first_n_steps", 1}, {"max_profile_steps", 2}}},
      {"export", {{"dir", "exported"}, {"dtype", "fp32"}}},
      {"checkpointer", {{"save_dir", "ckpt"}, {"save_interval", 2}}},
  };
  const lyre::RunSummary first =
      lyre::run_training(lyre::parse_run_config(config, dir + "/config.json"), {LYRE_TEST_PLUGIN_DIR});
  REQUIRE(first.train.steps.size() == 4);
  CHECK(fs::path(first.train.tensorboard_path).parent_path() == fs::path(dir + "/tb"));
  CHECK(lyre::read_tensorboard_scalars(first.train.tensorboard_path).size() >= 4 * 4);
  CHECK(fs::path(first.train.trace_path).parent_path() == fs::path(dir + "/trace"));
  REQUIRE(first.exported_dir == dir + "/exported");
  const json exported_config = json::parse(std::ifstream(dir + "/exported/config.json"));
  CHECK(exported_config.at("torch_dtype") == "float32");
  CHECK(exported_config.at("hidden_size") == 32);

  // `lyre export` of the final checkpoint writes the same tensors as the export at the end.
  lyre::ExportOptions from_checkpoint;
  from_checkpoint.out_dir = dir + "/from-checkpoint";
  from_checkpoint.dtype = "fp32";
  CHECK(lyre::export_checkpoint(dir + "/ckpt", from_checkpoint) == dir + "/ckpt/step_00000004");
  {
    const lyre::safetensors::File a = lyre::safetensors::File::open(dir + "/exported/model.safetensors");
    const lyre::safetensors::File b = lyre::safetensors::File::open(dir + "/from-checkpoint/model.safetensors");
    REQUIRE(a.tensors().size() == b.tensors().size());
    for (const lyre::safetensors::TensorInfo& t : a.tensors()) {
      INFO(t.name);
      const lyre::safetensors::TensorInfo& u = b.at(t.name);
      REQUIRE(u.nbytes() == t.nbytes());
      CHECK(std::equal(a.data(t), a.data(t) + t.nbytes(), b.data(u)));
    }
  }

  // The second run starts from the export: its first loss is the first run's model's loss on
  // new batches, far below the random init's (about log 259 = 5.6 per completion token).
  json second_config = config;
  second_config["model"] = {{"path", "exported"}};
  second_config.erase("export");
  second_config.erase("profiler");
  second_config.erase("checkpointer");
  second_config["tensorboard_dir"] = "tb2";
  second_config["steps"] = 1;
  second_config["optimizer"]["learning_rate"] = 1e-9;  // keep the weights: only the import is tested
  const lyre::RunConfig parsed = lyre::parse_run_config(second_config, dir + "/config.json");
  CHECK(parsed.model_path == dir + "/exported");
  const lyre::RunSummary second = lyre::run_training(parsed, {LYRE_TEST_PLUGIN_DIR});
  REQUIRE(second.train.steps.size() == 1);
  INFO("first run: step 1 " << first.train.steps.front().loss << ", step 4 " << first.train.steps.back().loss
                            << "; second run step 1 " << second.train.steps.front().loss);
  CHECK(second.train.steps.front().loss < first.train.steps.front().loss);
}

TEST_CASE("artifact keys with bad values are refused naming the key") {
  const std::string dir = lyre::test::temp_dir("config-artifacts-errors");
  json base = {
      {"model", {{"config", {{"model_type", "llama"}}}}},
      {"train_dataloader", {{"path", "train.jsonl"}, {"seq_len", 12}}},
  };
  auto error_of = [&](const json& extra) {
    json c = base;
    c.update(extra);
    try {
      lyre::parse_run_config(c, dir + "/config.json");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(error_of({{"checkpointer", {{"max_to_keep", 2}}}}) == dir + "/config.json: \"checkpointer.save_dir\" is required (the folder checkpoints go to)");
  CHECK(error_of({{"checkpointer", {{"save_dir", "c"}, {"resume", "latest"}}}}) ==
        dir + "/config.json: \"checkpointer.resume\" must be \"auto\" (the newest complete checkpoint), \"never\", or a step number, got \"latest\"");
  CHECK(error_of({{"checkpointer", {{"save_dir", "c"}, {"save_interval", 5}, {"save_interval_epochs", 1}}}}) ==
        dir + "/config.json: \"checkpointer.save_interval_epochs\" and save_interval are both set: set only one");
  CHECK(error_of({{"profiler", {{"skip_first_n_steps", 1}}}}) ==
        dir + "/config.json: \"profiler.output_path\" is required (the trace file, or a folder for it)");
  CHECK(error_of({{"export", {{"dir", "x"}, {"dtype", "int8"}}}}) ==
        dir + "/config.json: \"export.dtype\" must be \"auto\", \"bf16\", \"fp16\" or \"fp32\", got \"int8\"");
  CHECK(error_of({{"model", {{"path", dir + "/nowhere"}}}}).find("model.path") != std::string::npos);
}
