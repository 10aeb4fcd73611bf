// A crash never costs the last good checkpoint: a kill -9 in the middle of a write leaves it
// listed and loadable and the partial one invisible; what an interrupted run left is cleaned up
// at the next start; a damaged newest checkpoint is passed over for the one before it.
#include <catch2/catch.hpp>

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "checkpoint_support.hpp"

namespace fs = std::filesystem;
using lyre::Checkpointer;
using namespace lyre::test;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A directory that looks like a finished checkpoint from the inside.
void fake_complete_dir(const std::string& path) {
  fs::create_directories(path);
  write_file(path + "/model.safetensors", "not looked at");
  write_file(path + "/trainer_state.json", "{}");
}

}  // namespace

TEST_CASE("directories an interrupted run left are removed at create, one log line each, and never listed") {
  ScratchDir dir;
  {
    Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"async", false}}));
    ckpt.save(1, small_state(1), state_json(1));
  }
  const std::string tmp = dir / ".tmp-step_00000005.99999";
  const std::string trash = dir / ".trash-step_00000002.99999";
  fake_complete_dir(tmp);
  fake_complete_dir(trash);
  fake_complete_dir(dir / "step_3");              // not the canonical name of step 3
  fs::create_directories(dir / "step_00000004");  // no trainer_state.json: never published
  write_file(dir / "step_00000004/model.safetensors", "");
  write_file(dir / ".tmp-notes", "a file, not a directory the checkpointer made");

  LogCapture log;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
  CHECK(log.lines("info") == std::vector<std::string>{
                                 "[checkpointer-safetensors] removed " + tmp + ", left by an interrupted run",
                                 "[checkpointer-safetensors] removed " + trash + ", left by an interrupted run"});
  CHECK_FALSE(fs::exists(tmp));
  CHECK_FALSE(fs::exists(trash));
  CHECK(fs::exists(dir / ".tmp-notes"));
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{1});
  const auto loaded = ckpt.load();
  REQUIRE(loaded.has_value());
  CHECK(loaded->step == 1);
}

TEST_CASE("incomplete directories are invisible to list and load even before a restart cleans them") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
  ckpt.save(1, small_state(1), state_json(1));
  ckpt.wait();
  fake_complete_dir(dir / ".tmp-step_00000009.99999");
  fake_complete_dir(dir / ".trash-step_00000008.99999");
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{1});
  CHECK(ckpt.load()->step == 1);
}

TEST_CASE("a kill -9 in the middle of a checkpoint write leaves the previous checkpoint listed and loadable") {
  ScratchDir dir;
  // This handle lives across the crash; synchronous, so no thread is running at fork().
  Checkpointer survivor(checkpointer_plugin(), config_for(dir.path(), {{"async", false}}));
  survivor.save(1, small_state(1), state_json(1));

  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child is a training run killed while its background writer is halfway through the
    // model file of step 2. Reaching the end means the hook did not fire.
    int code = 3;
    try {
      ::setenv("LYRE_CHECKPOINTER_TEST_CRASH_AT_STEP", "2", 1);
      Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
      std::vector<lyre::HostTensor> state = small_state(2);
      state.push_back(f32("model/big", {1 << 18}, pattern_floats(1 << 18, 9)));
      ckpt.save(2, state, state_json(2));
      ckpt.wait();
    } catch (...) {
      code = 4;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO("child status " << status);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);

  // The kill came mid-write: a partial model file, no trainer_state.json, under the temp name.
  const std::string partial = dir / (".tmp-step_00000002." + std::to_string(child));
  REQUIRE(fs::is_directory(partial));
  const auto partial_size = fs::file_size(partial + "/model.safetensors");
  CHECK(partial_size > 4 * (size_t{1} << 16));
  CHECK(partial_size < 4 * (size_t{1} << 18));
  CHECK_FALSE(fs::exists(partial + "/trainer_state.json"));
  CHECK_FALSE(fs::exists(dir / "step_00000002"));

  // Before any cleanup: invisible.
  CHECK(steps_of(survivor.list()) == std::vector<int64_t>{1});
  {
    const auto loaded = survivor.load();
    REQUIRE(loaded.has_value());
    CHECK(loaded->step == 1);
    CHECK(differences(small_state(1), *loaded) == "");
  }

  // The restarted run removes it and resumes from step 1.
  LogCapture log;
  Checkpointer restarted(checkpointer_plugin(), config_for(dir.path()));
  CHECK(log.lines("info") ==
        std::vector<std::string>{"[checkpointer-safetensors] removed " + partial + ", left by an interrupted run"});
  CHECK_FALSE(fs::exists(partial));
  const auto loaded = restarted.load();
  REQUIRE(loaded.has_value());
  CHECK(loaded->step == 1);
  CHECK(loaded->metadata_json == state_json(1));
  CHECK(differences(small_state(1), *loaded) == "");
}

