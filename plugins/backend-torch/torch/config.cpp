#include "config.hpp"

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace lyre::libtorch {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& message) {
  throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "config.json: " + message);
}

// Present and not null.
const json* find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

const json& required(const json& obj, const char* key, const std::string& where) {
  const json* v = find(obj, key);
  if (v == nullptr) fail(where + "missing key \"" + key + "\"");
  return *v;
}

int64_t positive_int(const json& obj, const char* key, const std::string& where = "") {
  const json& v = required(obj, key, where);
  if (!v.is_number_integer() || v.get<int64_t>() <= 0)
    fail(where + "\"" + key + "\" must be a positive integer, got " + v.dump());
  return v.get<int64_t>();
}

double positive_number(const json& obj, const char* key, const std::string& where = "") {
  const json& v = required(obj, key, where);
  if (!v.is_number() || !std::isfinite(v.get<double>()) || !(v.get<double>() > 0))
    fail(where + "\"" + key + "\" must be a positive number, got " + v.dump());
  return v.get<double>();
}

bool boolean(const json& obj, const char* key, bool absent) {
  const json* v = find(obj, key);
  if (v == nullptr) return absent;
  if (!v->is_boolean()) fail(std::string("\"") + key + "\" must be true or false, got " + v->dump());
  return v->get<bool>();
}

RopeScaling parse_rope_scaling(const json& rs) {
  RopeScaling out;
  if (rs.is_null()) return out;
  if (!rs.is_object()) fail("\"rope_scaling\" must be null or an object, got " + rs.dump());
  const json* type = find(rs, "rope_type");
  if (type == nullptr) type = find(rs, "type");  // the key's name before transformers 4.45
  if (type == nullptr) fail("\"rope_scaling\" needs \"rope_type\" (or \"type\"), got " + rs.dump());
  const std::string where = "rope_scaling: ";
  if (*type == "default") return out;
  if (*type == "linear") {
    out.type = RopeScaling::Type::linear;
    out.factor = positive_number(rs, "factor", where);
    return out;
  }
  if (*type == "llama3") {
    out.type = RopeScaling::Type::llama3;
    out.factor = positive_number(rs, "factor", where);
    out.low_freq_factor = positive_number(rs, "low_freq_factor", where);
    out.high_freq_factor = positive_number(rs, "high_freq_factor", where);
    out.original_max_position_embeddings =
        static_cast<double>(positive_int(rs, "original_max_position_embeddings", where));
    if (!(out.high_freq_factor > out.low_freq_factor))
      fail(where + "\"high_freq_factor\" (" + rs["high_freq_factor"].dump() +
           ") must exceed \"low_freq_factor\" (" + rs["low_freq_factor"].dump() + ")");
    return out;
  }
  fail("\"rope_scaling.rope_type\" " + type->dump() +
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
  const json* model_type = find(j, "model_type");
  if (model_type == nullptr) fail("missing key \"model_type\" (supported: \"llama\")");
  if (*model_type != "llama")
    fail("model_type " + model_type->dump() + " is not supported (supported: \"llama\")");

  LlamaConfig c;
  c.hidden_size = positive_int(j, "hidden_size");
  c.intermediate_size = positive_int(j, "intermediate_size");
  c.num_hidden_layers = positive_int(j, "num_hidden_layers");
  c.num_attention_heads = positive_int(j, "num_attention_heads");
  c.num_key_value_heads =
      find(j, "num_key_value_heads") ? positive_int(j, "num_key_value_heads") : c.num_attention_heads;
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("\"num_attention_heads\" (" + std::to_string(c.num_attention_heads) +
         ") must be a multiple of \"num_key_value_heads\" (" + std::to_string(c.num_key_value_heads) + ")");
  if (find(j, "head_dim")) {
    c.head_dim = positive_int(j, "head_dim");
  } else if (c.hidden_size % c.num_attention_heads == 0) {
    c.head_dim = c.hidden_size / c.num_attention_heads;
  } else {
    fail("\"hidden_size\" (" + std::to_string(c.hidden_size) + ") is not a multiple of \"num_attention_heads\" (" +
         std::to_string(c.num_attention_heads) + ") and no \"head_dim\" is given");
  }
  if (c.head_dim % 2 != 0)
    fail("head_dim " + std::to_string(c.head_dim) + " must be even (rotary embedding pairs)");
  c.vocab_size = positive_int(j, "vocab_size");
  c.max_position_embeddings = positive_int(j, "max_position_embeddings");
  if (find(j, "rms_norm_eps")) c.rms_norm_eps = positive_number(j, "rms_norm_eps");
  if (find(j, "rope_theta")) c.rope_theta = positive_number(j, "rope_theta");
  if (j.contains("rope_scaling")) c.rope_scaling = parse_rope_scaling(j["rope_scaling"]);
  c.tie_word_embeddings = boolean(j, "tie_word_embeddings", false);

  if (const json* act = find(j, "hidden_act"); act != nullptr && *act != "silu")
    fail("hidden_act " + act->dump() + " is not supported (supported: \"silu\")");
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    const json* v = find(j, key);
    if (v != nullptr && *v != false)
      fail(std::string("\"") + key + "\" is " + v->dump() + "; this backend supports only false (no biases)");
  }
  return c;
}

std::vector<double> rope_inv_freq(const LlamaConfig& c) {
  const int64_t D = c.head_dim;
  std::vector<double> inv_freq(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i)
    inv_freq[i] = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(D));

  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::linear) {
    for (double& f : inv_freq) f /= s.factor;
  } else if (s.type == RopeScaling::Type::llama3) {
    const double old_context = s.original_max_position_embeddings;
    const double low_freq_wavelen = old_context / s.low_freq_factor;
    const double high_freq_wavelen = old_context / s.high_freq_factor;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      const double scaled = wavelen > low_freq_wavelen ? f / s.factor : f;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (medium) {
        const double smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
      } else {
        f = scaled;
      }
    }
  }
  return inv_freq;
}

}  // namespace lyre::libtorch
