// AdamW and SGD against updates computed by hand, their groups, states and config errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "lyre/plugin.hpp"
#include "model/adamw.hpp"
#include "model/optimizer.hpp"
#include "model/sgd.hpp"

namespace lyre::cpu::test {
namespace {

// A matrix [2,3] and a norm [3], values and gradients set by hand.
struct TwoParams {
  ParameterStore<double> ps;
  TwoParams() {
    ps.add("w", LYRE_PARAM_MATRIX, {2, 3});
    ps.add("norm.weight", LYRE_PARAM_NORM, {3});
    ps.allocate();
    for (size_t i = 0; i < 9; ++i) {
      ps.values()[i] = 0.5 - 0.1 * double(i);
      ps.grads()[i] = 0.3 * std::sin(double(i) + 1.0);
    }
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const plugin::Error& e) {
    CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("AdamW matches a hand-computed update over two steps, without decay on norms") {
  TwoParams t;
  const double lr = 0.01, wd = 0.1, b1 = 0.8, b2 = 0.95, eps = 1e-6, scale = 0.5;
  auto opt = make_optimizer(t.ps, R"({"type": "adamw", "betas": [0.8, 0.95], "eps": 1e-6,
                                      "weight_decay": 0.1})");
  std::vector<double> p(t.ps.values(), t.ps.values() + 9), m(9, 0.0), v(9, 0.0);
  const std::vector<double> g(t.ps.grads(), t.ps.grads() + 9);
  for (int step = 1; step <= 2; ++step) {
    opt->step(lr, scale);
    for (size_t i = 0; i < 9; ++i) {
      const double gi = g[i] * scale, decay = i < 6 ? wd : 0.0;  // elements 6..8 are the norm
      p[i] -= lr * decay * p[i];
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      const double mhat = m[i] / (1 - std::pow(b1, step)), vhat = v[i] / (1 - std::pow(b2, step));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
    for (size_t i = 0; i < 9; ++i) {
      INFO("step " << step << " element " << i);
      CHECK(t.ps.values()[i] == Approx(p[i]).epsilon(1e-12));
    }
  }
  // The gradients are left as they were; the step counter and moments are states.
  for (size_t i = 0; i < 9; ++i) CHECK(t.ps.grads()[i] == g[i]);
  CHECK(opt->step_count() == 2);
  const auto& states = opt->states();
  REQUIRE(states.size() == 5);
  CHECK(states[0].name == "w.exp_avg");
  CHECK(states[1].name == "w.exp_avg_sq");
  CHECK(states[2].name == "norm.weight.exp_avg");
  CHECK(states[3].name == "norm.weight.exp_avg_sq");
  CHECK(states[4].name == "step");
  CHECK(states[4].data == nullptr);
  CHECK(states[0].shape == std::vector<int64_t>{2, 3});
  CHECK(states[3].data[1] == Approx(v[7]).epsilon(1e-12));
}

TEST_CASE("the norm decays too once no_decay_kinds leaves it out") {
  TwoParams a, b;
  auto decays_all = make_optimizer(a.ps, R"({"weight_decay": 0.5, "no_decay_kinds": []})");
  auto default_groups = make_optimizer(b.ps, R"({"weight_decay": 0.5})");
  decays_all->step(0.1, 1.0);
  default_groups->step(0.1, 1.0);
  for (size_t i = 0; i < 6; ++i) CHECK(a.ps.values()[i] == b.ps.values()[i]);
  for (size_t i = 6; i < 9; ++i) {
    // Decoupled decay shrinks the weight by lr*wd*p on top of the Adam step.
    CHECK(a.ps.values()[i] != b.ps.values()[i]);
    const double before = 0.5 - 0.1 * double(i);
    CHECK(a.ps.values()[i] == Approx(b.ps.values()[i] - 0.1 * 0.5 * before).epsilon(1e-12));
  }
}

TEST_CASE("SGD with momentum matches PyTorch's rule by hand") {
  TwoParams t;
  auto opt = make_optimizer(t.ps, R"({"type": "sgd", "momentum": 0.9, "dampening": 0.1,
                                      "weight_decay": 0.01})");
  std::vector<double> p(t.ps.values(), t.ps.values() + 9), buf(9, 0.0);
  const std::vector<double> g(t.ps.grads(), t.ps.grads() + 9);
  for (int step = 1; step <= 3; ++step) {
    opt->step(0.05, 2.0);
    for (size_t i = 0; i < 9; ++i) {
      const double gi = 2.0 * g[i] + (i < 6 ? 0.01 : 0.0) * p[i];
      buf[i] = step == 1 ? gi : 0.9 * buf[i] + 0.9 * gi;
      p[i] -= 0.05 * buf[i];
      CHECK(t.ps.values()[i] == Approx(p[i]).epsilon(1e-12));
    }
  }
  REQUIRE(opt->states().size() == 3);
  CHECK(opt->states()[0].name == "w.momentum_buffer");
  CHECK(opt->states()[2].name == "step");
}

TEST_CASE("the gradient norm is the sum of squares over every gradient, in double") {
  ParameterStore<float> ps;
  ps.add("big", LYRE_PARAM_MATRIX, {300, 500});  // several chunks
  ps.add("small", LYRE_PARAM_NORM, {7});
  ps.allocate();
  double expected = 0;
  for (size_t i = 0; i < ps.total_numel(); ++i) {
    ps.grads()[i] = static_cast<float>(std::cos(0.001 * double(i)) * 1e-3);
    expected += double(ps.grads()[i]) * double(ps.grads()[i]);
  }
  auto opt = make_optimizer(ps, "");
  CHECK(opt->grad_squared_norm() == Approx(expected).epsilon(1e-11));
  CHECK(opt->grad_squared_norm() == opt->grad_squared_norm());
}

TEST_CASE("optimizer config errors name the key") {
  ParameterStore<float> ps;
  ps.add("w", LYRE_PARAM_MATRIX, {2});
  ps.allocate();
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"lr": 0.1})"); }), Catch::Contains("unknown key \"lr\""));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"type": "sgd", "betas": [0.9, 0.99]})"); }),
             Catch::Contains("\"betas\" is not an option of sgd"));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"momentum": 0.9})"); }),
             Catch::Contains("\"momentum\" is not an option of adamw"));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"type": "lion"})"); }), Catch::Contains("\"lion\""));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"betas": [0.9]})"); }), Catch::Contains("betas"));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"betas": [0.9, 1.5]})"); }), Catch::Contains("beta2"));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"eps": -1})"); }), Catch::Contains("\"eps\""));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"weight_decay": "a lot"})"); }),
             Catch::Contains("\"weight_decay\""));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"no_decay_kinds": ["norms"]})"); }),
             Catch::Contains("\"norms\""));
  CHECK_THAT(error_of([&] { make_optimizer(ps, R"({"type": "sgd", "nesterov": true})"); }),
             Catch::Contains("nesterov"));
  CHECK_THAT(error_of([&] { make_optimizer(ps, "{not json"); }), Catch::Contains("not valid JSON"));
  const OptimizerConfig c = parse_optimizer_config("");
  CHECK(c.weight_decay == 0.01);
  CHECK_FALSE(c.decays(LYRE_PARAM_NORM));
  CHECK_FALSE(c.decays(LYRE_PARAM_BIAS));
  CHECK(c.decays(LYRE_PARAM_EMBEDDING));
  CHECK(parse_optimizer_config(R"({"type": "sgd"})").weight_decay == 0.0);
}

}  // namespace lyre::cpu::test
