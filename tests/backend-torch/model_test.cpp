// backend-torch's model: backend-cpu's parameter layout, dtype conversion on write, the
// forward/backward contract (order, accumulation, zero_grad), the chunked head, and generation.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "plugin/error.hpp"
#include "torch_fixture.hpp"

namespace lyre::test {
namespace {

// Writes `count` 16-bit values of dtype `code` into parameter `index` through the raw table.
std::string write_16bit(Model& m, size_t index, uint8_t code, const uint16_t* values, std::vector<int64_t> shape) {
  DLTensor t{};
  t.data = const_cast<uint16_t*>(values);
  t.device = {kDLCPU, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = {code, 16, 1};
  t.shape = shape.data();
  LyreModel_WriteTensor_Args a{};
  a.struct_size = sizeof a;
  a.model = m.raw();
  a.index = index;
  a.which = LYRE_TENSOR_VALUE;
  a.src = &t;
  try {
    check(m.plugin().api().model->write_tensor(&a), "write_tensor");
  } catch (const PluginError& e) {
    return e.what();
  }
  return "";
}

size_t index_of(const Model& m, const std::string& name) {
  for (const ParameterInfo& p : m.parameters())
    if (p.name == name) return p.index;
  FAIL("no parameter " << name);
  return 0;
}

void require_close(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b, float tolerance) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].size() == b[i].size());
    for (size_t j = 0; j < a[i].size(); ++j) {
      INFO("tensor " << i << " element " << j);
      REQUIRE(std::abs(a[i][j] - b[i][j]) <= tolerance);
    }
  }
}

}  // namespace

TEST_CASE("parameters: backend-cpu's names, kinds, shapes and order, tied and untied") {
  for (bool tied : {false, true}) {
    Model torch_model(torch_backend(), tiny_config(tied));
    Model cpu_model(cpu_backend(), tiny_config(tied));
    INFO("tied " << tied);
    REQUIRE(torch_model.parameters().size() == cpu_model.parameters().size());
    CHECK(torch_model.parameters().size() == (tied ? 20u : 21u));  // 1 + 2 layers * 9 + norm (+ head)
    for (size_t i = 0; i < cpu_model.parameters().size(); ++i) {
      const ParameterInfo &t = torch_model.parameters()[i], &c = cpu_model.parameters()[i];
      INFO(c.name);
      CHECK(t.name == c.name);
      CHECK(t.kind == c.kind);
      CHECK(t.shape == c.shape);
      CHECK(t.trainable);
    }
    CHECK(torch_model.parameters().back().name == (tied ? "model.norm.weight" : "lm_head.weight"));
    // Fresh parameters and gradients read as zeros.
    for (const ParameterInfo& p : torch_model.parameters()) {
      for (float x : torch_model.read(p.index)) REQUIRE(x == 0.0f);
      for (float x : torch_model.read(p.index, LYRE_TENSOR_GRAD)) REQUIRE(x == 0.0f);
    }
  }
}

TEST_CASE("write_tensor converts bfloat16 and float16 and names a wrong dtype or shape") {
  for (const char* options : {"", R"({"precision": "fp64"})"}) {
    INFO("options " << options);
    Model m(torch_backend(), tiny_config(false), options);
    const size_t norm = index_of(m, "model.norm.weight");  // [32]
    // Bit patterns and the values their formats define: 1, -2.5, 0.15625, then per format.
    uint16_t bf16[32] = {0x3f80, 0xc020, 0x3e20, 0x7f7f /* largest finite bfloat16 */};
    REQUIRE(write_16bit(m, norm, kDLBfloat, bf16, {32}) == "");
    std::vector<float> v = m.read(norm);
    CHECK(v[0] == 1.0f);
    CHECK(v[1] == -2.5f);
    CHECK(v[2] == 0.15625f);
    CHECK(v[3] == std::ldexp(255.0f / 128.0f, 127));
    CHECK(v[4] == 0.0f);
    uint16_t f16[32] = {0x3c00, 0xc100, 0x3100, 0x7bff /* 65504 */, 0x0200 /* subnormal 2^-15 */, 0x8000 /* -0 */};
    REQUIRE(write_16bit(m, norm, kDLFloat, f16, {32}) == "");
    v = m.read(norm);
    CHECK(v[0] == 1.0f);
    CHECK(v[1] == -2.5f);
    CHECK(v[2] == 0.15625f);
    CHECK(v[3] == 65504.0f);
    CHECK(v[4] == std::ldexp(1.0f, -15));
    CHECK(v[5] == 0.0f);
    CHECK(std::signbit(v[5]));

    CHECK_THAT(write_16bit(m, norm, kDLFloat, f16, {16}),
               Catch::Contains("model.norm.weight") && Catch::Contains("shape [16], expected [32]"));
    CHECK_THAT(write_16bit(m, norm, kDLInt, f16, {32}), Catch::Contains("model.norm.weight: dtype int16"));
  }
}

