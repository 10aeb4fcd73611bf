// generate with a KV cache against a full recompute of every prefix, and the sampler's rules.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>

#include "lyre/plugin.hpp"
#include "model_test_util.hpp"

namespace lyre::cpu::test {
namespace {

struct Generated {
  std::vector<int32_t> tokens, lengths;
  int32_t max_new;
  std::vector<int32_t> row(int64_t b) const {
    return std::vector<int32_t>(tokens.begin() + b * max_new, tokens.begin() + b * max_new + lengths[b]);
  }
};

// Three right-padded prompts of different lengths.
const std::vector<std::vector<int32_t>> kPrompts{{3, 7, 1}, {5}, {2, 11, 4, 8, 6}};

template <typename T>
Generated run_generate(LlamaModel<T>& model, int32_t max_new, int32_t eos, const SamplingOptions& s,
                       const std::vector<std::vector<int32_t>>& prompts = kPrompts) {
  int64_t cols = 0;
  for (const auto& p : prompts) cols = std::max<int64_t>(cols, p.size());
  const int64_t B = static_cast<int64_t>(prompts.size());
  std::vector<int32_t> prompt(B * cols, 12345), lengths(B);  // padding garbage must not matter
  for (int64_t b = 0; b < B; ++b) {
    std::copy(prompts[b].begin(), prompts[b].end(), prompt.begin() + b * cols);
    lengths[b] = static_cast<int32_t>(prompts[b].size());
  }
  Generated g{std::vector<int32_t>(B * max_new, -7), std::vector<int32_t>(B, -7), max_new};
  model.generate(prompt.data(), lengths.data(), B, cols, max_new, eos, s, g.tokens.data(), g.lengths.data());
  return g;
}

// Logits of the last position of `ids`, recomputed from scratch without a cache.
template <typename T>
std::vector<T> last_logits(LlamaModel<T>& model, const std::vector<int32_t>& ids) {
  const HostBatch batch = single_document(ids);
  const int64_t V = model.config().vocab_size;
  std::vector<T> all(ids.size() * V);
  model.logits(batch.view(), all.data());
  return std::vector<T>(all.end() - V, all.end());
}

}  // namespace

TEST_CASE("greedy generate with a KV cache picks the argmax of a full recompute at every step") {
  LlamaModel<double> model(tiny_config(false));
  init_weights(model, 61);
  const int32_t max_new = 8;
  const Generated g = run_generate(model, max_new, -1, SamplingOptions{});
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    REQUIRE(g.lengths[b] == max_new);
    std::vector<int32_t> seq = kPrompts[b];
    for (int32_t k = 0; k < max_new; ++k) {
      const std::vector<double> logits = last_logits(model, seq);
      const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
      INFO("row " << b << " step " << k);
      CHECK(g.tokens[b * max_new + k] == best);
      seq.push_back(g.tokens[b * max_new + k]);
    }
  }
}

TEST_CASE("greedy generate in float picks a maximal logit of the full recompute") {
  LlamaModel<double> ref(tiny_config(true));
  init_weights(ref, 62);
  LlamaModel<float> model(tiny_config(true));
  copy_weights(model, ref);
  const int32_t max_new = 6;
  const Generated g = run_generate(model, max_new, -1, SamplingOptions{});
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    std::vector<int32_t> seq = kPrompts[b];
    for (int32_t k = 0; k < max_new; ++k) {
      const std::vector<float> logits = last_logits(model, seq);
      const int32_t tok = g.tokens[b * max_new + k];
      INFO("row " << b << " step " << k);
      CHECK(logits[tok] >= *std::max_element(logits.begin(), logits.end()) - 1e-4f);
      seq.push_back(tok);
    }
  }
}

TEST_CASE("full-recompute logits agree with the fused head's logp, whatever rms_norm_eps is") {
  // Generation (logits) and training (the fused head) must apply the same final RMSNorm.
  const char* eps = GENERATE("1e-6", "1e-5");
  INFO("rms_norm_eps " << eps);
  LlamaModel<double> model(tiny_config(false, eps));
  init_weights(model, 63);
  const HostBatch batch = packed_batch();
  std::vector<double> logits(batch.tokens.size() * 13), logp(batch.tokens.size());
  model.logits(batch.view(), logits.data());
  model.forward(batch.view(), ForwardMode::no_grad, logp.data());
  for (size_t n = 0; n < batch.tokens.size(); ++n) {
    if (batch.targets[n] < 0) continue;
    const double* z = logits.data() + n * 13;
    double top = *std::max_element(z, z + 13), sum = 0;
    for (int v = 0; v < 13; ++v) sum += std::exp(z[v] - top);
    CHECK(std::abs(z[batch.targets[n]] - top - std::log(sum) - logp[n]) < 1e-12);
  }
}

