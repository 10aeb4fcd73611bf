// Checkpoint save and load times through the real checkpointer-safetensors plugin: 100 MiB of
// float32 in 25 tensors (two groups), saved synchronously and asynchronously (how long save()
// blocks the training loop, and how long the background write takes), then loaded.
//   build/bin/lyre-bench-checkpoint [SAVE_DIR]   (default: a folder under /tmp, removed after)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/checkpointer_handle.hpp"
#include "plugin/plugin_host.hpp"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path dir = argc > 1 ? fs::path(argv[1]) : fs::temp_directory_path() / ("lyre-bench-checkpoint-" + std::to_string(::getpid()));
  constexpr int kTensors = 25;
  constexpr int64_t kFloats = 1 << 20;  // 4 MiB each
  std::vector<lyre::HostTensor> state;
  for (int i = 0; i < kTensors; ++i) {
    lyre::HostTensor t;
    t.name = std::string(i % 3 == 0 ? "optimizer/" : "model/") + "t" + std::to_string(i);
    t.shape = {kFloats / 1024, 1024};
    std::vector<float> values(kFloats);
    for (int64_t k = 0; k < kFloats; ++k) values[k] = static_cast<float>((k * 2654435761u + i) % 1000003) * 1e-6f;
    t.bytes.resize(values.size() * sizeof(float));
    std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    state.push_back(std::move(t));
  }
  const double mib = kTensors * kFloats * 4.0 / (1 << 20);
  auto metadata = [](int step) { return nlohmann::json{{"step", step}}.dump(); };
  lyre::PluginRegistry registry = lyre::PluginRegistry::discover();
  using clock = std::chrono::steady_clock;
  {
    lyre::Checkpointer sync(registry.checkpointer("safetensors"),
                            nlohmann::json{{"save_dir", (dir / "sync").string()}, {"async", false}}.dump());
    for (int step = 1; step <= 3; ++step) {
      const auto t0 = clock::now();
      sync.save(step, state, metadata(step));
      std::printf("sync save, step %d: %.3f s (%.0f MiB/s, fsync included)\n", step, seconds_since(t0), mib / seconds_since(t0));
    }
    const auto t0 = clock::now();
    const auto loaded = sync.load();
    const double s = seconds_since(t0);
    if (!loaded || loaded->tensors.size() != state.size()) {
      std::fprintf(stderr, "load returned the wrong checkpoint\n");
      return 1;
    }
    std::printf("load (map, validate, copy out): %.3f s (%.0f MiB/s)\n", s, mib / s);
  }
  {
    lyre::Checkpointer async(registry.checkpointer("safetensors"),
                             nlohmann::json{{"save_dir", (dir / "async").string()}, {"async", true}}.dump());
    for (int step = 1; step <= 3; ++step) {
      const auto t0 = clock::now();
      async.save(step, state, metadata(step));
      const double blocked = seconds_since(t0);
      const auto t1 = clock::now();
      async.wait();
      std::printf("async save, step %d: save() blocked %.3f s; the background write took %.3f s more\n", step, blocked,
                  seconds_since(t1));
    }
  }
  std::printf("(%.0f MiB in %d tensors, in %s)\n", mib, kTensors, dir.c_str());
  if (argc <= 1) fs::remove_all(dir);
  return 0;
}
