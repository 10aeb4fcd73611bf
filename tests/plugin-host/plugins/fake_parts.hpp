// Pieces the test plugins are assembled from: a tiny unigram model (one trainable bias vector,
// logp = log_softmax(scale * bias)[target]) with SGD, a token-mean objective, and backend entries.
// Each test plugin compiles its own copy, so every library has its own live-object count.
#pragma once

#include "lyre/abi.h"

namespace fake {

extern const LyreModelApi model_api;              // with generate (greedy argmax of the bias)
extern const LyreModelApi model_api_no_generate;  // generate = NULL
extern const LyreOptimizerApi optimizer_api;      // {"type": "sgd"}
extern const LyreObjectiveApi objective_api;      // "test-mean"

LyreError* device_info(LyreBackend_DeviceInfo_Args* args);
LyreError* synchronize(LyreBackend_Synchronize_Args* args);

// Models, optimizers and objectives this library made that are not destroyed yet.
int live_objects();
// Logs "shutdown with N live objects" through the host: what the tests read to see that a
// library is shut down only after everything it made is gone.
void log_shutdown(const char* plugin_name);

}  // namespace fake
