// The checkpointer's configuration keys, validated: {"save_dir": "...", "max_to_keep": 5,
// "async": true}. Every problem is an Error naming the key.
#pragma once

#include <cstdint>
#include <string>

namespace lyre::ckpt {

struct Config {
  std::string save_dir;  // absolute, normalised
  int64_t max_to_keep = 5;
  bool async = true;
};

// `json` may be NULL (then "save_dir" is missing).
Config parse_config(const char* json);

}  // namespace lyre::ckpt
