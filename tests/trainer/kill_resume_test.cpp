// End to end through the `lyre` binary: a run killed with SIGKILL and started again resumes from
// its newest complete checkpoint and ends bit-identical to a run that was never interrupted, also
// when the kill lands in the middle of a checkpoint write.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fixture.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kModel = R"({
  "model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "hidden_act": "silu", "tie_word_embeddings": false})";

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A run directory: data, model and a config that saves every 10 of its 40 steps into `save_dir`.
// 192 records in batches of 16 are 12 steps per epoch, so 40 steps cross three epoch boundaries
// (each with a new shuffle) and every checkpoint but one lands mid-epoch.
std::string write_run(const std::string& dir, const std::string& name, const std::string& save_dir,
                      const std::string& optimizer = R"({"type": "adamw", "learning_rate": 3e-3,
                        "lr_schedule": {"type": "cosine", "warmup_steps": 5, "min_lr_ratio": 0.1}})",
                      const char* model = kModel, int steps = 40) {
  if (!fs::exists(dir + "/train.jsonl")) lyre::test::write_reversal_jsonl(dir, "train.jsonl", 192, 11);
  std::ofstream(dir + "/" + name + ".model.json") << model;
  const json config = {
      {"seed", 5},
      {"backend", "cpu"},
      {"backend_options", {{"threads", 2}}},
      {"model", {{"config", name + ".model.json"}}},
      {"objective", {{"name", "sft"}, {"mode", "completion"}}},
      {"optimizer", json::parse(optimizer)},
      {"train_dataloader", {{"path", "train.jsonl"}, {"per_device_batch_size", 16}, {"seq_len", 16}}},
      {"steps", steps},
      {"log_steps_interval", 10},
      {"checkpointer", {{"save_dir", save_dir}, {"save_interval", 10}, {"max_to_keep", 3}}},
  };
  const std::string path = dir + "/" + name + ".json";
  std::ofstream(path) << config.dump(2);
  return path;
}

