// backend-torch's optimizer: torch::optim's AdamW and SGD behind backend-cpu's state names, so a
// checkpoint moves between the backends; gradients untouched by a step; resumable before and
// after the first step.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "plugin/error.hpp"
#include "torch_fixture.hpp"

namespace lyre::test {
namespace {

// A torch model with random weights and the gradients of one train forward/backward.
std::unique_ptr<Model> model_with_grads(uint64_t seed, const std::string& options = "") {
  auto m = std::make_unique<Model>(torch_backend(), tiny_config(false), options);
  randomize(*m, seed);
  const Batch batch = packed_batch(2, 12, 64, seed + 1);
  std::vector<float> logp;
  m->forward(batch, LYRE_FORWARD_TRAIN, logp);
  m->backward(batch, upstream(batch));
  return m;
}

std::vector<std::vector<float>> all_values(const Model& m) {
  std::vector<std::vector<float>> v;
  for (const ParameterInfo& p : m.parameters()) v.push_back(m.read(p.index));
  return v;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) return false;
  return true;
}

std::string optimizer_error(const std::string& config) {
  Model m(torch_backend(), tiny_config(false));
  try {
    Optimizer o(m, config);
  } catch (const PluginError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("optimizer config errors name the key, like backend-cpu's") {
  CHECK_THAT(optimizer_error(R"({"type": "adam"})"), Catch::Contains("\"type\" \"adam\" is not supported"));
  CHECK_THAT(optimizer_error(R"({"type": "adamw", "momentum": 0.9})"), Catch::Contains("key \"momentum\" is not an option of adamw"));
  CHECK_THAT(optimizer_error(R"({"type": "sgd", "betas": [0.9, 0.99]})"), Catch::Contains("key \"betas\" is not an option of sgd"));
  CHECK_THAT(optimizer_error(R"({"lr": 0.1})"), Catch::Contains("unknown key \"lr\""));
  CHECK_THAT(optimizer_error(R"({"betas": [0.9, 1.5]})"), Catch::Contains("\"beta2\" must be a number in"));
  CHECK_THAT(optimizer_error(R"({"no_decay_kinds": ["norms"]})"), Catch::Contains("unknown kind \"norms\""));
  CHECK_THAT(optimizer_error(R"({"type": "sgd", "nesterov": true})"), Catch::Contains("\"nesterov\" needs \"momentum\" > 0"));
  CHECK(optimizer_error(R"({"type": "sgd", "momentum": 0.9, "nesterov": true, "weight_decay": 0.1})") == "");
}

TEST_CASE("optimizer state: backend-cpu's names, dtypes and shapes, for adamw and sgd with momentum") {
  for (const char* config : {R"({"type": "adamw"})", R"({"type": "sgd", "momentum": 0.9})", R"({"type": "sgd"})"}) {
    INFO(config);
    Model torch_model(torch_backend(), tiny_config(false));
    Model cpu_model(cpu_backend(), tiny_config(false));
    const std::vector<HostTensor> t = Optimizer(torch_model, config).state_layout();
    const std::vector<HostTensor> c = Optimizer(cpu_model, config).state_layout();
    REQUIRE(t.size() == c.size());
    for (size_t i = 0; i < c.size(); ++i) {
      INFO(c[i].name);
      CHECK(t[i].name == c[i].name);
      CHECK(dtype_text(t[i].dtype) == dtype_text(c[i].dtype));
      CHECK(t[i].shape == c[i].shape);
    }
    CHECK(t.back().name == "step");
  }
}

TEST_CASE("a step leaves the gradients bit-identical and takes them times grad_scale") {
  for (const char* config : {R"({"type": "adamw", "weight_decay": 0.1})", R"({"type": "sgd", "momentum": 0.9, "dampening": 0.1})"}) {
    INFO(config);
    auto scaled = model_with_grads(9);
    const std::vector<std::vector<float>> grads = all_grads(*scaled);
    Optimizer o(*scaled, config);
    double squares = 0;
    for (const auto& g : grads)
      for (float x : g) squares += static_cast<double>(x) * x;
    CHECK(o.grad_squared_norm() == Approx(squares).epsilon(1e-12));

    o.step(1e-2, 0.5);
    CHECK(same_bits(all_grads(*scaled), grads));
    o.step(1e-2, 0.5);
    CHECK(same_bits(all_grads(*scaled), grads));

    // The same two steps on halved gradients (exact: a power of two) with grad_scale 1.
    auto halved = model_with_grads(9);
    for (const ParameterInfo& p : halved->parameters()) {
      std::vector<float> g = halved->read(p.index, LYRE_TENSOR_GRAD);
      for (float& x : g) x *= 0.5f;
      halved->write(p.index, g, LYRE_TENSOR_GRAD);
    }
    Optimizer h(*halved, config);
    h.step(1e-2, 1.0);
    h.step(1e-2, 1.0);
    CHECK(same_bits(all_values(*halved), all_values(*scaled)));
  }
}

TEST_CASE("optimizer state round-trips before the first step, and a resume continues bit-identically") {
  for (const char* config : {R"({"type": "adamw"})", R"({"type": "sgd", "momentum": 0.9, "dampening": 0.2})"}) {
    INFO(config);
    // Before any step: zeros listed, written and read back.
    {
      Model m(torch_backend(), tiny_config(false));
      Optimizer o(m, config);
      std::vector<HostTensor> states = o.read_state();
      std::mt19937 rng(3);
      for (HostTensor& s : states) {
        if (s.name == "step") {
          const int64_t seven = 7;
          std::memcpy(s.bytes.data(), &seven, sizeof seven);
          continue;
        }
        for (size_t i = 0; i < s.bytes.size() / 4; ++i) {
          float x;
          std::memcpy(&x, s.bytes.data() + 4 * i, 4);
          REQUIRE(x == 0.0f);
          x = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
          std::memcpy(s.bytes.data() + 4 * i, &x, 4);
        }
      }
      o.write_state(states);
      const std::vector<HostTensor> back = o.read_state();
      REQUIRE(back.size() == states.size());
      for (size_t i = 0; i < states.size(); ++i) {
        INFO(states[i].name);
        CHECK(back[i].bytes == states[i].bytes);
      }
    }
    // A run of two steps, and a fresh optimizer given the first step's state and weights.
    auto straight = model_with_grads(5);
    Optimizer a(*straight, config);
    a.step(3e-3, 1.0);
    const std::vector<HostTensor> saved = a.read_state();
    const std::vector<std::vector<float>> weights_after_one = all_values(*straight);
    a.step(3e-3, 1.0);

    auto resumed = model_with_grads(5);  // the same gradients
    for (const ParameterInfo& p : resumed->parameters()) resumed->write(p.index, weights_after_one[p.index]);
    Optimizer b(*resumed, config);
    b.write_state(saved);
    b.step(3e-3, 1.0);
    CHECK(same_bits(all_values(*resumed), all_values(*straight)));
    const std::vector<HostTensor> sa = a.read_state(), sb = b.read_state();
    for (size_t i = 0; i < sa.size(); ++i) {
      INFO(sa[i].name);
      CHECK(sa[i].bytes == sb[i].bytes);
    }
  }
}

TEST_CASE("no weight decay on norms: a zero gradient leaves a norm weight as it was under adamw") {
  Model m(torch_backend(), tiny_config(false));
  randomize(m, 12);  // gradients stay zero
  const std::vector<std::vector<float>> before = all_values(m);
  Optimizer o(m, R"({"type": "adamw", "weight_decay": 0.5})");
  o.step(0.1, 1.0);
  for (const ParameterInfo& p : m.parameters()) {
    INFO(p.name);
    const std::vector<float> after = m.read(p.index);
    if (p.kind == LYRE_PARAM_NORM) {
      CHECK(after == before[p.index]);
    } else {
      for (size_t i = 0; i < after.size(); ++i) REQUIRE(after[i] == Approx(before[p.index][i] * 0.95f).epsilon(1e-6));
    }
  }
}

}  // namespace lyre::test
