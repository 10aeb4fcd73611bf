// Strict reading of a JSON config section: every key must be read, a wrong type names the key and
// what was expected, and a key nobody read is an error that names it (with a suggestion).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lyre {

// A user's configuration is wrong. what() names the source (file) and the key.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ConfigReader {
 public:
  // `source` names the file in messages; `prefix` is the dotted path of this section ("" = root).
  ConfigReader(const nlohmann::json& section, std::string source, std::string prefix = "");

  bool has(const std::string& key) const;  // present and not null

  std::string get_string(const std::string& key, const std::string& fallback);
  std::optional<std::string> get_optional_string(const std::string& key);
  bool get_bool(const std::string& key, bool fallback);
  double get_number(const std::string& key, double fallback);
  std::optional<double> get_optional_number(const std::string& key);
  // Integers must be whole JSON numbers; `min` bounds them (inclusive).
  int64_t get_int(const std::string& key, int64_t fallback, int64_t min = INT64_MIN);
  std::optional<int64_t> get_optional_int(const std::string& key, int64_t min = INT64_MIN);
  // The raw JSON of a key (object, array, anything); marks it read. null when absent.
  nlohmann::json get_json(const std::string& key);
  // A nested object section; absent or null gives an empty object.
  ConfigReader section(const std::string& key);

  // Throws ConfigError for any key of this section that no getter asked for.
  void finish() const;

  const std::string& source() const { return source_; }
  std::string path(const std::string& key) const;  // "train_dataloader.seq_len"
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  const nlohmann::json* find(const std::string& key);

  nlohmann::json section_;
  std::string source_, prefix_;
  std::set<std::string> read_;
};

// Applies one `a.b.c=value` override to `config`: value is parsed as JSON when it is valid JSON
// (numbers, true, null, objects), else taken as a string. Throws ConfigError on a malformed
// assignment or when a path step is not an object.
void apply_override(nlohmann::json& config, const std::string& assignment);

// Reads a JSON file; a syntax error names the file, line and column.
nlohmann::json read_json_file(const std::string& path);

}  // namespace lyre
