// The parity suite's checks, shared by its test cases: a backend against every case of a
// reference, each case's worst margins printed as a Catch2 warning (so a passing run shows them)
// and every tensor out of tolerance named in the failure.
#pragma once

#include "backend_comparison.hpp"

namespace lyre::parity {

// Log-probs and gradients of every case.
void check_forward_backward(const Side& test, const Reference& reference, Precision precision);

// Parameters and optimizer state after the AdamW steps of every case.
void check_adamw_steps(const Side& test, const Reference& reference, Precision precision);

}  // namespace lyre::parity
