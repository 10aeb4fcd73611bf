#include "model/llama_config.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace lyre::cpu {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& message) {
  throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "config.json: " + message);
}

std::string shown(const json& v) { return v.dump(); }

int64_t positive_int(const json& obj, const char* key, const char* where = "") {
  auto it = obj.find(key);
  if (it == obj.end()) fail(std::string(where) + "missing key \"" + key + "\"");
  if (!it->is_number_integer() || it->get<int64_t>() <= 0)
    fail(std::string(where) + "\"" + key + "\" must be a positive integer, got " + shown(*it));
  return it->get<int64_t>();
}

double positive_number(const json& obj, const char* key, const char* where = "") {
  auto it = obj.find(key);
  if (it == obj.end()) fail(std::string(where) + "missing key \"" + key + "\"");
  if (!it->is_number() || !(it->get<double>() > 0) || !std::isfinite(it->get<double>()))
    fail(std::string(where) + "\"" + key + "\" must be a positive number, got " + shown(*it));
  return it->get<double>();
}

bool has(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && !it->is_null();
}

RopeScaling parse_rope_scaling(const json& rs) {
  RopeScaling out;
  if (rs.is_null()) return out;
  if (!rs.is_object()) fail("\"rope_scaling\" must be null or an object, got " + shown(rs));
  const json* type = nullptr;
  if (has(rs, "rope_type")) type = &rs["rope_type"];
  else if (has(rs, "type")) type = &rs["type"];
  if (type == nullptr) fail("\"rope_scaling\" needs \"rope_type\" (or \"type\"), got " + shown(rs));
  if (!type->is_string())
    fail("\"rope_scaling.rope_type\" must be a string, got " + shown(*type));
  const std::string t = type->get<std::string>();
  const char* where = "rope_scaling: ";
  if (t == "default") return out;
  if (t == "linear") {
    out.type = RopeScaling::Type::linear;
    out.factor = positive_number(rs, "factor", where);
    return out;
  }
  if (t == "llama3") {
    out.type = RopeScaling::Type::llama3;
    out.factor = positive_number(rs, "factor", where);
    out.low_freq_factor = positive_number(rs, "low_freq_factor", where);
    out.high_freq_factor = positive_number(rs, "high_freq_factor", where);
    out.original_max_position_embeddings =
        static_cast<double>(positive_int(rs, "original_max_position_embeddings", where));
    if (!(out.high_freq_factor > out.low_freq_factor))
      fail("rope_scaling: \"high_freq_factor\" (" + shown(rs["high_freq_factor"]) +
           ") must exceed \"low_freq_factor\" (" + shown(rs["low_freq_factor"]) + ")");
    return out;
  }
  fail("\"rope_scaling.rope_type\" " + shown(*type) +
       " is not supported (supported: null, \"default\", \"linear\", \"llama3\")");
}

}  // namespace

