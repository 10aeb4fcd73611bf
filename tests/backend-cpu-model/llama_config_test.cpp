// config.json parsing: defaults, rope scaling forms, and errors that name the key and value.
#include <catch2/catch.hpp>

#include <string>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"
#include "model/llama_config.hpp"

namespace lyre::cpu::test {
namespace {

nlohmann::json minimal() {
  return nlohmann::json::parse(R"({
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
    "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 128})");
}

std::string error_of(const nlohmann::json& j) {
  try {
    parse_llama_config(j.dump());
  } catch (const plugin::Error& e) {
    CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
    return e.what();
  }
  return "no error";
}

nlohmann::json with(const char* key, const nlohmann::json& value) {
  nlohmann::json j = minimal();
  j[key] = value;
  return j;
}

nlohmann::json without(const char* key) {
  nlohmann::json j = minimal();
  j.erase(key);
  return j;
}

}  // namespace

TEST_CASE("a minimal config takes Hugging Face's defaults") {
  const LlamaConfig c = parse_llama_config(minimal().dump());
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.rope_scaling.type == RopeScaling::Type::none);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.qkv_dim() == 64 + 2 * 64);
}

TEST_CASE("rope scaling: null, default, linear and llama3 (rope_type or type)") {
  CHECK(parse_llama_config(with("rope_scaling", nullptr).dump()).rope_scaling.type == RopeScaling::Type::none);
  CHECK(parse_llama_config(with("rope_scaling", {{"rope_type", "default"}}).dump()).rope_scaling.type ==
        RopeScaling::Type::none);
  const LlamaConfig lin = parse_llama_config(with("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}).dump());
  CHECK(lin.rope_scaling.type == RopeScaling::Type::linear);
  CHECK(lin.rope_scaling.factor == 2.0);
  const LlamaConfig l3 = parse_llama_config(
      with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}})
          .dump());
  CHECK(l3.rope_scaling.type == RopeScaling::Type::llama3);
  CHECK(l3.rope_scaling.factor == 32.0);
  CHECK(l3.rope_scaling.high_freq_factor == 4.0);
  CHECK(l3.rope_scaling.original_max_position_embeddings == 8192.0);
}

TEST_CASE("config errors name the key and the value") {
  CHECK_THAT(error_of(with("model_type", "mistral")), Catch::Contains("\"mistral\"") && Catch::Contains("\"llama\""));
  CHECK_THAT(error_of(without("model_type")), Catch::Contains("model_type"));
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "vocab_size", "max_position_embeddings"}) {
    INFO(key);
    CHECK_THAT(error_of(without(key)), Catch::Contains(std::string("missing key \"") + key + "\""));
    CHECK_THAT(error_of(with(key, -3)), Catch::Contains(std::string("\"") + key + "\"") && Catch::Contains("-3"));
  }
  CHECK_THAT(error_of(with("hidden_size", "64")), Catch::Contains("\"hidden_size\"") && Catch::Contains("\"64\""));
  CHECK_THAT(error_of(with("num_key_value_heads", 3)), Catch::Contains("num_key_value_heads") && Catch::Contains("3"));
  CHECK_THAT(error_of(with("hidden_act", "gelu")), Catch::Contains("hidden_act") && Catch::Contains("\"gelu\""));
  CHECK_THAT(error_of(with("attention_bias", true)), Catch::Contains("attention_bias"));
  CHECK_THAT(error_of(with("mlp_bias", true)), Catch::Contains("mlp_bias"));
  CHECK_THAT(error_of(with("rms_norm_eps", 0)), Catch::Contains("rms_norm_eps"));
  CHECK_THAT(error_of(with("tie_word_embeddings", "yes")), Catch::Contains("tie_word_embeddings"));
  CHECK_THAT(error_of(with("head_dim", 7)), Catch::Contains("head_dim 7"));
  CHECK_THAT(error_of(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}})),
             Catch::Contains("\"yarn\""));
  CHECK_THAT(error_of(with("rope_scaling", {{"rope_type", "linear"}})), Catch::Contains("\"factor\""));
  CHECK_THAT(error_of(with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                            {"high_freq_factor", 4.0}})),
             Catch::Contains("original_max_position_embeddings"));
  CHECK_THAT(error_of(with("rope_scaling", {{"factor", 8.0}})), Catch::Contains("rope_type"));
  nlohmann::json odd = minimal();
  odd["hidden_size"] = 66;
  CHECK_THAT(error_of(odd), Catch::Contains("head_dim"));
  CHECK_THAT(error_of(nlohmann::json::array()), Catch::Contains("object"));
  try {
    parse_llama_config("{\"model_type\": ");
    FAIL("parsed broken JSON");
  } catch (const plugin::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("not valid JSON"));
  }
}

TEST_CASE("keys the backend does not use are ignored") {
  nlohmann::json j = minimal();
  j["architectures"] = {"LlamaForCausalLM"};
  j["torch_dtype"] = "bfloat16";
  j["bos_token_id"] = 1;
  j["use_cache"] = true;
  j["pretraining_tp"] = 1;
  j["num_key_value_heads"] = 2;
  j["head_dim"] = 32;
  const LlamaConfig c = parse_llama_config(j.dump());
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.head_dim == 32);
  CHECK(c.q_dim() == 128);
  CHECK(c.kv_dim() == 64);
}

}  // namespace lyre::cpu::test
