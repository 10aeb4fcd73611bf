#include "util/config_reader.hpp"
#include "util/json_integer.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

namespace lyre {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string type_name(const nlohmann::json& v) {
  if (v.is_string()) return "a string (\"" + v.get<std::string>() + "\")";
  return std::string("a ") + v.type_name() + " (" + v.dump() + ")";
}

}  // namespace

ConfigReader::ConfigReader(const nlohmann::json& section, std::string source, std::string prefix)
    : section_(section.is_null() ? nlohmann::json::object() : section),
      source_(std::move(source)),
      prefix_(std::move(prefix)) {
  if (!section_.is_object()) {
    throw ConfigError(source_ + ": \"" + (prefix_.empty() ? "<root>" : prefix_) +
                      "\" must be an object, got " + type_name(section_));
  }
}

std::string ConfigReader::path(const std::string& key) const {
  return prefix_.empty() ? key : prefix_ + "." + key;
}

void ConfigReader::fail(const std::string& key, const std::string& message) const {
  throw ConfigError(source_ + ": \"" + path(key) + "\" " + message);
}

const nlohmann::json* ConfigReader::find(const std::string& key) {
  read_.insert(key);
  auto it = section_.find(key);
  if (it == section_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool ConfigReader::has(const std::string& key) const {
  auto it = section_.find(key);
  return it != section_.end() && !it->is_null();
}

std::string ConfigReader::get_string(const std::string& key, const std::string& fallback) {
  auto v = get_optional_string(key);
  return v ? *v : fallback;
}

std::optional<std::string> ConfigReader::get_optional_string(const std::string& key) {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) fail(key, "must be a string, got " + type_name(*v));
  return v->get<std::string>();
}

bool ConfigReader::get_bool(const std::string& key, bool fallback) {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail(key, "must be true or false, got " + type_name(*v));
  return v->get<bool>();
}

double ConfigReader::get_number(const std::string& key, double fallback) {
  auto v = get_optional_number(key);
  return v ? *v : fallback;
}

std::optional<double> ConfigReader::get_optional_number(const std::string& key) {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) fail(key, "must be a number, got " + type_name(*v));
  double d = v->get<double>();
  if (!std::isfinite(d)) fail(key, "must be finite");
  return d;
}

int64_t ConfigReader::get_int(const std::string& key, int64_t fallback, int64_t min) {
  auto v = get_optional_int(key, min);
  return v ? *v : fallback;
}

std::optional<int64_t> ConfigReader::get_optional_int(const std::string& key, int64_t min) {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  bool whole = v->is_number_integer() ||
               (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>());
  if (!whole) fail(key, "must be an integer, got " + type_name(*v));
  // Out of int64 range (1e30, or an unsigned above 2^63) is refused before any conversion,
  // which would be undefined behaviour for a double.
  std::optional<int64_t> n = json_int64(*v);
  if (v->is_number_float() && std::fabs(v->get<double>()) < 9.2e18) n = static_cast<int64_t>(v->get<double>());  // 1e3
  if (!n) fail(key, "is " + v->dump() + ", too large for an integer");
  const int64_t i = *n;
  if (i < min) fail(key, "must be at least " + std::to_string(min) + ", got " + std::to_string(i));
  return i;
}

nlohmann::json ConfigReader::get_json(const std::string& key) {
  const nlohmann::json* v = find(key);
  return v ? *v : nlohmann::json();
}

ConfigReader ConfigReader::section(const std::string& key) {
  const nlohmann::json* v = find(key);
  if (v != nullptr && !v->is_object()) fail(key, "must be an object, got " + type_name(*v));
  return ConfigReader(v ? *v : nlohmann::json::object(), source_, path(key));
}

void ConfigReader::finish() const {
  for (auto it = section_.begin(); it != section_.end(); ++it) {
    if (read_.count(it.key())) continue;
    std::string best;
    size_t best_distance = 3;  // suggest only close spellings
    for (const std::string& known : read_) {
      size_t d = edit_distance(it.key(), known);
      if (d < best_distance) best_distance = d, best = known;
    }
    std::string message = source_ + ": unknown key \"" + path(it.key()) + "\"";
    if (!best.empty()) message += " (did you mean \"" + path(best) + "\"?)";
    throw ConfigError(message);
  }
}

void apply_override(nlohmann::json& config, const std::string& assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("--set " + assignment + ": expected KEY=VALUE, e.g. --set steps=100");
  }
  std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;

  nlohmann::json* node = &config;
  std::stringstream parts(key);
  std::string part, walked;
  std::vector<std::string> steps;
  while (std::getline(parts, part, '.')) steps.push_back(part);
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].empty()) throw ConfigError("--set " + assignment + ": empty key segment");
    if (node->is_null()) *node = nlohmann::json::object();
    if (!node->is_object()) {
      throw ConfigError("--set " + assignment + ": \"" + walked + "\" is not an object");
    }
    walked += (walked.empty() ? "" : ".") + steps[i];
    node = &(*node)[steps[i]];
  }
  *node = value;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann reports a byte offset; turn it into line:column.
    std::string s = text.str();
    size_t offset = std::min<size_t>(e.byte, s.size()), line = 1, column = 1;
    for (size_t i = 0; i + 1 < offset; ++i) {
      if (s[i] == '\n') ++line, column = 1;
      else ++column;
    }
    std::string what = e.what();
    size_t cut = what.find("parse error");
    throw ConfigError(path + ":" + std::to_string(line) + ":" + std::to_string(column) +
                      ": invalid JSON: " + (cut == std::string::npos ? what : what.substr(cut)));
  }
}

}  // namespace lyre
