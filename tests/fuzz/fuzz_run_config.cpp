// libFuzzer target for the run config (what `lyre train CONFIG` reads first): arbitrary bytes as
// JSON, then parse_run_config. Every key of every section is read by a ConfigReader that must
// turn bad values (wrong type, out of range, huge floats where integers belong) into a
// ConfigError naming the key; crashes and sanitizer reports (an out-of-range float converted to
// an integer is one) are bugs. The model config may be inline; file paths resolve under a
// directory that does not exist, so nothing outside the input is read.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "train/run_config.hpp"
#include "util/config_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  const nlohmann::json config =
      nlohmann::json::parse(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size, nullptr,
                            /*allow_exceptions=*/false);
  if (config.is_discarded()) return 0;
  try {
    const lyre::RunConfig run = lyre::parse_run_config(config, "/nonexistent-lyre-fuzz/run.json");
    // A config that parses has a usable shape: a batch, a row of at least two tokens, and
    // positive steps where they are given.
    if (run.train.per_device_batch_size < 1 || run.train.seq_len < 2 || (run.trainer.steps && *run.trainer.steps < 1))
      __builtin_trap();
  } catch (const lyre::ConfigError&) {
  } catch (const std::exception&) {
    // Other exceptions are tolerated here (the CLI reports them with the file's name), but a
    // bad config should be a ConfigError: see the unit tests.
  }
  return 0;
}