// Starts `lyre train CONFIG` with stdout and stderr in `log`; `crash_at` sets the
// checkpointer's crash hook (kill -9 of itself in the middle of that step's write).
pid_t start_lyre(const std::string& config, const std::string& log, int crash_at = 0) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("LYRE_PLUGIN_PATH", LYRE_TEST_PLUGIN_DIR, 1);
    if (crash_at > 0) ::setenv("LYRE_CHECKPOINTER_TEST_CRASH_AT_STEP", std::to_string(crash_at).c_str(), 1);
    const std::string lyre = LYRE_BINARY_DIR "/bin/lyre";
    ::execl(lyre.c_str(), lyre.c_str(), "train", config.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

void run_to_end(const std::string& config, const std::string& log) {
  const int status = wait_status(start_lyre(config, log));
  INFO("lyre train " << config << ":\n" << read_text(log));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

std::vector<double> losses(const fs::path& checkpoint) {
  const json state = json::parse(read_text(checkpoint / "trainer_state.json"));
  std::vector<double> out;
  for (const json& r : state.at("log_history")) out.push_back(r.at("loss").get<double>());
  return out;
}

// The two runs' last checkpoints hold the same bytes: parameters, optimizer state, and the losses
// of all 40 steps as doubles.
void require_identical(const fs::path& straight, const fs::path& resumed) {
  const fs::path a = straight / "step_00000040", b = resumed / "step_00000040";
  REQUIRE(fs::exists(a / "model.safetensors"));
  REQUIRE(fs::exists(b / "model.safetensors"));
  CHECK(read_text(a / "model.safetensors") == read_text(b / "model.safetensors"));
  CHECK(read_text(a / "optimizer.safetensors") == read_text(b / "optimizer.safetensors"));
  const std::vector<double> la = losses(a), lb = losses(b);
  REQUIRE(la.size() == 40);
  REQUIRE(lb.size() == 40);
  for (size_t i = 0; i < la.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(la[i] == lb[i]);
  }
}

struct Runs {
  std::string dir = lyre::test::temp_dir("kill-resume");
  std::string straight = dir + "/straight";
  Runs() {
    static bool done = false;  // one uninterrupted run serves every test case
    if (!done) run_to_end(write_run(dir, "straight", straight), dir + "/straight.log");
    done = true;
  }
};

}  // namespace

TEST_CASE("kill -9 after step 20 and a restart give the same parameters and losses as 40 steps straight") {
  Runs runs;
  const std::string save_dir = runs.dir + "/killed";
  const std::string config = write_run(runs.dir, "killed", save_dir);
  const pid_t pid = start_lyre(config, runs.dir + "/killed.log");
  // Kill as soon as step 20's checkpoint is complete (visible), while the run goes on.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(save_dir + "/step_00000020/trainer_state.json") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ::kill(pid, SIGKILL);
  const int status = wait_status(pid);
  INFO(read_text(runs.dir + "/killed.log"));
  REQUIRE(WIFSIGNALED(status));  // exited on its own: the run was too fast to be killed mid-way
  REQUIRE(WTERMSIG(status) == SIGKILL);
  REQUIRE_FALSE(fs::exists(save_dir + "/step_00000040"));

  run_to_end(config, runs.dir + "/resumed.log");
  const std::string log = read_text(runs.dir + "/resumed.log");
  INFO(log);
  CHECK(log.find("resumed from checkpoint step_000000") != std::string::npos);
  require_identical(runs.straight, save_dir);
}

TEST_CASE("a kill in the middle of a checkpoint write leaves the previous one, and the resume uses it") {
  Runs runs;
  const std::string save_dir = runs.dir + "/crashed";
  const std::string config = write_run(runs.dir, "crashed", save_dir);
  const int status = wait_status(start_lyre(config, runs.dir + "/crashed.log", /*crash_at=*/30));
  INFO(read_text(runs.dir + "/crashed.log"));
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  CHECK(fs::exists(save_dir + "/step_00000020/trainer_state.json"));
  CHECK_FALSE(fs::exists(save_dir + "/step_00000030"));
  bool partial = false;  // the interrupted write is there, under its temporary name
  for (const auto& e : fs::directory_iterator(save_dir)) partial |= e.path().filename().string().rfind(".tmp-step_00000030", 0) == 0;
  CHECK(partial);

  run_to_end(config, runs.dir + "/after-crash.log");
  const std::string log = read_text(runs.dir + "/after-crash.log");
  INFO(log);
  CHECK(log.find("resumed from checkpoint step_00000020 (step 20 of 40") != std::string::npos);
  require_identical(runs.straight, save_dir);
}

TEST_CASE("resuming with another model or optimizer is refused, naming the difference") {
  Runs runs;
  // A copy of the straight run's checkpoints, so the refusals cannot touch them.
  const std::string save_dir = runs.dir + "/refusals";
  fs::remove_all(save_dir);
  fs::copy(runs.straight, save_dir, fs::copy_options::recursive);

  std::string wider = kModel;
  wider.replace(wider.find("\"hidden_size\": 256"), 18, "\"hidden_size\": 192");
  const std::string model_config = write_run(runs.dir, "wider", save_dir, R"({"type": "adamw", "learning_rate": 3e-3,
      "lr_schedule": {"type": "cosine", "warmup_steps": 5, "min_lr_ratio": 0.1}})", wider.c_str());
  int status = wait_status(start_lyre(model_config, runs.dir + "/wider.log"));
  std::string log = read_text(runs.dir + "/wider.log");
  INFO(log);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(log.find("checkpoint step_00000040: the model differs: config.json \"hidden_size\" is 256 in the checkpoint and 192 in this run") !=
        std::string::npos);

  const std::string sgd_config = write_run(runs.dir, "sgd", save_dir, R"({"type": "sgd", "momentum": 0.9, "learning_rate": 3e-3})");
  status = wait_status(start_lyre(sgd_config, runs.dir + "/sgd.log"));
  log = read_text(runs.dir + "/sgd.log");
  INFO(log);
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(log.find("checkpoint step_00000040: the optimizer differs: its state model.embed_tokens.weight.momentum_buffer is not in the checkpoint") !=
        std::string::npos);

  const std::string shorter = write_run(runs.dir, "shorter", save_dir, R"({"type": "adamw", "learning_rate": 3e-3,
      "lr_schedule": {"type": "cosine", "warmup_steps": 5, "min_lr_ratio": 0.1}})", kModel, 30);
  status = wait_status(start_lyre(shorter, runs.dir + "/shorter.log"));
  log = read_text(runs.dir + "/shorter.log");
  INFO(log);
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(log.find("checkpoint step_00000040 is at step 40, beyond this run's 30 steps") != std::string::npos);

  // An edited trainer_state.json with a float where an integer belongs is refused by key, not
  // converted (a float such as 3e20 read as int64 would be undefined behaviour).
  const std::string state_path = save_dir + "/step_00000040/trainer_state.json";
  json state = json::parse(read_text(state_path));
  state["log_history"][3]["tokens"] = 3e20;
  std::ofstream(state_path) << state.dump();
  const std::string edited = write_run(runs.dir, "edited", save_dir);
  status = wait_status(start_lyre(edited, runs.dir + "/edited.log"));
  log = read_text(runs.dir + "/edited.log");
  INFO(log);
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(log.find("checkpoint step_00000040: trainer_state.json: [json.exception.type_error.302] \"tokens\" is 3e+20, not an integer") !=
        std::string::npos);
}
