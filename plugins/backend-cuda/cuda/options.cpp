#include "options.hpp"

#include <limits>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace lyre::cuda {
namespace {

using plugin::Error;

// The object in `text` (nullptr, "" and JSON null = none); `what` starts every error.
nlohmann::json parse_object(const char* text, const std::string& what) {
  if (text == nullptr || *text == '\0') return nlohmann::json::object();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, what + ": not valid JSON: " + e.what());
  }
  if (j.is_null()) return nlohmann::json::object();
  plugin::require(j.is_object(), what + ": expected a JSON object, got " + j.dump());
  return j;
}

// An integer >= lo; throws naming the key and the value.
int64_t integer_at_least(const std::string& what, const std::string& key, const nlohmann::json& v, int64_t lo) {
  plugin::require(v.is_number_integer() && v.get<int64_t>() >= lo,
                  what + ": \"" + key + "\" must be an integer >= " + std::to_string(lo) + ", got " + v.dump());
  return v.get<int64_t>();
}

}  // namespace

ModelOptions parse_model_options(const char* json_text) {
  const std::string what = "backend-cuda model options";
  ModelOptions options;
  const nlohmann::json j = parse_object(json_text, what);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "precision") {
      if (v == "bf16") options.precision = Precision::bf16;
      else if (v == "fp32") options.precision = Precision::fp32;
      else
        throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                    what + ": \"precision\" " + v.dump() +
                        " is not supported by backend-cuda (supported: \"bf16\", \"fp32\")");
    } else if (key == "logprob_chunk_rows") {
      options.logprob_chunk_rows = integer_at_least(what, key, v, 0);
    } else {
      throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                  what + ": unknown key \"" + key + "\" (known: precision, logprob_chunk_rows)");
    }
  }
  return options;
}

PluginOptions parse_plugin_options(const char* json_text) {
  const std::string what = "backend-cuda options";
  PluginOptions options;
  const nlohmann::json j = parse_object(json_text, what);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "device")
      throw Error(LYRE_ERROR_INVALID_ARGUMENT, what + ": unknown key \"" + it.key() + "\" (known: device)");
    const int64_t device = integer_at_least(what, it.key(), it.value(), 0);
    plugin::require(device <= std::numeric_limits<int>::max(),
                    what + ": \"device\" " + it.value().dump() + " is out of range");
    options.device = static_cast<int>(device);
  }
  return options;
}

}  // namespace lyre::cuda
