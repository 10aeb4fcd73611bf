// Shared by the plugin-host tests: the folder of test plugins, a log capture, small batches.
#pragma once

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "../log_capture.hpp"
#include "data/batch.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::test {

inline std::string plugin_dir() { return LYRE_HOST_TEST_PLUGIN_DIR; }
inline std::string plugin_file(const std::string& name) { return plugin_dir() + "/liblyre-" + name + ".so"; }


inline const PluginReport* find_report(const PluginRegistry& registry, const std::string& path) {
  for (const PluginReport& r : registry.reports()) {
    if (r.path == path) return &r;
  }
  return nullptr;
}

// One row per sequence; targets are the next token, -1 on the last; loss_mask all 1.
inline Batch make_batch(const std::vector<std::vector<int32_t>>& rows) {
  Batch b;
  b.batch_size = static_cast<int64_t>(rows.size());
  b.seq_len = rows.empty() ? 0 : static_cast<int64_t>(rows[0].size());
  b.num_samples = b.batch_size;
  for (const auto& row : rows) {
    for (size_t t = 0; t < row.size(); ++t) {
      b.tokens.push_back(row[t]);
      b.targets.push_back(t + 1 < row.size() ? row[t + 1] : -1);
      b.positions.push_back(static_cast<int32_t>(t));
      b.segment_ids.push_back(1);
      b.loss_mask.push_back(1);
    }
  }
  return b;
}

}  // namespace lyre::test
