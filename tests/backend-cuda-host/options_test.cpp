// backend-cuda's options (cuda/options.cpp), parsed on the host side: defaults, every accepted
// value, and errors that name the key, the value and what is supported.
#include <catch2/catch.hpp>

#include <string>

#include "options.hpp"

namespace lyre::cuda {
namespace {

// The error text of parsing `json` as model options ("" when it parses), with its code first.
std::string model_error(const char* json) {
  try {
    parse_model_options(json);
  } catch (const plugin::Error& e) {
    return std::to_string(e.code()) + ": " + e.what();
  }
  return "";
}

std::string plugin_error(const char* json) {
  try {
    parse_plugin_options(json);
  } catch (const plugin::Error& e) {
    return std::to_string(e.code()) + ": " + e.what();
  }
  return "";
}

const std::string kInvalidArgument = std::to_string(LYRE_ERROR_INVALID_ARGUMENT) + ": ";

}  // namespace

TEST_CASE("model options default to bf16 and the automatic log-prob chunk, for NULL, empty, null and {}") {
  for (const char* json : {static_cast<const char*>(nullptr), "", "null", "{}", " { } "}) {
    INFO("options " << (json ? json : "NULL"));
    const ModelOptions o = parse_model_options(json);
    CHECK(o.precision == Precision::bf16);
    CHECK(o.logprob_chunk_rows == 0);
  }
}

TEST_CASE("model options take precision bf16 or fp32 and logprob_chunk_rows >= 0") {
  CHECK(parse_model_options(R"({"precision": "fp32"})").precision == Precision::fp32);
  CHECK(parse_model_options(R"({"precision": "bf16"})").precision == Precision::bf16);
  const ModelOptions o = parse_model_options(R"({"precision": "fp32", "logprob_chunk_rows": 96})");
  CHECK(o.precision == Precision::fp32);
  CHECK(o.logprob_chunk_rows == 96);
  CHECK(parse_model_options(R"({"logprob_chunk_rows": 0})").logprob_chunk_rows == 0);
  CHECK(parse_model_options(R"({"logprob_chunk_rows": 1})").logprob_chunk_rows == 1);
}

TEST_CASE("a bad precision is refused naming the value and the supported ones") {
  for (const char* json : {R"({"precision": "fp16"})", R"({"precision": "BF16"})", R"({"precision": 32})",
                           R"({"precision": null})"}) {
    INFO(json);
    const std::string error = model_error(json);
    CHECK_THAT(error, Catch::StartsWith(kInvalidArgument) && Catch::Contains("\"precision\"") &&
                          Catch::Contains("(supported: \"bf16\", \"fp32\")"));
  }
  CHECK_THAT(model_error(R"({"precision": "fp16"})"), Catch::Contains("\"fp16\" is not supported by backend-cuda"));
  CHECK_THAT(model_error(R"({"precision": 32})"), Catch::Contains("\"precision\" 32 is not supported"));
}

TEST_CASE("an unknown model option is refused naming it and listing the known keys") {
  const std::string error = model_error(R"({"precision": "fp32", "threads": 2})");
  CHECK_THAT(error, Catch::StartsWith(kInvalidArgument) && Catch::Contains("unknown key \"threads\"") &&
                        Catch::Contains("(known: precision, logprob_chunk_rows)"));
  CHECK_THAT(model_error(R"({"logprob_chunk_row": 4})"), Catch::Contains("unknown key \"logprob_chunk_row\""));
}

TEST_CASE("logprob_chunk_rows must be an integer >= 0, naming the value it got") {
  CHECK(model_error(R"({"logprob_chunk_rows": -1})") ==
        kInvalidArgument + "backend-cuda model options: \"logprob_chunk_rows\" must be an integer >= 0, got -1");
  CHECK_THAT(model_error(R"({"logprob_chunk_rows": 2.5})"), Catch::Contains("must be an integer >= 0, got 2.5"));
  CHECK_THAT(model_error(R"({"logprob_chunk_rows": "64"})"), Catch::Contains("must be an integer >= 0, got \"64\""));
}

TEST_CASE("model options that are not a JSON object are refused, saying what they are") {
  CHECK_THAT(model_error("{precision: fp32}"),
             Catch::StartsWith(kInvalidArgument) && Catch::Contains("not valid JSON"));
  CHECK_THAT(model_error("[1, 2]"), Catch::Contains("expected a JSON object, got [1,2]"));
  CHECK_THAT(model_error("\"bf16\""), Catch::Contains("expected a JSON object"));
}

TEST_CASE("plugin options choose the device, default 0") {
  CHECK(parse_plugin_options(nullptr).device == 0);
  CHECK(parse_plugin_options("").device == 0);
  CHECK(parse_plugin_options("{}").device == 0);
  CHECK(parse_plugin_options(R"({"device": 0})").device == 0);
  CHECK(parse_plugin_options(R"({"device": 3})").device == 3);
}

TEST_CASE("plugin options refuse a negative or non-integer device and any other key, naming it") {
  CHECK(plugin_error(R"({"device": -1})") ==
        kInvalidArgument + "backend-cuda options: \"device\" must be an integer >= 0, got -1");
  CHECK_THAT(plugin_error(R"({"device": "0"})"), Catch::Contains("\"device\" must be an integer >= 0, got \"0\""));
  CHECK_THAT(plugin_error(R"({"device": 4294967296})"), Catch::Contains("\"device\" 4294967296 is out of range"));
  CHECK_THAT(plugin_error(R"({"precision": "fp32"})"),
             Catch::StartsWith(kInvalidArgument) && Catch::Contains("unknown key \"precision\" (known: device)"));
  CHECK_THAT(plugin_error("{"), Catch::Contains("backend-cuda options: not valid JSON"));
}

}  // namespace lyre::cuda
