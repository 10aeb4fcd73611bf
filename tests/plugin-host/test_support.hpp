// Shared by the plugin-host tests: the folder of test plugins, a log capture, small batches.
#pragma once

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "data/batch.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::test {

inline std::string plugin_dir() { return LYRE_HOST_TEST_PLUGIN_DIR; }
inline std::string plugin_file(const std::string& name) { return plugin_dir() + "/liblyre-" + name + ".so"; }

// Routes spdlog's default logger into a string while it lives (level: debug and up).
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()), previous_level_(spdlog::get_level()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
    sink->set_pattern("%l %v");
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() {
    spdlog::set_default_logger(previous_);
    spdlog::set_level(previous_level_);
  }
  std::string text() const { return stream_.str(); }
  std::vector<std::string> lines(const std::string& level) const {
    std::vector<std::string> out;
    std::istringstream in(stream_.str());
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(level + " ", 0) == 0) out.push_back(line.substr(level.size() + 1));
    }
    return out;
  }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
  spdlog::level::level_enum previous_level_;
};

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
