// backend-cuda, emulated on the CPU, as the host sees it: discovered from its own folder ahead of
// the build tree's (where it shadows the real loader), scored 1 so that "auto" never picks it,
// generating through the plugin table what backend-cpu generates, and training end to end through
// the `lyre` binary: a checkpoint of backend-cuda resumes on backend-cuda bit for bit (the
// emulation is deterministic: the whole state is in the checkpoint) and moves to and from
// backend-cpu.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../run_lyre.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"

namespace fs = std::filesystem;

namespace lyre::test {
namespace {

const std::string kSearchPath = LYRE_EMULATED_PLUGIN_DIR ":" LYRE_TEST_PLUGIN_DIR;

PluginRegistry& registry() {
  static PluginRegistry r = PluginRegistry::discover({LYRE_EMULATED_PLUGIN_DIR, LYRE_TEST_PLUGIN_DIR});
  return r;
}

std::string tiny_config(bool tied) {
  return std::string(R"({"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": )") +
         (tied ? "true" : "false") + "}";
}

// Activations of O(1) and logits O(1) apart: the argmax is the same under either backend's rounding.
void randomize(Model& model, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const ParameterInfo& p : model.parameters()) {
    std::vector<float> v(static_cast<size_t>(p.numel()));
    const float scale = p.kind == LYRE_PARAM_MATRIX ? 1.0f / std::sqrt(static_cast<float>(p.shape[1])) : 1.0f;
    for (float& x : v) x = p.kind == LYRE_PARAM_NORM ? 1.0f + 0.1f * normal(rng) : scale * normal(rng);
    model.write(p.index, v);
  }
}

// "abc=" -> "cba" records.
void write_reversal_jsonl(const fs::path& path, int count) {
  std::mt19937_64 rng(17);
  std::ofstream out(path);
  for (int i = 0; i < count; ++i) {
    std::string w;
    for (int n = 3 + static_cast<int>(rng() % 3); n > 0; --n) w += static_cast<char>('a' + rng() % 6);
    out << "{\"prompt\": \"" << w << "=\", \"completion\": \"" << std::string(w.rbegin(), w.rend()) << "\"}\n";
  }
}

// A run directory: data, a tiny model, AdamW, a loss line per step, a checkpoint every 10 steps,
// micro-batches of 8 accumulated to 16 rows.
fs::path write_run(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("lyre-test-cuda-emulated-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  write_reversal_jsonl(dir / "train.jsonl", 256);
  std::ofstream(dir / "model.json") << R"({"model_type": "llama", "hidden_size": 48, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": true})";
  return dir;
}

// Writes run.json for `backend` ("cpu", or "cuda" with its precision) and trains; returns the log,
// having required a clean exit on that backend.
std::string train(const fs::path& dir, const std::string& backend, const std::string& precision,
                  const std::string& log_name) {
  nlohmann::json config = {
      {"seed", 3},
      {"backend", backend},
      {"backend_options", backend == "cpu" ? nlohmann::json{{"threads", 2}} : nlohmann::json{{"precision", precision}}},
      {"model", {{"config", "model.json"}}},
      {"objective", {{"name", "sft"}, {"mode", "completion"}}},
      {"optimizer", {{"type", "adamw"}, {"learning_rate", 1e-2}}},
      {"train_dataloader", {{"path", "train.jsonl"}, {"per_device_batch_size", 16}, {"seq_len", 16}}},
      {"gradient_accumulation_steps", 2},
      {"steps", 20},
      {"log_steps_interval", 1},
      {"checkpointer", {{"save_dir", "ckpt"}, {"save_interval", 10}, {"max_to_keep", 3}}},
  };
  std::ofstream(dir / "run.json") << config.dump(2);
  // The emulation first on the search path.
  const lyre::test::LyreRun run = lyre::test::run_lyre({"train", "run.json"}, {{"LYRE_PLUGIN_PATH", kSearchPath}}, dir);
  std::ofstream(dir / log_name) << run.output;
  const std::string& text = run.output;
  INFO(text);
  REQUIRE(run.status == 0);
  REQUIRE(text.find("backend backend-" + backend + " (") != std::string::npos);
  return text;
}

// The loss of every logged step, by step number, as printed.
std::map<int, std::string> losses(const std::string& log) {
  std::map<int, std::string> out;
  const std::regex step_line(R"(step (\d+)/\d+ \| epoch \d+ \| loss ([0-9.]+))");
  for (std::sregex_iterator it(log.begin(), log.end(), step_line), end; it != end; ++it)
    out[std::stoi((*it)[1])] = (*it)[2];
  return out;
}

}  // namespace

