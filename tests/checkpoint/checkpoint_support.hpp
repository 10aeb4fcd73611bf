// Shared by the checkpoint tests: the real plugin from this build, scratch directories, tensors
// with known bytes, a log capture.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "../log_capture.hpp"
#include "plugin/checkpointer_handle.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::test {

inline std::shared_ptr<LoadedPlugin> checkpointer_plugin() {
  static PluginRegistry registry = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  return registry.checkpointer("safetensors");
}

// A fresh directory under the system's temp dir, removed with the object.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "lyre-checkpoint-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string config_for(const std::string& save_dir, nlohmann::json extra = nlohmann::json::object()) {
  extra["save_dir"] = save_dir;
  return extra.dump();
}

template <typename T>
HostTensor tensor(const std::string& name, DLDataType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  HostTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

inline HostTensor f32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& values) {
  return tensor(name, DLDataType{kDLFloat, 32, 1}, std::move(shape), values);
}

inline HostTensor i64(const std::string& name, std::vector<int64_t> shape, const std::vector<int64_t>& values) {
  return tensor(name, DLDataType{kDLInt, 64, 1}, std::move(shape), values);
}

// `count` floats whose bit patterns depend on `seed` (a xorshift stream), NaN payloads included:
// a round trip that converts anything shows up.
inline std::vector<float> pattern_floats(size_t count, uint32_t seed) {
  std::vector<float> out(count);
  uint32_t x = seed * 2654435761u + 1;
  for (float& f : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    std::memcpy(&f, &x, sizeof f);
  }
  return out;
}

// A small model+optimizer state like the Trainer sends, marked by `seed`.
inline std::vector<HostTensor> small_state(uint32_t seed) {
  return {f32("model/embed.weight", {4, 3}, pattern_floats(12, seed)),
          f32("model/norm.weight", {3}, pattern_floats(3, seed + 1)),
          f32("optimizer/embed.weight.exp_avg", {4, 3}, pattern_floats(12, seed + 2)),
          i64("optimizer/step", {1}, {static_cast<int64_t>(seed)})};
}

inline std::string state_json(int64_t step) {
  return "{\"format\": \"lyre-checkpoint\", \"step\": " + std::to_string(step) + "}";
}

inline std::vector<int64_t> steps_of(const std::vector<CheckpointEntry>& entries) {
  std::vector<int64_t> out;
  for (const CheckpointEntry& e : entries) out.push_back(e.step);
  return out;
}

// Every saved tensor comes back under its name with the same dtype, shape and bytes, and
// nothing else comes back.
inline std::string differences(const std::vector<HostTensor>& saved, const LoadedCheckpoint& loaded) {
  std::string out;
  if (saved.size() != loaded.tensors.size())
    out += "saved " + std::to_string(saved.size()) + " tensors, loaded " + std::to_string(loaded.tensors.size()) + "; ";
  for (const HostTensor& s : saved) {
    const HostTensor* l = loaded.find(s.name);
    if (l == nullptr) {
      out += s.name + " missing; ";
    } else if (l->shape != s.shape || l->bytes != s.bytes || l->dtype.code != s.dtype.code ||
               l->dtype.bits != s.dtype.bits || l->dtype.lanes != s.dtype.lanes) {
      out += s.name + " differs; ";
    }
  }
  return out;
}


}  // namespace lyre::test
