// End to end through the `lyre` binary: `lyre train CONFIG --set backend=torch` trains on
// backend-torch and its loss falls, and a checkpoint of either backend resumes on the other.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../run_lyre.hpp"

namespace fs = std::filesystem;

namespace {

// `count` reversal records ("abc=" -> "cba").
void write_reversal_jsonl(const fs::path& path, int count) {
  std::mt19937_64 rng(17);
  std::ofstream out(path);
  for (int i = 0; i < count; ++i) {
    std::string w;
    for (int n = 3 + static_cast<int>(rng() % 3); n > 0; --n) w += static_cast<char>('a' + rng() % 6);
    out << "{\"prompt\": \"" << w << "=\", \"completion\": \"" << std::string(w.rbegin(), w.rend()) << "\"}\n";
  }
}

// A run directory with data, a tiny model and run.json (AdamW, `steps` steps, a loss line per
// step; checkpoints every 10 steps into ckpt/ when `checkpoints`). Its backend is "cpu".
fs::path write_run(const std::string& name, int steps, bool checkpoints) {
  const fs::path dir = fs::temp_directory_path() / ("lyre-test-torch-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  write_reversal_jsonl(dir / "train.jsonl", 256);
  std::ofstream(dir / "model.json") << R"({"model_type": "llama", "hidden_size": 48, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": true})";
  nlohmann::json config = {
      {"seed", 3},
      {"backend", "cpu"},
      {"backend_options", {{"threads", 2}}},
      {"model", {{"config", "model.json"}}},
      {"objective", {{"name", "sft"}, {"mode", "completion"}}},
      {"optimizer", {{"type", "adamw"}, {"learning_rate", 1e-2}}},
      {"train_dataloader", {{"path", "train.jsonl"}, {"per_device_batch_size", 16}, {"seq_len", 16}}},
      {"steps", steps},
      {"log_steps_interval", 1},
  };
  if (checkpoints) config["checkpointer"] = {{"save_dir", "ckpt"}, {"save_interval", 10}, {"max_to_keep", 3}};
  std::ofstream(dir / "run.json") << config.dump(2);
  return dir;
}

// Runs `lyre train run.json --set backend=BACKEND` in `dir`; returns its log, having required
// that it ran on that backend and exited 0.
std::string train(const fs::path& dir, const std::string& backend, const std::string& log_name) {
  const lyre::test::LyreRun run = lyre::test::run_lyre({"train", "run.json", "--set", "backend=" + backend},
                                                       {{"LYRE_PLUGIN_PATH", LYRE_TEST_PLUGIN_DIR}}, dir);
  std::ofstream(dir / log_name) << run.output;
  const std::string& text = run.output;
  INFO(text);
  REQUIRE(run.status == 0);
  REQUIRE(text.find("backend backend-" + backend + " (") != std::string::npos);
  return text;
}

// The loss of every logged step, by step number.
std::map<int, double> losses(const std::string& log) {
  std::map<int, double> out;
  const std::regex step_line(R"(step (\d+)/\d+ \| epoch \d+ \| loss ([0-9.]+))");
  for (std::sregex_iterator it(log.begin(), log.end(), step_line), end; it != end; ++it)
    out[std::stoi((*it)[1])] = std::stod((*it)[2]);
  return out;
}

}  // namespace

TEST_CASE("lyre train --set backend=torch trains on backend-torch and the loss falls") {
  const fs::path dir = write_run("train", 30, false);
  const std::string log = train(dir, "torch", "train.log");
  INFO(log);
  CHECK(log.find("backend backend-torch (torch cpu: 2 threads (LibTorch ") != std::string::npos);
  const std::map<int, double> loss = losses(log);
  REQUIRE(loss.size() == 30);
  INFO("loss at step 1: " << loss.at(1) << ", at step 30: " << loss.at(30));
  CHECK(loss.at(1) > 4.0);  // random init: about log(259) = 5.6 per completion token
  CHECK(loss.at(30) < 0.6 * loss.at(1));
  fs::remove_all(dir);
}

TEST_CASE("a checkpoint moves between backend-cpu and backend-torch and the run goes on with the same losses") {
  for (const auto& [first, second] : {std::pair<std::string, std::string>{"cpu", "torch"}, {"torch", "cpu"}}) {
    INFO(first << " saves, " << second << " resumes");
    const fs::path dir = write_run("resume-" + first, 20, true);
    const std::map<int, double> straight = losses(train(dir, first, "straight.log"));
    REQUIRE(straight.size() == 20);
    fs::remove_all(dir / "ckpt" / "step_00000020");
    const std::string log = train(dir, second, "resumed.log");
    INFO(log);
    CHECK(log.find("resumed from checkpoint step_00000010") != std::string::npos);
    const std::map<int, double> resumed = losses(log);
    REQUIRE(resumed.size() == 10);
    for (const auto& [step, loss] : resumed) {
      INFO("step " << step);
      CHECK(step > 10);
      CHECK(loss == Approx(straight.at(step)).margin(2e-3));  // two backends' float32 rounding apart
    }
    fs::remove_all(dir);
  }
}
