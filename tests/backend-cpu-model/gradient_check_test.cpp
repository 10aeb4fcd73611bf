// The whole model's backward against central finite differences, in double.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "model_test_util.hpp"

namespace lyre::cpu::test {
namespace {

// loss = sum_n w[n] * logp[n], so dlogp = w.
double weighted_loss(LlamaModel<double>& model, const HostBatch& batch, const std::vector<double>& w) {
  std::vector<double> logp(w.size());
  model.forward(batch.view(), ForwardMode::no_grad, logp.data());
  double loss = 0;
  for (size_t i = 0; i < w.size(); ++i) loss += w[i] * logp[i];
  return loss;
}

void check_gradients(bool tied) {
  LlamaModel<double> model(tiny_config(tied));
  init_weights(model, tied ? 11 : 12);
  const HostBatch batch = packed_batch();
  const std::vector<double> w = random_weights(batch.tokens.size(), 5);

  std::vector<double> logp(w.size());
  model.zero_grad();
  model.forward(batch.view(), ForwardMode::train, logp.data());
  model.backward(w.data());

  auto& ps = model.params();
  std::mt19937_64 rng(99);
  const double h = 1e-4;
  int checked = 0;
  bool saw_kind[3] = {false, false, false};
  for (size_t i = 0; i < ps.size(); ++i) {
    const ParameterInfo& p = ps.info(i);
    saw_kind[p.kind] = true;
    std::uniform_int_distribution<size_t> pick(0, p.numel - 1);
    for (int s = 0; s < 4; ++s) {
      const size_t j = pick(rng);
      double* v = ps.value(i) + j;
      const double saved = *v;
      auto loss_at = [&](double x) {
        *v = x;
        return weighted_loss(model, batch, w);
      };
      // Five-point central difference: truncation error O(h^4), about 1e-11 here.
      const double fd = (8 * (loss_at(saved + h) - loss_at(saved - h)) -
                         (loss_at(saved + 2 * h) - loss_at(saved - 2 * h))) / (12 * h);
      *v = saved;
      const double analytic = ps.grad(i)[j];
      INFO(p.name << "[" << j << "] analytic " << analytic << " finite difference " << fd);
      CHECK(std::abs(analytic - fd) <= 1e-9 + 1e-8 * std::abs(fd));
      ++checked;
    }
  }
  CHECK(saw_kind[LYRE_PARAM_MATRIX]);
  CHECK(saw_kind[LYRE_PARAM_EMBEDDING]);
  CHECK(saw_kind[LYRE_PARAM_NORM]);
  // 2 layers x 9 + embedding + final norm (+ lm_head when untied)
  CHECK(ps.size() == (tied ? 20u : 21u));
  CHECK(checked == 4 * static_cast<int>(ps.size()));
}

}  // namespace

TEST_CASE("whole-model gradients match finite differences (untied head, GQA, llama3 rope, packed rows)",
          "[gradcheck]") {
  check_gradients(false);
}

TEST_CASE("whole-model gradients match finite differences with tied embeddings", "[gradcheck]") {
  check_gradients(true);
}

TEST_CASE("the embedding gradient is non-zero only for ids the batch uses, tied head aside") {
  LlamaModel<double> model(tiny_config(false));
  init_weights(model, 3);
  const HostBatch batch = single_document(kDocA);
  std::vector<double> logp(batch.tokens.size()), dlogp(batch.tokens.size(), 1.0);
  model.forward(batch.view(), ForwardMode::train, logp.data());
  model.backward(dlogp.data());
  const auto& ps = model.params();
  const size_t emb = ps.find("model.embed_tokens.weight");
  for (int32_t id = 0; id < 13; ++id) {
    double norm = 0;
    for (int c = 0; c < 8; ++c) norm += std::abs(ps.grad(emb)[id * 8 + c]);
    const bool used = std::find(kDocA.begin(), kDocA.end() - 1, id) != kDocA.end() - 1;
    INFO("token " << id);
    // The last token of the document has no target: it feeds nothing.
    CHECK((norm > 0) == used);
  }
}

}  // namespace lyre::cpu::test