TEST_CASE("a row stops after writing eos while the others go on") {
  LlamaModel<double> model(tiny_config(false));
  init_weights(model, 64);
  const int32_t max_new = 8;
  const Generated free_run = run_generate(model, max_new, -1, SamplingOptions{});
  const int32_t eos = free_run.tokens[0 * max_new + 2];
  const Generated g = run_generate(model, max_new, eos, SamplingOptions{});
  bool some_row_stopped_early = false;
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    const std::vector<int32_t> full = free_run.row(b);
    const auto hit = std::find(full.begin(), full.end(), eos);
    const int32_t expected = hit == full.end() ? max_new : static_cast<int32_t>(hit - full.begin()) + 1;
    INFO("row " << b);
    CHECK(g.lengths[b] == expected);
    CHECK(g.row(b) == std::vector<int32_t>(full.begin(), full.begin() + expected));
    for (int32_t k = expected; k < max_new; ++k) CHECK(g.tokens[b * max_new + k] == 0);
    some_row_stopped_early |= expected < max_new;
  }
  CHECK(some_row_stopped_early);
  CHECK(g.lengths[0] <= 3);
}

TEST_CASE("sampling is reproducible per seed, and top_k 1 is greedy") {
  LlamaModel<float> model(tiny_config(false));
  init_weights(model, 65);
  SamplingOptions s;
  s.temperature = 1.0;
  s.seed = 7;
  const Generated a = run_generate(model, 10, -1, s), b = run_generate(model, 10, -1, s);
  CHECK(a.tokens == b.tokens);
  s.seed = 8;
  CHECK(run_generate(model, 10, -1, s).tokens != a.tokens);

  s.top_k = 1;
  CHECK(run_generate(model, 10, -1, s).tokens == run_generate(model, 10, -1, SamplingOptions{}).tokens);
  s.top_k = 0;
  s.top_p = 1e-6;  // only the most likely token is left
  CHECK(run_generate(model, 10, -1, s).tokens == run_generate(model, 10, -1, SamplingOptions{}).tokens);
}

TEST_CASE("generate refuses bad lengths, ids, sampling and sequences beyond max positions") {
  LlamaModel<float> model(tiny_config(false));
  std::vector<int32_t> prompt{1, 2, 3, 4}, lengths{2, 3}, out(2 * 4), out_len(2);
  SamplingOptions greedy;
  auto code_of = [&](auto&& f) {
    try {
      f();
    } catch (const plugin::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  lengths = {0, 2};
  CHECK_THAT(code_of([&] { model.generate(prompt.data(), lengths.data(), 2, 2, 4, -1, greedy, out.data(), out_len.data()); }),
             Catch::Contains("prompt_lengths[0] = 0"));
  lengths = {2, 2};
  prompt[3] = 13;
  CHECK_THAT(code_of([&] { model.generate(prompt.data(), lengths.data(), 2, 2, 4, -1, greedy, out.data(), out_len.data()); }),
             Catch::Contains("prompt token 13 at row 1, col 1"));
  prompt[3] = 4;
  SamplingOptions bad;
  bad.top_p = 0;
  CHECK_THAT(code_of([&] { model.generate(prompt.data(), lengths.data(), 2, 2, 4, -1, bad, out.data(), out_len.data()); }),
             Catch::Contains("top_p"));
  std::vector<int32_t> big_out(2 * 64);
  CHECK_THAT(code_of([&] { model.generate(prompt.data(), lengths.data(), 2, 2, 64, -1, greedy, big_out.data(), out_len.data()); }),
             Catch::Contains("max_position_embeddings 64"));
  // Exactly at the limit is fine: positions reach 2 + 63 - 2 = 63.
  CHECK(code_of([&] { model.generate(prompt.data(), lengths.data(), 2, 2, 63, -1, greedy, big_out.data(), out_len.data()); }) ==
        "no error");
  CHECK(out_len[0] == 63);
}

TEST_CASE("the sampler draws from the softmax, cut by top_k and top_p") {
  // p = (0.1, 0.2, 0.3, 0.4) at temperature 1.
  const double logits[4] = {std::log(0.1), std::log(0.2), std::log(0.3), std::log(0.4)};
  auto frequencies = [&](SamplingOptions s) {
    TokenSampler sampler(s, 0);
    std::map<int32_t, double> f;
    const int n = 40000;
    for (int i = 0; i < n; ++i) f[sampler.pick(logits, 4)] += 1.0 / n;
    return f;
  };
  SamplingOptions s;
  s.temperature = 1.0;
  s.seed = 3;
  std::map<int32_t, double> f = frequencies(s);
  for (int v = 0; v < 4; ++v) CHECK(f[v] == Approx(0.1 * (v + 1)).margin(0.01));

  s.top_k = 2;  // keeps 3 and 2: 0.4/0.7, 0.3/0.7
  f = frequencies(s);
  CHECK(f[0] == 0);
  CHECK(f[1] == 0);
  CHECK(f[3] == Approx(4.0 / 7).margin(0.01));

  s.top_k = 0;
  s.top_p = 0.65;  // 0.4 + 0.3 >= 0.65: the same two
  f = frequencies(s);
  CHECK(f[0] + f[1] == 0);
  CHECK(f[2] == Approx(3.0 / 7).margin(0.01));

  s.top_p = 1.0;
  s.temperature = 0.5;  // p ~ (1, 4, 9, 16) / 30
  f = frequencies(s);
  CHECK(f[3] == Approx(16.0 / 30).margin(0.01));
  CHECK(f[0] == Approx(1.0 / 30).margin(0.005));
}

}  // namespace lyre::cpu::test
