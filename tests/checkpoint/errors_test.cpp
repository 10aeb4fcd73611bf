// Bad configuration, bad input and failures of the disk each give one clear error naming the
// key, the step, the tensor or the path; a failure in the background is not lost.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "checkpoint_support.hpp"

namespace fs = std::filesystem;
using lyre::Checkpointer;
using namespace lyre::test;

namespace {

// Replaces the save directory by a regular file after the checkpointer accepted it, so that the
// next write fails in a known way.
void make_save_dir_a_file(const std::string& save_dir) {
  fs::remove_all(save_dir);
  std::ofstream(save_dir) << "in the way";
}

std::string create_error(const std::string& config) {
  try {
    Checkpointer ckpt(checkpointer_plugin(), config);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("config errors name the key") {
  ScratchDir dir;
  CHECK(create_error("{}") ==
        "checkpointer-safetensors: create: config: \"save_dir\" is required (the directory checkpoints are written to)");
  CHECK(create_error("") ==
        "checkpointer-safetensors: create: config: \"save_dir\" is required (the directory checkpoints are written to)");
  CHECK(create_error(config_for(dir.path(), {{"keep", 2}})) ==
        "checkpointer-safetensors: create: config: unknown key \"keep\" (known: save_dir, max_to_keep, async)");
  CHECK(create_error(config_for(dir.path(), {{"max_to_keep", 0}})) ==
        "checkpointer-safetensors: create: config: \"max_to_keep\" must be an integer >= 1, got 0");
  CHECK(create_error(config_for(dir.path(), {{"max_to_keep", 2.5}})) ==
        "checkpointer-safetensors: create: config: \"max_to_keep\" must be an integer >= 1, got 2.5");
  CHECK(create_error(config_for(dir.path(), {{"async", "yes"}})) ==
        "checkpointer-safetensors: create: config: \"async\" must be true or false, got \"yes\"");
  CHECK(create_error("{\"save_dir\": \"\"}") ==
        "checkpointer-safetensors: create: config: \"save_dir\" must be a non-empty string, got \"\"");
  CHECK(create_error("[1]") == "checkpointer-safetensors: create: config: expected a JSON object, got array");
}

TEST_CASE("a save_dir that cannot be a directory is refused at create") {
  ScratchDir dir;
  std::ofstream(dir / "file") << "x";
  CHECK(create_error(config_for(dir / "file/ckpt")) ==
        "checkpointer-safetensors: create: cannot create save_dir \"" + (dir / "file/ckpt") + "\": Not a directory");
  CHECK(create_error(config_for(dir / "file")) ==
        "checkpointer-safetensors: create: cannot create save_dir \"" + (dir / "file") + "\": Not a directory");
}

TEST_CASE("metadata that is not a JSON object is refused before anything is written") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
  CHECK_THROWS_WITH(ckpt.save(3, small_state(3), "[1, 2]"),
                    "checkpointer-safetensors: save: step 3: metadata_json must be a JSON object, got array");
  CHECK_THROWS_WITH(ckpt.save(3, small_state(3), "{\"step\": 3"),
                    "checkpointer-safetensors: save: step 3: metadata_json is not valid JSON: "
                    "[json.exception.parse_error.101] parse error at line 1, column 11: syntax error while parsing "
                    "object - unexpected end of input; expected '}'");
  ckpt.wait();  // nothing pending, nothing failed
  CHECK(ckpt.list().empty());
  CHECK(fs::is_empty(dir.path()));
}

TEST_CASE("tensor names and layouts the checkpointer cannot store are refused, naming the tensor") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
  auto error_of = [&](const lyre::HostTensor& t) {
    try {
      ckpt.save(4, {t}, "{}");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(error_of(f32("lm_head.weight", {1}, {1.0f})) ==
        "checkpointer-safetensors: save: step 4: tensor \"lm_head.weight\": name must be \"<group>/<name>\" "
        "(\"model/lm_head.weight\")");
  CHECK(error_of(f32("../x/w", {1}, {1.0f})) ==
        "checkpointer-safetensors: save: step 4: tensor \"../x/w\": group \"..\" must be letters, digits, '_', '-' or "
        "'.' and not start with '.' (it names the file)");
  CHECK(error_of(f32("model/__metadata__", {1}, {1.0f})) ==
        "checkpointer-safetensors: save: step 4: tensor \"model/__metadata__\": \"__metadata__\" is reserved by the "
        "safetensors format");
  CHECK(error_of(tensor("model/c", DLDataType{kDLComplex, 64, 1}, {1}, std::vector<double>{1.0})) ==
        "checkpointer-safetensors: save: step 4: tensor \"model/c\": dtype other64 (lanes 1) has no safetensors "
        "equivalent");
  CHECK_THROWS_WITH(ckpt.save(4, {f32("model/a", {1}, {1.0f}), f32("model/a", {1}, {2.0f})}, "{}"),
                    "checkpointer-safetensors: save: step 4: tensor \"model/a\" given twice");
  CHECK_THROWS_WITH(ckpt.save(-2, small_state(1), "{}"), "checkpointer-safetensors: save: step must be >= 0, got -2");
  // The handle checks what it can before crossing.
  lyre::HostTensor short_bytes = f32("model/a", {3}, {1.0f});
  CHECK_THROWS_WITH(ckpt.save(4, {short_bytes}, "{}"),
                    "checkpointer-safetensors: save step 4: tensor \"model/a\" holds 4 bytes, its shape and dtype need 12");
  CHECK(fs::is_empty(dir.path()));
}

TEST_CASE("a background write failure surfaces at wait with the step and the path, once") {
  ScratchDir dir;
  const std::string save_dir = dir / "ckpt";
  Checkpointer ckpt(checkpointer_plugin(), config_for(save_dir, {{"async", true}}));
  make_save_dir_a_file(save_dir);
  ckpt.save(3, small_state(3), state_json(3));  // returns once copied; the write fails later
  CHECK_THROWS_WITH(ckpt.wait(), "checkpointer-safetensors: wait: saving step 3 to " + save_dir +
                                     "/step_00000003: cannot create directory \"" + save_dir +
                                     "/.tmp-step_00000003." + std::to_string(::getpid()) + "\": Not a directory");
  CHECK_NOTHROW(ckpt.wait());  // reported once
}

TEST_CASE("a background write failure is reported by the next save, which does not start") {
  ScratchDir dir;
  const std::string save_dir = dir / "ckpt";
  Checkpointer ckpt(checkpointer_plugin(), config_for(save_dir));
  make_save_dir_a_file(save_dir);
  ckpt.save(3, small_state(3), state_json(3));
  CHECK_THROWS_WITH(ckpt.save(4, small_state(4), state_json(4)),
                    "checkpointer-safetensors: save: saving step 3 to " + save_dir +
                        "/step_00000003: cannot create directory \"" + save_dir + "/.tmp-step_00000003." +
                        std::to_string(::getpid()) + "\": Not a directory (step 4 was not saved)");
  // The disk is back: saving works again.
  fs::remove(save_dir);
  fs::create_directory(save_dir);
  ckpt.save(4, small_state(4), state_json(4));
  ckpt.wait();
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{4});
}

TEST_CASE("a background write failure nobody waited for is logged when the checkpointer is destroyed") {
  ScratchDir dir;
  const std::string save_dir = dir / "ckpt";
  LogCapture log;
  {
    Checkpointer ckpt(checkpointer_plugin(), config_for(save_dir));
    make_save_dir_a_file(save_dir);
    ckpt.save(3, small_state(3), state_json(3));
  }
  CHECK(log.lines("error") ==
        std::vector<std::string>{"checkpointer-safetensors: destroy: saving step 3 to " + save_dir +
                                 "/step_00000003: cannot create directory \"" + save_dir + "/.tmp-step_00000003." +
                                 std::to_string(::getpid()) + "\": Not a directory"});
}

TEST_CASE("a synchronous save reports a write failure from save itself") {
  ScratchDir dir;
  const std::string save_dir = dir / "ckpt";
  Checkpointer ckpt(checkpointer_plugin(), config_for(save_dir, {{"async", false}}));
  make_save_dir_a_file(save_dir);
  CHECK_THROWS_WITH(ckpt.save(3, small_state(3), state_json(3)),
                    "checkpointer-safetensors: save: saving step 3 to " + save_dir +
                        "/step_00000003: cannot create directory \"" + save_dir + "/.tmp-step_00000003." +
                        std::to_string(::getpid()) + "\": Not a directory");
}

TEST_CASE("the registry finds the checkpointer by its plugin name or the short one, and lists what it found") {
  lyre::PluginRegistry registry = lyre::PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  CHECK(registry.checkpointer("checkpointer-safetensors")->name() == "checkpointer-safetensors");
  CHECK(registry.checkpointer("safetensors")->name() == "checkpointer-safetensors");
  try {
    registry.checkpointer("orbax");
    FAIL("no error");
  } catch (const std::runtime_error& e) {
    const std::string expected = std::string("no checkpointer named 'orbax'.\nCheckpointers found:\n  checkpointer-safetensors (") +
                                 LYRE_TEST_PLUGIN_DIR + "/liblyre-checkpointer-safetensors.so)\n";
    CHECK(std::string(e.what()).substr(0, expected.size()) == expected);
  }
}