LlamaConfig parse_llama_config(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    fail(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail("expected a JSON object at the top level");

  if (!j.contains("model_type")) fail("missing key \"model_type\" (supported: \"llama\")");
  if (!j["model_type"].is_string() || j["model_type"].get<std::string>() != "llama")
    fail("model_type " + shown(j["model_type"]) + " is not supported (supported: \"llama\")");

  LlamaConfig c;
  c.hidden_size = positive_int(j, "hidden_size");
  c.intermediate_size = positive_int(j, "intermediate_size");
  c.num_hidden_layers = positive_int(j, "num_hidden_layers");
  c.num_attention_heads = positive_int(j, "num_attention_heads");
  c.num_key_value_heads =
      has(j, "num_key_value_heads") ? positive_int(j, "num_key_value_heads") : c.num_attention_heads;
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("\"num_attention_heads\" (" + std::to_string(c.num_attention_heads) +
         ") must be a multiple of \"num_key_value_heads\" (" +
         std::to_string(c.num_key_value_heads) + ")");
  if (has(j, "head_dim")) {
    c.head_dim = positive_int(j, "head_dim");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail("\"hidden_size\" (" + std::to_string(c.hidden_size) +
           ") is not a multiple of \"num_attention_heads\" (" +
           std::to_string(c.num_attention_heads) + ") and no \"head_dim\" is given");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0)
    fail("head_dim " + std::to_string(c.head_dim) + " must be even (rotary embedding pairs)");
  c.vocab_size = positive_int(j, "vocab_size");
  c.max_position_embeddings = positive_int(j, "max_position_embeddings");
  if (has(j, "rms_norm_eps")) c.rms_norm_eps = positive_number(j, "rms_norm_eps");
  if (has(j, "rope_theta")) c.rope_theta = positive_number(j, "rope_theta");
  if (j.contains("rope_scaling")) c.rope_scaling = parse_rope_scaling(j["rope_scaling"]);

  if (has(j, "tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean())
      fail("\"tie_word_embeddings\" must be true or false, got " + shown(j["tie_word_embeddings"]));
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  if (has(j, "hidden_act") &&
      (!j["hidden_act"].is_string() || j["hidden_act"].get<std::string>() != "silu"))
    fail("hidden_act " + shown(j["hidden_act"]) + " is not supported (supported: \"silu\")");
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (!has(j, key)) continue;
    if (!j[key].is_boolean() || j[key].get<bool>())
      fail(std::string("\"") + key + "\" is " + shown(j[key]) +
           "; this backend supports only false (no biases)");
  }
  return c;
}

// Lives here, not in layers/rope.cpp, so that every backend built on this config (backend-cpu,
// backend-cuda) gets the same frequencies from one place without the CPU kernels.
// head_dim D -> inv_freq (D/2)
std::vector<double> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling) {
  if (head_dim <= 0 || head_dim % 2 != 0)
    throw std::invalid_argument("rope: head_dim must be positive and even, got " +
                                std::to_string(head_dim));
  if (!(theta > 0))
    throw std::invalid_argument("rope: theta must be positive, got " + std::to_string(theta));
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = 1.0 / std::pow(theta, double(2 * i) / double(head_dim));

  using Type = RopeScaling::Type;
  if (scaling.type != Type::none && !(scaling.factor > 0))
    throw std::invalid_argument("rope_scaling: factor must be positive, got " +
                                std::to_string(scaling.factor));
  if (scaling.type == Type::linear) {
    for (double& f : inv_freq) f /= scaling.factor;
  } else if (scaling.type == Type::llama3) {
    const double lo = scaling.low_freq_factor, hi = scaling.high_freq_factor;
    const double orig = scaling.original_max_position_embeddings;
    if (!(orig > 0) || !(lo > 0) || !(hi > lo))
      throw std::invalid_argument(
          "rope_scaling llama3: need original_max_position_embeddings > 0 and "
          "0 < low_freq_factor < high_freq_factor, got " + std::to_string(orig) + ", " +
          std::to_string(lo) + ", " + std::to_string(hi));
    // Wavelengths shorter than orig/hi keep their frequency, longer than orig/lo are slowed by
    // `factor`, and the band between blends the two linearly in orig/wavelen.
    const double low_freq_wavelen = orig / lo, high_freq_wavelen = orig / hi;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_freq_wavelen) continue;
      if (wavelen > low_freq_wavelen) {
        f /= scaling.factor;
      } else {
        const double smooth = (orig / wavelen - lo) / (hi - lo);
        f = (1.0 - smooth) * f / scaling.factor + smooth * f;
      }
    }
  }
  return inv_freq;
}

double llama_train_flops_per_token(const LlamaConfig& config, int64_t seq_len) {
  const double d = static_cast<double>(config.hidden_size);
  const double F = static_cast<double>(config.intermediate_size);
  const double L = static_cast<double>(config.num_hidden_layers);
  const double qkvd = static_cast<double>(config.qkv_dim());
  const double qd = static_cast<double>(config.q_dim());
  const double V = static_cast<double>(config.vocab_size);
  const double matmul_params = L * (d * qkvd + qd * d + 3.0 * d * F) + V * d;
  const double attention = L * 3.0 * 4.0 * static_cast<double>(seq_len) * qd;
  return 6.0 * matmul_params + attention;
}

}  // namespace lyre::cpu
