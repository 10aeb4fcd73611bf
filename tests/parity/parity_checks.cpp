#include "parity_checks.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace lyre::parity {
namespace {

std::string header(const Side& test, const Reference& reference, Precision precision, const CaseRun& run) {
  return test.label() + " vs " + reference.label + " (" + precision_name(precision) + " tolerances), " +
         run.inputs.description + "\nconfig.json: " + run.inputs.config_json;
}

}  // namespace

void check_forward_backward(const Side& test, const Reference& reference, Precision precision) {
  const Tolerances tol = tolerances(precision);
  for (const CaseRun& run : reference.runs) {
    INFO(header(test, reference, precision, run));
    const ForwardBackward r = compare_forward_backward(test, run, tol);
    WARN(test.label() << " vs " << reference.label << ", " << run.inputs.description << ":\n  "
                      << r.logp.summary() << "\n  " << r.gradients.summary());
    INFO(r.logp.failures() << r.gradients.failures());
    CHECK(r.logp.all_ok());
    CHECK(r.gradients.all_ok());
  }
}

void check_adamw_steps(const Side& test, const Reference& reference, Precision precision) {
  const Tolerances tol = tolerances(precision);
  for (const CaseRun& run : reference.runs) {
    INFO(header(test, reference, precision, run));
    const AdamwSteps r = compare_adamw_steps(test, run, tol);
    REQUIRE(r.layout_difference == "");
    WARN(test.label() << " vs " << reference.label << ", " << run.inputs.description << ":\n  "
                      << r.parameters.summary() << "\n  " << r.states.summary());
    INFO(r.parameters.failures() << r.states.failures());
    CHECK(r.parameters.all_ok());
    CHECK(!r.states.tensors.empty());
    CHECK(r.states.all_ok());
  }
}

}  // namespace lyre::parity
