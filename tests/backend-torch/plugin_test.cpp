// backend-torch as a plugin: chosen only by name, its options and config checked with errors
// that name the key, its device described with counted memory.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "plugin/error.hpp"
#include "torch_fixture.hpp"

namespace lyre::test {
namespace {

int32_t score_of(const std::string& name) {
  for (const PluginReport& r : registry().reports())
    if (r.name == name) return r.score;
  FAIL("no plugin " << name << " was discovered in " << LYRE_TEST_PLUGIN_DIR);
  return 0;
}

// The error text of making a model, "" when it is made.
std::string create_error(const std::string& config, const std::string& options = "") {
  try {
    Model m(torch_backend(), config, options);
  } catch (const PluginError& e) {
    return std::to_string(e.code()) + ": " + e.what();
  }
  return "";
}

LyreBackend_DeviceInfo_Args device_info() {
  LyreBackend_DeviceInfo_Args a{};
  a.struct_size = sizeof a;
  check(torch_backend()->api().backend->device_info(&a), "device_info");
  return a;
}

}  // namespace

TEST_CASE("backend-torch scores 10, below backend-cpu, so auto picks backend-cpu and torch is asked for by name") {
  const int32_t torch_score = score_of("backend-torch"), cpu_score = score_of("backend-cpu");
  CHECK(torch_score == 10);
  if (cpu_score > 0) {  // backend-cpu runs here (AVX2+FMA)
    CHECK(torch_score < cpu_score);
    CHECK(registry().backend("auto")->name() == "backend-cpu");
  }
  CHECK(registry().backend("torch")->name() == "backend-torch");
  CHECK(registry().backend("backend-torch")->name() == "backend-torch");
  for (const PluginReport& r : registry().reports())
    if (r.name == "backend-torch") CHECK_THAT(r.score_reason, Catch::Contains("numerical reference"));
}

TEST_CASE("discovering plugins does not load LibTorch: only choosing backend-torch does") {
  // The dynamic loader's own record of the files the lyre binary opens for `lyre plugins`.
  const std::string cmd = "LD_DEBUG=files LYRE_PLUGIN_PATH='" LYRE_TEST_PLUGIN_DIR "' '" LYRE_BINARY_DIR
                          "/bin/lyre' plugins 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  REQUIRE(pclose(pipe) == 0);
  CHECK(out.find("liblyre-backend-torch.so") != std::string::npos);  // it was discovered and scored
  CHECK(out.find("liblyre-backend-torch-impl.so") == std::string::npos);
  CHECK(out.find("libtorch_cpu.so") == std::string::npos);
}

TEST_CASE("model options take precision fp32 or fp64, threads and logprob_chunk_rows, and name an unknown key") {
  const std::string config = tiny_config(false);
  CHECK(create_error(config, R"({"precision": "fp32", "threads": 2, "logprob_chunk_rows": 3})") == "");
  CHECK(create_error(config, R"({"precision": "fp64"})") == "");
  CHECK_THAT(create_error(config, R"({"threds": 2})"), Catch::StartsWith("1: ") && Catch::Contains("unknown key \"threds\""));
  CHECK_THAT(create_error(config, R"({"precision": "bf16"})"), Catch::StartsWith("1: ") && Catch::Contains("\"bf16\""));
  CHECK_THAT(create_error(config, R"({"threads": 0})"), Catch::Contains("\"threads\" must be an integer >= 1"));
  CHECK_THAT(create_error(config, R"({"logprob_chunk_rows": -1})"), Catch::Contains("logprob_chunk_rows"));
}

TEST_CASE("plugin options: an unknown key or a bad precision is refused, naming it") {
  const LyrePluginApi& api = torch_backend()->api();
  auto initialize = [&](const char* options) -> std::string {
    LyreInitialize_Args a{};
    a.struct_size = sizeof a;
    a.options_json = options;
    try {
      check(api.initialize(&a), "initialize");
    } catch (const PluginError& e) {
      return e.what();
    }
    return "";
  };
  CHECK_THAT(initialize(R"({"logprob_chunk_rows": 4})"), Catch::Contains("unknown key \"logprob_chunk_rows\""));
  CHECK_THAT(initialize(R"({"precision": "fp16"})"), Catch::Contains("\"fp16\""));
  CHECK_THAT(initialize("{not json"), Catch::Contains("not valid JSON"));
  CHECK(initialize(R"({"precision": "fp32"})") == "");
}

TEST_CASE("config.json errors name the key and the value") {
  auto with = [](const std::string& from, const std::string& to) {
    std::string c = tiny_config(false);
    c.replace(c.find(from), from.size(), to);
    return c;
  };
  CHECK_THAT(create_error(with("\"llama\"", "\"gpt2\"")), Catch::StartsWith("1: ") && Catch::Contains("model_type \"gpt2\""));
  CHECK_THAT(create_error(with("\"vocab_size\": 64,", "")), Catch::Contains("missing key \"vocab_size\""));
  CHECK_THAT(create_error(with("\"hidden_size\": 32", "\"hidden_size\": -32")),
             Catch::Contains("\"hidden_size\" must be a positive integer, got -32"));
  CHECK_THAT(create_error(with("\"silu\"", "\"gelu\"")), Catch::Contains("hidden_act \"gelu\""));
  CHECK_THAT(create_error(with("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3")),
             Catch::Contains("\"num_key_value_heads\" (3)"));
  CHECK_THAT(create_error(tiny_config(false, R"(, "head_dim": 7)")), Catch::Contains("head_dim 7 must be even"));
  CHECK_THAT(create_error(tiny_config(false, R"(, "attention_bias": true)")), Catch::Contains("\"attention_bias\" is true"));
  CHECK_THAT(create_error(tiny_config(false, R"(, "rope_scaling": {"rope_type": "yarn", "factor": 2.0})")),
             Catch::Contains("\"rope_scaling.rope_type\" \"yarn\""));
  CHECK_THAT(create_error(tiny_config(false, R"(, "rope_scaling": {"type": "linear"})")),
             Catch::Contains("rope_scaling: missing key \"factor\""));
  CHECK_THAT(create_error(tiny_config(false, R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 32})")),
             Catch::Contains("\"high_freq_factor\" (1.0) must exceed \"low_freq_factor\" (4.0)"));
  CHECK(create_error(tiny_config(false, R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32})")) == "");
}

TEST_CASE("device_info names LibTorch and its threads, and the peak memory grows with a train forward") {
  Model model(torch_backend(), tiny_config(false, R"(, "max_position_embeddings": 128)"), R"({"threads": 2})");
  randomize(model, 3);
  const LyreBackend_DeviceInfo_Args before = device_info();
  CHECK_THAT(before.name, Catch::StartsWith("torch cpu: 2 threads (LibTorch "));
  CHECK(before.memory_total_bytes > 0);
  // Weights and gradients, float32, at least.
  int64_t numel = 0;
  for (const ParameterInfo& p : model.parameters()) numel += p.numel();
  CHECK(before.memory_used_bytes >= static_cast<uint64_t>(2 * 4 * numel));
  CHECK(before.memory_peak_bytes >= before.memory_used_bytes);

  // Larger than any batch the other tests run: its graph must raise the peak.
  const Batch batch = packed_batch(16, 128, 64, 11);
  std::vector<float> logp;
  model.forward(batch, LYRE_FORWARD_TRAIN, logp);
  const LyreBackend_DeviceInfo_Args held = device_info();
  CHECK(held.memory_used_bytes > before.memory_used_bytes);  // the graph of the pending backward
  CHECK(held.memory_peak_bytes > before.memory_peak_bytes);
  model.backward(batch, upstream(batch));
  const LyreBackend_DeviceInfo_Args after = device_info();
  CHECK(after.memory_used_bytes < held.memory_used_bytes);  // backward freed the graph
  CHECK(after.memory_peak_bytes >= held.memory_peak_bytes);
}

TEST_CASE("stats count like backend-cpu: FLOPs per token and parameters, the tied embedding once") {
  for (bool tied : {false, true}) {
    Model torch_model(torch_backend(), tiny_config(tied));
    Model cpu_model(cpu_backend(), tiny_config(tied));
    const LyreModel_Stats_Args t = torch_model.stats(16), c = cpu_model.stats(16);
    INFO("tied " << tied);
    CHECK(t.train_flops_per_token == c.train_flops_per_token);
    CHECK(t.num_parameters_total == c.num_parameters_total);
    CHECK(t.num_parameters_trainable == t.num_parameters_total);
    int64_t numel = 0;
    for (const ParameterInfo& p : torch_model.parameters()) numel += p.numel();
    CHECK(t.num_parameters_total == numel);
  }
}

}  // namespace lyre::test
