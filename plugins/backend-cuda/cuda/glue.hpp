// What backend-cuda's ABI glue files share: the slot tables, the model behind a LyreModel*, and
// the device this process uses.
#pragma once

#include "lyre/plugin.hpp"

namespace lyre::cuda {

class LlamaModel;

extern const LyreBackendApi kBackendApi;      // backend_api.cpp
extern const LyreModelApi kModelApi;          // model_api.cpp
extern const LyreOptimizerApi kOptimizerApi;  // optimizer_api.cpp

// The model a LyreModel* holds; plugin::Error(INVALID_ARGUMENT) for NULL. (model_api.cpp)
LlamaModel& cuda_model(LyreModel* model);

// Sums every trainable gradient over the job's ranks through LyreHostApi.all_reduce_f32 (device
// -> host -> device, one parameter at a time); returns at once with one rank. NCCL is for later.
// (model_api.cpp)
LyreError* all_reduce_gradients(LyreModel* model);

// The device chosen at initialize (cudaSetDevice done there; device 0 unless the plugin options
// say "device"); models are created on it. (backend_api.cpp)
int current_device();

}  // namespace lyre::cuda
