#include "config.hpp"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace lyre::ckpt {
namespace {

using plugin::Error;

[[noreturn]] void bad(const std::string& message) { throw Error(LYRE_ERROR_INVALID_ARGUMENT, "config: " + message); }

}  // namespace

Config parse_config(const char* json) {
  nlohmann::json j = nlohmann::json::object();
  if (json != nullptr && *json != '\0') {
    try {
      j = nlohmann::json::parse(json);
    } catch (const nlohmann::json::parse_error& e) {
      bad(std::string("not valid JSON: ") + e.what());
    }
  }
  if (j.is_null()) j = nlohmann::json::object();
  if (!j.is_object()) bad(std::string("expected a JSON object, got ") + j.type_name());

  Config config;
  bool have_save_dir = false;
  for (const auto& [key, value] : j.items()) {
    if (key == "save_dir") {
      if (!value.is_string() || value.get_ref<const std::string&>().empty())
        bad("\"save_dir\" must be a non-empty string, got " + value.dump());
      // Absolute once, here: the paths in list() and in every message then mean the same thing
      // whatever the process's working directory becomes.
      config.save_dir =
          std::filesystem::absolute(value.get<std::string>()).lexically_normal().string();
      while (config.save_dir.size() > 1 && config.save_dir.back() == '/') config.save_dir.pop_back();
      have_save_dir = true;
    } else if (key == "max_to_keep") {
      if (!value.is_number_integer() || value.get<int64_t>() < 1)
        bad("\"max_to_keep\" must be an integer >= 1, got " + value.dump());
      config.max_to_keep = value.get<int64_t>();
    } else if (key == "async") {
      if (!value.is_boolean()) bad("\"async\" must be true or false, got " + value.dump());
      config.async = value.get<bool>();
    } else {
      bad("unknown key \"" + key + "\" (known: save_dir, max_to_keep, async)");
    }
  }
  if (!have_save_dir) bad("\"save_dir\" is required (the directory checkpoints are written to)");
  return config;
}

}  // namespace lyre::ckpt
