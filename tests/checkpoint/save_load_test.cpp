// What a checkpoint holds comes back exactly: tensors bit for bit under their names, the
// metadata text as given; list, retention and replacement of a step behave as documented.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint_support.hpp"
#include "io/safetensors.hpp"

namespace fs = std::filesystem;
using lyre::Checkpointer;
using lyre::HostTensor;
using namespace lyre::test;

namespace {

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("a checkpoint loads back bit for bit: every group, every dtype, and the metadata text") {
  const bool async = GENERATE(true, false);
  INFO("async " << async);
  ScratchDir dir;
  const float specials[] = {-0.0f, 1e-45f /* denormal */, std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), 3.25f, -7.5f};
  std::vector<float> first(std::begin(specials), std::end(specials));
  uint32_t nan_payload = 0x7fc01234u;  // a NaN whose payload a float conversion would not keep
  std::memcpy(&first[3], &nan_payload, sizeof nan_payload);
  const uint16_t half_bits[] = {0x3c00, 0x8001, 0x7e00};  // 1.0, a negative denormal, NaN
  std::vector<HostTensor> saved = {
      f32("model/model.embed_tokens.weight", {2, 3}, first),
      f32("model/model.norm.weight", {5}, pattern_floats(5, 1)),
      f32("model/scalar", {}, {42.5f}),
      f32("model/empty", {0, 4}, {}),
      tensor("model/half", DLDataType{kDLFloat, 16, 1}, {3}, std::vector<uint16_t>(half_bits, half_bits + 3)),
      tensor("model/brain", DLDataType{kDLBfloat, 16, 1}, {3}, std::vector<uint16_t>(half_bits, half_bits + 3)),
      f32("optimizer/model.norm.weight.exp_avg", {5}, pattern_floats(5, 2)),
      i64("optimizer/step", {1}, {int64_t{1} << 40}),
      i64("rng/state", {2, 2}, {-1, INT64_MIN, INT64_MAX, 7}),
  };
  const std::string metadata = "{\"format\": \"lyre-checkpoint\",\n  \"step\": 7, \"note\": \"kept as written\"}";

  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"async", async}}));
  ckpt.save(7, saved, metadata);
  ckpt.wait();

  const auto listed = ckpt.list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].step == 7);
  CHECK(listed[0].path == dir / "step_00000007");
  // The layout `lyre export` reads: one file per group, the metadata beside them.
  CHECK(names_in(dir / "step_00000007") ==
        std::vector<std::string>{"model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer_state.json"});
  CHECK(read_text(dir / "step_00000007/trainer_state.json") == metadata);
  const auto model = lyre::safetensors::File::open(dir / "step_00000007/model.safetensors");
  CHECK(model.find("model.embed_tokens.weight") != nullptr);
  CHECK(model.at("half").dtype == lyre::safetensors::Dtype::F16);
  CHECK(model.at("brain").dtype == lyre::safetensors::Dtype::BF16);
  CHECK(model.metadata().at("format") == "pt");

  for (int64_t step : {int64_t{-1}, int64_t{7}}) {
    INFO("load(" << step << ")");
    const auto loaded = ckpt.load(step);
    REQUIRE(loaded.has_value());
    CHECK(loaded->step == 7);
    CHECK(loaded->metadata_json == metadata);
    CHECK(differences(saved, *loaded) == "");
  }
  // A second handle (a resumed run) sees the same checkpoint.
  Checkpointer again(checkpointer_plugin(), config_for(dir.path()));
  const auto loaded = again.load();
  REQUIRE(loaded.has_value());
  CHECK(differences(saved, *loaded) == "");
}

TEST_CASE("list gives complete checkpoints oldest first, with their paths") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
  CHECK(ckpt.list().empty());
  for (int64_t step : {30, 10, 200000000, 20}) ckpt.save(step, small_state(static_cast<uint32_t>(step)), state_json(step));
  const auto listed = ckpt.list();
  CHECK(steps_of(listed) == std::vector<int64_t>{10, 20, 30, 200000000});
  CHECK(listed[0].path == dir / "step_00000010");
  CHECK(listed[3].path == dir / "step_200000000");
}

TEST_CASE("load of an explicit step returns that step, not the newest") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"async", false}}));
  ckpt.save(1, small_state(1), state_json(1));
  ckpt.save(2, small_state(2), state_json(2));
  const auto loaded = ckpt.load(1);
  REQUIRE(loaded.has_value());
  CHECK(loaded->step == 1);
  CHECK(loaded->metadata_json == state_json(1));
  CHECK(differences(small_state(1), *loaded) == "");
}

