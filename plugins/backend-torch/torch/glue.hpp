// What the ABI glue files share: the slot tables and the model behind a LyreModel*.
#pragma once

#include "lyre/plugin.hpp"

namespace lyre::libtorch {

class LlamaModel;

extern const LyreBackendApi kBackendApi;      // backend_api.cpp
extern const LyreModelApi kModelApi;          // model_api.cpp
extern const LyreOptimizerApi kOptimizerApi;  // optimizer_api.cpp

// The model a LyreModel* holds; plugin::Error(INVALID_ARGUMENT) for NULL. (model_api.cpp)
LlamaModel& torch_model(LyreModel* model);

// Sums every trainable gradient over the job's ranks through LyreHostApi.all_reduce_f32, one
// call per parameter; returns at once with one rank. Returns the host's error, if any; throws
// for a NULL model. (model_api.cpp)
LyreError* all_reduce_gradients(LyreModel* model);

}  // namespace lyre::libtorch
