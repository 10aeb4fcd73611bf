// Faults a test plants in a built backend through the environment, read at the moment they
// apply (so a test can set and unset them between calls).
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "model/parameter_info.hpp"

namespace lyre::cpu {

// A deliberately wrong gradient: backward ends by multiplying parameter `index`'s gradient by
// `factor`. tests/parity must catch it.
struct WrongGrad {
  size_t index = 0;
  float factor = 1.001f;
};

// What the environment variable `variable` = "<parameter name>[:<factor>]" asks for (factor
// 1.001 when omitted: a 0.1% wrong gradient), or nothing when it is unset or empty. Throws
// Error(INVALID_ARGUMENT) quoting the variable for a factor that is not a finite number or a
// name none of `params` has.
std::optional<WrongGrad> wrong_grad_hook(const char* variable,
                                         const std::vector<ParameterInfo>& params);

}  // namespace lyre::cpu