TEST_CASE("a damaged newest checkpoint is passed over with a warning naming the file, and asked for by step it is an error") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"async", false}}));
  ckpt.save(1, small_state(1), state_json(1));
  ckpt.save(2, small_state(2), state_json(2));

  const std::string model = dir / "step_00000002/model.safetensors";
  const std::string state = dir / "step_00000002/trainer_state.json";
  std::string reason;
  SECTION("a truncated tensor file") {
    fs::resize_file(model, fs::file_size(model) - 5);
    // The reason is the safetensors reader's own text, kept whole.
    reason = model +
             ": tensor \"norm.weight\": data_offsets [48, 60] run past the end of the data section (55 bytes); the "
             "file may be truncated";
  }
  SECTION("trainer_state.json that is not JSON") {
    write_file(state, "{\"step\": 2,");
    reason = state +
             ": not valid JSON: [json.exception.parse_error.101] parse error at line 1, column 12: syntax error while "
             "parsing object key - unexpected end of input; expected string literal";
  }
  SECTION("trainer_state.json that is not an object") {
    write_file(state, "[2]");
    reason = state + ": expected a JSON object, got array";
  }
  SECTION("a group file missing") {
    fs::remove(dir / "step_00000002/optimizer.safetensors");
    reason = model + ": the checkpoint was saved with the files of groups model,optimizer, the directory holds model";
  }

  LogCapture log;
  const auto loaded = ckpt.load(-1);
  REQUIRE(loaded.has_value());
  CHECK(loaded->step == 1);
  CHECK(differences(small_state(1), *loaded) == "");
  const auto warnings = log.lines("warning");
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0] == "[checkpointer-safetensors] cannot load step 2: " + reason + "; falling back to step 1");
  CHECK_THROWS_WITH(ckpt.load(2), "checkpointer-safetensors: load: cannot load step 2: " + reason);
}

TEST_CASE("when every checkpoint is damaged, load(-1) is an error, not a fresh start") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"async", false}}));
  ckpt.save(1, small_state(1), state_json(1));
  ckpt.save(2, small_state(2), state_json(2));
  write_file(dir / "step_00000001/trainer_state.json", "[1]");
  write_file(dir / "step_00000002/trainer_state.json", "[2]");
  LogCapture log;
  CHECK_THROWS_WITH(ckpt.load(-1), "checkpointer-safetensors: load: no checkpoint in \"" + dir.path() +
                                       "\" can be loaded:\n  step 2: " + dir.path() +
                                       "/step_00000002/trainer_state.json: expected a JSON object, got array\n  step 1: " +
                                       dir.path() + "/step_00000001/trainer_state.json: expected a JSON object, got array");
  CHECK(log.lines("warning") ==
        std::vector<std::string>{"[checkpointer-safetensors] cannot load step 2: " + dir.path() +
                                     "/step_00000002/trainer_state.json: expected a JSON object, got array; falling "
                                     "back to step 1",
                                 "[checkpointer-safetensors] cannot load step 1: " + dir.path() +
                                     "/step_00000001/trainer_state.json: expected a JSON object, got array"});
}
