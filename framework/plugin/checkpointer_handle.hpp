// RAII handle over the ABI's Checkpointer (the fourth slot), the C++ face the Trainer uses.
// Every failing call throws PluginError naming the plugin and the call.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lyre/abi.h"
#include "plugin/host_tensor.hpp"  // HostTensor: names cross as "<group>/<name>"
#include "plugin/plugin_host.hpp"

namespace lyre {

struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
};

// A loaded checkpoint: tensors copied out of the plugin's buffers (they stay valid after the
// next call), and the metadata text.
struct LoadedCheckpoint {
  int64_t step = 0;
  std::vector<HostTensor> tensors;
  std::string metadata_json;
  const HostTensor* find(const std::string& name) const;
};

class Checkpointer {
 public:
  // config_json: the plugin's own keys (save_dir, max_to_keep, async, ...).
  Checkpointer(std::shared_ptr<LoadedPlugin> plugin, const std::string& config_json);
  ~Checkpointer();  // waits for pending saves; an error of theirs is logged, not thrown
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Returns once the plugin has copied the tensors (async) or written them (sync).
  void save(int64_t step, const std::vector<HostTensor>& tensors, const std::string& metadata_json);
  void wait();
  std::vector<CheckpointEntry> list();  // complete checkpoints, oldest first
  // step -1: the newest complete one. Returns nothing when there is no checkpoint at all (and
  // step is -1); throws when the plugin cannot load the one asked for.
  std::optional<LoadedCheckpoint> load(int64_t step = -1);

  const LoadedPlugin& plugin() const { return *plugin_; }

 private:
  std::shared_ptr<LoadedPlugin> plugin_;
  LyreCheckpointer* checkpointer_ = nullptr;
};

}  // namespace lyre
