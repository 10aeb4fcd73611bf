#include "model/optimizer_config.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace lyre::cpu {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& message) {
  throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "optimizer config: " + message);
}

double number(const json& j, const char* key, double lo, bool lo_open, double hi, bool hi_open) {
  const json& v = j.at(key);
  const double x = v.is_number() ? v.get<double>() : NAN;
  const bool ok = v.is_number() && std::isfinite(x) && (lo_open ? x > lo : x >= lo) &&
                  (hi_open ? x < hi : x <= hi);
  if (!ok)
    fail(std::string("\"") + key + "\" must be a number in " + (lo_open ? "(" : "[") +
         std::to_string(lo) + ", " + (std::isinf(hi) ? std::string("inf") : std::to_string(hi)) +
         (hi_open ? ")" : "]") + ", got " + v.dump());
  return x;
}

LyreParamKind kind_from_name(const std::string& name) {
  if (name == "matrix") return LYRE_PARAM_MATRIX;
  if (name == "embedding") return LYRE_PARAM_EMBEDDING;
  if (name == "norm") return LYRE_PARAM_NORM;
  if (name == "bias") return LYRE_PARAM_BIAS;
  if (name == "adapter_a") return LYRE_PARAM_ADAPTER_A;
  if (name == "adapter_b") return LYRE_PARAM_ADAPTER_B;
  fail("\"no_decay_kinds\" names unknown kind \"" + name +
       "\" (kinds: matrix, embedding, norm, bias, adapter_a, adapter_b)");
}

}  // namespace

bool OptimizerConfig::decays(LyreParamKind kind) const {
  return std::find(no_decay_kinds.begin(), no_decay_kinds.end(), kind) == no_decay_kinds.end();
}

OptimizerConfig parse_optimizer_config(const std::string& json_text) {
  OptimizerConfig c;
  if (json_text.empty()) return c;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    fail(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail("expected a JSON object, got " + j.dump());

  if (j.contains("type")) {
    const json& t = j["type"];
    if (t == "adamw") c.type = OptimizerConfig::Type::adamw;
    else if (t == "sgd") c.type = OptimizerConfig::Type::sgd;
    else fail("\"type\" " + t.dump() + " is not supported (supported: \"adamw\", \"sgd\")");
  }
  const bool adamw = c.type == OptimizerConfig::Type::adamw;
  if (!adamw) c.weight_decay = 0.0;
  const std::set<std::string> common{"type", "weight_decay", "no_decay_kinds"};
  const std::set<std::string> adamw_keys{"betas", "eps"};
  const std::set<std::string> sgd_keys{"momentum", "dampening", "nesterov"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (common.count(k) || (adamw ? adamw_keys : sgd_keys).count(k)) continue;
    if ((adamw ? sgd_keys : adamw_keys).count(k))
      fail("key \"" + k + "\" is not an option of " + (adamw ? "adamw" : "sgd"));
    fail("unknown key \"" + k + "\" (known: type, weight_decay, no_decay_kinds, " +
         (adamw ? "betas, eps" : "momentum, dampening, nesterov") + ")");
  }

  if (j.contains("weight_decay")) c.weight_decay = number(j, "weight_decay", 0, false, INFINITY, true);
  if (j.contains("no_decay_kinds")) {
    const json& kinds = j["no_decay_kinds"];
    if (!kinds.is_array()) fail("\"no_decay_kinds\" must be an array of kind names, got " + kinds.dump());
    c.no_decay_kinds.clear();
    for (const json& k : kinds) {
      if (!k.is_string()) fail("\"no_decay_kinds\" must hold strings, got " + k.dump());
      c.no_decay_kinds.push_back(kind_from_name(k.get<std::string>()));
    }
  }
  if (adamw) {
    if (j.contains("betas")) {
      const json& b = j["betas"];
      if (!b.is_array() || b.size() != 2) fail("\"betas\" must be [beta1, beta2], got " + b.dump());
      const json pair{{"beta1", b[0]}, {"beta2", b[1]}};
      c.beta1 = number(pair, "beta1", 0, false, 1, true);
      c.beta2 = number(pair, "beta2", 0, false, 1, true);
    }
    if (j.contains("eps")) c.eps = number(j, "eps", 0, true, INFINITY, true);
  } else {
    if (j.contains("momentum")) c.momentum = number(j, "momentum", 0, false, INFINITY, true);
    if (j.contains("dampening")) c.dampening = number(j, "dampening", 0, false, 1, false);
    if (j.contains("nesterov")) {
      if (!j["nesterov"].is_boolean()) fail("\"nesterov\" must be true or false, got " + j["nesterov"].dump());
      c.nesterov = j["nesterov"].get<bool>();
    }
    if (c.nesterov && (c.momentum <= 0 || c.dampening != 0))
      fail("\"nesterov\" needs \"momentum\" > 0 and \"dampening\" 0");
  }
  return c;
}

}  // namespace lyre::cpu
