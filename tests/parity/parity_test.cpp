// Cross-backend parity: every backend of this build tree computes what backend-torch (LibTorch
// autograd, the numerical reference) computes, on the same weights and batches, for a fixed list
// of small random configs: per-token log-probs, every parameter's gradient, and the parameters
// and optimizer state after three AdamW steps. error_measures.hpp defines the measures and the
// tolerances; each case prints its worst margins as a warning, so a passing run shows them.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "parity_backends.hpp"
#include "parity_checks.hpp"

namespace lyre::parity {
namespace {

std::vector<Side> sides_under_test() {
  std::vector<Side> sides;
  for (const std::string& name : backends_under_test()) sides.push_back(side_of(name));
  return sides;
}

Precision precision_of(const Side& side) { return training_precision(side.plugin->name(), side.options_json); }

}  // namespace

TEST_CASE("every backend's log-probs and gradients match backend-torch's") {
  const Reference reference = live_reference(torch_side("fp32"));
  const std::vector<Side> sides = sides_under_test();
  REQUIRE_FALSE(sides.empty());  // in CI: backend-cpu
  for (const Side& test : sides) check_forward_backward(test, reference, precision_of(test));
}

TEST_CASE("every backend's parameters and optimizer state match backend-torch's after three AdamW steps") {
  const Reference reference = live_reference(torch_side("fp32"));
  const std::vector<Side> sides = sides_under_test();
  REQUIRE_FALSE(sides.empty());
  for (const Side& test : sides) check_adamw_steps(test, reference, precision_of(test));
}

// The reference's own error: if backend-torch at fp32 were not within the fp32 tolerances of its
// fp64 run, a failure above could be the reference's as much as the backend's.
TEST_CASE("backend-torch at fp32 is within the fp32 tolerances of backend-torch at fp64") {
  const Reference fp64 = live_reference(torch_side("fp64"));
  const Side fp32 = torch_side("fp32");
  check_forward_backward(fp32, fp64, Precision::fp32);
  check_adamw_steps(fp32, fp64, Precision::fp32);
}

// Hidden ([.]): each precision is run by its own CTest entry under the label gpu
// (tests/parity/CMakeLists.txt), which treats exit code 77 as "skipped". The reference is
// backend-torch at fp64, live, or read from the golden folder $LYRE_PARITY_GOLDEN names.
TEST_CASE("backend-cuda in bf16 matches the reference within the bf16 tolerances", "[.][cuda][bf16]") {
  skip_unless_backend_cuda_runs();
  const Side test = cuda_side("bf16");
  REQUIRE(precision_of(test) == Precision::bf16);
  check_forward_backward(test, gpu_reference(), Precision::bf16);
  check_adamw_steps(test, gpu_reference(), Precision::bf16);
}

TEST_CASE("backend-cuda in fp32 matches the reference within the fp32 tolerances", "[.][cuda][fp32]") {
  skip_unless_backend_cuda_runs();
  const Side test = cuda_side("fp32");
  REQUIRE(precision_of(test) == Precision::fp32);
  check_forward_backward(test, gpu_reference(), Precision::fp32);
  check_adamw_steps(test, gpu_reference(), Precision::fp32);
}

}  // namespace lyre::parity