TEST_CASE("backward without a train forward, or twice after one, is FAILED_PRECONDITION naming backward") {
  Model m(torch_backend(), tiny_config(false));
  randomize(m, 1);
  const Batch batch = packed_batch(2, 12, 64, 2);
  std::vector<float> logp;
  auto backward_error = [&]() -> std::string {
    try {
      m.backward(batch, upstream(batch));
    } catch (const PluginError& e) {
      CHECK(e.code() == LYRE_ERROR_FAILED_PRECONDITION);
      return e.what();
    }
    return "";
  };
  CHECK_THAT(backward_error(), Catch::Contains("backward without a preceding train forward"));
  m.forward(batch, LYRE_FORWARD_NO_GRAD, logp);
  CHECK_THAT(backward_error(), Catch::Contains("backward"));
  m.forward(batch, LYRE_FORWARD_TRAIN, logp);
  CHECK(backward_error() == "");
  CHECK_THAT(backward_error(), Catch::Contains("backward"));
}

TEST_CASE("bad ids are refused naming the tensor, row, col and value") {
  Model m(torch_backend(), tiny_config(false));
  std::vector<float> logp;
  auto error = [&](Batch b) -> std::string {
    try {
      m.forward(b, LYRE_FORWARD_NO_GRAD, logp);
    } catch (const PluginError& e) {
      return e.what();
    }
    return "";
  };
  Batch b = packed_batch(2, 8, 64, 5);
  CHECK(error(b) == "");
  Batch bad = b;
  bad.tokens[1 * 8 + 3] = 64;
  CHECK_THAT(error(bad), Catch::Contains("tokens: value 64 at row 1, col 3"));
  bad = b;
  bad.targets[5] = 70;
  CHECK_THAT(error(bad), Catch::Contains("targets: value 70 at row 0, col 5"));
  bad = b;
  bad.positions[9] = 64;
  CHECK_THAT(error(bad), Catch::Contains("positions: value 64 at row 1, col 1"));
  bad = b;
  bad.segment_ids[2] = -1;
  CHECK_THAT(error(bad), Catch::Contains("segment_ids: value -1 at row 0, col 2"));
}

TEST_CASE("gradients accumulate over two backward calls until zero_grad") {
  for (bool tied : {false, true}) {
    INFO("tied " << tied);
    Model m(torch_backend(), tiny_config(tied));
    randomize(m, 7);
    const Batch batch = packed_batch(3, 12, 64, 8);
    std::vector<float> logp;
    m.forward(batch, LYRE_FORWARD_TRAIN, logp);
    m.backward(batch, upstream(batch));
    const std::vector<std::vector<float>> once = all_grads(m);
    REQUIRE(max_abs(once) > 0);
    m.forward(batch, LYRE_FORWARD_TRAIN, logp);
    m.backward(batch, upstream(batch));
    std::vector<std::vector<float>> twice_once = once;
    for (auto& t : twice_once)
      for (float& x : t) x *= 2;
    require_close(all_grads(m), twice_once, 1e-5f * max_abs(once));
    m.zero_grad();
    CHECK(max_abs(all_grads(m)) == 0.0f);
  }
}

TEST_CASE("the log-prob head in chunks of 3 rows gives one chunk's logp and gradients") {
  const Batch batch = packed_batch(3, 16, 64, 21);
  std::vector<std::vector<float>> grads[2];
  std::vector<float> logp[2];
  const char* options[2] = {R"({"logprob_chunk_rows": 1000})", R"({"logprob_chunk_rows": 3})"};
  for (int i = 0; i < 2; ++i) {
    Model m(torch_backend(), tiny_config(true), options[i]);
    randomize(m, 4);
    std::vector<float> eval;
    m.forward(batch, LYRE_FORWARD_NO_GRAD, eval);
    m.forward(batch, LYRE_FORWARD_TRAIN, logp[i]);
    for (size_t n = 0; n < eval.size(); ++n) REQUIRE(eval[n] == logp[i][n]);  // same head either mode
    m.backward(batch, upstream(batch));
    grads[i] = all_grads(m);
  }
  for (size_t n = 0; n < logp[0].size(); ++n) {
    INFO("position " << n);
    if (batch.targets[n] < 0) CHECK(logp[1][n] == 0.0f);
    else CHECK(logp[1][n] < 0.0f);
    CHECK(logp[1][n] == Approx(logp[0][n]).margin(1e-5));
  }
  require_close(grads[1], grads[0], 1e-5f * max_abs(grads[0]));
}