TEST_CASE("an async save owns its copy: the caller may overwrite its buffers as soon as save returns") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"async", true}}));
  // Large enough (8 MB) that the background write is still running when the buffers change.
  std::vector<HostTensor> live = {f32("model/big", {2, 1 << 20}, pattern_floats(2 << 20, 5)),
                                  i64("optimizer/step", {1}, {5})};
  const std::vector<HostTensor> expected = live;
  std::string metadata = state_json(5);
  ckpt.save(5, live, metadata);
  for (HostTensor& t : live) std::fill(t.bytes.begin(), t.bytes.end(), char(0x5a));
  metadata = "{\"overwritten\": true}";
  live.clear();
  live.shrink_to_fit();  // the memory the save was handed is gone

  // The next save waits for the pending one first.
  ckpt.save(6, small_state(6), state_json(6));
  ckpt.wait();
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{5, 6});
  const auto loaded = ckpt.load(5);
  REQUIRE(loaded.has_value());
  CHECK(loaded->metadata_json == state_json(5));
  CHECK(differences(expected, *loaded) == "");
}

TEST_CASE("retention keeps exactly the newest max_to_keep checkpoints") {
  const bool async = GENERATE(true, false);
  INFO("async " << async);
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"max_to_keep", 3}, {"async", async}}));
  for (int64_t step = 1; step <= 6; ++step) {
    ckpt.save(step * 10, small_state(static_cast<uint32_t>(step)), state_json(step * 10));
    ckpt.wait();
    const size_t expected = static_cast<size_t>(std::min<int64_t>(step, 3));
    REQUIRE(ckpt.list().size() == expected);
  }
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{40, 50, 60});
  // Nothing else is left on disk: no trash, no temporaries.
  CHECK(names_in(dir.path()) == std::vector<std::string>{"step_00000040", "step_00000050", "step_00000060"});
  const auto oldest_kept = ckpt.load(40);
  REQUIRE(oldest_kept.has_value());
  CHECK(differences(small_state(4), *oldest_kept) == "");
}

TEST_CASE("retention with max_to_keep 1 keeps only the checkpoint just saved") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"max_to_keep", 1}}));
  ckpt.save(1, small_state(1), state_json(1));
  ckpt.save(2, small_state(2), state_json(2));
  ckpt.wait();
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{2});
}

TEST_CASE("retention never deletes the checkpoint just saved, even when newer steps exist") {
  // A run that resumed from step 10 (step 30 was damaged) saves step 20: it keeps its own save
  // and the newest others up to max_to_keep.
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path(), {{"max_to_keep", 2}, {"async", false}}));
  for (int64_t step : {10, 30}) ckpt.save(step, small_state(static_cast<uint32_t>(step)), state_json(step));
  ckpt.save(20, small_state(20), state_json(20));
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{20, 30});

  Checkpointer one(checkpointer_plugin(), config_for(dir.path(), {{"max_to_keep", 1}, {"async", false}}));
  one.save(25, small_state(25), state_json(25));
  CHECK(steps_of(one.list()) == std::vector<int64_t>{25});
}

TEST_CASE("saving a step that exists replaces it whole") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
  ckpt.save(5, small_state(1), state_json(5));
  ckpt.save(5, {f32("model/other", {2}, {1.0f, 2.0f})}, "{\"second\": true}");
  ckpt.wait();
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{5});
  CHECK(names_in(dir.path()) == std::vector<std::string>{"step_00000005"});
  // Nothing of the first save survives (its optimizer file included).
  CHECK(names_in(dir / "step_00000005") == std::vector<std::string>{"model.safetensors", "trainer_state.json"});
  const auto loaded = ckpt.load(5);
  REQUIRE(loaded.has_value());
  CHECK(loaded->metadata_json == "{\"second\": true}");
  CHECK(differences({f32("model/other", {2}, {1.0f, 2.0f})}, *loaded) == "");
}

TEST_CASE("with no checkpoint at all, load(-1) answers nothing and an explicit step is an error") {
  ScratchDir dir;
  Checkpointer ckpt(checkpointer_plugin(), config_for(dir.path()));
  CHECK_FALSE(ckpt.load(-1).has_value());
  CHECK_THROWS_WITH(ckpt.load(3), "checkpointer-safetensors: load: no checkpoint of step 3 in \"" + dir.path() +
                                      "\" (complete ones: none)");
  ckpt.save(1, small_state(1), state_json(1));
  CHECK_THROWS_WITH(ckpt.load(3), "checkpointer-safetensors: load: no checkpoint of step 3 in \"" + dir.path() +
                                      "\" (complete ones: 1)");
}

TEST_CASE("a save_dir that does not exist yet is created, parents included") {
  ScratchDir dir;
  const std::string save_dir = dir / "run/ckpt";
  Checkpointer ckpt(checkpointer_plugin(), config_for(save_dir));
  CHECK(fs::is_directory(save_dir));
  ckpt.save(1, small_state(1), state_json(1));
  CHECK(steps_of(ckpt.list()) == std::vector<int64_t>{1});
}
