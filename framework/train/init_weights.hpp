// Random initialisation of a model's parameters, done by the host so that every backend starts
// from the same weights for the same seed.
#pragma once

#include <cstdint>

#include "plugin/handles.hpp"

namespace lyre {

// Norm scales 1, biases and LoRA B 0, everything else normal(0, std). Each parameter draws from
// its own stream seeded by (seed, parameter name), so the result does not depend on the order
// in which a backend lists its parameters.
void init_weights(Model& model, uint64_t seed, double std);

}  // namespace lyre