TEST_CASE("the emulated backend-cuda shadows the real loader, scores 1, and auto passes it over") {
  const PluginReport* emulated = nullptr;
  const PluginReport* shadowed = nullptr;
  for (const PluginReport& r : registry().reports()) {
    if (r.loaded && r.name == "backend-cuda") emulated = &r;
    if (!r.loaded && r.path == LYRE_TEST_PLUGIN_DIR "/liblyre-backend-cuda.so") shadowed = &r;
  }
  REQUIRE(emulated != nullptr);
  CHECK(fs::path(emulated->path).parent_path() == fs::path(LYRE_EMULATED_PLUGIN_DIR));
  CHECK(emulated->score == 1);
  CHECK(emulated->score_reason == "emulated on the CPU for tests (no kernels of backend-cuda run)");
  REQUIRE(shadowed != nullptr);
  CHECK_THAT(shadowed->error, Catch::Contains("shadowed by"));
#ifdef LYRE_TEST_HAVE_BACKEND_CPU
  CHECK(registry().backend("auto")->name() == "backend-cpu");
#endif
}

#ifdef LYRE_TEST_HAVE_BACKEND_CPU
TEST_CASE("greedy generation through the plugin table gives backend-cpu's tokens, and stops at eos") {
  for (const bool tied : {false, true}) {
    INFO("tied " << tied);
    Model cpu_model(registry().backend("cpu"), tiny_config(tied), R"({"threads": 2})");
    randomize(cpu_model, 42);
    Model cuda_model(registry().backend("cuda"), tiny_config(tied), R"({"precision": "fp32"})");
    for (const ParameterInfo& p : cpu_model.parameters()) cuda_model.write(p.index, cpu_model.read(p.index));
    const std::vector<std::vector<int32_t>> prompts = {{5, 9, 13}, {1}, {60, 2, 33, 4, 7}};
    GenerateOptions greedy;
    greedy.max_new_tokens = 10;
    const auto expected = cpu_model.generate(prompts, greedy);
    CHECK(cuda_model.generate(prompts, greedy) == expected);

    greedy.eos_token_id = expected[0][2];  // row 0 stops at its third token (or sooner, if repeated)
    const auto stopped = cuda_model.generate(prompts, greedy);
    CHECK(stopped == cpu_model.generate(prompts, greedy));
    REQUIRE(!stopped[0].empty());
    CHECK(stopped[0].size() <= 3);
    CHECK(stopped[0].back() == greedy.eos_token_id);
  }
}

TEST_CASE("lyre train on backend-cuda resumes from its checkpoint bit for bit, and moves to and from backend-cpu") {
  // backend-cuda resuming backend-cuda: the very same losses, in both precisions.
  for (const std::string precision : {"fp32", "bf16"}) {
    INFO("cuda " << precision << " saves and resumes");
    const fs::path dir = write_run("self-" + precision);
    const std::string straight_log = train(dir, "cuda", precision, "straight.log");
    CHECK(straight_log.find("emulated (CPU)") != std::string::npos);
    const std::map<int, std::string> straight = losses(straight_log);
    REQUIRE(straight.size() == 20);
    CHECK(std::stod(straight.at(20)) < std::stod(straight.at(1)));
    fs::remove_all(dir / "ckpt" / "step_00000020");
    const std::string log = train(dir, "cuda", precision, "resumed.log");
    INFO(log);
    CHECK(log.find("resumed from checkpoint step_00000010") != std::string::npos);
    const std::map<int, std::string> resumed = losses(log);
    REQUIRE(resumed.size() == 10);
    for (const auto& [step, loss] : resumed) {
      INFO("step " << step);
      CHECK(loss == straight.at(step));
    }
    fs::remove_all(dir);
  }
  // Across backends (fp32): the same losses up to two backends' float32 rounding.
  for (const auto& [first, second] : {std::pair<std::string, std::string>{"cpu", "cuda"}, {"cuda", "cpu"}}) {
    INFO(first << " saves, " << second << " resumes");
    const fs::path dir = write_run("resume-" + first);
    const std::map<int, std::string> straight = losses(train(dir, first, "fp32", "straight.log"));
    REQUIRE(straight.size() == 20);
    fs::remove_all(dir / "ckpt" / "step_00000020");
    const std::string log = train(dir, second, "fp32", "resumed.log");
    INFO(log);
    CHECK(log.find("resumed from checkpoint step_00000010") != std::string::npos);
    const std::map<int, std::string> resumed = losses(log);
    REQUIRE(resumed.size() == 10);
    for (const auto& [step, loss] : resumed) {
      INFO("step " << step);
      CHECK(std::stod(loss) == Approx(std::stod(straight.at(step))).margin(2e-3));
    }
    fs::remove_all(dir);
  }
}
#endif

}  // namespace lyre::test
