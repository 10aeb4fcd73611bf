// What a checkpoint holds beyond the checkpointer's files, and how a run comes back from one:
// the tensors (trainable parameters as "model/<name>", optimizer state as "optimizer/<name>")
// and trainer_state.json (io/checkpoint_layout.hpp lists the keys other readers use).
//
// Resuming refuses a checkpoint whose model or optimizer does not fit the run (architecture keys
// of config.json, parameter names and shapes, optimizer type and state), naming the first
// difference; other config changes (learning rate, steps, logging) are allowed and listed in a
// warning.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/checkpointer_handle.hpp"
#include "plugin/handles.hpp"
#include "train/trainer.hpp"

namespace lyre {

// Trainable parameters and optimizer state, read out of the backend.
std::vector<HostTensor> checkpoint_tensors(const Model& model, const Optimizer& optimizer);

// trainer_state.json for a checkpoint taken after `history.back()` (the last finished step).
nlohmann::json trainer_state_json(const RunIdentity& run, const Model& model, const Optimizer& optimizer,
                                  int64_t step, int64_t epoch, const DataloaderState& data,
                                  int64_t total_steps, double learning_rate,
                                  const std::vector<StepRecord>& history,
                                  const std::vector<EvalRecord>& evals);

struct ResumePoint {
  int64_t step = 0;  // optimizer steps done
  DataloaderState data;
  std::vector<StepRecord> history;
  std::vector<EvalRecord> evals;
  std::vector<std::string> config_changes;  // top-level config keys that differ (for the warning)
};

// Checks `checkpoint` against the run and, when it fits, writes its parameters and optimizer
// state into the backend. Throws std::runtime_error "checkpoint <where>: <difference>" when it
// does not fit; nothing is written then.
ResumePoint restore_checkpoint(const LoadedCheckpoint& checkpoint, const std::string& where,
                               const RunIdentity& run, Model& model, Optimizer& optimizer);

// A stable hash of a JSON value (its canonical dump): the config_hash of trainer_state.json.
std::string json_hash(const nlohmann::json& value);

}  // namespace lyre
