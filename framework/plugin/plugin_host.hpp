// Finding, loading and choosing plugins: discovery on $LYRE_PLUGIN_PATH and the install dir,
// loading through Boost.DLL, ABI version negotiation, backend choice by score.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lyre/abi.h"

namespace lyre {

// A loaded, accepted plugin library. Objects the plugin made hold a shared_ptr to it, so the
// library outlives them (ABI rule 10).
class LoadedPlugin {
 public:
  ~LoadedPlugin();  // calls api->shutdown (if any) once, then unloads
  const std::string& path() const { return path_; }
  const LyrePluginApi& api() const { return *api_; }
  const std::string& name() const { return name_; }
  // Runs api->initialize once (later calls do nothing). Throws PluginError naming the file; a
  // failure is remembered, and later calls throw it again without calling the plugin.
  void initialize(const std::string& options_json = "");
  bool initialized() const { return initialized_; }
  bool initialize_failed() const { return !init_error_.empty(); }

  struct Impl;  // holds the boost::dll::shared_library
 private:
  friend class PluginRegistry;
  LoadedPlugin() = default;
  std::unique_ptr<Impl> impl_;
  std::string path_, name_;
  const LyrePluginApi* api_ = nullptr;
  bool initialized_ = false;
  int32_t init_error_code_ = 0;
  std::string init_error_;  // what() of the PluginError initialize threw; empty = none
};

// What discovery found in one file: `lyre plugins` prints one of these per line.
struct PluginReport {
  std::string path;
  bool loaded = false;     // accepted: right ABI major, entry symbol present
  std::string error;       // why not loaded, or why a backend cannot run here (score 0)
  std::string name, version, description;
  uint32_t abi_major = 0, abi_minor = 0;
  uint32_t slots = 0;      // LyreSlot bits
  bool is_backend = false;
  int32_t score = 0;       // backends only
  std::string score_reason;
};

// "backend, model, optimizer" for a LyreSlot bit mask; "none" for 0.
std::string slot_names(uint32_t slots);

class PluginRegistry {
 public:
  // $LYRE_PLUGIN_PATH (':'-separated) first, then <exe dir>/../lib/lyre/plugins, then
  // <prefix>/lib/lyre/plugins.
  static std::vector<std::string> default_search_dirs();

  // Loads every liblyre-*.so in `dirs` (first found wins per file name). Files that fail are
  // reported (and logged as one warning line naming the file and the reason); the rest load.
  static PluginRegistry discover(const std::vector<std::string>& dirs = default_search_dirs());

  const std::vector<PluginReport>& reports() const { return reports_; }
  const std::vector<std::string>& search_dirs() const { return dirs_; }

  // The backend with this plugin name ("backend-cpu", or the short "cpu"), or the highest
  // score > 0 when name is "" or "auto". Initialized before it is returned. Throws
  // std::runtime_error listing what was found when none fits, PluginError when the named one
  // fails to initialize. "auto" passes over a backend whose initialize fails (one warning line)
  // to the next score.
  std::shared_ptr<LoadedPlugin> backend(const std::string& name = "auto");
  // The plugin whose objective table has this name ("sft"), else the plugin of this name
  // ("objective-sft"). Initialized. Throws std::runtime_error listing the objectives found when
  // missing, PluginError when it fails to initialize.
  std::shared_ptr<LoadedPlugin> objective(const std::string& name);
  // The plugin with a checkpointer table whose plugin name is `name` ("checkpointer-safetensors"
  // or the short "safetensors"). Initialized. Throws std::runtime_error listing the
  // checkpointers found when missing.
  std::shared_ptr<LoadedPlugin> checkpointer(const std::string& name);

 private:
  std::vector<std::string> dirs_;
  std::vector<PluginReport> reports_;
  std::vector<std::shared_ptr<LoadedPlugin>> plugins_;  // accepted ones, in discovery order
};

}  // namespace lyre
