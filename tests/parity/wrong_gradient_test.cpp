// The parity suite catches a deliberately wrong gradient: backend-cpu's test hook
// LYRE_CPU_TEST_WRONG_GRAD (plugins/backend-cpu/model_api.cpp) scales one parameter's gradient
// by 1.001, and the gradient comparison must report exactly that parameter, and the 0.1% error.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <optional>
#include <string>

#include "backend_comparison.hpp"
#include "parity_backends.hpp"
#include "parity_cases.hpp"
#include "plugin/handles.hpp"

namespace lyre::parity {
namespace {

constexpr const char* kHook = "LYRE_CPU_TEST_WRONG_GRAD";

// Sets (or, given nullopt, unsets) an environment variable while it lives; restores the earlier
// value or its absence.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), /*overwrite=*/1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("a wrong gradient in backend-cpu is caught") {
  const Side reference = torch_side("fp32");
  const Side cpu = side_of("backend-cpu");
  const ParityCase c = parity_cases().at(0);
  const Tolerances tol = tolerances(Precision::fp32);
  INFO(c.describe() << "\nconfig.json: " << c.config_json());

  SECTION("the comparison names the one parameter whose gradient is 0.1% off") {
    const std::string wrong = "model.layers.0.mlp.up_proj.weight";
    const ScopedEnv hook(kHook, wrong);
    const ForwardBackward r = compare_forward_backward(cpu, reference, c, tol);
    INFO(r.gradients.summary() << "\n" << r.gradients.failures());
    CHECK(r.logp.all_ok());  // forward is untouched
    REQUIRE(r.gradients.failing() == std::vector<std::string>{wrong});
    // The normwise error of a gradient scaled by 1.001 is 1e-3, plus the backends' own ~1e-6.
    const TensorError* worst = r.gradients.worst();
    REQUIRE(worst != nullptr);
    CHECK(worst->name == wrong);
    CHECK(worst->error == Approx(1e-3).epsilon(0.01));
    WARN("with " << kHook << "=" << wrong << ":\n" << r.gradients.failures());
  }

  SECTION("without the hook the same comparison passes") {
    const ScopedEnv no_hook(kHook, std::nullopt);
    const ForwardBackward r = compare_forward_backward(cpu, reference, c, tol);
    INFO(r.gradients.failures());
    CHECK(r.gradients.all_ok());
  }

  SECTION("a parameter the model does not have fails the backward, naming the variable and the name") {
    const ScopedEnv hook(kHook, "model.layers.0.mlp.nope.weight");
    Model model(cpu.plugin, c.config_json(), cpu.options_json);
    const Batch batch = make_batch(c, 0);
    std::vector<float> logp;
    model.forward(batch, LYRE_FORWARD_TRAIN, logp);
    REQUIRE_THROWS_WITH(model.backward(batch, make_dlogp(batch, 1)),
                        Catch::Contains(kHook) && Catch::Contains("model.layers.0.mlp.nope.weight"));
  }
}

}  // namespace lyre::parity
