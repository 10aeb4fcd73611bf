// Timings for ~100 MB of float32 state, hidden from the default run (tag [.benchmark]):
//   build-ckpt/bin/test_checkpoint "[.benchmark]"
// The checks only confirm the work was done; the figures go to stdout.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>

#include "checkpoint_support.hpp"

using lyre::Checkpointer;
using namespace lyre::test;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("checkpoint save and load timings for 100 MB of float32", "[.benchmark]") {
  constexpr int kTensors = 25;
  constexpr int64_t kFloats = 1 << 20;  // 4 MiB each, 100 MiB in all
  std::vector<lyre::HostTensor> state;
  for (int i = 0; i < kTensors; ++i) {
    const std::string group = i % 3 == 0 ? "optimizer/" : "model/";
    state.push_back(f32(group + "t" + std::to_string(i), {kFloats / 1024, 1024}, pattern_floats(kFloats, i)));
  }
  const double mib = kTensors * kFloats * 4.0 / (1 << 20);
  ScratchDir dir;
  using clock = std::chrono::steady_clock;

  {
    Checkpointer sync(checkpointer_plugin(), config_for(dir / "sync", {{"async", false}}));
    for (int step = 1; step <= 3; ++step) {
      const auto t0 = clock::now();
      sync.save(step, state, state_json(step));
      std::printf("sync save step %d: %.3f s (%.0f MiB/s)\n", step, seconds_since(t0), mib / seconds_since(t0));
    }
    const auto t0 = clock::now();
    const auto loaded = sync.load();
    const double load_s = seconds_since(t0);
    REQUIRE(loaded.has_value());
    CHECK(differences(state, *loaded) == "");
    std::printf("load (mmap, validate, copy into HostTensors): %.3f s (%.0f MiB/s)\n", load_s, mib / load_s);
  }
  {
    Checkpointer async(checkpointer_plugin(), config_for(dir / "async", {{"async", true}}));
    for (int step = 1; step <= 3; ++step) {
      const auto t0 = clock::now();
      async.save(step, state, state_json(step));
      const double blocked = seconds_since(t0);
      const auto t1 = clock::now();
      async.wait();
      std::printf("async save step %d: save() blocked %.3f s, the background write took %.3f s more\n", step, blocked,
                  seconds_since(t1));
    }
    CHECK(async.list().size() == 3);
  }
  std::printf("(%.0f MiB in %d tensors)\n", mib, kTensors);
}