TEST_CASE("greedy generation gives backend-cpu's tokens on the same weights, and stops at eos") {
  for (bool tied : {false, true}) {
    INFO("tied " << tied);
    Model cpu_model(cpu_backend(), tiny_config(tied));
    randomize(cpu_model, 42);
    Model torch_model(torch_backend(), tiny_config(tied));
    copy_weights(cpu_model, torch_model);
    const std::vector<std::vector<int32_t>> prompts = {{5, 9, 13}, {1}, {60, 2, 33, 4, 7}};
    GenerateOptions greedy;
    greedy.max_new_tokens = 10;
    const auto expected = cpu_model.generate(prompts, greedy);
    const auto got = torch_model.generate(prompts, greedy);
    CHECK(got == expected);

    greedy.eos_token_id = expected[0][2];  // row 0 stops at its third token (or sooner, if repeated)
    const auto stopped = torch_model.generate(prompts, greedy);
    CHECK(stopped == cpu_model.generate(prompts, greedy));
    REQUIRE(!stopped[0].empty());
    CHECK(stopped[0].size() <= 3);
    CHECK(stopped[0].back() == greedy.eos_token_id);
  }
}

TEST_CASE("sampling is reproducible from its seed, within top_k, and slots after the end are 0") {
  Model m(torch_backend(), tiny_config(false));
  randomize(m, 5);
  const std::vector<std::vector<int32_t>> prompts = {{3, 4}, {8, 8, 8}};
  GenerateOptions sample;
  sample.max_new_tokens = 12;
  sample.temperature = 1.0f;
  sample.top_k = 4;
  sample.top_p = 0.9f;
  sample.seed = 77;
  const auto a = m.generate(prompts, sample), b = m.generate(prompts, sample);
  CHECK(a == b);
  sample.top_k = 1;  // one candidate: sampling is the argmax
  GenerateOptions greedy;
  greedy.max_new_tokens = 12;
  CHECK(m.generate(prompts, sample) == m.generate(prompts, greedy));

  // Through the table: row 1 stops at eos after one token, its other slots read 0.
  const std::vector<std::vector<int32_t>> first = m.generate(prompts, greedy);
  std::vector<int32_t> prompt = {3, 4, 0, 8, 8, 8}, lengths = {2, 3}, out(2 * 5, -7), out_lengths(2, -7);
  int64_t prompt_shape[2] = {2, 3}, rows_shape[1] = {2}, out_shape[2] = {2, 5};
  auto tensor = [](int32_t* data, int64_t* shape, int ndim) {
    DLTensor t{};
    t.data = data;
    t.device = {kDLCPU, 0};
    t.ndim = ndim;
    t.dtype = {kDLInt, 32, 1};
    t.shape = shape;
    return t;
  };
  const DLTensor p = tensor(prompt.data(), prompt_shape, 2), l = tensor(lengths.data(), rows_shape, 1);
  const DLTensor o = tensor(out.data(), out_shape, 2), ol = tensor(out_lengths.data(), rows_shape, 1);
  LyreSamplingParams s{sizeof(LyreSamplingParams), 0.0f, 0, 1.0f, 0};
  LyreModel_Generate_Args args{};
  args.struct_size = sizeof args;
  args.model = m.raw();
  args.prompt = &p;
  args.prompt_lengths = &l;
  args.max_new_tokens = 5;
  args.eos_token_id = first[1][0];
  args.sampling = &s;
  args.out_tokens = &o;
  args.out_lengths = &ol;
  check(m.plugin().api().model->generate(&args), "generate");
  CHECK(out_lengths[1] == 1);
  CHECK(out[5] == first[1][0]);
  for (int k = 1; k < 5; ++k) CHECK(out[5 + k] == 0);
  CHECK(out_lengths[0] >= 1);
  for (int k = out_lengths[0]; k < 5; ++k) CHECK(out[k] == 0);
}

}  // namespace lyre::test
